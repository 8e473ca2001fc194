"""The discovery process: heartbeats in on a REP socket, placement out over HTTP.

Thin glue around the pure parts (``registry``, ``placement``, ``regions``):

* a ``zmq.asyncio`` REP socket on ``tcp://rep_host:rep_port`` answers every
  request (``xlmate.heartbeat``) with exactly one reply; a frame that does
  not decode is answered ``{"ok": false, "error": "bad_frame"}`` and counted in
  ``xlmate_discovery_bad_frames_total``, as are peers that fail the ZeroMQ
  handshake (seen through a socket monitor); frames over ``MAX_MSG_SIZE`` make
  libzmq drop the connection before they reach us;
* brokers heartbeat on the same socket (``BrokerHeartbeat``): ``brokers``
  keeps the live broker of each shard and the cluster's shard count (fixed by
  ``--shards N``, else by the first broker), refusing a broker with another
  count (``shard_count``) or a second live broker for a shard (``shard_taken``);
  every reply to an edge's heartbeat carries the shard map edges route by;
* a sweep task forgets edges and brokers silent for 3 of their own intervals;
* HTTP on ``host:port`` (``xlmate.httpd`` over the ``websockets`` server):
  ``GET /v1/nodes/discovery``, ``GET /v1/nodes``, ``GET /v1/brokers``,
  ``GET /healthz``, ``GET /metrics``,
  with CORS for the origins of ``--allow-origin`` (preflight included) so platform
  pages can ask for an edge; other methods get 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import zmq
import zmq.asyncio
from websockets.asyncio.server import Server, serve
from websockets.http11 import Response
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils.monitor import parse_monitor_message

from xlmate import curve, gcfreeze, logs, looplag, metrics
from xlmate.config import DiscoveryConfig, tcp
from xlmate.constants import GAME_ID_RE
from xlmate.discovery.brokers import BrokerRegistry
from xlmate.discovery.leases import Leases
from xlmate.discovery.placement import place
from xlmate.discovery.regions import RegionTable, default_table, load_table
from xlmate.discovery.registry import DEFAULT_MAX_NODES, BeatResult, Registry
from xlmate.errors import ConfigError, WireError
from xlmate.heartbeat import (
    BAD_FRAME,
    OK_REPLY,
    REGISTRY_FULL,
    BrokerHeartbeat,
    Goodbye,
    Heartbeat,
    Lease,
    Reply,
    decode_request,
    encode_reply,
)
from xlmate.httpd import (
    HttpRequest,
    OriginPolicy,
    Router,
    json_response,
    metrics_response,
    refuse_websocket,
)
from xlmate.lifecycle import run_server
from xlmate.supervision import Supervisor

log = logging.getLogger("xlmate.discovery")

MAX_MSG_SIZE: Final = 64 * 1024  # libzmq drops peers sending bigger frames
MAX_FALLBACKS: Final = 20  # fallbacks listed in "nodes" after "node"
SWEEP_INTERVAL_S: Final = 0.1
BAD_GAME_ID: Final = "gameId must be 1-64 characters of [A-Za-z0-9_-]"
RETRY_AFTER_S: Final = 1  # a 503's Retry-After: about one failover, or one edge heartbeat
_BAD_REPLY: Final = encode_reply(Reply(False, BAD_FRAME))
_FULL_REPLY: Final = encode_reply(Reply(False, REGISTRY_FULL))
_INTERNAL_REPLY: Final = encode_reply(Reply(False, "internal"))
_HANDSHAKE_FAILURES: Final = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class _AccessLog(logging.LoggerAdapter[logging.Logger]):
    """``websockets`` logs every HTTP response at INFO; discovery sends one per client: DEBUG.

    Its own DEBUG lines are raw request lines and headers: dropped, never written.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level == logging.DEBUG:
            return
        super().log(logging.DEBUG if level == logging.INFO else level, msg, *args, **kwargs)


