"""A broker pair's I/O: replication sockets, the standby's catch-up, the lease glue.

``BrokerServer`` owns one ``Pairing`` when it runs with ``--peer``.  The
decisions are made by the pure ``broker.election.Election``; the frames are
``broker.replication``'s.  This module carries them out:

- **Active.**  Every journal batch the server appends is numbered (``seq``)
  and sent to the standby (``replicate``).  The server's outbox holds every
  message queued after a batch until ``released()`` covers that batch's seq:
  the standby's ack when it is in sync, everything once the election allows
  acking alone, nothing otherwise.  A standby that says hello gets the
  journal file as a snapshot (sent in parts), then the stream; once it acks
  the snapshot's seq it is in sync and protects us.  A standby whose
  connection drops (``_watch_peer``), or that leaves a batch unacked, or is
  silent, for ``--standby-wait-ms`` is lost: we tell
  discovery at once (``in_sync=false``) and ack alone only after its answer.
  So does a broker just promoted: it beats discovery at once and acks alone
  once the answer confirms its lease (a restarted holder resumes a lease whose
  recorded protector is still its old standby until then).
- **Standby.**  It says hello until it gets a snapshot, writes the parts to a
  temporary file, installs it as its journal (dropping whatever its journal
  held, such as a divergent tail) and rebuilds its games from it; then it
  applies each batch: append the bytes to its journal, feed the records to its
  authority (so its games, keys, history and deadlines stay hot), fsync under
  ``--fsync always``, ack.  It runs no timers, applies no commands from edges
  and publishes only its beats.
- **Terms.**  Each frame carries the sender's term.  A higher term than ours
  makes us adopt it (and step down if we were active); a peer claiming to be
  active in a term not above ours while we are active is refused and counted.
  Terms are persisted (``broker.termfile``) before they are acted on.

Time for the election is ``time.monotonic`` in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from xlmate import curve, logs, metrics
from xlmate.broker.election import (
    ACTIVE,
    STANDBY,
    AdoptTerm,
    Demote,
    Effect,
    Election,
    Promote,
    Report,
    Role,
)
from xlmate.broker.journal import check_batch, split_batch
from xlmate.broker.replication import (
    CHUNK,
    MAX_REPL_FRAME,
    AckFrame,
    BatchFrame,
    Frame,
    Hello,
    PeerBeat,
    Refusal,
    Snapshot,
    decode_frame,
    encode_frame,
)
from xlmate.broker.standby_sync import StandbySession
from xlmate.broker.termfile import load_member, load_term, next_boot, store_term
from xlmate.config import tcp
from xlmate.errors import WireError
from xlmate.heartbeat import Reply

if TYPE_CHECKING:
    from xlmate.broker.server import BrokerServer

log = logging.getLogger("xlmate.broker.pair")

LOGGED_MAX: Final = 64  # refusal log keys remembered (forgotten all at once beyond)
REPL_QUEUE: Final = 50_000  # frames queued per peer before zmq drops (the standby then resyncs)
SNAPSHOT_NAME: Final = "journal.snapshot"


def mono_ms() -> int:
    """The election's clock."""
    return time.monotonic_ns() // 1_000_000


