"""An asyncio client for one seat (or a spectator) of one game.

It does what docs/protocol.md asks of a good client, so its users don't have to:

- asks discovery for an edge (``discovery_url``) or uses a fixed ``edge_url``;
- reconnects with full-jitter exponential back-off, and at once (re-asking
  discovery) when an edge closes with 1012 (draining);
- resumes with ``?v=<last v seen>`` and de-duplicates events by ``v``;
- gives every command an ``id`` and re-sends unacked commands after a
  reconnect (the cluster applies an id at most once and acks it again);
- keeps a small model of the game (moves, fen, status, result) from the
  ``sync`` and events it receives.

Errors: ``ClientError`` (fatal close codes 4001/4003/4004, or no edge at all)
and ``CommandFailed`` (the cluster answered a command with ``error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import secrets
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from xlmate.constants import (
    CLOSE_BAD_TOKEN,
    CLOSE_DRAINING,
    CLOSE_NO_SUCH_GAME,
    CLOSE_WRONG_GAME,
    UNAVAILABLE,
)
from xlmate.errors import XLMateError
from xlmate.supervision import Supervisor

log = logging.getLogger("xlmate.client")

FATAL_CLOSES: Final = {CLOSE_BAD_TOKEN, CLOSE_WRONG_GAME, CLOSE_NO_SUCH_GAME}
VERSIONED: Final = {"move", "game_over", "draw", "takeback"}
FAILED_FOR: Final = 3.0  # seconds an edge we could not reach is passed over for fallbacks


class ClientError(XLMateError):
    """The client cannot go on: a fatal close code, or no edge to connect to."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class CommandFailed(XLMateError):
    """The cluster refused a command with an ``error`` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def backoff_delay(
    attempt: int, *, base: float = 0.05, cap: float = 2.0, rng: random.Random
) -> float:
    """Full-jitter exponential back-off: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


@dataclass
class GameModel:
    """What the client knows of the game, built from ``sync`` and events."""

    v: int = 0
    status: str = "waiting"
    fen: str = ""
    moves: list[str] = field(default_factory=list)
    result: str | None = None
    reason: str | None = None
    you: str | None = None
    clock: dict[str, Any] | None = None
    presence: dict[str, Any] | None = None
    synced: bool = False

    def apply_sync(self, sync: dict[str, Any]) -> None:
        """Replace everything with a full state."""
        self.v = int(sync["v"])
        self.status = sync.get("status", self.status)
        self.fen = sync.get("fen", "")
        self.moves = list(sync.get("moves", []))
        self.result = sync.get("result")
        self.reason = sync.get("reason")
        self.you = sync.get("you")
        self.clock = sync.get("clock")
        self.synced = True

    def apply_event(self, event: dict[str, Any]) -> None:
        """Advance by one versioned event."""
        self.v = int(event["v"])
        kind = event["type"]
        if kind == "move":
            self.moves.append(event["uci"])
            self.fen = event["fen"]
            self.clock = event.get("clock", self.clock)
            self.status = "started"
        elif kind == "game_over":
            self.status = "over"
            self.result = event["result"]
            self.reason = event["reason"]
            self.clock = event.get("clock", self.clock)
        elif kind == "takeback" and "moves" in event:
            self.moves = list(event["moves"])
            self.fen = event["fen"]
            self.clock = event.get("clock", self.clock)


@dataclass
class _Outgoing:
    payload: dict[str, Any]
    future: asyncio.Future[dict[str, Any]]
    deadline: float


