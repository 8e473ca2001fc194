"""Run a server until SIGINT or SIGTERM, then shut it down in order.

Every server in this project has ``start()``, an idempotent ``close()`` and
``wait_closed()`` (docs/architecture.md, Style).  ``run_server`` is the one place
that wires them to process signals, so the CLI stays a thin layer.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol


class Server(Protocol):
    """What ``run_server`` needs of a component."""

    async def start(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


async def run_server(server: Server) -> None:
    """Start ``server``, wait for SIGINT/SIGTERM, close it and wait until it is closed."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Restored afterwards: asyncio would leave SIG_DFL, and a late SIGTERM would then kill
    # the process by signal (shown as a failure, rc=-15) instead of the CLI's clean exit.
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        closed = asyncio.ensure_future(server.wait_closed())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    finally:
        server.close()
        await server.wait_closed()
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)
