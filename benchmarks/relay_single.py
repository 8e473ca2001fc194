"""Baseline 1: a one-process WebSocket relay with no validation, no state, no durability.

Every socket on ``/<anything>/games/<id>/<anything>`` joins the room of game
``<id>`` (any token is fine); each frame it sends is forwarded as is to the
other sockets of that room.  On joining, a socket gets ``{"type":"hello"}`` so
a client knows it is in the room (the cluster's ``sync`` plays that part).

This is the ceiling for "a relay in Python with websockets on one core": what
the cluster pays for sequencing, checking, journaling and fan-out across
processes is measured against it.  Server settings and event loop (asyncio's
own unless `XLMATE_LOOP` says otherwise) match the edge's.

    python benchmarks/relay_single.py --port 9001
"""

from __future__ import annotations

import argparse

from websockets.asyncio.server import ServerConnection, broadcast

from relay_serve import serve_until_signal
from xlmate import eventloop

HELLO = '{"type":"hello"}'


class Relay:
    """Rooms of sockets, keyed by game id."""

    def __init__(self) -> None:
        self.rooms: dict[str, set[ServerConnection]] = {}

    async def handle(self, ws: ServerConnection) -> None:
        """One socket: join its room, forward its frames, leave."""
        path = ws.request.path if ws.request else ""
        parts = path.split("?", 1)[0].split("/")
        game_id = parts[3] if len(parts) > 3 else path
        room = self.rooms.setdefault(game_id, set())
        room.add(ws)
        try:
            await ws.send(HELLO)
            async for frame in ws:
                others = [peer for peer in room if peer is not ws]
                if others:
                    broadcast(others, frame)
        finally:
            room.discard(ws)
            if not room:
                self.rooms.pop(game_id, None)


async def main(host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    relay = Relay()
    await serve_until_signal(relay.handle, host, port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    eventloop.run(main(args.host, args.port), auto="asyncio")
