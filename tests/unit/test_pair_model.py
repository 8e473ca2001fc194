"""Never two histories: a hypothesis state machine of a broker pair and discovery.

The real pure cores decide (``broker.election.Election`` in each broker,
``discovery.leases.Leases`` in discovery); around them a small model does what
``broker.pairing`` does with sockets: it numbers batches, streams them to the
standby, acks them, serves snapshots and says hello.  Hypothesis drives it
with arbitrary interleavings: time passing, messages delivered late or lost,
links cut and healed, brokers SIGKILLed and restarted (on their journal and
term file, which keeps their member id, or on a new empty disk, which makes a
new one), heartbeats whose replies never arrive, and heartbeats the broker
gave up on that reach discovery late, after newer ones.

The property: **no acked batch is ever lost**, which is what "never two
brokers acking in the same shard" protects.  Whenever a broker becomes active
(promoted, or granted a new term while still active), its journal holds every
batch any broker has acked so far; whenever a broker acks a batch, its own
journal holds every batch acked before (one history), and every broker active
in a higher term already holds it.

``PAIR_MODEL_EXAMPLES=20000`` (and ``PAIR_MODEL_STEPS=300``) run a longer hunt; a
failing run it finds is kept below as a plain test (``replay``), since CI has no
example database.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from xlmate.broker.election import ACTIVE, AdoptTerm, Demote, Election, Promote
from xlmate.broker.standby_sync import StandbySession
from xlmate.discovery.leases import Leases
from xlmate.heartbeat import BrokerHeartbeat, Lease

LEASE_MS = 1000
WAIT_MS = 1000  # --standby-wait-ms
NAMES = ("A", "B")

Msg = tuple[Any, ...]


@dataclass
class Broker:
    """One broker of the model: its election, journal (batch ids) and pairing state."""

    name: str
    disk: int = 0  # a new disk (journal) is a new member id
    term_file: int = 0
    log: list[int] = field(default_factory=list)
    alive: bool = True
    election: Election | None = None
    # Active side.
    acked_upto: int = 0  # the standby acked batches [0, acked_upto)
    session: StandbySession | None = None  # the standby we stream to, and its catch-up
    unacked_since: dict[int, int] = field(default_factory=dict)  # index -> sent at
    released: int = 0  # batches [0, released) acked to clients
    released_max: int = 0  # Pairing._released_max
    # Standby side.
    synced_from: str | None = None
    hello_at: int | None = None
    # Discovery request in flight: (report, sent_at); reply waiting: (lease, sent_at).
    request: tuple[BrokerHeartbeat, int] | None = None
    # Requests given up on (a newer one was sent, or the broker died) that were on the
    # wire: discovery may still get them, late and out of order (Lazy Pirate).
    strays: list[tuple[BrokerHeartbeat, int]] = field(default_factory=list)
    boot: int = 1  # starts on this journal (<journal dir>/boots)
    beats: int = 0  # heartbeats since this start
    reply: tuple[Lease, int] | None = None

    @property
    def id(self) -> str:
        return f"{self.name}.{self.disk}"

    @property
    def e(self) -> Election:
        assert self.election is not None
        return self.election


class PairModel(RuleBasedStateMachine):
    """Two brokers, discovery and the links between them (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.discovery = Leases(started=0.0)
        self.brokers = {name: Broker(name) for name in NAMES}
        for b in self.brokers.values():
            b.election = Election(b.id, term=0, lease_ms=LEASE_MS, now=0, empty=True)
        self.links = {"AB": True, "AD": True, "BD": True}
        self.queues: dict[tuple[str, str], list[Msg]] = {("A", "B"): [], ("B", "A"): []}
        self.batch_ids = itertools.count(1)
        self.acked: set[int] = set()
        self.disk_replaced = False  # then the shard may rightly stay stuck (see heal_and_settle)

    # --- helpers ---------------------------------------------------------------------------

    def other(self, name: str) -> Broker:
        return self.brokers["B" if name == "A" else "A"]

    def up(self, x: str, y: str) -> bool:
        return self.links["".join(sorted(x + y))]

    def send(self, src: Broker, msg: Msg) -> None:
        self.queues[(src.name, self.other(src.name).name)].append(msg)

    def apply(self, b: Broker, effect: Any) -> None:
        if effect is None:
            return
        b.term_file = max(b.term_file, effect.term)
        if isinstance(effect, Promote) or (isinstance(effect, AdoptTerm) and b.e.role == ACTIVE):
            # Promoted, or granted a new term while still active (its lease had
            # expired at discovery): either way it now leads a term.
            missing = self.acked - set(b.log)
            assert not missing, f"{b.id} became active in term {effect.term} without {missing}"
        if isinstance(effect, Promote):
            b.released = b.released_max = len(b.log)  # (nothing left to hold)
            b.acked_upto, b.session, b.unacked_since = 0, None, {}
            b.synced_from = None
        elif isinstance(effect, Demote):
            b.session, b.unacked_since = None, {}
            b.synced_from, b.hello_at = None, None
        else:
            assert isinstance(effect, AdoptTerm)

    def release(self, b: Broker) -> None:
        """Ack to clients what the election and the standby allow (Pairing.released)."""
        e = b.e
        if not b.alive or e.role != ACTIVE:
            return
        if e.may_ack_alone():
            frozen = b.session is not None and b.session.frozen
            limit = b.released_max if frozen else len(b.log)
        elif e.standby_id is not None:
            limit = b.acked_upto
        else:
            return
        b.released_max = max(b.released_max, limit)
        missing = self.acked - set(b.log)
        assert limit <= b.released or not missing, (
            f"{b.id} (term {e.term}) acks on a history without acked {missing}"
        )
        for index in range(b.released, limit):
            batch = b.log[index]
            for other in self.brokers.values():
                if other is not b and other.alive and other.e.role == ACTIVE:
                    assert other.e.term <= e.term or batch in other.log, (
                        f"{b.id} (term {e.term}) acks {batch} that active {other.id} "
                        f"(term {other.e.term}) does not hold"
                    )
            self.acked.add(batch)
        b.released = max(b.released, limit)

    # --- rules ------------------------------------------------------------------------------

    @initialize()
    def form_the_pair(self) -> None:
        """Start every run from a cold start that has settled: one active, one in sync."""
        for _ in range(40):
            self.steady(250)
            if self._formed():
                return
        raise AssertionError("the pair never formed on a cold start")

    @rule(ms=st.integers(0, 1500))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @rule(name=st.sampled_from(NAMES))
    def command(self, name: str) -> None:
        """An edge's command reaches the broker: applied (one batch) if it accepts."""
        b = self.brokers[name]
        if not (b.alive and b.e.accepting(self.now)):
            return
        b.log.append(next(self.batch_ids))
        index = len(b.log) - 1
        if b.session is not None:
            self.send(b, ("batch", b.id, b.e.term, index, b.log[index]))
            if b.e.standby_id is not None:
                b.unacked_since[index] = self.now

    @rule(name=st.sampled_from(NAMES))
    def durability(self, name: str) -> None:
        """The outbox loop runs: release what may go out."""
        self.release(self.brokers[name])

    @rule(name=st.sampled_from(NAMES))
    def tick(self, name: str) -> None:
        """The pairing tick: beats both ways, the lost-standby check, hellos."""
        b = self.brokers[name]
        if not b.alive:
            return
        e = b.e
        in_sync = e.standby_id is not None if e.role == ACTIVE else e.synced
        # The beat every broker sends its peer (DEALER: terms only), and the active
        # broker's beat to the standby it streams to (ROUTER: the standby hears it).
        self.send(b, ("peerbeat", b.id, e.term, e.role, in_sync))
        if e.role == ACTIVE and b.session is not None:
            self.send(b, ("beat", b.id, e.term, e.role, in_sync))
        if e.role == ACTIVE:
            heard = e.standby_heard if e.standby_heard is not None else self.now
            oldest = min(b.unacked_since.values(), default=self.now)
            if e.standby_id is not None and (
                self.now - heard >= WAIT_MS or self.now - oldest >= WAIT_MS
            ):
                e.standby_lost()
                b.unacked_since, b.session = {}, None
            session = b.session
            if session is not None and e.standby_id is None and session.expired(self.now, WAIT_MS):
                session.restart()
        else:
            since = None if b.hello_at is None else self.now - b.hello_at
            silent = e.active_heard is None or self.now - e.active_heard >= LEASE_MS
            if (b.synced_from is None and (since is None or since >= LEASE_MS // 4)) or (
                b.synced_from is not None and silent and (since is None or since >= LEASE_MS)
            ):
                b.hello_at = self.now
                self.send(b, ("hello", b.id, e.term))

    @rule(name=st.sampled_from(NAMES))
    def peer_connection_drops(self, name: str) -> None:
        """The broker's connection to its peer drops (a SIGKILL, a reset link): if active,
        it loses its standby at once (Pairing._watch_peer), whether the standby lives."""
        b = self.brokers[name]
        if b.alive and b.e.role == ACTIVE and b.e.standby_id is not None:
            b.e.standby_lost()
            b.unacked_since, b.session = {}, None

    @rule(src=st.sampled_from(NAMES), count=st.integers(1, 8), lose=st.booleans())
    def deliver(self, src: str, count: int, lose: bool) -> None:
        """The oldest ``count`` frames from ``src`` to its peer arrive (or the first is lost)."""
        dst = self.other(src)
        queue = self.queues[(src, dst.name)]
        for n in range(count):
            if not queue:
                return
            msg = queue.pop(0)
            if (lose and n == 0) or not dst.alive or not self.up(src, dst.name):
                continue
            self.receive(dst, msg)

    @rule(name=st.sampled_from(NAMES), lose_reply=st.booleans())
    def heartbeat(self, name: str, lose_reply: bool) -> None:
        """A whole heartbeat round trip (its reply possibly lost)."""
        self.heartbeat_sent(name)
        self.heartbeat_arrives(name)
        if not lose_reply:
            self.reply_arrives(name)

    @rule(ms=st.integers(0, 400))
    def steady(self, ms: int) -> None:
        """Normal operation for a moment: every process does its round, frames flow."""
        self.now += ms
        for name in NAMES:
            self.tick(name)
            self.heartbeat(name, lose_reply=False)
        for name in NAMES:
            self.deliver(name, 8, lose=False)
        for name in NAMES:
            self.deliver(name, 8, lose=False)
            self.command(name)
            self.durability(name)

    def receive(self, b: Broker, msg: Msg) -> None:
        e = b.e
        kind, sender, term = msg[0], msg[1], msg[2]
        if kind == "peerbeat":  # (Pairing._on_router_frame: a term check, and the
            # active broker hears its standby)
            effect, stale = e.on_peer_term(msg[3], term)
            self.apply(b, effect)
            if stale:
                self.send(b, ("refuse", b.id, e.term))
            elif e.role == ACTIVE and msg[3] == "standby":
                e.standby_frame(sender, self.now)
            return
        role = msg[3] if kind == "beat" else ("active" if kind in ("snap", "batch") else "standby")
        if kind in ("snap", "batch") and term < e.term:
            b.synced_from = None
            e.out_of_sync()
            self.send(b, ("refuse", b.id, e.term))
            return
        if kind == "refuse":
            effect, _ = e.on_peer_term("active", term)
            self.apply(b, effect)
            return
        effect, stale = e.on_peer_term(role, term)
        self.apply(b, effect)
        if stale:
            self.send(b, ("refuse", b.id, e.term))
            return
        if e.role == ACTIVE:
            if kind == "hello":
                if b.session is not None and b.session.repeats(sender, self.now, LEASE_MS):
                    return  # a copy of the hello already answered (Pairing._serve_snapshot)
                if e.standby_id is not None:
                    e.standby_lost()
                b.session = StandbySession(sender, len(b.log), sent_at=self.now)
                b.unacked_since = {}
                self.send(b, ("snap", b.id, e.term, list(b.log)))
            elif kind == "ack" and b.session is not None and sender == b.session.standby:
                b.acked_upto = max(b.acked_upto, msg[3])
                b.unacked_since = {i: t for i, t in b.unacked_since.items() if i >= msg[3]}
                if e.standby_id is None and b.session.ack(msg[3], b.released_max, self.now):
                    e.standby_synced(sender, self.now)
                    b.unacked_since = {i: self.now for i in range(msg[3], len(b.log))}
                e.standby_frame(sender, self.now)
            elif kind == "beat" and role == "standby":
                e.standby_frame(sender, self.now)
            return
        # Standby side.
        if kind == "beat" and role == ACTIVE:
            e.active_frame(sender, self.now)
        elif kind == "snap":
            e.active_frame(sender, self.now)
            b.log = list(msg[3])  # the snapshot replaces the journal (a divergent tail too)
            b.synced_from = sender
            e.in_sync(sender, self.now)
            self.send(b, ("ack", b.id, e.term, len(b.log)))
        elif kind == "batch":
            e.active_frame(sender, self.now)
            index, batch = msg[3], msg[4]
            if b.synced_from != sender or index > len(b.log):
                if b.synced_from == sender:
                    b.synced_from = None
                    e.out_of_sync()
                return
            if index == len(b.log):
                b.log.append(batch)
                self.send(b, ("ack", b.id, e.term, len(b.log)))

    @rule(name=st.sampled_from(NAMES))
    def heartbeat_sent(self, name: str) -> None:
        """The broker builds a heartbeat (a newer one abandons an unanswered one)."""
        b = self.brokers[name]
        if not b.alive:
            return
        report = b.e.report(self.now)
        b.e.sent(report)
        b.beats += 1
        hb = BrokerHeartbeat(
            id=b.id,
            shard=1,
            shards=1,
            epoch=b.id.replace(".", "-"),
            xsub="tcp://h:1",
            xpub="tcp://h:2",
            catchup="tcp://h:3",
            interval_ms=LEASE_MS // 4,
            role=report.role,
            term=report.term,
            claim=report.claim,
            in_sync=report.in_sync,
            peer=report.peer,
            repl="tcp://h:4",
            boot=b.boot,
            beat=b.beats,
        )
        if b.request is not None:
            b.strays.append(b.request)
        b.request, b.reply = (hb, self.now), None

    @rule(name=st.sampled_from(NAMES))
    def heartbeat_arrives(self, name: str) -> None:
        """Discovery gets the request (if the link is up) and decides."""
        b = self.brokers[name]
        if b.request is None:
            return
        hb, sent_at = b.request
        b.request = None
        if not self.links[f"{name}D"]:
            return
        decision = self.discovery.beat(hb, self.now / 1000)
        b.reply = (decision.lease, sent_at)

    @rule(name=st.sampled_from(NAMES))
    def reply_arrives(self, name: str) -> None:
        """The broker reads discovery's reply (if still alive and the link is up)."""
        b = self.brokers[name]
        if b.reply is None:
            return
        lease, sent_at = b.reply
        b.reply = None
        if b.alive and self.links[f"{name}D"]:
            self.apply(b, b.e.on_lease(lease, sent_at, self.now))

    @rule(name=st.sampled_from(NAMES))
    def stray_arrives(self, name: str) -> None:
        """A request given up on reaches discovery after all, within a lease of being
        sent (its reply goes nowhere)."""
        b = self.brokers[name]
        while b.strays:
            hb, sent_at = b.strays.pop(0)
            if self.now - sent_at <= LEASE_MS and self.links[f"{name}D"]:
                self.discovery.beat(hb, self.now / 1000)
                return

    @rule(link=st.sampled_from(("AB", "AD", "BD")))
    def toggle_link(self, link: str) -> None:
        self.links[link] = not self.links[link]

    @precondition(lambda self: all(b.alive for b in self.brokers.values()))
    @rule(name=st.sampled_from(NAMES))
    def sigkill(self, name: str) -> None:
        b = self.brokers[name]
        if b.request is not None:
            b.strays.append(b.request)
        b.alive, b.request, b.reply = False, None, None

    @rule(name=st.sampled_from(NAMES), new_disk=st.booleans())
    def restart(self, name: str, new_disk: bool) -> None:
        """A killed broker starts again as standby: on its journal and term file (same
        member id), or on a new empty disk (a new member id)."""
        b = self.brokers[name]
        if b.alive:
            return
        b.alive = True
        b.boot, b.beats = b.boot + 1, 0
        if new_disk:
            b.disk, b.log, b.term_file, b.boot = b.disk + 1, [], 0, 1
            self.disk_replaced = True
        b.election = Election(
            b.id, term=b.term_file, lease_ms=LEASE_MS, now=self.now, empty=not b.log
        )
        b.acked_upto, b.session, b.unacked_since = 0, None, {}
        b.released = b.released_max = len(b.log)
        b.synced_from, b.hello_at = None, None
        for key in self.queues:
            if name in key:
                self.queues[key].clear()

    @precondition(lambda self: not self.disk_replaced)
    @rule()
    def heal_and_settle(self) -> None:
        """Liveness: restart the dead on their own disks, heal every link; a pair forms again.

        (Not after a disk was replaced: if the lost journal belonged to the lease
        holder and it had no standby named in sync, nothing may take over, by design.)
        """
        for name, b in self.brokers.items():
            if not b.alive:
                self.restart(name, new_disk=False)
        self.links = dict.fromkeys(self.links, True)
        for _ in range(80):
            self.steady(250)
            if self._formed():
                return
        states = {
            b.id: (b.e.role, b.e.term, b.e.synced, b.e.standby_id) for b in self.brokers.values()
        }
        raise AssertionError(f"no pair formed after 20 s of calm: {states}")

    def _formed(self) -> bool:
        roles = sorted(b.e.role for b in self.brokers.values())
        return roles == ["active", "standby"] and all(
            b.e.synced or b.e.standby_id for b in self.brokers.values()
        )

    @invariant()
    def at_most_one_unfenced_active_per_term(self) -> None:
        terms = [b.e.term for b in self.brokers.values() if b.alive and b.e.role == ACTIVE]
        assert len(terms) == len(set(terms)), "two active brokers in one term"


TestPairModel = PairModel.TestCase
# PAIR_MODEL_EXAMPLES and PAIR_MODEL_STEPS raise the number and length of runs for a
# longer hunt (the suite keeps 400 runs of up to 100 steps).
TestPairModel.settings = settings(
    max_examples=int(os.environ.get("PAIR_MODEL_EXAMPLES", "400")),
    stateful_step_count=int(os.environ.get("PAIR_MODEL_STEPS", "100")),
    deadline=None,
)


def replay(steps: list[tuple[str, dict[str, Any]]]) -> None:
    """Run ``steps`` (rule name, arguments) on a fresh model, checking its invariant
    after each, as hypothesis does (a failing run found once, kept as a plain test so
    it is checked without an example database)."""
    model = PairModel()
    model.form_the_pair()
    model.at_most_one_unfenced_active_per_term()
    for name, kwargs in steps:
        getattr(model, name)(**kwargs)
        model.at_most_one_unfenced_active_per_term()
    model.teardown()


def test_a_restarted_holder_does_not_ack_alone_while_its_standby_is_protector() -> None:
    """The active broker, SIGKILLed and restarted on its journal within its lease, resumes
    it; what it acks before discovery has heard it is unprotected is held by the
    standby that then takes over when it dies again (was: "B.0 became active in term 2
    without {4}")."""
    replay(
        [
            ("heal_and_settle", {}),
            ("sigkill", {"name": "A"}),
            ("restart", {"name": "A", "new_disk": False}),
            ("steady", {"ms": 400}),
            ("sigkill", {"name": "A"}),
            ("steady", {"ms": 351}),
            ("heal_and_settle", {}),
        ]
    )


def test_a_late_heartbeat_does_not_name_the_standby_in_sync_after_the_active_went_alone() -> None:
    """A heartbeat the active broker gave up on ("my standby is in sync") reaches discovery
    after the newer one saying it is unprotected (and it acked alone): discovery ignores
    it, so the standby is not granted the lease without those batches when the active
    broker dies."""
    replay(
        [
            ("steady", {"ms": 250}),
            ("steady", {"ms": 250}),
            ("toggle_link", {"link": "AB"}),
            ("time_passes", {"ms": 1100}),
            ("heartbeat_sent", {"name": "A"}),
            ("tick", {"name": "A"}),
            ("heartbeat", {"name": "A", "lose_reply": False}),
            ("command", {"name": "A"}),
            ("durability", {"name": "A"}),
            ("stray_arrives", {"name": "A"}),
            ("sigkill", {"name": "A"}),
            ("toggle_link", {"link": "AB"}),
            *[("steady", {"ms": 250})] * 10,
        ]
    )
