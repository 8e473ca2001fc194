"""What both benchmark relays share: the WebSocket server settings, the run loop, /metrics.

The settings are the edge's (``max_size``, queue, pings, close timeout, no
permessage-deflate), so the relays are measured with the same server
configuration as the product.  (Until 2026-11-30 the relays left websockets'
default, ``compression="deflate"``: they accepted the load generator's offer,
which the edge declines, and paid for compressing every frame and ~40 KiB of
zlib state per socket in every relay figure recorded before then.)  Like
every XLMate process, a relay runs the loop-lag probe (``xlmate/looplag.py``)
and answers ``GET /metrics`` on its WebSocket port with its metrics, so the
benchmark reads every process's event-loop stalls the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from prometheus_client import CollectorRegistry, generate_latest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from xlmate import looplag


def metrics_route(
    registry: CollectorRegistry,
) -> Callable[[ServerConnection, Request], Response | None]:
    """A ``process_request`` hook answering ``GET /metrics``; anything else is a WebSocket."""

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path != "/metrics":
            return None
        return connection.respond(HTTPStatus.OK, generate_latest(registry).decode())

    return process_request


async def serve_until_signal(
    handler: Callable[[ServerConnection], Awaitable[None]], host: str, port: int
) -> None:
    """Serve ``handler`` on ``host:port`` until SIGINT/SIGTERM, with the loop-lag probe."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set_result, None)
    registry = CollectorRegistry()
    probe = asyncio.create_task(looplag.watch(registry).run(), name="relay.loop_lag")
    try:
        async with serve(
            handler,
            host,
            port,
            process_request=metrics_route(registry),
            max_size=4096,
            max_queue=16,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            compression=None,  # as the edge: it declines permessage-deflate
        ):
            await asyncio.wait([stop, probe], return_when=asyncio.FIRST_COMPLETED)
            if probe.done():
                probe.result()  # the probe failed: say why (it logged it too)
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