class Pairing:
    """The replication and lease glue of one paired broker (module docstring)."""

    def __init__(self, server: BrokerServer, *, empty: bool) -> None:
        cfg = server.config
        assert cfg.peer is not None
        self.server = server
        self.config = cfg
        self.member = load_member(cfg.journal_dir)
        self.boot = next_boot(cfg.journal_dir)  # (boot, beats) order our heartbeats
        self.beats = 0
        self.me = f"{cfg.broker_id}.{self.member}"
        self.directory = cfg.journal_dir
        self.election = Election(
            self.me,
            term=load_term(cfg.journal_dir),
            lease_ms=cfg.lease_ms,
            now=mono_ms(),
            empty=empty,
        )
        self.tick_ms = max(20, cfg.lease_ms // 8)
        # Active side.
        self.seq = 0  # the last batch appended (and streamed) by this process as active
        self.acked = 0  # the standby's acked seq (this sync session)
        self._unacked: deque[tuple[int, int]] = deque()  # (seq, sent at) awaiting the standby
        self._standby_ident: bytes | None = None  # the ROUTER identity we stream to
        self._session: StandbySession | None = None  # that standby's catch-up
        self._released_max = 0  # the highest batch seq ever released to clients
        # Standby side.
        self._expect: int | None = None  # the next batch seq (None: not synced)
        self._snap_file: Any = None  # the snapshot being received (open file)
        self._snap_part = 0
        self._snap_from: str | None = None
        self._hello_at: int | None = None
        self._active_name: str | None = None
        self.lag = 0
        self._hb_sent_at = 0  # when the last discovery heartbeat was built
        self._fenced_logged = False
        # What was logged once already (refusals per peer and term, repeated hellos): a
        # cut that heals delivers the frames queued meanwhile at once, dozens of them.
        self._logged: set[tuple[object, ...]] = set()
        self._router: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None  # the DEALER's connection events
        self._dealer: zmq.asyncio.Socket | None = None
        reg = server.registry
        self.m_refused = metrics.counter(
            reg, "broker_pair_refused", "replication frames refused", ("why",)
        )
        for why in ("stale_term", "wrong_shard", "bad_frame"):
            self.m_refused.labels(why)
        self.m_dropped = metrics.counter(
            reg,
            "broker_pair_dropped",
            "edge messages dropped because this broker is not accepting (standby, fenced)",
            ("kind",),
        )
        for kind in ("bus", "catchup"):
            self.m_dropped.labels(kind)
        self.m_snapshots = metrics.counter(reg, "broker_pair_snapshots", "snapshots", ("dir",))
        for direction in ("sent", "installed"):
            self.m_snapshots.labels(direction)
        self.m_role_changes = metrics.counter(
            reg, "broker_pair_role_changes", "promotions and demotions", ("to",)
        )
        for to in ("active", "standby"):
            self.m_role_changes.labels(to)
        metrics.gauge(reg, "broker_pair_term", "this broker's term").set_function(
            lambda: self.election.term
        )
        metrics.gauge(reg, "broker_pair_active", "1 while this broker is active").set_function(
            lambda: int(self.election.role == ACTIVE)
        )
        metrics.gauge(
            reg, "broker_pair_in_sync", "active: its standby is in sync; standby: it is in sync"
        ).set_function(lambda: int(self.in_sync))
        metrics.gauge(
            reg, "broker_pair_unprotected", "1 while active without an in-sync standby"
        ).set_function(lambda: int(self.election.role == ACTIVE and not self.in_sync))
        metrics.gauge(
            reg, "broker_pair_lag", "active: batches the standby has not acked; standby: behind"
        ).set_function(lambda: self.current_lag)

    # --- state -----------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether this broker is the active one of its pair."""
        return self.election.role == ACTIVE

    @property
    def in_sync(self) -> bool:
        """Active: its standby is in sync (protected).  Standby: it is in sync."""
        e = self.election
        return e.standby_id is not None if e.role == ACTIVE else e.synced

    @property
    def ready(self) -> bool:
        """What the discovery heartbeat's ``ready`` says: an active broker that accepts
        commands, or a standby in sync (false while it catches up or is fenced)."""
        e = self.election
        return e.accepting(mono_ms()) if e.role == ACTIVE else e.synced

    @property
    def current_lag(self) -> int:
        """Active: batches streamed but not acked; standby: batches behind the active's beat."""
        if self.active:
            return self.seq - self.acked if self.election.standby_id is not None else 0
        return self.lag

    def accepting(self) -> bool:
        """Whether commands may be applied now (active, not fenced)."""
        ok = self.election.accepting(mono_ms())
        if self.active and ok == self._fenced_logged:
            self._fenced_logged = not ok
            if ok:
                log.warning("lease confirmed again: accepting commands")
            else:
                logs.event(
                    log,
                    "broker_fenced",
                    "neither discovery nor the standby heard within the lease: "
                    "not accepting commands",
                    logging.WARNING,
                    term=self.election.term,
                )
        return ok

    def released(self) -> int:
        """The highest batch seq whose messages may go out now (-1: none)."""
        e = self.election
        if e.role != ACTIVE:
            return -1
        if e.may_ack_alone():
            session = self._session
            limit = self._released_max if session is not None and session.frozen else self.seq
        elif e.standby_id is not None:
            limit = self.acked
        else:
            return -1
        self._released_max = max(self._released_max, limit)
        return limit

    def status(self) -> dict[str, Any]:
        """The pair fields of ``/healthz``."""
        e = self.election
        return {
            "role": e.role,
            "term": e.term,
            "in_sync": self.in_sync,
            "unprotected": self.active and not self.in_sync,
            "acking_alone": e.may_ack_alone(),  # discovery confirmed we go on unprotected
            "accepting": e.accepting(mono_ms()),
            "peer": self.config.peer,
            "standby": e.standby_id,
            "following": e.active_id,
            "lag": self.current_lag,
            "seq": self.seq,
        }

    # --- sockets and loops ----------------------------------------------------------------

    def start(self, ctx: zmq.asyncio.Context, pair: curve.KeyPair | None) -> None:
        """Bind the ROUTER, connect the DEALER, start the loops (owned by the server)."""
        cfg = self.config
        router = ctx.socket(zmq.ROUTER)
        dealer = ctx.socket(zmq.DEALER)
        for sock in (router, dealer):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPL_FRAME + 1024)
            sock.setsockopt(zmq.SNDHWM, REPL_QUEUE)
            sock.setsockopt(zmq.RCVHWM, REPL_QUEUE)
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        dealer.setsockopt(zmq.IMMEDIATE, 1)  # nothing queued for a peer that is not there
        if pair is not None and cfg.curve_dir is not None:
            curve.make_server(router, pair)
            curve.make_client(dealer, pair, curve.load_public(cfg.curve_dir, "broker"))
        self.server.own_socket(router)
        self.server.own_socket(dealer)
        router.bind(tcp(cfg.host, cfg.repl_port))
        assert cfg.peer is not None
        dealer.connect(cfg.peer)
        self._router, self._dealer = router, dealer
        # The DEALER has one peer, the other broker: its connection dropping means that
        # process died (the kernel closed its sockets) or the link was reset.
        monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.server.own_socket(monitor)
        self._monitor = monitor
        # Sends go through plain shadows (no future per frame, EAGAIN raised here: a
        # frame for a peer that is not there is dropped, as the protocol expects).
        self._router_now: zmq.Socket[bytes] = zmq.Socket.shadow(router.underlying)
        self._dealer_now: zmq.Socket[bytes] = zmq.Socket.shadow(dealer.underlying)
        tasks = self.server.tasks
        tasks.loop(self._router_loop(), "broker.pair_router_loop")
        tasks.loop(self._dealer_loop(), "broker.pair_dealer_loop")
        tasks.loop(self._tick_loop(), "broker.pair_tick_loop")
        tasks.loop(self._watch_peer(), "broker.pair_monitor_loop")
        log.info(
            "paired: repl port %d, peer %s, term %d, lease %d ms, standby wait %d ms",
            cfg.repl_port,
            cfg.peer,
            self.election.term,
            cfg.lease_ms,
            cfg.standby_wait_ms,
        )

    def close(self) -> None:
        """Drop a half-received snapshot."""
        if self._snap_file is not None:
            self._snap_file.close()
            self._snap_file = None

    def _to_standby(self, frame: Frame) -> None:
        if self._standby_ident is not None:
            self._reply(self._standby_ident, frame)

    def _reply(self, ident: bytes, frame: Frame) -> None:
        if self._router is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._router_now.send_multipart([ident, encode_frame(frame)], zmq.NOBLOCK)
            self._router.get(zmq.EVENTS)  # re-arm the asyncio wrapper (BrokerServer._send_all)

    def _to_peer(self, frame: Frame) -> None:
        if self._dealer is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._dealer_now.send(encode_frame(frame), zmq.NOBLOCK)
            self._dealer.get(zmq.EVENTS)

    async def _router_loop(self) -> None:
        """Frames the peer started: hello, acks and beats from a standby, refusals."""
        assert self._router is not None
        router = self._router
        while True:
            frames = await router.recv_multipart()
            if len(frames) != 2:
                self.m_refused.labels("bad_frame").inc()
                continue
            ident, body = frames
            try:
                frame = decode_frame(body)
            except WireError as exc:
                self._bad(exc)
                continue
            self._on_router_frame(ident, frame)

    async def _dealer_loop(self) -> None:
        """Frames the peer answered: snapshot parts, batches, the active's beats, refusals.

        Batches already queued are applied together and fsynced once, then
        acked once (a group commit on the standby's side too).
        """
        assert self._dealer is not None
        dealer = self._dealer
        shadow = self._dealer_now
        while True:
            bodies = [await dealer.recv()]
            for _ in range(511):
                try:
                    bodies.append(shadow.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
            dealer.get(zmq.EVENTS)  # re-arm the asyncio wrapper (see BrokerServer._send_all)
            to_ack: AckFrame | None = None
            for body in bodies:
                try:
                    frame = decode_frame(body)
                except WireError as exc:
                    self._bad(exc)
                    continue
                ack = await self._on_dealer_frame(frame)
                if ack is not None:
                    to_ack = ack
            if to_ack is not None:
                await self.server.sync_journal()
                self._to_peer(to_ack)

    async def _watch_peer(self) -> None:
        """The peer's connection dropped: an active broker loses its standby now.

        A SIGKILLed standby's sockets are closed by its kernel, so the active
        broker learns at once that no ack will come, instead of holding every
        batch for ``--standby-wait-ms``.  Losing the standby early is always
        safe: acking alone still waits for discovery to confirm a heartbeat
        that said ``in_sync=false``.  A standby that is alive after all (a
        reset link) hears nothing for a lease, says hello and resyncs.  A cut
        without a reset (packets dropped) is still found by the timeout.
        """
        monitor = self._monitor
        assert monitor is not None
        while True:
            message = await monitor.recv_multipart()
            try:
                event = parse_monitor_message(message)["event"]
            except Exception:  # a malformed monitor message is not worth a crash
                continue
            if event == zmq.EVENT_DISCONNECTED and self.election.standby_id is not None:
                self._lose_standby(f"its connection to {self.config.peer} dropped")

    async def _tick_loop(self) -> None:
        """Beats to the peer, hellos while unsynced, the lost-standby check."""
        while True:
            now = mono_ms()
            e = self.election
            beat = PeerBeat(id=self.me, term=e.term, role=e.role, synced=self.in_sync, seq=self.seq)
            self._to_peer(beat)
            if self.active:
                self._to_standby(beat)
                self._check_standby(now)
                self._check_catch_up(now)
            elif self._wants_snapshot(now):
                self._hello_at = now
                self._to_peer(
                    Hello(id=self.me, term=e.term, role=e.role, shard=str(self.config.shard))
                )
            self.accepting()  # logs fencing transitions
            await asyncio.sleep(self.tick_ms / 1000)

    def _wants_snapshot(self, now: int) -> bool:
        """Whether a standby says hello now.

        One that is not in sync says it every lease/4 until a snapshot comes (a
        hello sent before the DEALER has connected is dropped: ``IMMEDIATE``
        keeps frames from queueing for a peer that is not there).  One in sync
        that has heard nothing from the active for a whole lease says it once
        per lease: an active broker that gave up on us (or restarted) stops
        streaming and beating to us, and answers this hello with a snapshot.
        """
        lease = self.config.lease_ms
        since = now - self._hello_at if self._hello_at is not None else None
        if self._expect is None:
            return self._snap_file is None and (since is None or since >= lease // 4)
        heard = self.election.active_heard
        silent = heard is None or now - heard >= lease
        return silent and (since is None or since >= lease)

    # --- active side ------------------------------------------------------------------------

    def replicate(self, data: bytes) -> None:
        """A batch was appended to the journal (active): number it and stream it."""
        if not self.active:
            return
        now = mono_ms()
        for piece in split_batch(data, CHUNK):
            self.seq += 1
            if self._standby_ident is not None:
                self._to_standby(
                    BatchFrame(id=self.me, term=self.election.term, seq=self.seq, data=piece)
                )
                if self.election.standby_id is not None:
                    self._unacked.append((self.seq, now))

    def _check_standby(self, now: int) -> None:
        """Lose a standby that is silent or leaves a batch unacked for ``standby_wait_ms``."""
        e = self.election
        if e.standby_id is None:
            return
        wait = self.config.standby_wait_ms
        heard = e.standby_heard if e.standby_heard is not None else now
        oldest = self._unacked[0][1] if self._unacked else now
        if now - heard < wait and now - oldest < wait:
            return
        self._lose_standby(f"no ack for {now - min(heard, oldest)} ms")

    def _lose_standby(self, why: str) -> None:
        """Stop counting on the standby: tell discovery, go on alone once it answered."""
        e = self.election
        if not self.active or e.standby_id is None:
            return
        logs.event(
            log,
            "standby_lost",
            f"standby {e.standby_id} lost ({why}): asking discovery before going on alone",
            logging.WARNING,
            standby=e.standby_id,
        )
        e.standby_lost()
        self._unacked.clear()
        # No more stream or beats to it: if it is alive it hears nothing for a lease,
        # says hello again and resyncs from a snapshot.
        self._standby_ident, self._session = None, None
        self.server.beat_discovery_now()

    def _check_catch_up(self, now: int) -> None:
        """A standby that does not catch up the tail in time: go on acking alone."""
        session = self._session
        if (
            session is not None
            and self.election.standby_id is None
            and session.expired(now, self.config.standby_wait_ms)
        ):
            log.warning("standby %s did not catch up in time: going on alone", session.standby)
            session.restart()
            self.server.release()

    def _on_router_frame(self, ident: bytes, frame: Frame) -> None:
        e = self.election
        if isinstance(frame, Refusal):
            self._on_refusal(frame)
            return
        if isinstance(frame, Hello) and frame.shard != str(self.config.shard):
            self.m_refused.labels("wrong_shard").inc()
            log.warning("refused a peer of shard %s (this is %s)", frame.shard, self.config.shard)
            self._reply(
                ident, Refusal(id=self.me, term=e.term, why=f"this is shard {self.config.shard}")
            )
            return
        if isinstance(frame, Hello | PeerBeat | AckFrame):
            role = _role(frame.role) if isinstance(frame, Hello | PeerBeat) else STANDBY
            effect, stale = e.on_peer_term(role, frame.term)
            self._apply(effect)
            if stale:
                self._refuse_stale(ident, frame.id, role, frame.term)
                return
        if not self.active:
            return  # a standby's frames mean nothing to a standby
        now = mono_ms()
        if isinstance(frame, Hello):
            self._serve_snapshot(ident, frame.id, now)
        elif isinstance(frame, AckFrame):
            self._on_ack(frame, now)
        elif isinstance(frame, PeerBeat):
            e.standby_frame(frame.id, now)

    def _log_once(
        self, key: tuple[object, ...], message: str, level: int, **fields: object
    ) -> bool:
        """Log ``message`` the first time ``key`` is seen (whether it was logged now)."""
        if key in self._logged:
            return False
        if len(self._logged) >= LOGGED_MAX:
            self._logged.clear()
        self._logged.add(key)
        logs.event(log, str(key[0]), message, level, **fields)
        return True

    def _refuse_stale(self, ident: bytes, peer: str, role: str, term: int) -> None:
        self.m_refused.labels("stale_term").inc()  # every one; logged once per peer and term
        ours = self.election.term
        self._log_once(
            ("pair_refused", peer, role, term, ours),
            f"refused {peer}: it says it is {role} in term {term}, ours is {ours} "
            "(repeats from it in this term are counted, not logged)",
            logging.WARNING,
            peer=peer,
            term=term,
        )
        self._reply(ident, Refusal(id=self.me, term=self.election.term, why="stale term"))

    def _serve_snapshot(self, ident: bytes, standby: str, now: int) -> None:
        """A standby said hello: send the journal as a snapshot, then stream to it.

        A copy of the hello already answered (the same connection and standby,
        within one lease of its snapshot: ``StandbySession.repeats``) is ignored:
        after a cut heals, the hellos queued meanwhile arrive together, and each
        used to start a snapshot and drop the standby's protection for nothing.
        """
        e = self.election
        session = self._session
        if (
            session is not None
            and ident == self._standby_ident
            and session.repeats(standby, now, self.config.lease_ms)
        ):
            self._log_once(
                ("repeated_hello", standby, session.sent_at),
                f"ignored a repeated hello from {standby}: its snapshot went out "
                f"{now - session.sent_at} ms ago",
                logging.INFO,
            )
            return
        if e.standby_id is not None and e.standby_id != standby:
            log.warning("a new standby %s replaces %s", standby, e.standby_id)
            e.standby_lost()
            self.server.beat_discovery_now()
        elif e.standby_id == standby:
            e.standby_lost()  # it asks again: it lost the stream
            self.server.beat_discovery_now()
        self._unacked.clear()
        data = self.server.journal_bytes()
        self._standby_ident = ident
        self._session = StandbySession(standby, self.seq, sent_at=now)
        parts = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        for n, part in enumerate(parts):
            self._to_standby(
                Snapshot(
                    id=self.me,
                    term=e.term,
                    seq=self.seq,
                    part=n,
                    last=n == len(parts) - 1,
                    data=part,
                )
            )
        self.m_snapshots.labels("sent").inc()
        log.info(
            "sending standby %s a snapshot: %d bytes in %d parts, up to batch %d",
            standby,
            len(data),
            len(parts),
            self.seq,
        )

    def _on_ack(self, ack: AckFrame, now: int) -> None:
        e = self.election
        session = self._session
        if session is None or ack.id != session.standby:
            return
        self.acked = max(self.acked, ack.seq)
        while self._unacked and self._unacked[0][0] <= ack.seq:
            self._unacked.popleft()
        if e.standby_id is None and session.ack(ack.seq, self._released_max, now):
            e.standby_synced(ack.id, now)
            self._unacked.clear()
            self._unacked.extend((s, now) for s in range(ack.seq + 1, self.seq + 1))
            logs.event(
                log,
                "standby_in_sync",
                f"standby {ack.id} is in sync at batch {ack.seq}: protected",
                standby=ack.id,
            )
            self.server.beat_discovery_now()
        e.standby_frame(ack.id, now)
        self.server.release()

    # --- standby side ------------------------------------------------------------------------

    async def _on_dealer_frame(self, frame: Frame) -> AckFrame | None:
        e = self.election
        if isinstance(frame, Refusal):
            self._on_refusal(frame)
            return None
        if not isinstance(frame, Snapshot | BatchFrame | PeerBeat):
            self.m_refused.labels("bad_frame").inc()
            return None
        role = ACTIVE if isinstance(frame, Snapshot | BatchFrame) else _role(frame.role)
        if frame.term < e.term and role == ACTIVE:
            self.m_refused.labels("stale_term").inc()
            self._log_once(
                ("pair_refused", frame.id, ACTIVE, frame.term, e.term),
                f"refused {type(frame).__name__} from {frame.id}: term {frame.term} < ours "
                f"{e.term} (repeats from it in this term are counted, not logged)",
                logging.WARNING,
                peer=frame.id,
                term=frame.term,
            )
            self._to_peer(Refusal(id=self.me, term=e.term, why="stale term"))
            self._lost_sync()
            return None
        effect, stale = e.on_peer_term(role, frame.term)
        self._apply(effect)
        if stale or self.active:
            if stale:
                self._to_peer(Refusal(id=self.me, term=e.term, why="stale term"))
                self.m_refused.labels("stale_term").inc()
            return None
        now = mono_ms()
        if isinstance(frame, PeerBeat):
            if frame.role == ACTIVE:
                e.active_frame(frame.id, now)
                if self._expect is not None:
                    self.lag = max(0, frame.seq - (self._expect - 1))

            return None
        e.active_frame(frame.id, now)
        if isinstance(frame, Snapshot):
            return await self._on_snapshot(frame)
        return self._on_batch(frame)

    async def _on_snapshot(self, snap: Snapshot) -> AckFrame | None:
        path = self.directory / SNAPSHOT_NAME
        if snap.part == 0:
            self.close()
            self._expect = None
            self.election.out_of_sync()
            self._snap_file = open(path, "wb")  # noqa: SIM115 (closed when the last part arrives)
            self._snap_part, self._snap_from = 0, snap.id
        elif self._snap_file is None or snap.part != self._snap_part or snap.id != self._snap_from:
            self._lost_sync("a snapshot part went missing")
            return None
        self._snap_file.write(snap.data)
        self._snap_part += 1
        if not snap.last:
            return None
        f, self._snap_file = self._snap_file, None
        f.flush()
        os.fsync(f.fileno())
        f.close()
        await self.server.install_snapshot(path)
        self.m_snapshots.labels("installed").inc()
        self._expect = snap.seq + 1
        self._active_name = snap.id
        self.election.in_sync(snap.id, mono_ms())
        if snap.term > self.election.term:
            self._apply(AdoptTerm(snap.term))
        logs.event(
            log,
            "standby_synced",
            f"snapshot from {snap.id} installed (up to batch {snap.seq}, term {snap.term}): "
            "in sync",
            active=snap.id,
            term=snap.term,
        )
        return AckFrame(id=self.me, term=self.election.term, seq=snap.seq)

    def _on_batch(self, batch: BatchFrame) -> AckFrame | None:
        if self._expect is None or batch.id != self._active_name:
            return None  # not synced yet (a snapshot is coming): ignore
        if batch.seq < self._expect:
            return None  # a repeat
        if batch.seq > self._expect:
            self._lost_sync(f"batch {self._expect} went missing (got {batch.seq})")
            return None
        try:
            records = check_batch(batch.data)
        except WireError as exc:
            self._bad(exc)
            self._lost_sync("a corrupt batch")
            return None
        self.server.apply_replicated(batch.data, records)
        self._expect = batch.seq + 1
        return AckFrame(id=self.me, term=self.election.term, seq=batch.seq)

    def _lost_sync(self, why: str = "") -> None:
        if why:
            log.warning("standby out of sync: %s; asking for a snapshot", why)
        self.close()
        self._expect = None
        self._hello_at = None
        self.election.out_of_sync()

    # --- terms, roles and discovery -------------------------------------------------------

    def _on_refusal(self, refusal: Refusal) -> None:
        self._log_once(
            ("pair_refused_us", refusal.id, refusal.term, refusal.why),
            f"peer {refusal.id} refused us (term {refusal.term}): {refusal.why} "
            "(repeats in this term are not logged)",
            logging.WARNING,
            peer=refusal.id,
            term=refusal.term,
        )
        effect, _ = self.election.on_peer_term("active", refusal.term)
        self._apply(effect)

    def _bad(self, exc: Exception) -> None:
        self.m_refused.labels("bad_frame").inc()
        log.warning("bad replication frame: %s", exc)

    def report(self) -> Report:
        """What the next discovery heartbeat says (called as it is built)."""
        now = mono_ms()
        report = self.election.report(now)
        self.election.sent(report)
        self._hb_sent_at = now
        self.beats += 1
        return report

    def on_discovery_reply(self, reply: Reply) -> None:
        """Discovery answered: follow its lease."""
        if reply.lease is None:
            return
        alone = self.election.may_ack_alone()
        self._apply(self.election.on_lease(reply.lease, self._hb_sent_at, mono_ms()))
        if self.election.may_ack_alone() and not alone:
            logs.event(
                log,
                "broker_unprotected",
                f"active in term {self.election.term} without an in-sync standby: acking alone "
                "(discovery will not hand the shard to the standby until it is in sync again)",
                logging.WARNING,
                term=self.election.term,
            )
        self.server.release()

    def _apply(self, effect: Effect) -> None:
        if effect is None:
            return
        store_term(self.directory, effect.term)  # before acting in it
        if isinstance(effect, Promote):
            self.m_role_changes.labels("active").inc()
            self.close()
            self._expect, self._standby_ident, self._session = None, None, None
            self._unacked.clear()
            logs.event(
                log,
                "broker_promoted",
                f"active in term {effect.term}",
                logging.WARNING,
                term=effect.term,
            )
            self.server.promoted()
            # Discovery must hear us say in_sync=false, as active, before we ack alone
            # (broker.election, "Promotion"): ask it now, not a heartbeat interval later.
            self.server.beat_discovery_now()
        elif isinstance(effect, Demote):
            self.m_role_changes.labels("standby").inc()
            self._standby_ident, self._session = None, None
            self._unacked.clear()
            self._lost_sync()
            logs.event(
                log,
                "broker_demoted",
                f"standby now ({effect.why}): dropping what was not replicated, resyncing",
                logging.WARNING,
                term=effect.term,
            )
            self.server.demoted()
        else:
            log.info("term %d adopted", effect.term)


def _role(value: str) -> Role:
    """A frame's role (the frame checked it is one of the two when it was decoded)."""
    return ACTIVE if value == ACTIVE else STANDBY


def journal_is_empty(directory: Path) -> bool:
    """Whether a journal directory holds no journal records yet."""
    path = directory / "journal.log"
    return not path.exists() or path.stat().st_size == 0