class DiscoveryServer:
    """Registry + placement behind a REP socket and an HTTP API.

    ``start()`` binds both (port 0 picks a free port: read ``http_port`` and
    ``rep_port`` afterwards); ``close()`` is idempotent; ``wait_closed()``
    returns once every socket is closed.  ``clock`` is the registry's time
    source (seconds, monotonic).
    """

    def __init__(
        self,
        config: DiscoveryConfig,
        *,
        regions: RegionTable | None = None,
        max_nodes: int = DEFAULT_MAX_NODES,
        max_fallbacks: int = MAX_FALLBACKS,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        if regions is None:
            regions = load_table(config.regions_file) if config.regions_file else default_table()
        self.regions = regions
        self.registry = Registry(max_nodes=max_nodes)
        self.brokers = BrokerRegistry(config.shards)
        self.leases = Leases(clock())  # each paired shard's lease (the third vote)
        self._claim_refused: dict[str, str] = {}  # broker id -> the refusal last logged
        self.http_port = config.port
        self.rep_port = config.rep_port
        self._max_fallbacks = max_fallbacks
        self._sweep_interval_s = sweep_interval_s
        self._clock = clock
        self._ctx: zmq.asyncio.Context | None = None
        self._rep: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._http: Server | None = None
        self.tasks = Supervisor("discovery", self.close)
        self._state = "new"  # new -> running -> closing -> closed
        self._closed = asyncio.Event()
        self._shutdown: asyncio.Task[None] | None = None
        self._full_warned = False

        self.metrics = metrics.new_registry()
        self._m_heartbeats = metrics.counter(
            self.metrics, "discovery_heartbeats", "Heartbeat requests by result", ("result",)
        )
        self._m_goodbyes = metrics.counter(
            self.metrics, "discovery_goodbyes", "Edges that said goodbye"
        )
        self._m_bad = metrics.counter(
            self.metrics,
            "discovery_bad_frames",
            "Frames or peers on the REP socket that were not ours",
            ("reason",),
        )
        self._m_placements = metrics.counter(
            self.metrics, "discovery_placements", "Placement answers by outcome", ("outcome",)
        )
        self._m_evictions = metrics.counter(
            self.metrics, "discovery_evictions", "Edges forgotten after missing 3 heartbeats"
        )
        known = metrics.gauge(self.metrics, "discovery_nodes", "Edges in the registry")
        known.set_function(lambda: len(self.registry))
        healthy = metrics.gauge(
            self.metrics, "discovery_nodes_healthy", "Edges heartbeating in time"
        )
        healthy.set_function(lambda: len(self.registry.healthy(self._clock())))
        available = metrics.gauge(
            self.metrics,
            "discovery_nodes_available",
            "Healthy edges placement may offer (not draining, with room)",
        )
        available.set_function(
            lambda: sum(1 for n in self.registry.healthy(self._clock()) if n.available)
        )
        self.lag = looplag.watch(self.metrics)  # xlmate_loop_lag_* (xlmate/looplag.py)
        gcfreeze.watch(self.metrics)  # xlmate_gc_* (xlmate/gcfreeze.py)
        self._m_broker_beats = metrics.counter(
            self.metrics,
            "discovery_broker_heartbeats",
            "Broker heartbeats by result (ok, shard_count, shard_taken)",
            ("result",),
        )
        self._m_leases = metrics.counter(
            self.metrics,
            "discovery_lease_claims",
            "Paired brokers' lease claims by result (granted, refused; renewals not counted)",
            ("result",),
        )
        for result in ("granted", "refused"):
            self._m_leases.labels(result)
        brokers = metrics.gauge(self.metrics, "discovery_brokers", "Live brokers")
        brokers.set_function(lambda: len(self.brokers.alive(self._clock())))
        for result in ("ok", "shard_count", "shard_taken"):
            self._m_broker_beats.labels(result)
        for reason in ("decode", "multipart", "handshake"):
            self._m_bad.labels(reason)
        for result in ("ok", "refused"):
            self._m_heartbeats.labels(result)
        for outcome in ("region", "fallback", "anywhere", "no_nodes", "not_ready", "bad_request"):
            self._m_placements.labels(outcome)

        self.router = Router(OriginPolicy(config.allow_origins))
        self.router.get("/v1/nodes/discovery", self._get_discovery)
        self.router.get("/v1/nodes", self._get_nodes)
        self.router.get("/v1/brokers", self._get_brokers)
        self.router.get("/healthz", self._get_healthz)
        self.router.get("/metrics", lambda _req: metrics_response(self.metrics))

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Bind the REP socket and the HTTP server, start the background tasks."""
        if self._state != "new":
            raise RuntimeError("DiscoveryServer.start() can be called once")
        self._state = "running"
        cfg = self.config
        try:
            self._ctx = zmq.asyncio.Context()
            rep = self._ctx.socket(zmq.REP)
            self._rep = rep
            rep.setsockopt(zmq.LINGER, 0)
            rep.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_SIZE)
            if cfg.curve_dir is not None:
                self._auth = curve.start_authenticator(self._ctx, cfg.curve_dir)
                curve.make_server(rep, curve.load_pair(cfg.curve_dir, "discovery"))
            self._monitor = rep.get_monitor_socket(_HANDSHAKE_FAILURES)
            endpoint = tcp(cfg.rep_host, cfg.rep_port)  # port 0: libzmq picks a free one
            try:
                rep.bind(endpoint)
            except zmq.ZMQError as exc:
                raise ConfigError(f"cannot bind the heartbeat socket {endpoint}: {exc}") from exc
            bound = rep.getsockopt_string(zmq.LAST_ENDPOINT)
            self.rep_port = int(bound.rsplit(":", 1)[1])
            try:
                self._http = await serve(
                    refuse_websocket,
                    cfg.host,
                    cfg.port,
                    process_request=self.router.process_request,
                    logger=_AccessLog(logging.getLogger("xlmate.discovery.http")),
                )
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen for HTTP on {cfg.host}:{cfg.port}: {exc.strerror or exc}"
                ) from exc
            self.http_port = next(iter(self._http.sockets)).getsockname()[1]
            if self._state != "running":  # close() was called while we were binding
                self._http.close()
                await self._http.wait_closed()
                return
        except BaseException:
            await self._teardown()
            self._state = "closed"
            self._closed.set()
            raise
        self.lag.start(self.tasks, "discovery.loop_lag")
        self.tasks.loop(self._serve_rep(), "discovery.rep_loop")
        self.tasks.loop(self._sweep(), "discovery.sweep_loop")
        self.tasks.loop(self._watch_monitor(), "discovery.monitor_loop")
        log.info(
            "discovery: HTTP on http://%s:%d, heartbeats on tcp://%s:%d, %d regions in the table",
            cfg.host,
            self.http_port,
            cfg.rep_host,
            self.rep_port,
            len(self.regions.regions),
        )

    @property
    def failure(self) -> str | None:
        """The loop whose crash closed discovery, if one did (the process exits non-zero)."""
        return self.tasks.failure

    def close(self) -> None:
        """Stop serving; idempotent.  ``wait_closed()`` waits for the end."""
        if self._state == "new":
            self._state = "closed"
            self._closed.set()
        if self._state != "running":
            return
        self._state = "closing"
        if self._http is not None:
            self._http.close()
        self._shutdown = asyncio.ensure_future(self._close_all())

    async def wait_closed(self) -> None:
        """Return once ``close()`` has finished closing every socket."""
        await self._closed.wait()

    async def _close_all(self) -> None:
        try:
            await self.tasks.close()
            await self._teardown()
        finally:
            self._state = "closed"
            self._closed.set()
            log.info("discovery closed")

    async def _teardown(self) -> None:
        """Stop HTTP, close the zmq sockets with linger 0 and term the context."""
        if self._http is not None:
            self._http.close()
            await self._http.wait_closed()
        if self._rep is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._rep.disable_monitor()
        for sock in (self._monitor, self._rep):
            if sock is not None:
                sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        if self._ctx is not None:
            self._ctx.term()

    # --- heartbeats --------------------------------------------------------------

    async def _serve_rep(self) -> None:
        """Receive one request, send exactly one reply, forever."""
        rep = self._rep
        assert rep is not None
        while True:
            try:
                frames = await rep.recv_multipart()
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                log.warning("heartbeat socket receive failed: %s", exc)
                continue
            try:
                reply = self._handle(frames)
            except Exception:
                log.exception("unexpected error handling a heartbeat")
                reply = _INTERNAL_REPLY
            try:
                await rep.send(reply)
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                log.warning("heartbeat reply failed: %s", exc)

    def _handle(self, frames: list[bytes]) -> bytes:
        """One request's frames -> the reply frame."""
        if len(frames) != 1:
            self._m_bad.labels("multipart").inc()
            log.debug("dropped a %d-frame request", len(frames))
            return _BAD_REPLY
        try:
            request = decode_request(frames[0])
        except WireError as exc:
            self._m_bad.labels("decode").inc()
            log.debug("bad heartbeat frame: %s", exc)
            return _BAD_REPLY
        if isinstance(request, Goodbye):
            self._m_goodbyes.inc()
            if self.registry.remove(request.id) is not None:
                logs.event(
                    log,
                    "edge_left",
                    f"edge {request.id} said goodbye",
                    edge=request.id,
                    why="goodbye",
                )
            elif self.brokers.remove(request.id) is not None:
                logs.event(
                    log,
                    "broker_left",
                    f"broker {request.id} said goodbye",
                    broker=request.id,
                    why="goodbye",
                )
            return OK_REPLY
        if isinstance(request, BrokerHeartbeat):
            return self._broker_beat(request)
        result = self.registry.beat(request, self._clock())
        if not result.accepted:
            self._m_heartbeats.labels("refused").inc()
            if not self._full_warned:
                self._full_warned = True
                log.warning(
                    "registry full (%d edges): refusing new edge %s", len(self.registry), request.id
                )
            return _FULL_REPLY
        self._m_heartbeats.labels("ok").inc()
        self._log_change(request, result)
        shard_map = self.brokers.shard_map(self._clock())
        return OK_REPLY if shard_map is None else encode_reply(Reply(True, shards=shard_map))

    def _broker_beat(self, hb: BrokerHeartbeat) -> bytes:
        """A broker's heartbeat: register it, or refuse it with a sentence it logs."""
        result = self.brokers.beat(hb, self._clock())
        if not result.accepted:
            self._m_broker_beats.labels(result.error or "refused").inc()
            logs.event(
                log,
                "broker_refused",
                f"refused broker {hb.id}: {result.message}",
                logging.WARNING,
                broker=hb.id,
                shard=f"{hb.shard}/{hb.shards}",
                error=result.error,
            )
            return encode_reply(Reply(False, result.error, result.message))
        self._m_broker_beats.labels("ok").inc()
        lease = self._lease(hb) if hb.repl is not None else None
        if result.previous is None:
            logs.event(
                log,
                "broker_joined",
                f"broker {hb.id} joined: shard {hb.shard}/{hb.shards} ({hb.role}), "
                f"epoch {hb.epoch}, xsub {hb.xsub}",
                broker=hb.id,
                shard=f"{hb.shard}/{hb.shards}",
                epoch=hb.epoch,
                xsub=hb.xsub,
            )
        return OK_REPLY if lease is None else encode_reply(Reply(True, lease=lease))

    def _lease(self, hb: BrokerHeartbeat) -> Lease:
        """A paired broker's heartbeat: apply the lease rules (``discovery.leases``)."""
        decision = self.leases.beat(hb, self._clock())
        lease = decision.lease
        if decision.granted:
            self._m_leases.labels("granted").inc()
            logs.event(
                log,
                "lease_granted",
                f"shard {hb.shard}/{hb.shards}: lease granted to {hb.id} in term {lease.term}",
                logging.WARNING,
                broker=hb.id,
                shard=f"{hb.shard}/{hb.shards}",
                term=lease.term,
            )
        elif decision.why:
            self._m_leases.labels("refused").inc()
            # A standby cut off from its active broker claims on every heartbeat: log a
            # refusal when its reason changes, not four times a second.
            if self._claim_refused.get(hb.id) != decision.why:
                if len(self._claim_refused) >= 1024:
                    self._claim_refused.clear()
                self._claim_refused[hb.id] = decision.why
                log.info("shard %s: claim of %s refused: %s", hb.shard, hb.id, decision.why)
        if decision.granted or decision.renewed:
            self._claim_refused.pop(hb.id, None)
        return lease

    @staticmethod
    def _log_change(hb: Heartbeat, result: BeatResult) -> None:
        prev = result.previous
        if prev is None:
            logs.event(
                log,
                "edge_joined",
                f"edge {hb.id} joined: region {hb.region}, url {hb.url}",
                edge=hb.id,
                region=hb.region,
                url=hb.url,
                connections=hb.connections,
                capacity=hb.capacity,
                draining=hb.draining,
            )
            return
        if prev.draining != hb.draining:
            log.info("edge %s %s", hb.id, "is draining" if hb.draining else "stopped draining")
        if prev.url != hb.url or prev.region != hb.region:
            log.info("edge %s moved: region %s, url %s", hb.id, hb.region, hb.url)

    async def _sweep(self) -> None:
        """Forget silent edges, every ``sweep_interval_s``."""
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            now = self._clock()
            for entry in self.brokers.evict(now):
                hb = entry.heartbeat
                logs.event(
                    log,
                    "broker_left",
                    f"broker {hb.id} (shard {hb.shard}/{hb.shards}) evicted: no heartbeat "
                    f"for {now - entry.last_seen:.1f} s",
                    logging.WARNING,
                    broker=hb.id,
                    why="evicted",
                )
            evicted = self.registry.evict(now)
            if evicted:
                self._full_warned = False
            for node in evicted:
                self._m_evictions.inc()
                silent = round(now - node.last_seen, 1)
                logs.event(
                    log,
                    "edge_left",
                    f"edge {node.id} evicted: no heartbeat for {silent} s",
                    edge=node.id,
                    why="evicted",
                    silent_s=silent,
                    interval_ms=node.heartbeat.interval_ms,
                )

    async def _watch_monitor(self) -> None:
        """Count peers that fail the ZeroMQ handshake (raw TCP garbage, port scans)."""
        monitor = self._monitor
        assert monitor is not None
        while True:
            try:
                message = await monitor.recv_multipart()
            except zmq.ZMQError:
                return
            try:
                event = parse_monitor_message(message)["event"]
            except Exception:  # a malformed monitor message is not worth a crash
                continue
            if event & _HANDSHAKE_FAILURES:
                self._m_bad.labels("handshake").inc()
                log.debug("a peer failed the ZeroMQ handshake on the heartbeat socket")

    # --- HTTP --------------------------------------------------------------------

    def _get_discovery(self, request: HttpRequest) -> Response:
        game_id = request.query.get("gameId")
        if game_id is not None and not GAME_ID_RE.fullmatch(game_id):
            self._m_placements.labels("bad_request").inc()
            return json_response(
                400,
                {"error": "bad_request", "message": BAD_GAME_ID},
            )
        region = (request.query.get("region") or "").strip().lower() or None
        healthy = self.registry.healthy(self._clock())
        nodes = place(
            healthy,
            region,
            game_id,
            self.regions,
            limit=1 + self._max_fallbacks,
            shards=self.brokers.shards,
        )
        if not nodes:
            # Edges with room but none ready for the game's shard: a broker is recovering
            # or failing over, or the edges are still connecting.  Worth a retry soon.
            no_room = not any(n.available for n in healthy)
            self._m_placements.labels("no_nodes" if no_room else "not_ready").inc()
            return json_response(
                503,
                {"error": "no_nodes"} if no_room else {"error": "no_nodes", "reason": "not_ready"},
                # (exposed to pages of other origins too, so a browser client can honour it)
                [
                    ("Retry-After", str(RETRY_AFTER_S)),
                    ("Access-Control-Expose-Headers", "Retry-After"),
                ],
            )
        if region is None:
            outcome = "anywhere"
        else:
            outcome = "region" if nodes[0].region == region else "fallback"
        self._m_placements.labels(outcome).inc()
        return json_response(
            200,
            {
                "node": nodes[0].public(),
                "nodes": [n.public() for n in nodes[1:]],
            },
        )

    def _get_nodes(self, _request: HttpRequest) -> Response:
        now = self._clock()
        return json_response(
            200, {"nodes": [node.operator_view(now) for node, _age in self.registry.all(now)]}
        )

    def _get_brokers(self, _request: HttpRequest) -> Response:
        return json_response(200, self.brokers.view(self._clock()))

    def _get_healthz(self, _request: HttpRequest) -> Response:
        nodes = len(self.registry.healthy(self._clock()))
        if self._state != "running" or self.tasks.failure is not None:
            return json_response(503, {"status": "unavailable", "nodes": nodes})
        return json_response(200, {"status": "ok", "nodes": nodes})


async def main(config: DiscoveryConfig) -> None:
    """``xlmate discovery``: run until SIGINT/SIGTERM."""
    await run_server(DiscoveryServer(config))
