"""The event loop each ``xlmate`` process runs on.

uvloop (libuv under the asyncio API) makes socket I/O and callbacks cheaper
than the standard selector loop, and it is a dependency on Linux and macOS.
Every ``xlmate`` process runs on it by default.  The 300-600 ms stalls once
seen on edges holding thousands of WebSockets were CPython's full garbage
collections, not uvloop (they happen on asyncio's loop too): edges run a GC
freezer that keeps long-lived socket state out of them (``xlmate.gcfreeze``,
BENCHMARKS.md "The GC pause"), which is safe on uvloop and not on asyncio's
loop, where the freezer stays off.

``XLMATE_LOOP`` overrides the default of each process: ``uvloop`` or
``asyncio`` for every process, ``auto`` (the default) for the above.  The load
generator (``xlmate bench``) always runs on asyncio's loop.
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


def loop_factory(
    choice: str | None = None, *, auto: str = "uvloop"
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the chosen loop; ``None`` means asyncio's default.

    ``choice``, else ``XLMATE_LOOP``, picks it; ``"auto"`` (the default) means
    the process's own default, the ``auto`` argument.
    """
    choice = (choice or os.environ.get(LOOP_ENV) or "auto").lower()
    if choice not in CHOICES:
        raise ConfigError(f"{LOOP_ENV} must be one of {', '.join(CHOICES)}, not {choice!r}")
    explicit = choice != "auto"
    if not explicit:
        choice = auto
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if explicit:
            raise ConfigError(f"{LOOP_ENV}=uvloop but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str | None = None, *, auto: str = "uvloop") -> T:
    """``asyncio.run(main)`` on the chosen loop (see ``loop_factory``)."""
    try:
        factory = loop_factory(choice, auto=auto)
    except ConfigError:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
