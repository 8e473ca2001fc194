"""The edge process: players' WebSockets in, the broker's bus out and back.

Glue only, wiring the edge's parts together:

- ``edge.handshake`` decides who may open a socket; ``edge.session`` is one
  socket's bounded outbox; ``edge.inbound`` reads its frames (rate limit,
  parse) and hands them here;
- ``edge.commands`` puts players' commands on the bus and tracks them until
  acked (``edge.pending``);
- ``edge.games`` keeps one ``Feed`` per game (``edge.delivery``, the pure
  state machine that decides what each socket sees, in ``v`` order) and
  carries out its actions; ``_on_bus`` is the one place that turns bus
  messages into their inputs;
- ``edge.views`` answers the HTTP game views; ``_healthz`` the health check;
- ``edge.shardbus`` is the bus: one ``BusClient`` per broker shard, each game's
  traffic going only to its shard's broker (``edge.shardmap``: from ``--broker``
  options, or discovery's shard map in the replies to our heartbeats).  Each
  broker is watched on its own beat: a restart or return of a shard's active
  broker, or a switch to the other broker of a pair (a beat of a higher term,
  or discovery's map), refreshes that shard's games and re-sends its commands
  only.  A socket for a game whose shard has no known broker is closed 1011
  naming the shard.
- readiness: the heartbeat to discovery lists the shards whose active broker
  this edge does not hear now (``unready``), so discovery places no client of
  those games here; a change is reported at once, not at the next interval.

Every task is owned by one ``Supervisor`` (``xlmate.supervision``): a loop
that crashes turns ``/healthz`` to 503 and ends the process non-zero.  The
edge holds nothing the broker cannot give back, so it can die at any time.

Endpoints on one port (``routes``; WebSocket paths pass through to ``_handle``):
``/v1/games/{id}/ws`` (players), ``/v1/games/{id}/spectate``, and GET
``/v1/games/{id}``, ``/v1/games/{id}/pgn``, ``/healthz``, ``/metrics``, and the
browser pages ``/play/{id}``, ``/watch/{id}`` (``edge.pages``).  ``--allow-origin``
restricts which browser origins may open sockets and read the views (``xlmate.httpd``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import zmq.asyncio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from xlmate import curve, gcfreeze, looplag, metrics
from xlmate.config import EdgeConfig, cluster_secret, tcp
from xlmate.constants import CLOSE_DRAINING, CLOSE_INTERNAL, MAX_CLIENT_FRAME
from xlmate.edge import connlog, handshake
from xlmate.edge.commands import Commands
from xlmate.edge.discovery_client import DiscoveryClient
from xlmate.edge.games import Games
from xlmate.edge.handshake import salvage_id as _salvage_id
from xlmate.edge.inbound import MAX_STRIKES, Handlers, read_client
from xlmate.edge.pages import Pages
from xlmate.edge.pending import PendingCommands
from xlmate.edge.session import Flusher, Session, TokenBucket, client_address
from xlmate.edge.shardbus import ShardedBus
from xlmate.edge.shardmap import BrokerAddress, Routing, static_routes
from xlmate.edge.views import GameViews
from xlmate.edge.wsconn import EdgeConnection
from xlmate.heartbeat import Heartbeat, Reply
from xlmate.httpd import HttpRequest, OriginPolicy, Router, json_response, metrics_response
from xlmate.lifecycle import run_server
from xlmate.messages import Command
from xlmate.supervision import Faults, Supervisor
from xlmate.wire import (
    AckMsg,
    BusMessage,
    EdgeBeat,
    EventMsg,
    HeadMsg,
    PresenceMsg,
    RejectMsg,
    encode,
)

__all__ = ["MAX_STRIKES", "EdgeServer", "_salvage_id", "main"]

log = logging.getLogger("xlmate.edge")

QUEUE_LIMIT: Final = 256  # frames queued per socket before it counts as a slow consumer
BROKER_SILENCE_MS: Final = 2000  # no broker beat for this long: the broker is gone
BROKER_REOPEN_MS: Final = 5000  # silent this long: new bus sockets to it (and again after)


@dataclass(slots=True)
class BrokerState:
    """What the edge hears from one shard's broker."""

    epoch: str | None = None
    seen_ms: int = 0
    up: bool = False
    reopened_ms: int = 0  # when its bus sockets were last replaced for its silence