class GameClient:
    """One seat (``token``) or a spectator of ``game_id``; see the module docstring."""

    def __init__(
        self,
        game_id: str,
        *,
        token: str | None = None,
        discovery_url: str | None = None,
        edge_url: str | None = None,
        region: str | None = None,
        command_timeout: float = 15.0,
        max_backoff: float = 2.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        seed: int | None = None,
    ) -> None:
        if not (discovery_url or edge_url):
            raise ClientError("give discovery_url or edge_url")
        self.game_id = game_id
        self.token = token
        self.discovery_url = discovery_url
        self.edge_url = edge_url
        self.region = region
        self.command_timeout = command_timeout
        self.max_backoff = max_backoff
        self.on_event = on_event
        self.model = GameModel()
        self.events: list[dict[str, Any]] = []  # every versioned event, in order, once
        self.connected_to: str | None = None
        self.connections = 0
        self.rewinds = 0  # syncs older than what we had seen (a server bug if ever > 0)
        self._rng = random.Random(seed)
        self._prefix = secrets.token_hex(3)
        self._ids = itertools.count(1)
        self._outgoing: dict[str, _Outgoing] = {}
        self._failed: dict[str, float] = {}  # edge URL -> when connecting to it last failed
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        # Owns the short-lived sends (a sync request, a retried command); close() awaits them.
        self._helpers = Supervisor(f"client {game_id}", lambda: None)
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._fatal: ClientError | None = None
        self._closing = False

    # --- lifecycle ---------------------------------------------------------------

    async def connect(self, timeout: float = 10.0) -> GameClient:
        """Start the connection loop and wait for the first ``sync``."""
        if self._task is None:
            self._task = asyncio.create_task(self._run_guarded(), name="client.connection_loop")
        await self.wait_for(lambda: self.model.synced, timeout)
        return self

    async def close(self) -> None:
        """Close the socket and stop reconnecting; idempotent."""
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # _run_guarded ends with nothing but a cancellation
        await self._helpers.close()
        for out in self._outgoing.values():
            if not out.future.done():
                out.future.set_exception(ClientError("client closed"))
        self._outgoing.clear()

    async def __aenter__(self) -> GameClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
        """Wait until ``condition()`` holds (checked on every change), or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self._fatal is not None:
                raise self._fatal
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("condition not met in time")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    async def wait_for_v(self, v: int, timeout: float = 10.0) -> None:
        """Wait until the client has seen version ``v``."""
        await self.wait_for(lambda: self.model.v >= v, timeout)

    # --- commands --------------------------------------------------------------------

    async def command(self, payload: dict[str, Any], *, command_id: str | None = None) -> int:
        """Send a command and wait for its ack; return the acked ``v``.

        Unacked commands survive reconnects; ``unavailable`` answers are retried
        with the same id until ``command_timeout`` runs out.
        """
        cid = command_id or f"{self._prefix}-{next(self._ids)}"
        payload = {**payload, "id": cid}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._outgoing[cid] = _Outgoing(payload, future, time.monotonic() + self.command_timeout)
        await self._send(payload)
        try:
            reply = await asyncio.wait_for(future, self.command_timeout)
        except TimeoutError:
            raise CommandFailed(UNAVAILABLE, "no ack in time") from None
        finally:
            self._outgoing.pop(cid, None)
        return int(reply["v"])

    async def move(self, uci: str, **extra: Any) -> int:
        """Play a move in UCI; return the acked ``v``."""
        return await self.command({"type": "move", "uci": uci}, **extra)

    async def resign(self) -> int:
        """Resign."""
        return await self.command({"type": "resign"})

    async def draw(self, action: str) -> int:
        """Offer, accept or decline a draw."""
        return await self.command({"type": "draw", "action": action})

    async def takeback(self, action: str) -> int:
        """Offer, accept or decline a takeback."""
        return await self.command({"type": "takeback", "action": action})

    async def send_raw(self, payload: dict[str, Any] | str) -> None:
        """Send any frame as is (tests of bad input)."""
        await self._send(payload)

    async def _send(self, payload: dict[str, Any] | str) -> None:
        ws = self._ws
        if ws is None:
            return  # re-sent on the next connection
        text = payload if isinstance(payload, str) else json.dumps(payload)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)

    # --- the connection loop ---------------------------------------------------------

    async def _run_guarded(self) -> None:
        """The connection loop; a crash (a bug) is logged and ends every wait with an error."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("game %s: the client's connection loop crashed", self.game_id)
            self._fatal = ClientError(f"the connection loop crashed: {exc!r}")
            self._changed.set()

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            url: str | None = None
            try:
                url = await self._pick_edge()
                await self._session(url)
                attempt = 0
            except ClientError as exc:
                self._fatal = exc
                self._changed.set()
                return
            except _Redirect:
                attempt = 0
                continue
            except (
                OSError,
                InvalidHandshake,
                InvalidURI,
                TimeoutError,
                ConnectionClosed,
                _Dropped,
            ) as exc:
                log.debug("connection to game %s failed: %r", self.game_id, exc)
                if url is not None and self.connected_to != url:
                    self._failed[url] = time.monotonic()
            if self._closing:
                return
            await asyncio.sleep(backoff_delay(attempt, cap=self.max_backoff, rng=self._rng))
            attempt += 1

    async def _pick_edge(self) -> str:
        if self.discovery_url is None:
            assert self.edge_url is not None
            return self.edge_url
        query = {"gameId": self.game_id}
        if self.region:
            query["region"] = self.region
        url = f"{self.discovery_url}/v1/nodes/discovery?{urllib.parse.urlencode(query)}"
        answer = await asyncio.to_thread(_get_json, url)
        if answer is None or "node" not in answer:
            raise OSError("discovery has no edge for us right now")
        candidates = [answer["node"], *answer.get("nodes", [])]
        now = time.monotonic()
        for node in candidates:
            if now - self._failed.get(node["url"], -FAILED_FOR) >= FAILED_FOR:
                return str(node["url"])
        return str(candidates[0]["url"])

    def _socket_url(self, base: str) -> str:
        kind = "ws" if self.token else "spectate"
        query: dict[str, str] = {}
        if self.token:
            query["token"] = self.token
        if self.model.synced:
            query["v"] = str(self.model.v)
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return f"{base}/v1/games/{self.game_id}/{kind}{suffix}"

    async def _session(self, base: str) -> None:
        async with connect(
            self._socket_url(base), open_timeout=5, close_timeout=1, max_queue=None
        ) as ws:
            self._ws = ws
            self.connected_to = base
            self.connections += 1
            try:
                await self._resend_all()
                with contextlib.suppress(ConnectionClosed):
                    async for frame in ws:
                        self._on_frame(orjson.loads(frame))
            finally:
                self._ws = None
                self.connected_to = None
                self._changed.set()
            self._after_close(ws)

    def _after_close(self, ws: ClientConnection) -> None:
        code = ws.close_code
        if code in FATAL_CLOSES:
            raise ClientError(f"closed with {code}: {ws.close_reason}", code)
        if code == CLOSE_DRAINING:
            raise _Redirect()
        if not self._closing:
            raise _Dropped(f"closed with {code}")

    async def _resend_all(self) -> None:
        for out in list(self._outgoing.values()):
            await self._send(out.payload)

    def _on_frame(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "sync":
            if self.model.synced and int(message["v"]) < self.model.v:
                self.rewinds += 1  # the server went back in v: it should never happen
            self.model.apply_sync(message)
        elif kind in VERSIONED:
            v = int(message["v"])
            if v <= self.model.v:
                return
            if v != self.model.v + 1:
                self._helpers.spawn(self._send({"type": "sync"}), "client.ask_sync")
                return
            self.model.apply_event(message)
            self.events.append(message)
            if self.on_event is not None:
                self.on_event(message)
        elif kind == "presence":
            self.model.presence = message
        elif kind == "ack":
            out = self._outgoing.get(str(message.get("id")))
            if out is not None and not out.future.done():
                out.future.set_result(message)
        elif kind == "error":
            self._on_error(message)
        self._changed.set()

    def _on_error(self, message: dict[str, Any]) -> None:
        out = self._outgoing.get(str(message.get("id")))
        if out is None or out.future.done():
            return
        if message.get("code") == UNAVAILABLE and time.monotonic() < out.deadline:
            asyncio.get_running_loop().call_later(
                0.2, lambda: self._helpers.spawn(self._send(out.payload), "client.resend")
            )
            return
        out.future.set_exception(CommandFailed(message.get("code", ""), message.get("message", "")))


class _Redirect(Exception):
    """The edge is draining: ask discovery again at once."""


class _Dropped(Exception):
    """The connection ended for a reason worth a retry with back-off."""


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            return None
        raise OSError(f"discovery answered {exc.code}") from exc
