"""What both benchmark relays share: the WebSocket server settings and the run loop.

The settings are the edge's (``max_size``, queue, pings, close timeout), so the
relays are measured with the same server configuration as the product.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection, serve


async def serve_until_signal(
    handler: Callable[[ServerConnection], Awaitable[None]], host: str, port: int
) -> None:
    """Serve ``handler`` on ``host:port`` until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set_result, None)
    async with serve(
        handler,
        host,
        port,
        max_size=4096,
        max_queue=16,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=2,
    ):
        await stop
