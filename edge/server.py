"""The edge process: players' WebSockets in, the broker's bus out and back.

Glue only (docs/architecture.md, Style): a socket's frame is parsed
(``xlmate.messages``), checked against its seat, put on the bus and tracked
until acked (``edge.pending``); a bus event goes to its room (``edge.rooms``),
which fans it out in ``v`` order to the sessions (``edge.session``).  The edge
holds nothing the broker cannot give back, so it can die at any time.

Endpoints on one port: ``/v1/games/{id}/ws`` (players), ``/v1/games/{id}/spectate``,
and GET ``/v1/games/{id}``, ``/v1/games/{id}/pgn``, ``/healthz``, ``/metrics``, and the
browser pages ``/play/{id}``, ``/watch/{id}`` (``edge.pages``).  ``--allow-origin``
restricts which browser origins may open sockets and read the views (``xlmate.httpd``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import time
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import zmq
import zmq.asyncio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from xlmate import curve, logs, metrics
from xlmate.config import EdgeConfig, cluster_secret
from xlmate.constants import (
    BAD_MESSAGE,
    CLOSE_BAD_TOKEN,
    CLOSE_DRAINING,
    CLOSE_FULL,
    CLOSE_INTERNAL,
    CLOSE_NO_SUCH_GAME,
    CLOSE_POLICY,
    CLOSE_WRONG_GAME,
    GAME_ID_RE,
    MAX_CLIENT_FRAME,
    NOT_A_PLAYER,
    RATE_LIMITED,
    UNAVAILABLE,
)
from xlmate.edge.bus import BrokerUnavailable, BusClient, Reply
from xlmate.edge.discovery_client import DiscoveryClient
from xlmate.edge.pages import Pages
from xlmate.edge.pending import PendingCommands
from xlmate.edge.rooms import Room
from xlmate.edge.session import Flusher, Session, TokenBucket, client_address, dumps
from xlmate.errors import ProtocolError, TokenError, WrongGame
from xlmate.heartbeat import Heartbeat
from xlmate.httpd import (
    HttpRequest,
    OriginPolicy,
    Router,
    json_response,
    metrics_response,
    text_response,
)
from xlmate.lifecycle import run_server
from xlmate.messages import Command, Ping, SyncRequest, command_to_wire, parse_client_message
from xlmate.tokens import SeatClaims, verify_seat_token
from xlmate.wire import (
    CMD_TOPIC,
    AckMsg,
    BrokerBeat,
    BusMessage,
    CommandMsg,
    EdgeBeat,
    EventMsg,
    EventsReply,
    HeadMsg,
    MissingReply,
    PgnReply,
    PresenceMsg,
    PresenceReport,
    RejectMsg,
    StateReply,
    encode,
)

log = logging.getLogger("xlmate.edge")

WS_PATH: Final = re.compile(r"^/v1/games/([^/]+)/(ws|spectate)$")
QUEUE_LIMIT: Final = 256  # frames queued per socket before it counts as a slow consumer
MAX_STRIKES: Final = 50  # rate-limited messages before a socket is closed 4008
BROKER_SILENCE_MS: Final = 2000  # no broker beat for this long: the broker is gone


def mono_ms() -> int:
    """Monotonic milliseconds for local timers."""
    return time.monotonic_ns() // 1_000_000


class EdgeServer:
    """One edge: see the module docstring."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.secret, _ = cluster_secret(config.secret)
        self.max_per_ip = config.max_per_ip
        self.rooms: dict[str, Room] = {}
        self.sessions: set[Session] = set()
        self._flusher = Flusher()  # writes what sessions framed, once per loop turn
        self.per_ip: dict[str, int] = {}
        self.pending = PendingCommands(
            resend_ms=config.resend_ms, timeout_ms=config.command_timeout_ms
        )
        self.draining = False
        self.broker_epoch: str | None = None
        self.broker_seen_ms = 0
        self.broker_up = False
        self._keys = itertools.count(1)
        self._closing = False
        self._closed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ws: Server | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self.bus: BusClient | None = None
        self.discovery: DiscoveryClient | None = None
        self._init_metrics()

    def _init_metrics(self) -> None:
        reg = self.registry = metrics.new_registry()
        self._m_conns = metrics.gauge(reg, "edge_connections", "open WebSockets")
        self._m_conns.set_function(lambda: len(self.sessions))
        self._m_rooms = metrics.gauge(reg, "edge_games", "games with a local socket")
        self._m_rooms.set_function(lambda: len(self.rooms))
        self._m_pending = metrics.gauge(reg, "edge_pending_commands", "commands awaiting ack")
        self._m_pending.set_function(lambda: len(self.pending))
        self._m_errors = metrics.counter(
            reg, "edge_client_errors_total", "error replies sent", ("code",)
        )
        self._m_closes = metrics.counter(
            reg, "edge_closes_total", "sockets closed by the edge", ("code",)
        )
        self.client_frames_total = 0
        self.bus_events_total = 0
        metrics.fast_counters(
            reg,
            {
                "edge_client_messages": (
                    "client frames received",
                    lambda: self.client_frames_total,
                ),
                "edge_bus_events": ("game events from the bus", lambda: self.bus_events_total),
            },
        )
        self._m_bad = metrics.counter(reg, "edge_bad_bus_frames_total", "bus frames dropped")
        self._m_fetches = metrics.counter(reg, "edge_fetches_total", "catch-up fetches")

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Connect the bus, start serving, start heartbeating."""
        cfg = self.config
        self._ctx = zmq.asyncio.Context()
        self.bus = BusClient(cfg, self._ctx, self._on_bus, self._m_bad.inc)
        self.bus.start()
        router = Router(OriginPolicy(cfg.allow_origins))  # CORS + the WebSocket Origin check
        Pages(router.origins).add_routes(router)  # /play, /watch, /static (edge/pages.py)
        router.passthrough("/v1/games/{gameId}/ws")
        router.passthrough("/v1/games/{gameId}/spectate")
        router.get("/v1/games/{gameId}", self._http_game)
        router.get("/v1/games/{gameId}/pgn", self._http_pgn)
        router.get("/healthz", self._healthz)
        router.get("/metrics", lambda _req: metrics_response(self.registry))
        self._ws = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=router.process_request,
            max_size=MAX_CLIENT_FRAME,
            max_queue=16,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            open_timeout=cfg.open_timeout_s,
            # Events are small JSON encoded once for every socket; per-socket deflate
            # would compress each again (CPU) and cost ~40 KiB of zlib state per socket.
            compression=None,
        )
        self._tasks = [
            asyncio.create_task(self._resend_loop()),
            asyncio.create_task(self._beat_loop()),
        ]
        if cfg.discovery:
            keys = None
            if cfg.curve_dir is not None:
                keys = (
                    curve.load_pair(cfg.curve_dir, "edge"),
                    curve.load_public(cfg.curve_dir, "discovery"),
                )
            self.discovery = DiscoveryClient(
                cfg.discovery,
                self._heartbeat,
                context=self._ctx,
                interval_ms=cfg.heartbeat_ms,
                curve_keys=keys,
            )
            self._tasks.append(asyncio.create_task(self.discovery.run()))
        log.info("edge %s up: %s (region %s)", cfg.id, cfg.url, cfg.region)

    def _heartbeat(self) -> Heartbeat:
        cfg = self.config
        connections = len(self.sessions)
        return Heartbeat(
            id=cfg.id,
            region=cfg.region,
            url=cfg.url,
            load=min(1.0, connections / cfg.capacity),
            connections=connections,
            capacity=cfg.capacity,
            draining=self.draining,
            interval_ms=cfg.heartbeat_ms,
        )

    def close(self) -> None:
        """Drain and stop; idempotent (SIGTERM ends up here)."""
        if self._closing:
            return
        self._closing = True
        asyncio.get_running_loop().create_task(self._shutdown())

    async def _shutdown(self) -> None:
        self.draining = True
        log.info("edge %s draining: %d sockets", self.config.id, len(self.sessions))
        if self.discovery is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.discovery.beat_now(), 1.0)
        if self._ws is not None:
            self._ws.close(close_connections=False)
        timeout = self.config.drain_timeout_ms / 1000
        if self.pending:
            await self._wait_for(lambda: not self.pending, timeout / 2)
        for session in list(self.sessions):
            await session.drain(0.2)
            session.kill(CLOSE_DRAINING, "edge draining: ask discovery again")
        if self._ws is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ws.wait_closed(), timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.discovery is not None:
            self.discovery.close()
            await self.discovery.wait_closed()
        if self.bus is not None:
            self.bus.close()
            await self.bus.wait_closed()
        if self._ctx is not None:
            self._ctx.term()
        log.info("edge %s stopped", self.config.id)
        self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until ``close`` has finished."""
        await self._closed.wait()

    @staticmethod
    async def _wait_for(condition: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # --- the bus ------------------------------------------------------------------

    def _on_bus(self, topic: bytes, message: BusMessage) -> None:
        if isinstance(message, EventMsg):
            self.bus_events_total += 1
            room = self.rooms.get(message.game_id)
            if room is not None and room.on_event(message.v, message.json):
                self._want_fetch(room)
            elif room is not None and room.lagging:
                self._resync_lagging(room)
            ack = message.ack
            if ack is not None and ack.edge_id == self.config.id:
                self._acked(message.game_id, ack.seat, ack.command_id, message.v)
        elif isinstance(message, AckMsg):
            self._on_ack(message)
        elif isinstance(message, RejectMsg):
            self._on_reject(message)
        elif isinstance(message, HeadMsg):
            room = self.rooms.get(message.game_id)
            if room is not None and room.on_head(message.v):
                self._want_fetch(room)
        elif isinstance(message, PresenceMsg):
            room = self.rooms.get(message.game_id)
            if room is not None:
                for session in room.sessions:
                    if session.last_v is not None:
                        session.send(message.json)
        elif isinstance(message, BrokerBeat):
            self._on_broker_beat(message)
        else:
            self._m_bad.inc()

    def _on_broker_beat(self, beat: BrokerBeat) -> None:
        restarted = self.broker_epoch is not None and beat.epoch != self.broker_epoch
        returned = not self.broker_up
        self.broker_seen_ms = mono_ms()
        self.broker_up = True
        if restarted:
            log.warning(
                "broker restarted (epoch %s -> %s): resyncing", self.broker_epoch, beat.epoch
            )
        elif returned and self.broker_epoch is not None:
            log.warning("broker is back (epoch %s): resyncing", beat.epoch)
        self.broker_epoch = beat.epoch
        if restarted or (returned and self.rooms):
            self._resync_everything()

    def _resync_everything(self) -> None:
        """After a broker restart or outage: fetch every game, re-send commands and presence."""
        assert self.bus is not None
        for room in self.rooms.values():
            self._want_fetch(room)
            self._report_presence(room)
        for body in self.pending.everything():
            self.bus.publish(CMD_TOPIC, body)

    def _on_ack(self, ack: AckMsg) -> None:
        room = self.rooms.get(ack.game_id)
        if room is not None and room.on_head(ack.v):
            self._want_fetch(room)  # the event itself may have been dropped
        self._acked(ack.game_id, ack.seat, ack.command_id, ack.v)

    def _acked(self, game_id: str, seat: str, command_id: str, v: int) -> None:
        """A command of ours was committed at ``v``: stop re-sending it, tell its sender."""
        item = self.pending.resolve((game_id, seat, command_id))
        if item is not None and item.reply_id is not None:
            item.session.send_json({"type": "ack", "id": item.reply_id, "v": v})

    def _on_reject(self, reject: RejectMsg) -> None:
        item = self.pending.resolve((reject.game_id, reject.seat, reject.command_id))
        if item is not None:
            self._error(item.session, reject.code, reject.message, item.reply_id)

    def _want_fetch(self, room: Room) -> None:
        if room.fetching:
            room.stale = True
            return
        room.fetching = True
        asyncio.get_running_loop().create_task(self._fetch_room(room))

    async def _fetch_room(self, room: Room) -> None:
        """Fill a room's gap from the broker's history (or jump to its full state)."""
        assert self.bus is not None
        backoff = 0.05
        try:
            while room.sessions:
                room.stale = False
                self._m_fetches.inc()
                since = room.last_v
                try:
                    reply = await self.bus.fetch(room.game_id, since)
                except BrokerUnavailable:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                self._apply_to_room(room, reply, since)
                if not room.stale and not room.held:
                    break
        finally:
            room.fetching = False
        if room.lagging:
            self._resync_lagging(room)

    def _apply_to_room(self, room: Room, reply: Reply, since: int | None) -> None:
        """Apply the answer to ``fetch(game, since)``.

        The answer travels on another socket than the game's events, so events
        newer than it may have reached the room meanwhile: an answer older than
        the room is only late.  The broker went back only if it answers with a
        ``v`` below the ``since`` we asked with (its journal lost acked events:
        ``--fsync never`` and a power loss); then its state replaces ours on
        every socket.
        """
        if isinstance(reply, MissingReply):
            for session in list(room.sessions):
                session.kill(CLOSE_NO_SUCH_GAME, "no such game")
        elif isinstance(reply, (EventsReply, StateReply)) and since is not None and reply.v < since:
            log.error("broker for game %s went back from v%d to v%d", room.game_id, since, reply.v)
            if isinstance(reply, StateReply):
                self._rewind_room(room, reply)
            else:  # (our broker answers a state then; an event list cannot rewind)
                room.rewound, room.last_v, room.stale = True, None, True
        elif isinstance(reply, EventsReply):
            if room.last_v is None:
                room.stale = True  # no base yet: take the full state
            else:
                room.on_events(reply.v - len(reply.events) + 1, reply.events)
        elif isinstance(reply, StateReply):
            if room.rewound:
                self._rewind_room(room, reply)
            elif since is None and room.last_v is not None:
                # The room got a base while this full state travelled: fetch the
                # events after it rather than make its sockets jump to a state.
                room.stale = True
            elif room.last_v is None or reply.v > room.last_v:
                room.reset(reply.v)
                for session in room.sessions:
                    if session.last_v is not None:
                        self._send_sync(session, reply)
            # else: the state is older than what the room already delivered: nothing new

    def _rewind_room(self, room: Room, reply: StateReply) -> None:
        """Take the broker's state even though it is older, and give it to every socket."""
        room.rewound = False
        room.reset(reply.v)
        room.held.clear()
        for session in room.sessions:
            if session.last_v is not None:
                self._send_sync(session, reply, force=True)

    def _resync_lagging(self, room: Room) -> None:
        lagging, room.lagging = room.lagging, set()
        for session in lagging:
            if not session.closed:
                asyncio.get_running_loop().create_task(self._send_fresh_sync(session))

    def _send_sync(self, session: Session, reply: StateReply, *, force: bool = False) -> None:
        """Send a full state, unless the socket already has that version or a newer one.

        ``force`` sends it anyway (the client asked, or the broker went back).
        """
        if not force and session.last_v is not None and reply.v <= session.last_v:
            return
        session.last_v = reply.v
        session.send(dumps({**reply.sync, "you": session.you}))

    async def _send_fresh_sync(self, session: Session, *, asked: bool = False) -> None:
        """Answer ``{"type":"sync"}`` (``asked``) or repair a lagging socket.

        A lagging socket gets the events it missed from the broker's history
        when it still holds them, and a full state only when it does not.  The
        state travels on another socket than the events, so it can be older
        than events the socket already got: ask again (a few times) rather than
        send a state that goes back in ``v``.
        """
        assert self.bus is not None
        if not asked and await self._send_missed_events(session):
            return
        reply: Reply | None = None
        for _ in range(3):
            try:
                reply = await self.bus.fetch(session.game_id, None)
            except BrokerUnavailable:
                self._error(session, UNAVAILABLE, "the game's broker is not reachable", None)
                return
            if not isinstance(reply, StateReply):
                return
            if session.last_v is None or reply.v >= session.last_v:
                break
        assert isinstance(reply, StateReply)
        room = self.rooms.get(session.game_id)
        if room is not None and room.last_v is not None and room.last_v < reply.v:
            self._want_fetch(room)
        self._send_sync(session, reply, force=asked)
        if room is not None and not room.catch_up(session):
            room.lagging.add(session)
            self._want_fetch(room)

    async def _send_missed_events(self, session: Session) -> bool:
        """Send a socket that fell behind the events after its ``last_v``; False if it needs
        a full state (the broker's history no longer has them, or it is unreachable)."""
        assert self.bus is not None
        since = session.last_v
        if since is None:
            return False
        try:
            reply = await self.bus.fetch(session.game_id, since)
        except BrokerUnavailable:
            return False
        if not isinstance(reply, EventsReply) or reply.v < since:
            return False
        first = reply.v - len(reply.events) + 1
        for offset, data in enumerate(reply.events):
            session.deliver(first + offset, data)
        room = self.rooms.get(session.game_id)
        return room is None or room.catch_up(session)  # and what the room got meanwhile

    # --- presence ---------------------------------------------------------------

    def _beat_now(self) -> None:
        """Tell discovery about a change that should not wait for the next heartbeat."""
        if self.discovery is not None and not self._closing:
            asyncio.get_running_loop().create_task(self.discovery.beat_now())

    def _report_presence(self, room: Room) -> None:
        if self.bus is None:
            return
        white, black, spectators = room.counts()
        report = PresenceReport(
            game_id=room.game_id,
            edge_id=self.config.id,
            white=white,
            black=black,
            spectators=spectators,
        )
        self.bus.publish(CMD_TOPIC, encode(report))

    async def _beat_loop(self) -> None:
        """Beat to the broker (keeps our presence alive), watch the broker's beat.

        Presence is reported on every change and re-reported for every room when
        the broker restarts or comes back (``_resync_everything``); there is no
        periodic re-report, so idle games cost nothing here.
        """
        assert self.bus is not None
        beat = encode(EdgeBeat(edge_id=self.config.id))
        while True:
            self.bus.publish(CMD_TOPIC, beat)
            if self.broker_up and mono_ms() - self.broker_seen_ms > BROKER_SILENCE_MS:
                self.broker_up = False
                log.warning("broker silent for %d ms", BROKER_SILENCE_MS)
            await asyncio.sleep(0.5)

    # --- commands -------------------------------------------------------------------

    async def _resend_loop(self) -> None:
        assert self.bus is not None
        interval = max(0.02, self.config.resend_ms / 4000)
        while True:
            await asyncio.sleep(interval)
            resend, expired = self.pending.due(mono_ms())
            for body in resend:
                self.bus.publish(CMD_TOPIC, body)
            for item in expired:
                self._error(
                    item.session,
                    UNAVAILABLE,
                    "the broker did not confirm the command in time; re-send it with the same id",
                    item.reply_id,
                )

    def _submit(self, session: Session, command: Command) -> None:
        assert self.bus is not None
        if session.seat is None:
            self._error(session, NOT_A_PLAYER, "spectators cannot play", command.id)
            return
        if self.pending.full_for(session):
            self._error(
                session, RATE_LIMITED, "too many commands awaiting confirmation", command.id
            )
            return
        key = str(command.id) if command.id is not None else f"~{self.config.id}:{next(self._keys)}"
        body = encode(
            CommandMsg(
                game_id=session.game_id,
                edge_id=self.config.id,
                seat=session.seat,
                command_id=key,
                command=command_to_wire(command.body),
            )
        )
        self.pending.add((session.game_id, session.seat, key), session, command.id, body, mono_ms())
        self.bus.publish(CMD_TOPIC, body)

    def _error(self, session: Session, code: str, message: str, reply_id: Any) -> None:
        self._m_errors.labels(code).inc()
        payload: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if reply_id is not None:
            payload["id"] = reply_id
        session.send_json(payload)

    # --- sockets ---------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        """One client WebSocket, from handshake to close."""
        parts = urlsplit(ws.request.path if ws.request else "")
        match = WS_PATH.match(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if match is None:
            await self._refuse(ws, CLOSE_NO_SUCH_GAME, "unknown path")
            return
        game_id, kind = match.groups()
        if self.draining:
            await self._refuse(ws, CLOSE_DRAINING, "edge draining: ask discovery again")
            return
        if len(self.sessions) >= self.config.capacity:
            await self._refuse(ws, CLOSE_FULL, "edge full")
            return
        remote = client_address(ws, self.config.trusted_proxies)
        if self.per_ip.get(remote, 0) >= self.max_per_ip:
            await self._refuse(ws, CLOSE_POLICY, "too many connections from this address")
            return
        if not GAME_ID_RE.match(game_id):
            await self._refuse(ws, CLOSE_NO_SUCH_GAME, "bad game id")
            return
        claims: SeatClaims | None = None
        if kind == "ws":
            try:
                claims = verify_seat_token(query.get("token", ""), self.secret, game_id)
            except WrongGame as exc:
                self._log_token_rejected(game_id, remote, CLOSE_WRONG_GAME, exc)
                await self._refuse(ws, CLOSE_WRONG_GAME, str(exc), logged=True)
                return
            except TokenError as exc:
                self._log_token_rejected(game_id, remote, CLOSE_BAD_TOKEN, exc)
                await self._refuse(ws, CLOSE_BAD_TOKEN, str(exc)[:120], logged=True)
                return
        since = _version(query.get("v"))
        session = Session(
            ws,
            game_id,
            claims.color if claims else None,
            remote=remote,
            queue_limit=QUEUE_LIMIT,
            rate=TokenBucket(self.config.rate_per_s, self.config.rate_burst, time.monotonic()),
            flusher=self._flusher,
            on_kill=self._count_close,
        )
        self._join(session)
        opened = time.monotonic()
        logs.event(
            log,
            "conn_opened",
            f"socket opened: game {game_id} as {session.you}",
            game=game_id,
            seat=session.you,
            remote=remote,
        )
        try:
            if await self._first_sync(session, claims, since):
                await self._read(session)
        except ConnectionClosed:
            pass
        finally:
            self._leave(session)
            logs.event(
                log,
                "conn_closed",
                f"socket closed: game {game_id} as {session.you}",
                game=game_id,
                seat=session.you,
                remote=remote,
                **_close_info(ws),
                duration_s=round(time.monotonic() - opened, 3),
            )

    @staticmethod
    def _log_token_rejected(game_id: str, remote: str, code: int, exc: Exception) -> None:
        """One line per refused seat token: the reason, never the token."""
        logs.event(
            log,
            "token_rejected",
            f"seat token rejected for game {game_id}",
            logging.WARNING,
            game=game_id,
            remote=remote,
            code=code,
            reason=str(exc)[:120],
        )

    async def _refuse(
        self, ws: ServerConnection, code: int, reason: str, *, logged: bool = False
    ) -> None:
        self._count_close(code)
        if not logged:
            logs.event(
                log,
                "conn_refused",
                f"socket refused: {reason}",
                code=code,
                reason=reason,
                path=urlsplit(ws.request.path).path if ws.request else None,  # no query: token
            )
        await ws.close(code, reason)

    def _count_close(self, code: int) -> None:
        self._m_closes.labels(str(code)).inc()

    def _join(self, session: Session) -> None:
        assert self.bus is not None
        self.sessions.add(session)
        if len(self.sessions) == self.config.capacity:
            self._beat_now()  # full: discovery should stop placing clients here at once
        self.per_ip[session.remote] = self.per_ip.get(session.remote, 0) + 1
        room = self.rooms.get(session.game_id)
        if room is None:
            room = self.rooms[session.game_id] = Room(session.game_id)
            self.bus.subscribe(session.game_id)
        room.sessions.add(session)

    def _leave(self, session: Session) -> None:
        assert self.bus is not None
        session.stop()
        if session in self.sessions and len(self.sessions) == self.config.capacity:
            self._beat_now()  # room again
        self.sessions.discard(session)
        count = self.per_ip.get(session.remote, 1) - 1
        if count > 0:
            self.per_ip[session.remote] = count
        else:
            self.per_ip.pop(session.remote, None)
        room = self.rooms.get(session.game_id)
        if room is None:
            return
        room.sessions.discard(session)
        room.lagging.discard(session)
        if session.last_v is not None:
            self._report_presence(room)
        if not room.sessions:
            del self.rooms[session.game_id]
            self.bus.unsubscribe(session.game_id)

    async def _first_sync(
        self, session: Session, claims: SeatClaims | None, since: int | None
    ) -> bool:
        """Send the state (or the events after ``since``); False if the socket was closed."""
        assert self.bus is not None
        try:
            if claims is not None:
                clock = (
                    [round(claims.clock.initial * 1000), round(claims.clock.increment * 1000)]
                    if claims.clock
                    else None
                )
                reply = await self.bus.open(
                    session.game_id, claims.color, claims.player_id, clock, since
                )
            else:
                reply = await self.bus.fetch(session.game_id, since)
        except BrokerUnavailable:
            self._count_close(CLOSE_INTERNAL)
            await session.ws.close(CLOSE_INTERNAL, "the game's broker is not reachable")
            return False
        room = self.rooms[session.game_id]
        if isinstance(reply, MissingReply):
            code = CLOSE_NO_SUCH_GAME if claims is None else CLOSE_FULL
            self._count_close(code)
            await session.ws.close(
                code, "no such game" if claims is None else "no room for new games"
            )
            return False
        if isinstance(reply, StateReply):
            if room.last_v is None:
                room.reset(reply.v)
            elif room.last_v < reply.v:
                self._want_fetch(room)
            self._send_sync(session, reply)
        elif isinstance(reply, EventsReply):
            first = reply.v - len(reply.events) + 1
            for data in reply.events:
                session.send(data)
            session.last_v = reply.v
            if room.last_v is None:
                room.reset(first - 1)
            room.on_events(first, reply.events)
        else:
            return False
        if not room.catch_up(session):
            room.lagging.add(session)
            self._want_fetch(room)
        self._report_presence(room)
        return True

    async def _read(self, session: Session) -> None:
        async for frame in session.ws:
            self.client_frames_total += 1
            if session.rate.take(time.monotonic()):
                session.strikes = max(0, session.strikes - 1)  # good behaviour earns strikes back
            else:
                session.strikes += 1
                if session.strikes > MAX_STRIKES:
                    logs.event(
                        log,
                        "client_closed",
                        f"flooding client closed 4008 on game {session.game_id}",
                        logging.WARNING,
                        game=session.game_id,
                        seat=session.you,
                        remote=session.remote,
                        why="flooding",
                        code=CLOSE_POLICY,
                    )
                    session.kill(CLOSE_POLICY, "flooding")
                    await session.ws.close(CLOSE_POLICY, "flooding")  # before the handler's 1000
                    return
                reply_id = _salvage_id(frame) if isinstance(frame, str) else None
                self._error(session, RATE_LIMITED, "slow down", reply_id)
                continue
            if isinstance(frame, bytes):
                self._error(session, BAD_MESSAGE, "binary frames are not accepted", None)
                continue
            try:
                message = parse_client_message(frame)
            except ProtocolError as exc:
                self._error(session, exc.code, exc.message, _salvage_id(frame))
                continue
            if isinstance(message, Command):
                self._submit(session, message)
            elif isinstance(message, Ping):
                session.send(b'{"type":"pong"}')
            elif isinstance(message, SyncRequest):
                asyncio.get_running_loop().create_task(self._send_fresh_sync(session, asked=True))

    # --- HTTP ---------------------------------------------------------------------------

    async def _http_game(self, request: HttpRequest) -> Response:
        game_id = request.params["gameId"]
        if not GAME_ID_RE.match(game_id) or self.bus is None:
            return json_response(404, {"error": "not_found"})
        try:
            reply = await self.bus.fetch(game_id, None)
        except BrokerUnavailable:
            return json_response(503, {"error": "unavailable"})
        if isinstance(reply, StateReply):
            return json_response(200, {**reply.sync, "you": "spectator"})
        return json_response(404, {"error": "not_found"})

    async def _http_pgn(self, request: HttpRequest) -> Response:
        game_id = request.params["gameId"]
        if not GAME_ID_RE.match(game_id) or self.bus is None:
            return json_response(404, {"error": "not_found"})
        try:
            reply = await self.bus.pgn(game_id)
        except BrokerUnavailable:
            return json_response(503, {"error": "unavailable"})
        if isinstance(reply, PgnReply):
            return text_response(200, reply.text, "application/x-chess-pgn; charset=utf-8")
        return json_response(404, {"error": "not_found"})

    def _healthz(self, _request: HttpRequest) -> Response:
        healthy = self.broker_up and not self.draining
        return json_response(
            200 if healthy else 503,
            {
                "status": "ok"
                if healthy
                else ("draining" if self.draining else "broker_unreachable"),
                "component": "edge",
                "id": self.config.id,
                "region": self.config.region,
                "connections": len(self.sessions),
                "games": len(self.rooms),
                "brokerEpoch": self.broker_epoch,
            },
        )


def _close_info(ws: ServerConnection) -> dict[str, Any]:
    """Who closed a socket, with which code and reason (what the closer sent)."""
    protocol = ws.protocol
    sent, received = protocol.close_sent, protocol.close_rcvd
    if sent is not None and not protocol.close_rcvd_then_sent:
        return {"code": sent.code, "reason": sent.reason, "by": "edge"}
    if received is not None:
        return {"code": received.code, "reason": received.reason, "by": "client"}
    return {"code": 1006, "reason": "connection lost", "by": "network"}


def _version(raw: str | None) -> int | None:
    """The ``v`` query parameter, or None when absent or not a sane integer."""
    if raw is None or not raw.isdigit() or len(raw) > 15:
        return None
    return int(raw)


def _salvage_id(frame: str) -> Any:
    """The ``id`` of a message that failed validation, so its error can carry it."""
    try:
        raw = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(value, (str, int)) and not isinstance(value, bool) and len(str(value)) <= 64:
        return value
    return None


async def main(config: EdgeConfig) -> None:
    """Run an edge until SIGINT/SIGTERM (SIGTERM drains)."""
    await run_server(EdgeServer(config))
