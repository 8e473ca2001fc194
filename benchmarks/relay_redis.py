"""Baseline 2: the Redis pub/sub relay XLMate tried first, one edge process of it.

Run two (or more) of these against one ``redis-server``.  Each edge accepts
sockets on ``/<anything>/games/<id>/<anything>`` (any token), PUBLISHes every
frame a socket sends to the Redis channel ``game:<id>`` and PSUBSCRIBEs
``game:*``; every message from Redis goes to the local sockets of that game,
except the one that sent it.  No validation, no ordering guarantees beyond
Redis's, no durability: the design the cluster replaced.

A published message is ``<edge id> <socket id>\\n<frame>``, so the edge that
published it can skip the sender.  On joining, a socket gets
``{"type":"hello"}`` (see ``relay_single.py``).

Needs ``redis`` (``pip install -e '.[bench]'``); ``benchmarks/run``
installs it and starts ``redis-server``.  It runs on the same event loop as an edge
(asyncio's own unless ``XLMATE_LOOP`` says otherwise).

    python benchmarks/relay_redis.py --port 9002 --redis-url redis://127.0.0.1:6390/0
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
from typing import Any

import redis.asyncio as redis
from websockets.asyncio.server import ServerConnection, broadcast

from relay_serve import serve_until_signal
from xlmate import eventloop

HELLO = '{"type":"hello"}'


class RedisRelay:
    """Local rooms, fed by a PSUBSCRIBE on ``game:*``."""

    def __init__(self, client: redis.Redis, edge_id: str) -> None:
        self.client = client
        self.edge_id = edge_id.encode()
        self.rooms: dict[bytes, dict[bytes, ServerConnection]] = {}
        self._ids = itertools.count(1)

    async def handle(self, ws: ServerConnection) -> None:
        """One socket: join the local room, publish its frames, leave."""
        path = ws.request.path if ws.request else ""
        parts = path.split("?", 1)[0].split("/")
        game_id = (parts[3] if len(parts) > 3 else path).encode()
        channel = b"game:" + game_id
        me = str(next(self._ids)).encode()
        prefix = self.edge_id + b" " + me + b"\n"
        room = self.rooms.setdefault(game_id, {})
        room[me] = ws
        try:
            await ws.send(HELLO)
            async for frame in ws:
                data = frame.encode() if isinstance(frame, str) else frame
                await self.client.publish(channel, prefix + data)
        finally:
            room.pop(me, None)
            if not room:
                self.rooms.pop(game_id, None)

    async def listen(self) -> None:
        """Forward every ``game:*`` message to the local sockets of its game."""
        pubsub = self.client.pubsub()
        await pubsub.psubscribe("game:*")
        async for message in pubsub.listen():
            if message["type"] != "pmessage":
                continue
            self._deliver(message)

    def _deliver(self, message: dict[str, Any]) -> None:
        """Send one Redis message to the local sockets of its game, but not to its sender."""
        room = self.rooms.get(message["channel"][5:])
        if not room:
            return
        header, _, frame = message["data"].partition(b"\n")
        edge, _, sender = header.partition(b" ")
        skip = sender if edge == self.edge_id else None
        targets = [ws for sid, ws in room.items() if sid != skip]
        if targets:
            broadcast(targets, frame.decode())


async def main(host: str, port: int, redis_url: str) -> None:
    """Serve until SIGINT/SIGTERM."""
    client = redis.Redis.from_url(redis_url, max_connections=256)
    await client.ping()
    relay = RedisRelay(client, f"{host}:{port}:{os.getpid()}")
    listener = asyncio.create_task(relay.listen())
    await serve_until_signal(relay.handle, host, port)
    listener.cancel()
    await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    eventloop.run(main(args.host, args.port, args.redis_url), auto="asyncio")
