"""The edge process: players' WebSockets in, the broker's bus out and back.

Glue only: a socket's frame is parsed (``xlmate.messages``), checked against
its seat, put on the bus and tracked until acked (``edge.pending``).  What a
socket sees of its game is decided by that game's ``Feed`` (``edge.delivery``,
a pure state machine): this module converts bus messages and catch-up
answers into the feed's inputs and carries out the actions it returns
(``_run``), awaiting the fetches it asks for.  Who may connect is decided by
``edge.handshake``; the HTTP game views are ``edge.views``.  Every task is
owned by one ``Supervisor``: a loop that crashes ends the process (non-zero),
after ``/healthz`` turned 503.  The edge holds nothing the broker cannot give
back, so it can die at any time.

Endpoints on one port: ``/v1/games/{id}/ws`` (players), ``/v1/games/{id}/spectate``,
and GET ``/v1/games/{id}``, ``/v1/games/{id}/pgn``, ``/healthz``, ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import zmq.asyncio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from xlmate import curve, metrics
from xlmate.config import EdgeConfig, cluster_secret
from xlmate.constants import (
    BAD_MESSAGE,
    CLOSE_DRAINING,
    CLOSE_POLICY,
    MAX_CLIENT_FRAME,
    NOT_A_PLAYER,
    RATE_LIMITED,
    UNAVAILABLE,
)
from xlmate.discovery.heartbeat import Heartbeat
from xlmate.edge import handshake
from xlmate.edge.bus import BrokerUnavailable, BusClient, Reply
from xlmate.edge.delivery import (
    Answer,
    Ask,
    Close,
    Deliver,
    Feed,
    Fetch,
    History,
    Missing,
    SendState,
    Snapshot,
    Unavailable,
    WentBack,
)
from xlmate.edge.discovery_client import DiscoveryClient
from xlmate.edge.handshake import salvage_id as _salvage_id
from xlmate.edge.pending import PendingCommands
from xlmate.edge.session import Flusher, Session, TokenBucket, client_address, dumps
from xlmate.edge.views import GameViews
from xlmate.errors import ProtocolError
from xlmate.httpd import HttpRequest, Router, json_response, metrics_response
from xlmate.lifecycle import run_server
from xlmate.messages import Command, Ping, SyncRequest, command_to_wire, parse_client_message
from xlmate.supervision import Faults, Supervisor
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
    PresenceMsg,
    PresenceReport,
    RejectMsg,
    StateReply,
    encode,
)

__all__ = ["EdgeServer", "_salvage_id", "main"]

log = logging.getLogger("xlmate.edge")

QUEUE_LIMIT: Final = 256  # frames queued per socket before it counts as a slow consumer
RATE_PER_S: Final = 20.0  # client messages a second, per socket
RATE_BURST: Final = 40.0
MAX_STRIKES: Final = 50  # rate-limited messages before a socket is closed 4008
BROKER_SILENCE_MS: Final = 2000  # no broker beat for this long: the broker is gone
UNREACHABLE: Final = "the game's broker is not reachable"


def mono_ms() -> int:
    """Monotonic milliseconds for local timers."""
    return time.monotonic_ns() // 1_000_000


def _answer(reply: Reply) -> Answer:
    """A catch-up reply from the bus, as the delivery core's input."""
    if isinstance(reply, StateReply):
        return Snapshot(reply.v, reply.sync)
    if isinstance(reply, EventsReply):
        return History(reply.v, reply.evs)
    return Missing()


