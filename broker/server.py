"""The broker process: ZeroMQ glue around the game authority.

Sockets (all ``zmq.asyncio``, bound on ``config.host``):

- XSUB (``xsub_port``): edges' PUB sockets connect and send commands,
  presence reports and edge beats; we subscribe to everything.
- XPUB (``xpub_port``): edges' SUB sockets connect and subscribe to
  ``game:<id>``, ``edge:<id>`` and ``ctl``.  With ``XPUB_VERBOSE`` we see every
  subscription and answer a ``game:`` one with the game's ``head``, so a newly
  subscribed edge learns the current ``v`` even if no event follows.
- ROUTER (``catchup_port``): ``open`` / ``fetch`` / ``pgn`` requests.

One turn of the command loop: read up to ``MAX_BATCH`` waiting messages, feed
them to the authority, append the batch's journal records with one write,
fsync (policy ``always``: group commit), then publish.  Nothing is published
before it is journaled.

Shards (``--shard K/N``, docs/architecture.md "Broker shards"): the broker
sequences only the games its shard owns.  Every game it holds was checked when
it was created (``open``) or replayed (recovery refuses a journal holding
another shard's games), so a command for a game it holds needs no check; one
for a game it does not hold is hashed, and refused (``unavailable``) and
counted (``xlmate_broker_wrong_shard_total``) if another shard owns it.  It
heartbeats its shard, epoch and addresses to discovery (``--discovery``), which
is how edges find it; a refusal from discovery (another shard count, or a live
broker already on this shard) stops it with a non-zero exit.  Its ``/metrics``
carry ``shard`` and ``shards`` labels on every sample.

Pairs (``--peer``, docs/architecture.md "Broker pairs"): ``broker.pairing``
owns the replication sockets and the lease; this module asks it three things.
Whether to apply edges' messages at all (``accepting``: a standby or a fenced
active broker drops them, counted), which journal batches the standby has
acked (``released``: the outbox below holds every message queued after a batch
until then, like it holds them for the fsync), and what to beat.  A standby
applies the active broker's batches through ``apply_replicated`` and
publishes nothing but its ``ctl`` beats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from pathlib import Path
from typing import Any, Final

import zmq
import zmq.asyncio
from websockets.asyncio.server import Server, serve
from zmq.auth.asyncio import AsyncioAuthenticator

from xlmate import curve, gcfreeze, logs, looplag, metrics
from xlmate.broker.archive import Archive
from xlmate.broker.authority import Authority, Batch
from xlmate.broker.journal import Journal, read_records, scan_records
from xlmate.broker.pairing import Pairing, journal_is_empty
from xlmate.broker.records import GameEnded, Record
from xlmate.config import BrokerConfig, tcp
from xlmate.constants import UNAVAILABLE
from xlmate.edge.discovery_client import DiscoveryClient
from xlmate.errors import ConfigError, WireError
from xlmate.heartbeat import SHARD_COUNT, SHARD_TAKEN, BrokerHeartbeat, Reply
from xlmate.httpd import HttpRequest, Router, json_response, metrics_response, refuse_websocket
from xlmate.lifecycle import run_server
from xlmate.shards import shard_of
from xlmate.supervision import Faults, Supervisor
from xlmate.wire import (
    CTL_TOPIC,
    BrokerBeat,
    CommandFields,
    EdgeBeat,
    FetchRequest,
    MissingReply,
    OpenRequest,
    PgnRequest,
    PresenceReport,
    RejectMsg,
    decode,
    decode_inbound,
    edge_topic,
    encode,
)
from xlmate.zmqnow import Readable, send_now

log = logging.getLogger("xlmate.broker")

MAX_BATCH: Final = 512
MAX_INBOUND: Final = 64 * 1024  # bytes; zmq drops bigger frames (and their peer)
COMPACTION_SLICE: Final = 2000  # journal records decoded per turn of the loop
QUEUE_LIMIT: Final = 100_000  # messages queued per peer (XSUB in, XPUB out) before zmq drops


Outgoing = list[tuple[zmq.asyncio.Socket, list[bytes]]]
Held = list[tuple[int, Outgoing]]  # (the last batch seq journaled before them, messages)


def wall_ms() -> int:
    """Broker time: wall-clock milliseconds (journaled, so it must survive restarts)."""
    return time.time_ns() // 1_000_000


class BrokerServer:
    """The broker: see the module docstring."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.epoch = secrets.token_hex(6)
        self.journal = Journal(config.journal_dir)
        self.archive = Archive(config.journal_dir / "archive", durable=config.fsync != "never")
        self.authority = self._new_authority()
        self.registry = metrics.new_registry()
        self._m_bad = metrics.counter(
            self.registry, "broker_bad_frames_total", "bus frames dropped as garbage", ("socket",)
        )
        self._m_batches = metrics.counter(self.registry, "broker_batches_total", "journal batches")
        self._m_fsync = metrics.histogram(
            self.registry,
            "broker_fsync_seconds",
            "journal fsync time",
            (0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5),
        )
        self.lag = looplag.watch(self.registry)  # xlmate_loop_lag_* (xlmate/looplag.py)
        gcfreeze.watch(self.registry)  # xlmate_gc_* (xlmate/gcfreeze.py)
        self.shard = config.shard
        self._sharded = config.shard.sharded
        self._labels = metrics.constant_labels(
            {"shard": str(self.shard.index), "shards": str(self.shard.count)}
        )
        self._m_wrong_shard = metrics.counter(
            self.registry,
            "broker_wrong_shard",
            "commands and requests for games another shard owns (refused)",
            ("kind",),
        )
        for kind in ("cmd", "presence_report", "open", "fetch", "pgn"):
            self._m_wrong_shard.labels(kind)
        self.discovery: DiscoveryClient | None = None
        self._refused_since: float | None = None  # first shard_taken answer of a streak
        self.registered = False
        self.refusal: str | None = None  # discovery refused our shard: stop, exit non-zero
        self._m_games = metrics.gauge(self.registry, "broker_live_games", "games in play")
        self._m_games.set_function(lambda: len(self.authority.games))
        metrics.fast_counters(  # (self.authority: a standby's is replaced by a snapshot)
            self.registry,
            {
                "broker_commands": (
                    "player commands received",
                    lambda: self.authority.commands_total,
                ),
                "broker_events": ("game events published", lambda: self.authority.events_total),
                "broker_rejected": ("commands refused", lambda: self.authority.rejected_total),
                "broker_duplicates": (
                    "commands seen before (acked again, not applied)",
                    lambda: self.authority.duplicates_total,
                ),
            },
        )
        self._ctx: zmq.asyncio.Context | None = None
        self._curve_pair: curve.KeyPair | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._sockets: list[zmq.asyncio.Socket] = []
        self._shadows: dict[zmq.asyncio.Socket, zmq.Socket[bytes]] = {}  # for _send_all
        self.tasks = Supervisor("broker", self.close)
        self._faults = Faults()
        self._shutdown: asyncio.Task[None] | None = None
        self._http: Server | None = None
        self._closed = asyncio.Event()
        self._last_now = 0
        self._timer_wake = asyncio.Event()
        self._timer_target = 0  # when the timer loop wakes next (ms): earlier deadlines wake it
        self._outbox: Held = []  # waiting for the fsync, or for the standby's ack
        self._durable = asyncio.Event()  # the outbox has something
        self._journal_lock = asyncio.Lock()  # held by an fsync in a worker thread, or compaction
        self._compaction_wanted = asyncio.Event()
        self._finished_since_compaction = 0
        self.pairing: Pairing | None = None  # with --peer (created in start, after recovery)

    def _new_authority(self) -> Authority:
        cfg = self.config
        return Authority(
            self.archive,
            history=cfg.history,
            abort_after_ms=cfg.abort_after_ms,
            max_games=cfg.max_games,
        )

    @property
    def broker_name(self) -> str:
        """This broker's id at discovery and to its peer: per start for a lone broker, per
        journal for a paired one (``broker.termfile``)."""
        if self.pairing is not None:
            return f"{self.config.broker_id}.{self.pairing.member}"
        return f"{self.config.broker_id}.{self.epoch}"

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the journal, bind the sockets, start the loops."""
        empty = journal_is_empty(self.config.journal_dir)
        self._recover()
        if self.config.paired:
            self.pairing = Pairing(self, empty=empty)
        ctx = self._ctx = zmq.asyncio.Context()
        cfg = self.config
        if cfg.curve_dir is not None:
            self._curve_pair = curve.load_pair(cfg.curve_dir, "broker")
            self._auth = curve.start_authenticator(ctx, cfg.curve_dir)
        # Options are set before bind: libzmq copies them to each connection then.
        self.xsub = self._bind(ctx, zmq.XSUB, cfg.xsub_port, {zmq.RCVHWM: QUEUE_LIMIT})
        await self.xsub.send(b"\x01")  # subscribe to every message the edges publish
        self.xpub = self._bind(
            ctx, zmq.XPUB, cfg.xpub_port, {zmq.SNDHWM: QUEUE_LIMIT, zmq.XPUB_VERBOSE: 1}
        )
        self.router = self._bind(ctx, zmq.ROUTER, cfg.catchup_port, {zmq.ROUTER_MANDATORY: 0})
        router = Router()
        router.get("/healthz", self._healthz)
        router.get("/metrics", lambda _req: metrics_response(self.registry, self._labels))
        self._http = await serve(
            refuse_websocket, cfg.host, cfg.http_port, process_request=router.process_request
        )
        self._faults = Faults.from_env()
        loops = {
            "broker.loop_lag": self.lag.run(),
            "broker.durability_loop": self._durability_loop(),
            "broker.compaction_loop": self._compaction_loop(),
            "broker.command_loop": self._command_loop(),
            "broker.subscription_loop": self._subscription_loop(),
            "broker.catchup_loop": self._catchup_loop(),
            "broker.timer_loop": self._timer_loop(),
            "broker.heartbeat_loop": self._heartbeat_loop(),
        }
        if cfg.fsync == "interval":
            loops["broker.fsync_loop"] = self._fsync_loop()
        for name, loop in loops.items():
            self.tasks.loop(loop, name)
        if self.pairing is not None:
            self.pairing.start(ctx, self._curve_pair)
        if cfg.discovery:
            self._start_discovery(ctx, cfg.discovery)
        log.info(
            "broker up: shard %s, epoch %s, xsub %s, xpub %s, catch-up %s, http %s, "
            "%d live games, fsync=%s",
            self.shard,
            self.epoch,
            cfg.xsub_port,
            cfg.xpub_port,
            cfg.catchup_port,
            cfg.http_port,
            len(self.authority.games),
            cfg.fsync,
        )

    # --- discovery ---------------------------------------------------------------

    def _start_discovery(self, ctx: zmq.asyncio.Context, endpoint: str) -> None:
        cfg = self.config
        keys = None
        if cfg.curve_dir is not None:
            keys = (
                curve.load_pair(cfg.curve_dir, "broker"),
                curve.load_public(cfg.curve_dir, "discovery"),
            )
        self.discovery = DiscoveryClient(
            endpoint,
            self._discovery_status,
            on_reply=self._on_discovery_reply,
            context=ctx,
            interval_ms=self._discovery_interval_ms,
            curve_keys=keys,
            timeout_ms=self._discovery_timeout_ms,
            max_backoff_ms=self._discovery_timeout_ms if cfg.paired else 5000,
        )
        self.tasks.loop(self.discovery.run(), "broker.discovery_client")

    @property
    def _discovery_interval_ms(self) -> int:
        """A paired broker heartbeats every lease/4 (discovery derives the lease from it)."""
        cfg = self.config
        return cfg.lease_ms // 4 if cfg.paired else cfg.discovery_heartbeat_ms

    @property
    def _discovery_timeout_ms(self) -> int:
        """A paired broker must not wait or back off for seconds: its lease is at stake."""
        return self.config.lease_ms // 4 if self.config.paired else 1000

    def _discovery_status(self) -> BrokerHeartbeat:
        cfg = self.config
        pair: dict[str, Any] = {}
        if self.pairing is not None:
            report = self.pairing.report()
            pair = {
                "role": report.role,
                "term": report.term,
                "claim": report.claim,
                "in_sync": report.in_sync,
                "peer": report.peer,
                "repl": cfg.endpoint(cfg.repl_port),
                "lag": self.pairing.current_lag,
                "ready": self.pairing.ready,
                "boot": self.pairing.boot,
                "beat": self.pairing.beats,
            }
        return BrokerHeartbeat(
            id=self.broker_name,
            shard=self.shard.index,
            shards=self.shard.count,
            epoch=self.epoch,
            xsub=cfg.endpoint(cfg.xsub_port),
            xpub=cfg.endpoint(cfg.xpub_port),
            catchup=cfg.endpoint(cfg.catchup_port),
            http=f"http://{cfg.public_host}:{cfg.http_port}",
            interval_ms=self._discovery_interval_ms,
            **pair,
        )

    def _on_discovery_reply(self, reply: Reply) -> None:
        """Discovery's answer to a heartbeat: a refusal of our shard stops this broker.

        ``shard_count`` is final.  ``shard_taken`` can be a predecessor that died
        without a goodbye and that discovery still counts as live: it expires
        within 3 of its intervals, so we keep trying that long (plus a second)
        before giving up.
        """
        if reply.ok:
            if not self.registered:
                log.info("discovery accepted shard %s (epoch %s)", self.shard, self.epoch)
            self.registered, self._refused_since = True, None
            if self.pairing is not None:
                self.pairing.on_discovery_reply(reply)
            return
        self.registered = False
        why = f"discovery refused this broker (shard {self.shard}): {reply.message or reply.error}"
        if reply.error == SHARD_COUNT:
            self._fail(why)
        elif reply.error == SHARD_TAKEN:
            now = time.monotonic()
            grace = 3 * self.config.discovery_heartbeat_ms / 1000 + 1.0
            if self._refused_since is None:
                self._refused_since = now
                log.warning("%s; retrying for %.1f s in case it is our own predecessor", why, grace)
            elif now - self._refused_since > grace:
                self._fail(why)

    def _fail(self, why: str) -> None:
        """Stop the broker because it must not serve; ``main`` exits non-zero with ``why``."""
        if self.refusal is None:
            logs.event(
                log, "shard_refused", f"{why}: stopping", logging.ERROR, shard=str(self.shard)
            )
            self.refusal = why
        self.close()

    @staticmethod
    def _now_socket(sock: zmq.asyncio.Socket) -> zmq.Socket[bytes]:
        """A plain socket on the same libzmq socket: non-blocking I/O with no future."""
        return zmq.Socket.shadow(sock.underlying)

    def _send_all(self, messages: Outgoing) -> None:
        """Non-blocking sends of ``messages`` in order, with no future per message.

        Each goes through the plain shadow of its asyncio socket; then each
        asyncio socket used is asked for its ``EVENTS``, which makes its wrapper
        re-check its pending receives.  That matters: libzmq's descriptor is
        edge-triggered, and a send can consume the edge that a loop awaiting a
        receive on the same socket was waiting for (seen: catch-up requests
        stalled until their timeout).  XPUB and ROUTER never block: at the
        high-water mark, or for a ROUTER peer that is gone, the message is
        dropped (PUB/SUB may drop anything; edges re-fetch and re-send).
        """
        used: set[zmq.asyncio.Socket] = set()
        shadows = self._shadows
        for sock, frames in messages:
            used.add(sock)
            try:
                send_now(shadows[sock], frames)
            except zmq.ZMQError as exc:
                log.debug("dropped an outgoing message: %s", exc)
        for sock in used:
            sock.get(zmq.EVENTS)  # re-arms the asyncio wrapper's readers (see above)

    def _bind(
        self, ctx: zmq.asyncio.Context, kind: int, port: int, options: dict[int, int]
    ) -> zmq.asyncio.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 200)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_INBOUND)
        for option, value in options.items():
            sock.setsockopt(option, value)
        if self._curve_pair is not None:
            curve.make_server(sock, self._curve_pair)
        self._sockets.append(sock)  # closed by close(), even when bind fails (or term() hangs)
        sock.bind(tcp(self.config.host, port))
        self._shadows[sock] = self._now_socket(sock)
        return sock

    @property
    def failure(self) -> str | None:
        """The loop whose crash closed the broker, if one did (the process exits non-zero)."""
        return self.tasks.failure

    def close(self) -> None:
        """Stop everything; idempotent (SIGTERM, or a crashed loop, ends up here)."""
        if self._shutdown is not None:
            return
        if self._http is not None:
            self._http.close()
        self._shutdown = asyncio.get_running_loop().create_task(self._finish_close())

    async def _finish_close(self) -> None:
        try:
            await self.tasks.close()
            if self.discovery is not None:
                if self.refusal is None and self.registered:
                    # A goodbye lets discovery accept our successor at once (rolling restart).
                    with contextlib.suppress(Exception):
                        await self.discovery.goodbye()
                self.discovery.close()
                await self.discovery.wait_closed()
            if self._http is not None:
                await self._http.wait_closed()
            self.journal.close()  # syncs: what waited for an fsync can go out now
            self.archive.close()
            limit = self.pairing.released() if self.pairing is not None else None
            self._send_all(
                [m for seq, out in self._outbox if limit is None or seq <= limit for m in out]
            )
            self._outbox.clear()  # (a pair's unreplicated acks never go out)
            if self.pairing is not None:
                self.pairing.close()
            for sock in self._sockets:
                sock.close(linger=200)
            if self._auth is not None:
                self._auth.stop()
            if self._ctx is not None:
                self._ctx.term()
            log.info("broker stopped")
        finally:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until ``close`` has finished."""
        await self._closed.wait()

    # --- recovery and compaction ------------------------------------------------

    def _recover(self) -> None:
        started = time.monotonic()
        records = self.journal.load()
        self.authority.replay(records)
        if self._sharded:
            self._check_journal_shard()
        ended = [gid for gid, live in self.authority.games.items() if live.game.status == "over"]
        now = self._now()
        for game_id in ended:
            self.authority.finish(game_id, now)
        self.journal.open()
        if ended or records:
            self._compact()
        # Deadlines that passed while the broker was down fire on the first timer turn.
        games, ms = len(self.authority.games), round((time.monotonic() - started) * 1000)
        logs.event(
            log,
            "broker_recovered",
            f"recovered {games} live games from {len(records)} journal records in {ms} ms "
            f"({len(ended)} finished archived)",
            live_games=games,
            records=len(records),
            finished=len(ended),
            duration_ms=ms,
        )

    def _check_journal_shard(self) -> None:
        """Refuse a journal that holds games another shard owns (a wrong ``--journal-dir``)."""
        foreign = [gid for gid in self.authority.games if not self.shard.owns(gid)]
        if foreign:
            raise ConfigError(
                f"the journal in {self.config.journal_dir} holds {len(foreign)} live games that "
                f"this broker (shard {self.shard}) does not own, e.g. {foreign[0]}: give each "
                "shard its own --journal-dir"
            )

    def _compact(self) -> None:
        """At start: rewrite the journal with the records of live games only.

        The archive files of the games it drops are made durable first.  (While
        running, ``_compaction_loop`` does this without stalling the loop.)
        """
        self.archive.flush()
        records, _, _ = read_records(self.journal.path)
        live = self.authority.games
        keep = [r for r in records if r.game_id in live]
        self.journal.rewrite(keep)
        self._finished_since_compaction = 0
        log.info("journal compacted: kept %d of %d records", len(keep), len(records))

    # --- the loops ------------------------------------------------------------------

    def _now(self) -> int:
        now = max(wall_ms(), self._last_now)
        self._last_now = now
        return now

    async def _command_loop(self) -> None:
        """Each turn: wait for the XSUB socket, read what is queued (up to ``MAX_BATCH``), commit.

        It waits with ``zmqnow.Readable`` rather than an awaited
        ``recv_multipart``: no pyzmq future per turn (nothing else reads XSUB).
        """
        xsub_now = self._now_socket(self.xsub)
        async with Readable(xsub_now) as readable:
            while True:
                await readable.wait()
                if self.pairing is not None and not self.pairing.accepting():
                    self._drop_while_not_accepting(xsub_now)
                    continue
                batch = Batch()
                now = self._now()
                for _ in range(MAX_BATCH):  # group what is already queued into one commit
                    try:
                        frames = xsub_now.recv_multipart(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_bus(frames, now, batch)
                self._commit(batch, now)

    def _drop_while_not_accepting(self, xsub_now: zmq.Socket[bytes]) -> None:
        """A standby (or a fenced active broker) drops what edges publish: they re-send."""
        assert self.pairing is not None
        dropped = 0
        for _ in range(MAX_BATCH):
            try:
                xsub_now.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            dropped += 1
        self.pairing.m_dropped.labels("bus").inc(dropped)

    def _on_bus(self, frames: list[bytes], now: int, batch: Batch) -> None:
        """One XSUB message: a topic frame, then one or more bus messages (edges batch)."""
        if len(frames) < 2:
            self._m_bad.labels("xsub").inc()
            return
        for body in frames[1:]:
            self._on_bus_message(body, now, batch)

    def _on_bus_message(self, body: bytes, now: int, batch: Batch) -> None:
        try:
            message = decode_inbound(body)  # a cmd as a tuple: one per move (xlmate.wire)
        except WireError:
            self._m_bad.labels("xsub").inc()
            return
        if type(message) is CommandFields:
            # Hashed only for a game this broker does not hold: one dict lookup per move.
            if (
                self._sharded
                and message.game_id not in self.authority.games
                and not self.shard.owns(message.game_id)
            ):
                self._refuse_foreign(message, batch)
                return
            self.authority.command(message, now, batch)
        elif isinstance(message, PresenceReport):
            if (
                self._sharded
                and message.game_id not in self.authority.games
                and not self.shard.owns(message.game_id)
            ):
                self._m_wrong_shard.labels("presence_report").inc()
                return
            self.authority.presence_report(message, now, batch)
        elif isinstance(message, EdgeBeat):
            self.authority.edge_beat(message.edge_id, now)
        else:
            self._m_bad.labels("xsub").inc()

    def _refuse_foreign(self, msg: CommandFields, batch: Batch) -> None:
        """A command for another shard's game (a misrouted or hand-made one): refuse, count."""
        self._m_wrong_shard.labels("cmd").inc()
        owner = f"{shard_of(msg.game_id, self.shard.count)}/{self.shard.count}"
        reject = RejectMsg(
            game_id=msg.game_id,
            seat=msg.seat,
            command_id=msg.command_id,
            code=UNAVAILABLE,
            message=f"game {msg.game_id} belongs to shard {owner}, not to this broker "
            f"(shard {self.shard})",
        )
        batch.publish(edge_topic(msg.edge_id), encode(reject))

    def _foreign_request(self, request: OpenRequest | FetchRequest | PgnRequest) -> bool:
        """Whether a catch-up request is for a game another shard owns (then counted)."""
        if not self._sharded or request.game_id in self.authority.games:
            return False
        if self.shard.owns(request.game_id):
            return False
        self._m_wrong_shard.labels(request.KIND).inc()
        return True

    def _commit(self, batch: Batch, now: int, replies: list[list[bytes]] | None = None) -> None:
        """Journal the batch, then publish its frames (and send ``replies``) once durable."""
        if batch.records:
            data = self.journal.append(batch.records)
            if self.pairing is not None:
                self.pairing.replicate(data)
            self._m_batches.inc()
        xpub, router = self.xpub, self.router
        outgoing: Outgoing = [(xpub, frames) for frames in batch.frames]
        outgoing += [(router, frames) for frames in replies or ()]
        self._send(outgoing)
        if batch.finished:
            ends = [self.authority.finish(game_id, now) for game_id in batch.finished]
            data = self.journal.append(r for r in ends if r is not None)
            if self.pairing is not None and data:
                self.pairing.replicate(data)
            self._finished_since_compaction += len(ends)
            if self._finished_since_compaction >= self.config.compact_after:
                self._compaction_wanted.set()
        deadline = self.authority.next_deadline()
        if deadline is not None and deadline < self._timer_target:
            self._timer_wake.set()

    def _send(self, outgoing: Outgoing) -> None:
        """Send now, or (policy ``always``) after the fsync of what was journaled before.

        Everything goes out in order: once one message waits for an fsync, every
        later one waits behind it, so nothing overtakes an event not yet on disk
        (not a duplicate's ack, not a head, not a catch-up reply that includes it).
        """
        if not outgoing:
            return
        pairing = self.pairing
        seq = 0 if pairing is None else pairing.seq
        if (
            self._outbox
            or (self.config.fsync == "always" and self.journal.dirty)
            or (pairing is not None and seq > pairing.released())
        ):
            self._outbox.append((seq, outgoing))
            self._durable.set()
            return
        self._send_all(outgoing)

    async def _durability_loop(self) -> None:
        """Group commit: fsync in a worker thread, then send what waited for it.

        While one fsync runs, the loop keeps applying commands; their records
        and messages wait for the next fsync, which covers them all at once.
        In a pair, messages also wait until the standby has acked the batches
        journaled before them (``Pairing.released``); an ack wakes this loop.
        """
        while True:
            await self._durable.wait()
            self._durable.clear()
            count = len(self._outbox)
            if self.config.fsync == "always" and self.journal.dirty:
                async with self._journal_lock:  # (compaction swaps the file)
                    started = time.perf_counter()
                    await asyncio.to_thread(self.journal.sync)
                    self._m_fsync.observe(time.perf_counter() - started)
            ready = count
            if self.pairing is not None:
                limit = self.pairing.released()
                ready = 0
                while ready < count and self._outbox[ready][0] <= limit:
                    ready += 1
            sent, self._outbox = self._outbox[:ready], self._outbox[ready:]
            self._send_all([message for _, outgoing in sent for message in outgoing])
            if len(self._outbox) > count - ready:  # more arrived during the fsync
                self._durable.set()

    async def _compaction_loop(self) -> None:
        """Compact the journal once ``compact_after`` games have ended, without a stall.

        The file is read in a worker thread, and its records are decoded on
        the loop a slice at a time, so moves keep flowing: a worker thread
        decoding them would hold the interpreter lock for most of a second.
        A record can go once its game has ended and its archive file is
        durable: games in that state when the file was read are dropped while
        decoding; the rest, with what was appended meanwhile, is filtered again
        at the rewrite, which runs as one step with no fsync in flight.
        """
        while True:
            await self._compaction_wanted.wait()
            self._compaction_wanted.clear()
            self._finished_since_compaction = 0
            started = time.perf_counter()
            data = await asyncio.to_thread(self.journal.path.read_bytes)
            wanted = self._games_to_keep()  # (after the read: every game in it is known)
            keep: list[Record] = []
            end = seen = 0
            for offset, record in scan_records(data):
                end = offset  # the records after it are read again under the lock
                seen += 1
                if record.game_id in wanted:
                    keep.append(record)
                if seen % COMPACTION_SLICE == 0:
                    await asyncio.sleep(0)  # let the loop serve moves between slices
            del data
            async with self._journal_lock:
                paused = time.perf_counter()
                keep += self.journal.read_from(end)
                wanted = self._games_to_keep()
                keep = [record for record in keep if record.game_id in wanted]
                self.journal.rewrite(keep)
                done = time.perf_counter()
            log.info(
                "journal compacted: kept %d of %d records in %.0f ms (the last %.0f ms alone)",
                len(keep),
                seen,
                (done - started) * 1000,
                (done - paused) * 1000,
            )

    def _games_to_keep(self) -> set[str]:
        """Games whose journal records compaction keeps: live, or archived but not durably."""
        return self.authority.games.keys() | self.archive.pending()

    async def _timer_loop(self) -> None:
        while True:
            now = self._now()
            batch = Batch()
            if self.pairing is None or self.pairing.active:  # a standby runs no timers
                self.authority.due(now, batch)
            if batch.records or batch.frames:
                self._commit(batch, now)
            deadline = self.authority.next_deadline()
            delay_ms = 500 if deadline is None else min(500, max(0, deadline - self._now()))
            self._timer_target = self._now() + delay_ms
            self._timer_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), delay_ms / 1000)

    async def _subscription_loop(self) -> None:
        xpub = self.xpub
        while True:
            frame = await xpub.recv()
            if not frame.startswith(b"\x01game:"):
                continue
            if self.pairing is not None and not self.pairing.active:
                continue  # a standby publishes nothing but its beats
            game_id = frame[6:].decode(errors="replace")
            head = self.authority.head(game_id)
            if head is not None:
                self._send([(self.xpub, [frame[1:], head])])

    async def _catchup_loop(self) -> None:
        router = self.router
        while True:
            frames = await router.recv_multipart()
            if len(frames) != 2:
                self._m_bad.labels("router").inc()
                continue
            identity, body = frames
            if self.pairing is not None and not self.pairing.accepting():
                # As from a broker that is down: the edge's request times out (unavailable).
                self.pairing.m_dropped.labels("catchup").inc()
                continue
            try:
                request = decode(body)
            except WireError:
                self._m_bad.labels("router").inc()
                continue
            now = self._now()
            batch = Batch()
            reply: Any
            if isinstance(request, OpenRequest | FetchRequest | PgnRequest) and (
                self._foreign_request(request)
            ):  # another shard's game: as if unknown here (never created by a stray open)
                reply = MissingReply(request_id=request.request_id, game_id=request.game_id)
            elif isinstance(request, OpenRequest):
                reply = self.authority.open(request, now, batch)
            elif isinstance(request, FetchRequest):
                reply = self.authority.fetch(request, now)
            elif isinstance(request, PgnRequest):
                reply = self.authority.pgn(request)
            else:
                self._m_bad.labels("router").inc()
                continue
            self._commit(batch, now, [[identity, encode(reply)]])

    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_ms / 1000
        while True:
            self._faults.check("broker.heartbeat_loop")
            now = self._now()
            if self.pairing is not None and not self.pairing.active:
                self._send_all([(self.xpub, self._ctl_beat(now))])  # a standby: beats only
            else:
                batch = Batch()
                batch.frames.append(self._ctl_beat(now))
                self.authority.expire_edges(now, batch)
                self.authority.trailing_heads(batch)
                self._commit(batch, now)
            await asyncio.sleep(interval)

    def _ctl_beat(self, now: int) -> list[bytes]:
        if self.pairing is None:
            return [CTL_TOPIC, encode(BrokerBeat(epoch=self.epoch, time_ms=now))]
        e = self.pairing.election
        beat = BrokerBeat(epoch=self.epoch, time_ms=now, role=e.role, term=e.term)
        return [CTL_TOPIC, encode(beat)]

    async def _fsync_loop(self) -> None:
        interval = self.config.fsync_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self.journal.sync()

    # --- the pair's hooks (broker.pairing calls these) ---------------------------------

    def own_socket(self, sock: zmq.asyncio.Socket) -> None:
        """A socket ``close()`` must close."""
        self._sockets.append(sock)

    def beat_discovery_now(self) -> None:
        """Heartbeat discovery at once (a lost standby: discovery must hear it first)."""
        if self.discovery is not None and not self.tasks.closing:
            self.tasks.spawn(self.discovery.beat_now(), "broker.beat_now")

    def release(self) -> None:
        """Something the outbox waits for happened (an ack, a lease): re-check it."""
        if self._outbox:
            self._durable.set()

    def journal_bytes(self) -> bytes:
        """The journal as it is now (every record appended so far): a standby's snapshot."""
        return self.journal.path.read_bytes() if self.journal.path.exists() else b""

    async def sync_journal(self) -> None:
        """fsync the journal under ``--fsync always`` (a standby, before it acks)."""
        if self.config.fsync == "always" and self.journal.dirty:
            async with self._journal_lock:
                started = time.perf_counter()
                await asyncio.to_thread(self.journal.sync)
                self._m_fsync.observe(time.perf_counter() - started)

    async def install_snapshot(self, path: Path) -> None:
        """Make the snapshot at ``path`` this (standby) broker's journal and rebuild its games."""
        async with self._journal_lock:  # (not under a compaction or an fsync)
            self.journal.replace_with(path)
            records = self.journal.load()
            self.authority = self._new_authority()
            self.authority.replay(records)
            self._advance_clock(records)
            self._finished_since_compaction = 0

    def apply_replicated(self, data: bytes, records: list[Record]) -> None:
        """A standby applies one of the active broker's batches: journal it, feed its games."""
        self.journal.append_data(data)
        self._m_batches.inc()
        authority = self.authority
        for record in records:
            if isinstance(record, GameEnded):
                if authority.finish(record.game_id, self._last_now) is not None:
                    self._finished_since_compaction += 1
            else:
                authority.replay([record])
        self._advance_clock(records)
        if self._finished_since_compaction >= self.config.compact_after:
            self._compaction_wanted.set()

    def _advance_clock(self, records: list[Record]) -> None:
        """Never run the clock behind the active broker's (a promoted standby goes on from it)."""
        stamps = [ms for r in records if (ms := getattr(r, "ms", None)) is not None]
        if stamps:
            self._last_now = max(self._last_now, max(stamps))

    def promoted(self) -> None:
        """This broker just became active: beat at once, arm the timers."""
        self._send_all([(self.xpub, self._ctl_beat(self._now()))])
        self._timer_wake.set()

    def demoted(self) -> None:
        """This broker is a standby now: what it had not replicated never goes out."""
        self._outbox.clear()

    # --- http ---------------------------------------------------------------------------

    def _healthz(self, _request: HttpRequest) -> Any:
        failed = self.tasks.failure is not None or self._shutdown is not None
        return json_response(
            503 if failed else 200,
            {
                "status": "failed" if self.tasks.failure else ("closing" if failed else "ok"),
                "component": "broker",
                "shard": str(self.shard),
                "registered": self.registered,
                "epoch": self.epoch,
                "games": len(self.authority.games),
                "fsync": self.config.fsync,
                "pair": self.pairing.status() if self.pairing is not None else None,
            },
        )


async def main(config: BrokerConfig) -> None:
    """Run a broker until SIGINT/SIGTERM."""
    Path(config.journal_dir).mkdir(parents=True, exist_ok=True)
    server = BrokerServer(config)
    await run_server(server)
    if server.refusal is not None:
        raise ConfigError(server.refusal)  # the CLI exits non-zero with this line
