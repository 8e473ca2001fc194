"""The client side of one player's socket, as the load generator sees it.

A link connects, waits for its first state frame (the cluster's ``sync``, a
relay's ``hello``), then hands every later message, decoded, to an async
``handler(link, message)``.  Two kinds:

- ``ThinLink``: raw ``websockets`` + ``json``.  It speaks just enough of
  docs/protocol.md (``move`` / ``resign`` with an ``id``) to drive the cluster, and
  works unchanged against the relays (which forward frames as they are).  It
  can pick its source address (``local_addr``), which the edges' per-IP limit
  needs for thousands of sockets.
- ``SocketIOLink``: a ``ThinLink`` speaking Socket.IO 4 (Engine.IO 4 over a
  WebSocket, no long-polling) to the Socket.IO baseline
  (``benchmarks/socketio/server.js``): the same frames, each carried as the
  argument of an ``m`` event (``42["m",{...}]``); it answers the server's
  Engine.IO pings (``2`` -> ``3``) as the Socket.IO client library does.
- ``GameClientLink``: ``xlmate.client.GameClient`` (discovery-free: it is
  given the edge URL), to measure what the real client library costs.

The end of a socket that the load generator did not ask for is reported to
the handler as ``{"type": "_closed", "code": <close code>}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from xlmate.client import CommandFailed, GameClient

CLOSED: Final = "_closed"
READY_TYPES: Final = frozenset({"sync", "hello"})
VERSIONED: Final = frozenset({"move", "game_over", "draw", "takeback"})

Message = dict[str, Any]
Handler = Callable[["Link", Message], Awaitable[None]]

_link_ids = itertools.count(1)


class Link(Protocol):
    """What the drivers need of a player's socket."""

    color: str  # "white" or "black"

    async def open(self, timeout: float) -> None:
        """Connect and wait for the first state frame."""

    async def send_move(self, uci: str, command_id: str) -> None:
        """Send a move with a command id; the answer comes through the handler."""

    async def send_resign(self, command_id: str) -> None:
        """Resign, with a command id."""

    async def close(self) -> None:
        """Close the socket; no ``_closed`` message follows; idempotent."""


def player_url(base: str, game_id: str, token: str | None) -> str:
    """``{base}/v1/games/{id}/ws?token=...`` (a relay takes any token)."""
    query = urllib.parse.urlencode({"token": token or "x"})
    return f"{base}/v1/games/{game_id}/ws?{query}"


def socketio_url(base: str, game_id: str) -> str:
    """The Socket.IO 4 WebSocket endpoint of ``base``, for game ``game_id``."""
    query = urllib.parse.urlencode({"EIO": "4", "transport": "websocket", "game": game_id})
    return f"{base}/socket.io/?{query}"


async def ignore(_link: Link, _message: Message) -> None:
    """The handler of idle sockets: read everything (so pings get answered), do nothing."""