class EdgeServer:
    """One edge: see the module docstring."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.secret, _ = cluster_secret(config.secret)
        self.max_per_ip = config.max_per_ip
        self.rooms: dict[str, Feed[Session]] = {}  # a game's feed while it has a socket here
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
        self.tasks = Supervisor("edge", self.close)
        self._faults = Faults()
        self._shutdown: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
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

    @property
    def failure(self) -> str | None:
        """The loop whose crash closed this edge, if one did."""
        return self.tasks.failure

    async def start(self) -> None:
        """Connect the bus, start serving, start heartbeating."""
        cfg = self.config
        self._faults = Faults.from_env()
        self._ctx = zmq.asyncio.Context()
        self.bus = BusClient(cfg, self._ctx, self._on_bus, self._m_bad.inc)
        self.bus.start(self.tasks, self._faults)
        self._ws = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=self.routes().process_request,
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
        self.tasks.loop(self._resend_loop(), "edge.resend_loop")
        self.tasks.loop(self._beat_loop(), "edge.beat_loop")
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
            self.tasks.loop(self.discovery.run(), "edge.discovery_client")
        log.info("edge %s up: %s (region %s)", cfg.id, cfg.url, cfg.region)

    def routes(self) -> Router:
        """The HTTP routes; the WebSocket paths pass through to ``_handle``."""
        assert self.bus is not None
        views = GameViews(self.bus)
        router = Router()
        for path in handshake.ROUTES:
            router.passthrough(path)
        router.get("/v1/games/{gameId}", views.game)
        router.get("/v1/games/{gameId}/pgn", views.pgn)
        router.get("/healthz", self._healthz)
        router.get("/metrics", lambda _req: metrics_response(self.registry))
        return router

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
        """Drain and stop; idempotent (SIGTERM, or a crashed loop, ends up here)."""
        if self._shutdown is None:
            self.draining = True
            self._shutdown = asyncio.get_running_loop().create_task(self._drain_and_stop())

    async def wait_closed(self) -> None:
        """Wait until ``close`` has finished."""
        await self._closed.wait()

    async def _drain_and_stop(self) -> None:
        try:
            await self._drain()
        finally:
            await self._stop()

    async def _drain(self) -> None:
        """Tell discovery, stop accepting, let commands in flight land, close with 1012."""
        log.info("edge %s draining: %d sockets", self.config.id, len(self.sessions))
        if self.discovery is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.discovery.beat_now(), 1.0)
        if self._ws is not None:
            self._ws.close(close_connections=False)
        timeout = self.config.drain_timeout_ms / 1000
        if self.pending and self.tasks.failure is None:
            await self._wait_for(lambda: not self.pending, timeout / 2)
        for session in list(self.sessions):
            await session.drain(0.2)
            session.kill(CLOSE_DRAINING, "edge draining: ask discovery again")
        if self._ws is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ws.wait_closed(), timeout)

    async def _stop(self) -> None:
        """Cancel every task, then close discovery, the bus and the context."""
        try:
            await self.tasks.close()
            if self.discovery is not None:
                self.discovery.close()
                await self.discovery.wait_closed()
            if self.bus is not None:
                self.bus.close()
                await self.bus.wait_closed()
            if self._ctx is not None:
                self._ctx.term()
            log.info("edge %s stopped", self.config.id)
        finally:
            self._closed.set()

    @staticmethod
    async def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # --- the bus: messages become the feeds' inputs ---------------------------------

    def _on_bus(self, topic: bytes, message: BusMessage) -> None:
        if isinstance(message, EventMsg):
            self.bus_events_total += 1
            feed = self.rooms.get(message.g)
            if feed is not None:
                actions = feed.on_event(message.v, message.j)
                if actions:
                    self._run(message.g, feed, actions)
            if message.a is not None and message.a[0] == self.config.id:
                self._acked(message.g, message.a[1], message.a[2], message.v)
        elif isinstance(message, AckMsg):
            self._on_head(message.g, message.v)  # the event itself may have been dropped
            self._acked(message.g, message.s, message.i, message.v)
        elif isinstance(message, RejectMsg):
            item = self.pending.resolve((message.g, message.s, message.i))
            if item is not None:
                self._error(item.session, message.code, message.msg, item.reply_id)
        elif isinstance(message, HeadMsg):
            self._on_head(message.g, message.v)
        elif isinstance(message, PresenceMsg):
            feed = self.rooms.get(message.g)
            if feed is not None:
                for session in feed.synced_handles():
                    session.send(message.j)
        elif isinstance(message, BrokerBeat):
            self._on_broker_beat(message.ep)
        else:
            self._m_bad.inc()

    def _on_head(self, game_id: str, v: int) -> None:
        feed = self.rooms.get(game_id)
        if feed is not None:
            self._run(game_id, feed, feed.on_head(v))

    def _on_broker_beat(self, epoch: str) -> None:
        restarted = self.broker_epoch is not None and epoch != self.broker_epoch
        returned = not self.broker_up
        self.broker_seen_ms = mono_ms()
        self.broker_up = True
        if restarted:
            log.warning("broker restarted (epoch %s -> %s): resyncing", self.broker_epoch, epoch)
        elif returned and self.broker_epoch is not None:
            log.warning("broker is back (epoch %s): resyncing", epoch)
        self.broker_epoch = epoch
        if restarted or (returned and self.rooms):
            self._resync_everything()

    def _resync_everything(self) -> None:
        """After a broker restart or outage: fetch every game, re-send commands and presence."""
        assert self.bus is not None
        for game_id, feed in list(self.rooms.items()):
            self._run(game_id, feed, feed.refresh())
            self._report_presence(game_id, feed)
        for body in self.pending.everything():
            self.bus.publish(CMD_TOPIC, body)

    # --- the feeds' actions -------------------------------------------------------------

    def _run(self, game_id: str, feed: Feed[Session], actions: Sequence[Any]) -> None:
        """Carry out what a game's feed decided, in order."""
        for action in actions:
            kind = type(action)
            if kind is Deliver:
                data = action.data
                for session in action.targets:
                    session.send(data)
            elif kind is SendState:
                session = action.target
                session.send(dumps({**action.state, "you": session.you}))
            elif kind is Fetch:
                self.tasks.spawn(self._fetch(game_id, feed, action), f"edge.fetch {game_id}")
            elif kind is Ask:
                self.tasks.spawn(self._ask(game_id, feed, action), f"edge.ask {game_id}")
            elif kind is Close:
                action.target.kill(action.code, action.reason)
            elif kind is Unavailable:
                self._error(action.target, UNAVAILABLE, UNREACHABLE, None)
            elif kind is WentBack:
                log.error(
                    "broker for game %s went back from v%d to v%d", game_id, action.since, action.v
                )

    async def _fetch(self, game_id: str, feed: Feed[Session], fetch: Fetch) -> None:
        """A room fetch; its answer (or failure) goes back to the feed."""
        assert self.bus is not None
        if fetch.delay:
            await asyncio.sleep(fetch.delay)
        self._m_fetches.inc()
        try:
            reply = await self.bus.fetch(game_id, fetch.since)
        except BrokerUnavailable:
            self._run(game_id, feed, feed.on_fetch_failed(fetch.since))
            return
        self._run(game_id, feed, feed.on_fetched(fetch.since, _answer(reply)))

    async def _ask(self, game_id: str, feed: Feed[Session], ask: Ask[Session]) -> None:
        """One socket's request: a player's first one opens its seat (creating the game)."""
        assert self.bus is not None
        session = ask.target
        claims = session.claims
        try:
            if ask.first and claims is not None:
                clock = (
                    [round(claims.clock.initial * 1000), round(claims.clock.increment * 1000)]
                    if claims.clock
                    else None
                )
                reply = await self.bus.open(
                    game_id, claims.color, claims.player_id, clock, ask.since
                )
            else:
                reply = await self.bus.fetch(game_id, ask.since)
        except BrokerUnavailable:
            self._run(game_id, feed, feed.on_answer_failed(session, ask.ticket))
            return
        self._run(game_id, feed, feed.on_answer(session, ask.ticket, _answer(reply)))

    # --- presence ---------------------------------------------------------------

    def _beat_now(self) -> None:
        """Tell discovery about a change that should not wait for the next heartbeat."""
        if self.discovery is not None and not self.draining:
            self.tasks.spawn(self.discovery.beat_now(), "edge.beat_now")

    def _report_presence(self, game_id: str, feed: Feed[Session]) -> None:
        if self.bus is None:
            return
        white = black = spectators = 0
        for session in feed.handles():
            if session.seat == "white":
                white += 1
            elif session.seat == "black":
                black += 1
            else:
                spectators += 1
        report = PresenceReport(g=game_id, e=self.config.id, w=white, b=black, x=spectators)
        self.bus.publish(CMD_TOPIC, encode(report))

    async def _beat_loop(self) -> None:
        """Beat to the broker (keeps our presence alive), watch the broker's beat.

        Presence is reported on every change and re-reported for every room when
        the broker restarts or comes back (``_resync_everything``); there is no
        periodic re-report, so idle games cost nothing here.
        """
        assert self.bus is not None
        beat = encode(EdgeBeat(e=self.config.id))
        while True:
            self._faults.check("edge.beat_loop")
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
            self._faults.check("edge.resend_loop")
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
                g=session.game_id,
                e=self.config.id,
                s=session.seat,
                i=key,
                c=command_to_wire(command.body),
            )
        )
        self.pending.add((session.game_id, session.seat, key), session, command.id, body, mono_ms())
        self.bus.publish(CMD_TOPIC, body)

    def _acked(self, game_id: str, seat: str, command_id: str, v: int) -> None:
        """A command of ours was committed at ``v``: stop re-sending it, tell its sender."""
        item = self.pending.resolve((game_id, seat, command_id))
        if item is not None and item.reply_id is not None:
            item.session.send_json({"type": "ack", "id": item.reply_id, "v": v})

    def _error(self, session: Session, code: str, message: str, reply_id: Any) -> None:
        self._m_errors.labels(code).inc()
        payload: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if reply_id is not None:
            payload["id"] = reply_id
        session.send_json(payload)

    # --- sockets ---------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        """One client WebSocket, from handshake to close."""
        remote = client_address(ws, self.config.trusted_proxies)
        verdict = handshake.admit(
            ws.request.path if ws.request else "",
            secret=self.secret,
            draining=self.draining,
            full=len(self.sessions) >= self.config.capacity,
            crowded=self.per_ip.get(remote, 0) >= self.max_per_ip,
        )
        if isinstance(verdict, handshake.Refusal):
            self._count_close(verdict.code)
            await ws.close(verdict.code, verdict.reason)
            return
        session = Session(
            ws,
            verdict.game_id,
            verdict.claims.color if verdict.claims else None,
            remote=remote,
            queue_limit=QUEUE_LIMIT,
            rate=TokenBucket(RATE_PER_S, RATE_BURST, time.monotonic()),
            flusher=self._flusher,
            on_kill=self._count_close,
            claims=verdict.claims,
        )
        feed = self._join(session)
        try:
            await self._ask(
                session.game_id,
                feed,
                feed.join(session, verdict.since, player=verdict.claims is not None),
            )
            if feed.synced(session):
                self._report_presence(session.game_id, feed)
                await self._read(session, feed)
        except ConnectionClosed:
            pass
        finally:
            self._leave(session, feed)
            await session.wait_closed()

    def _count_close(self, code: int) -> None:
        self._m_closes.labels(str(code)).inc()

    def _join(self, session: Session) -> Feed[Session]:
        assert self.bus is not None
        self.sessions.add(session)
        if len(self.sessions) == self.config.capacity:
            self._beat_now()  # full: discovery should stop placing clients here at once
        self.per_ip[session.remote] = self.per_ip.get(session.remote, 0) + 1
        feed = self.rooms.get(session.game_id)
        if feed is None:
            feed = self.rooms[session.game_id] = Feed()
            self.bus.subscribe(session.game_id)
        return feed

    def _leave(self, session: Session, feed: Feed[Session]) -> None:
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
        synced = feed.synced(session)
        feed.leave(session)
        if synced:
            self._report_presence(session.game_id, feed)
        if not feed and self.rooms.get(session.game_id) is feed:
            del self.rooms[session.game_id]
            self.bus.unsubscribe(session.game_id)

    async def _read(self, session: Session, feed: Feed[Session]) -> None:
        async for frame in session.ws:
            self.client_frames_total += 1
            if session.rate.take(time.monotonic()):
                session.strikes = max(0, session.strikes - 1)  # good behaviour earns strikes back
            else:
                session.strikes += 1
                if session.strikes > MAX_STRIKES:
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
                self._run(session.game_id, feed, feed.ask_sync(session))

    # --- health ---------------------------------------------------------------------------

    def _healthz(self, _request: HttpRequest) -> Response:
        healthy = self.broker_up and not self.draining and self.tasks.failure is None
        if self.tasks.failure is not None:
            status = "failed"
        elif self.draining:
            status = "draining"
        else:
            status = "ok" if healthy else "broker_unreachable"
        return json_response(
            200 if healthy else 503,
            {
                "status": status,
                "component": "edge",
                "id": self.config.id,
                "region": self.config.region,
                "connections": len(self.sessions),
                "games": len(self.rooms),
                "brokerEpoch": self.broker_epoch,
            },
        )


async def main(config: EdgeConfig) -> None:
    """Run an edge until SIGINT/SIGTERM (SIGTERM drains); exit non-zero if a loop crashed."""
    await run_server(EdgeServer(config))
