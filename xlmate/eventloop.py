"""The event loop every ``xlmate`` process runs on: uvloop when it is installed.

uvloop (libuv under the asyncio API) makes socket reads, writes and callbacks
cheaper than the standard selector loop; it is a dependency on Linux and
macOS.  ``XLMATE_LOOP=asyncio`` selects the standard loop (to compare the two,
or to rule uvloop out when debugging); ``uvloop`` insists on it.  The load
generator (``xlmate bench``) always runs on the standard loop (see cli.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from xlmate.errors import ConfigError

LOOP_ENV: Final = "XLMATE_LOOP"
CHOICES: Final = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the chosen loop; ``None`` means asyncio's default."""
    choice = (choice or os.environ.get(LOOP_ENV) or "auto").lower()
    if choice not in CHOICES:
        raise ConfigError(f"{LOOP_ENV} must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(f"{LOOP_ENV}=uvloop but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def loop_name(choice: str | None = None) -> str:
    """``uvloop`` or ``asyncio``: what ``run`` will use (for reports)."""
    return "asyncio" if loop_factory(choice) is None else "uvloop"


def run(main: Coroutine[Any, Any, T], choice: str | None = None) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
