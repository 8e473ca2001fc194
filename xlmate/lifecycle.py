"""Run a server until SIGINT or SIGTERM, then shut it down in order.

Every server in this project has ``start()``, an idempotent ``close()`` and
``wait_closed()`` (docs/architecture.md, Style), and says in ``failure`` which
of its loops crashed, if one did (``xlmate.supervision``).  ``run_server`` is
the one place that wires them to process signals and to the exit status, so
the CLI stays a thin layer: a server that closed because a loop crashed raises
``ComponentFailed``, which the CLI turns into a non-zero exit (so systemd or
Kubernetes restart it).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol

from xlmate.errors import XLMateError

_stop_signalled = False  # a SIGTERM arrived before the event loop's handler was installed


def note_stop_signal() -> None:
    """Remember that SIGTERM arrived before ``run_server`` took the signals over.

    The CLI's early handler raises ``SystemExit`` from wherever the process is;
    if that lands in code that swallows it (a callback of the event loop during
    start-up), the request would be lost and the process would run on until
    SIGKILL.  ``run_server`` reads this flag once its own handlers are in place.
    """
    global _stop_signalled
    _stop_signalled = True


class ComponentFailed(XLMateError):
    """A server closed because one of its loops crashed (the log has the traceback)."""


class Server(Protocol):
    """What ``run_server`` needs of a component."""

    async def start(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...

    @property
    def failure(self) -> str | None: ...


async def run_server(server: Server) -> None:
    """Start ``server``, wait for SIGINT/SIGTERM (or its own close), close it and wait
    until it is closed; raise ``ComponentFailed`` if it closed because a loop crashed."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Restored afterwards: asyncio would leave SIG_DFL, and a late SIGTERM would then kill
    # the process by signal (shown as a failure, rc=-15) instead of the CLI's clean exit.
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        loop.add_signal_handler(signum, stop.set)
    if _stop_signalled:  # (see note_stop_signal)
        stop.set()
    try:
        await server.start()
        closed = asyncio.ensure_future(server.wait_closed())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        closed.cancel()  # (the finally below waits for the close itself)
    finally:
        server.close()
        await server.wait_closed()
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)
    if server.failure is not None:
        raise ComponentFailed(f"{server.failure} crashed; exiting to be restarted")