def mono_ms() -> int:
    """Monotonic milliseconds for local timers."""
    return time.monotonic_ns() // 1_000_000


class EdgeServer:
    """One edge: see the module docstring."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.secret, _ = cluster_secret(config.secret)
        self.max_per_ip = config.max_per_ip
        self.sessions: set[Session] = set()
        self._flusher = Flusher()  # writes what sessions framed, once per loop turn
        self.per_ip: dict[str, int] = {}
        self.pending = PendingCommands(
            resend_ms=config.resend_ms, timeout_ms=config.command_timeout_ms
        )
        self.draining = False
        # each broker of each shard, by its beat: (shard, its addresses) -> what we hear
        self.brokers: dict[tuple[int, BrokerAddress], BrokerState] = {}
        self._unready: tuple[int, ...] | None = None  # as last reported to discovery
        self._routing_settled = asyncio.Event()  # the shard map is known (or given up on)
        self.tasks = Supervisor("edge", self.close)
        self._faults = Faults()
        self._shutdown: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._ws: Server | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self.bus: ShardedBus | None = None
        self.commands: Commands | None = None
        self.games: Games | None = None
        self.discovery: DiscoveryClient | None = None
        self._handlers = Handlers(
            submit=self._submit,
            ask_sync=self._ask_sync,
            error=self._error,
            frame_seen=self._frame_seen,
        )
        self._init_metrics()

    def _init_metrics(self) -> None:
        reg = self.registry = metrics.new_registry()
        self._m_conns = metrics.gauge(reg, "edge_connections", "open WebSockets")
        self._m_conns.set_function(lambda: len(self.sessions))
        self._m_rooms = metrics.gauge(reg, "edge_games", "games with a local socket")
        self._m_rooms.set_function(lambda: len(self.games or ()))
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
        self._m_fenced = metrics.counter(
            reg,
            "edge_fenced_bus_frames_total",
            "bus frames dropped because their broker is not its shard's active one",
        )
        self._m_switches = metrics.counter(
            reg, "edge_broker_switches_total", "times a shard's active broker changed"
        )
        self._m_fetches = metrics.counter(reg, "edge_fetches_total", "catch-up fetches")
        self.lag = looplag.watch(reg)  # xlmate_loop_lag_* (xlmate/looplag.py)
        gcfreeze.watch(reg)  # xlmate_gc_* (xlmate/gcfreeze.py)

    # --- lifecycle ------------------------------------------------------------

    @property
    def failure(self) -> str | None:
        """The loop whose crash closed this edge, if one did."""
        return self.tasks.failure

    async def start(self) -> None:
        """Connect the bus, start serving, start heartbeating."""
        cfg = self.config
        self.lag.start(self.tasks, "edge.loop_lag")
        if gcfreeze.freeze_wanted(asyncio.get_running_loop()):
            # Thousands of sockets' state out of every full collection (xlmate/gcfreeze.py).
            gcfreeze.GcFreezer(thaw=gcfreeze.thaw_every()).start(self.tasks, "edge.gc_freezer")
        self._faults = Faults.from_env()
        self._ctx = zmq.asyncio.Context()
        self.bus = ShardedBus(
            cfg,
            self._ctx,
            self._routing(),
            self._on_bus,
            self._m_bad.inc,
            self._on_broker_beat,
            self._m_fenced.inc,
        )
        self.bus.start(self.tasks, self._faults)
        if cfg.brokers or not cfg.discovery:
            self._routing_settled.set()
        self.commands = Commands(cfg.id, self.bus, self.pending, self._error)
        self.games = Games(
            cfg.id, self.bus, self.tasks, error=self._error, fetched=self._m_fetches.inc
        )
        self._ws = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=self.routes().process_request,
            create_connection=EdgeConnection,  # no reference cycle per closed socket
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
                on_reply=self._on_discovery_reply,
                context=self._ctx,
                interval_ms=cfg.heartbeat_ms,
                curve_keys=keys,
            )
            self.tasks.loop(self.discovery.run(), "edge.discovery_client")
        log.info("edge %s up: %s (region %s)", cfg.id, cfg.url, cfg.region)

    def _routing(self) -> Routing:
        """The shard map to start with: ``--broker`` options, else ``--broker-host``'s one."""
        cfg = self.config
        if cfg.brokers:
            count, routes = static_routes(cfg.brokers)
            return Routing(count, routes, "static")
        host = cfg.broker_host
        single = BrokerAddress(
            tcp(host, cfg.broker_xsub_port),
            tcp(host, cfg.broker_xpub_port),
            tcp(host, cfg.broker_catchup_port),
        )
        return Routing(1, {1: single}, "default")

    def _on_discovery_reply(self, reply: Reply) -> None:
        """Discovery answered a heartbeat: take its shard map, if it has one."""
        if reply.shards is not None and self.bus is not None:
            for shard in self.bus.update(reply.shards, self._hears):
                self._switched(shard)
            self._readiness_changed()
        if reply.ok:
            self._routing_settled.set()

    def routes(self) -> Router:
        """The HTTP routes; the WebSocket paths pass through to ``_handle``."""
        assert self.bus is not None
        views = GameViews(self.bus)
        router = Router(OriginPolicy(self.config.allow_origins))  # CORS + WebSocket Origin
        Pages(router.origins).add_routes(router)  # /play, /watch, /static (edge/pages.py)
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
            shards=self.bus.count if self.bus is not None else 0,
            unready=self._unready_now(),
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
        sessions = list(self.sessions)  # one 0.2 s budget for all, not 0.2 s per socket
        await asyncio.gather(*(session.drain(0.2) for session in sessions))
        for session in sessions:
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
        """Every bus message, by kind: the one place that reads their fields."""
        games, commands = self.games, self.commands
        assert games is not None and commands is not None
        if isinstance(message, EventMsg):
            self.bus_events_total += 1
            games.on_event(message.game_id, message.v, message.json)
            ack = message.ack
            if ack is not None and ack.edge_id == self.config.id:
                commands.acked(message.game_id, ack.seat, ack.command_id, message.v)
        elif isinstance(message, AckMsg):
            games.on_head(message.game_id, message.v)  # the event itself may have been dropped
            commands.acked(message.game_id, message.seat, message.command_id, message.v)
        elif isinstance(message, RejectMsg):
            commands.rejected(
                message.game_id, message.seat, message.command_id, message.code, message.message
            )
        elif isinstance(message, HeadMsg):
            games.on_head(message.game_id, message.v)
        elif isinstance(message, PresenceMsg):
            games.on_presence(message.game_id, message.json)
        else:  # (beats never get here: the buses take them apart, see edge.bus)
            self._m_bad.inc()

    def _on_broker_beat(
        self, shard: int, address: BrokerAddress, epoch: str, switched: bool
    ) -> None:
        """A beat of one of ``shard``'s brokers (``edge.shardbus`` has already applied its
        role and term).  Its shard's games are resynced when the beat switched the
        shard to this broker, or when it is the active one and restarted or is back."""
        assert self.bus is not None
        state = self.brokers.get((shard, address))
        if state is None:
            state = self.brokers[(shard, address)] = BrokerState()
        restarted = state.epoch is not None and epoch != state.epoch
        returned = not state.up
        state.seen_ms = mono_ms()
        state.up = True
        active = self.bus.routing.address(shard) == address
        name = self._shard_name(shard, address)
        if switched:
            self._switched(shard)
        elif active and restarted:
            log.warning("%s restarted (epoch %s -> %s): resyncing", name, state.epoch, epoch)
        elif active and returned and state.epoch is not None:
            log.warning("%s is back (epoch %s): resyncing", name, epoch)
        state.epoch = epoch
        if active and not switched and (restarted or (returned and self.games)):
            self._resync(shard)
        if switched or returned:
            self._readiness_changed()

    def _switched(self, shard: int) -> None:
        """``shard``'s active broker changed: resync its games on the new one (none yet:
        wait for it, its commands stay pending and its fetches retry)."""
        assert self.bus is not None
        if self.bus.routing.address(shard) is not None:
            self._m_switches.inc()
            self._resync(shard)

    def _resync(self, shard: int) -> None:
        """Fetch the shard's games, re-send their presence and commands (to its active
        broker: the broker applies a command it has seen before at most once)."""
        assert self.games is not None and self.commands is not None
        self.games.refresh(shard)
        self.commands.resend_everything(shard)

    def _shard_name(self, shard: int, address: BrokerAddress) -> str:
        count = self.bus.count if self.bus is not None else 1
        members = len(self.bus.routing.members(shard)) if self.bus is not None else 1
        name = "broker" if count == 1 else f"broker of shard {shard}/{count}"
        return name if members < 2 else f"{name} at {address.xsub}"

    @property
    def broker_up(self) -> bool:
        """Whether any shard's active broker beats (the edge can serve some games)."""
        if self.bus is None:  # (not started: whatever has beaten)
            return any(state.up for state in self.brokers.values())
        return any(self._active_up(shard) for shard in range(1, self.bus.count + 1))

    def _hears(self, shard: int, address: BrokerAddress) -> bool:
        """Whether that broker of ``shard`` beats now."""
        state = self.brokers.get((shard, address))
        return state is not None and state.up

    def _active_up(self, shard: int) -> bool:
        """Whether ``shard`` has an active broker and this edge hears it."""
        assert self.bus is not None
        address = self.bus.routing.address(shard)
        state = self.brokers.get((shard, address)) if address is not None else None
        return state is not None and state.up

    def _unready_now(self) -> tuple[int, ...]:
        """The shards whose active broker this edge cannot reach now (heartbeat ``unready``)."""
        if self.bus is None:
            return ()
        return tuple(s for s in range(1, self.bus.count + 1) if not self._active_up(s))

    def _readiness_changed(self) -> None:
        """Tell discovery at once when the set of unready shards changed."""
        unready = self._unready_now()
        if unready != self._unready:
            self._unready = unready
            self._beat_now()

    # --- presence ---------------------------------------------------------------

    def _beat_now(self) -> None:
        """Tell discovery about a change that should not wait for the next heartbeat."""
        if self.discovery is not None and not self.draining:
            self.tasks.spawn(self.discovery.beat_now(), "edge.beat_now")

    async def _beat_loop(self) -> None:
        """Beat to the broker (keeps our presence alive), watch the broker's beat.

        Presence is reported on every change and re-reported for every room when
        the broker restarts or comes back (``_resync_everything``); there is no
        periodic re-report, so idle games cost nothing here.
        """
        assert self.bus is not None
        beat = encode(EdgeBeat(edge_id=self.config.id))
        while True:
            self._faults.check("edge.beat_loop")
            self.bus.publish_all(beat)
            now = mono_ms()
            silenced = False
            for (shard, address), state in list(self.brokers.items()):
                if address not in self.bus.routing.members(shard):
                    del self.brokers[(shard, address)]  # it left the map
                    continue
                name = self._shard_name(shard, address)
                if state.up and now - state.seen_ms > BROKER_SILENCE_MS:
                    state.up, silenced = False, True
                    log.warning("%s silent for %d ms", name, BROKER_SILENCE_MS)
                silent = now - max(state.seen_ms, state.reopened_ms)
                if not state.up and silent > BROKER_REOPEN_MS and self.bus.reopen(shard, address):
                    state.reopened_ms = now
                    log.warning(
                        "%s silent for %d ms: new bus sockets to it", name, now - state.seen_ms
                    )
            if silenced or self._unready is None:
                self._readiness_changed()
            await asyncio.sleep(0.5)

    # --- commands -------------------------------------------------------------------

    async def _resend_loop(self) -> None:
        assert self.commands is not None
        interval = max(0.02, self.config.resend_ms / 4000)
        while True:
            await asyncio.sleep(interval)
            self._faults.check("edge.resend_loop")
            self.commands.resend_due(mono_ms())

    def _submit(self, session: Session, command: Command) -> None:
        assert self.commands is not None
        self.commands.submit(session, command, mono_ms())

    def _ask_sync(self, session: Session) -> None:
        assert self.games is not None
        self.games.ask_sync(session)

    def _frame_seen(self) -> None:
        self.client_frames_total += 1

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
            connlog.refused(ws, verdict, remote)
            self._count_close(verdict.code)
            await ws.close(verdict.code, verdict.reason)
            return
        assert self.bus is not None
        if not self._routing_settled.is_set():  # starting: discovery's map is on its way
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._routing_settled.wait(), 2.0)
            self._routing_settled.set()  # (discovery silent: the configured broker it is)
        if not self.bus.known(verdict.game_id):  # its shard has never had a broker
            refusal = handshake.Refusal(CLOSE_INTERNAL, self.bus.unknown_reason(verdict.game_id))
            connlog.refused(ws, refusal, remote)
            self._count_close(refusal.code)
            await ws.close(refusal.code, refusal.reason)
            return
        forget_handshake(ws)
        session = Session(
            ws,
            verdict.game_id,
            verdict.claims.color if verdict.claims else None,
            remote=remote,
            queue_limit=QUEUE_LIMIT,
            rate=TokenBucket(self.config.rate_per_s, self.config.rate_burst, time.monotonic()),
            flusher=self._flusher,
            on_kill=self._count_close,
            claims=verdict.claims,
        )
        self._join(session)
        opened_at = connlog.opened(session)
        assert self.games is not None
        try:
            if await self.games.open(session, verdict.since):
                await read_client(session, self._handlers)
        except ConnectionClosed:
            pass
        finally:
            self._leave(session)
            await session.wait_closed()
            connlog.closed(session, ws, opened_at)

    def _count_close(self, code: int) -> None:
        self._m_closes.labels(str(code)).inc()

    def _join(self, session: Session) -> None:
        self.sessions.add(session)
        if len(self.sessions) == self.config.capacity:
            self._beat_now()  # full: discovery should stop placing clients here at once
        self.per_ip[session.remote] = self.per_ip.get(session.remote, 0) + 1

    def _leave(self, session: Session) -> None:
        assert self.games is not None
        session.stop()
        if session in self.sessions and len(self.sessions) == self.config.capacity:
            self._beat_now()  # room again
        self.sessions.discard(session)
        count = self.per_ip.get(session.remote, 1) - 1
        if count > 0:
            self.per_ip[session.remote] = count
        else:
            self.per_ip.pop(session.remote, None)
        self.games.close(session)

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
                "games": len(self.games or ()),
                "brokerEpoch": self._active_epoch(1),
                "shards": self._shards_view(),
            },
        )

    def _shards_view(self) -> dict[str, Any]:
        """The edge's shard map and what it hears from each broker (``/healthz``)."""
        if self.bus is None:
            return {}
        routing = self.bus.routing
        brokers: dict[str, Any] = {}
        for shard in range(1, routing.count + 1):
            address = routing.address(shard)
            state = self.brokers.get((shard, address)) if address is not None else None
            members = []
            for member_address in routing.members(shard):
                member = routing.member(shard, member_address)
                heard = self.brokers.get((shard, member_address))
                members.append(
                    {
                        "xsub": member_address.xsub,
                        "role": member.role if member else None,
                        "term": member.term if member else 0,
                        "epoch": member.epoch if member else None,
                        "up": bool(heard and heard.up),
                        "active": member_address == address,
                    }
                )
            brokers[str(shard)] = {
                "xsub": address.xsub if address else None,
                "up": bool(state and state.up),
                "epoch": state.epoch if state else None,
                "term": routing.term(shard),
                "members": members,
            }
        return {
            "count": routing.count,
            "source": routing.source,
            "brokers": brokers,
            "unready": list(self._unready_now()),
        }

    def _active_epoch(self, shard: int) -> str | None:
        """The epoch of ``shard``'s active broker, as its beats say (None: not heard)."""
        if self.bus is None:
            return None
        address = self.bus.routing.address(shard)
        state = self.brokers.get((shard, address)) if address is not None else None
        return state.epoch if state else None


def forget_handshake(ws: ServerConnection) -> None:
    """Empty the handshake's headers once read: ~3.3 KB per socket held for its lifetime.

    Nothing reads them after the handshake (``client_address`` and ``handshake.admit``
    are done); websockets keeps the request referenced by its parser for as long as
    the connection lives.  The objects stay (``ws.request = None`` would tell
    websockets the handshake never happened and break the connection), their contents
    go (benchmarks/socket_memory.md).
    """
    if ws.request is not None:
        ws.request.headers.clear()
    if ws.response is not None:
        ws.response.headers.clear()


async def main(config: EdgeConfig) -> None:
    """Run an edge until SIGINT/SIGTERM (SIGTERM drains); exit non-zero if a loop crashed."""
    await run_server(EdgeServer(config))