class ThinLink:
    """One player over raw ``websockets`` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        color: str,
        handler: Handler,
        *,
        local_addr: tuple[str, int] | None = None,
        compression: bool = True,
        anomaly: Callable[[str, str], None] | None = None,
    ) -> None:
        self.url = url
        self.color = color
        self.handler = handler
        self.local_addr = local_addr
        self.compression = compression
        self.anomaly = anomaly
        self.id = next(_link_ids)
        self.last_v = 0
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = False

    async def open(self, timeout: float) -> None:
        """Connect, start reading, wait for ``sync``/``hello``."""
        kwargs: dict[str, Any] = {}
        if self.local_addr is not None:
            kwargs["local_addr"] = self.local_addr  # goes to loop.create_connection
        self._ws = await connect(
            self.url,
            open_timeout=timeout,
            close_timeout=1,
            compression="deflate" if self.compression else None,
            # Browsers cannot send WebSocket pings; the server's pings keep the socket alive.
            ping_interval=None,
            proxy=None,
            **kwargs,
        )
        await self._opened(self._ws, timeout)
        self._reader = asyncio.create_task(self._read(self._ws))
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _opened(self, ws: ClientConnection, timeout: float) -> None:
        """What a protocol on top of the WebSocket does before reading: nothing here."""

    def _decoder(self) -> Callable[[str | bytes], Message | None]:
        """Frame -> message (None: a frame of the transport, not a message)."""
        return orjson.loads

    async def _read(self, ws: ClientConnection) -> None:
        """Read frames until the socket closes; report an unasked-for close to the handler."""
        ready, handler, decode = self._ready, self.handler, self._decoder()
        try:
            async for frame in ws:
                message = decode(frame)
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "sync":
                    self._on_sync(int(message.get("v", 0)), ready.is_set())
                elif kind in VERSIONED and "v" in message and not self._in_order(message["v"]):
                    continue
                if not ready.is_set():
                    if kind in READY_TYPES:
                        ready.set()
                    continue
                await handler(self, message)
        except ConnectionClosed:
            pass
        if not self._closing:
            await handler(self, {"type": CLOSED, "code": ws.close_code})

    def _on_sync(self, v: int, again: bool) -> None:
        """A full state: the first one, or a later one (counted; a stale one is ignored)."""
        if again and self.anomaly is not None:
            self.anomaly("sync_again", f"{self.color}: sync v={v} after v={self.last_v}")
        if v < self.last_v:
            # The server went back in time: keep ignoring the events we have seen.
            if self.anomaly is not None:
                self.anomaly("sync_went_back", f"{self.color}: sync v={v} after v={self.last_v}")
            return
        self.last_v = v

    def _in_order(self, v: int) -> bool:
        """docs/protocol.md: a client ignores events with a ``v`` it has seen (counted here)."""
        if v <= self.last_v:
            if self.anomaly is not None:
                self.anomaly("duplicate_event", f"{self.color}: v={v} after v={self.last_v}")
            return False
        if v != self.last_v + 1 and self.anomaly is not None:
            self.anomaly("gap_in_v", f"{self.color}: v={v} after v={self.last_v}")
        self.last_v = v
        return True

    async def send_move(self, uci: str, command_id: str) -> None:
        """Send ``{"type":"move","uci":...,"id":...}``."""
        await self._send(f'{{"type":"move","uci":"{uci}","id":"{command_id}"}}')

    async def send_resign(self, command_id: str) -> None:
        """Send ``{"type":"resign","id":...}``."""
        await self._send(f'{{"type":"resign","id":"{command_id}"}}')

    async def _send(self, text: str) -> None:
        """Send one text frame; a closed socket is reported by the reader, not here."""
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(text)

    async def close(self) -> None:
        """Close the socket and stop the reader."""
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


class SocketIOLink(ThinLink):
    """One player over Socket.IO 4 (see the module docstring); the URL is ``socketio_url``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pongs: set[asyncio.Task[None]] = set()

    async def _opened(self, ws: ClientConnection, timeout: float) -> None:
        """Engine.IO's open packet (``0{...}``), then connect to the main namespace (``40``)."""
        first = await asyncio.wait_for(ws.recv(), timeout)
        if not isinstance(first, str) or not first.startswith("0"):
            raise OSError(f"not an Engine.IO 4 open packet: {first!r:.80}")
        await ws.send("40")

    def _decoder(self) -> Callable[[str | bytes], Message | None]:
        loads, ws, pongs = orjson.loads, self._ws, self._pongs

        def decode(frame: str | bytes) -> Message | None:
            if isinstance(frame, str) and frame.startswith("42"):
                event: list[Any] = loads(frame[2:])  # ["m", {...}]
                message: Message = event[1]
                return message
            if frame == "2" and ws is not None:  # Engine.IO ping: answer, as clients do
                pong = asyncio.ensure_future(ws.send("3"))
                pongs.add(pong)
                pong.add_done_callback(pongs.discard)
            return None  # "40{...}" (namespace joined), "3", ...

        return decode

    async def _send(self, text: str) -> None:
        """One ``m`` event carrying the frame."""
        await super()._send(f'42["m",{text}]')


class GameClientLink:
    """One player through ``xlmate.client.GameClient`` (see the module docstring)."""

    def __init__(
        self, edge_url: str, game_id: str, token: str, color: str, handler: Handler
    ) -> None:
        self.color = color
        self.handler = handler
        self.client = GameClient(
            game_id, token=token, edge_url=edge_url, on_event=self._on_event, command_timeout=10
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self, timeout: float) -> None:
        """Connect and wait for the ``sync`` (GameClient reconnects by itself after that)."""
        await self.client.connect(timeout)

    def _spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` in a task that is kept referenced until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, event: Message) -> None:
        """GameClient's callback (versioned events only, de-duplicated by ``v``)."""
        self._spawn(self.handler(self, event))

    async def _command(self, payload: Message, command_id: str) -> None:
        """Send a command and report its ack or error to the handler, like ``ThinLink`` does."""
        try:
            v = await self.client.command(payload, command_id=command_id)
        except CommandFailed as exc:
            await self.handler(self, {"type": "error", "id": command_id, "code": exc.code})
            return
        await self.handler(self, {"type": "ack", "id": command_id, "v": v})

    async def send_move(self, uci: str, command_id: str) -> None:
        """``GameClient.command`` in a task: it waits for the ack, which we report."""
        self._spawn(self._command({"type": "move", "uci": uci}, command_id))

    async def send_resign(self, command_id: str) -> None:
        """Resign in a task, like ``send_move``."""
        self._spawn(self._command({"type": "resign"}, command_id))

    async def close(self) -> None:
        """Close the client and drop its pending tasks."""
        await self.client.close()
        for task in list(self._tasks):
            task.cancel()
