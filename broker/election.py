"""Who is active in a broker pair: the broker's side of the three votes.  Pure.

No sockets and no clock: every input carries ``now`` (milliseconds, any
monotonic origin), and the glue (``broker.pairing``) carries out what the
answers say.  The rules (docs/architecture.md, "Broker pairs"):

- **Terms.**  A term is granted by discovery when a broker becomes active and
  only grows; the broker persists the highest one it has seen.  A broker that
  sees a higher term than its own while active (in discovery's lease, or from
  its peer) steps down at once: ``Demote``.
- **Claiming.**  A standby asks for the lease (``claim`` in its heartbeat)
  only when it is in sync and has heard nothing from the active broker for a
  whole lease.  A standby that is not in sync claims only while discovery
  knows no holder at all (a cold start of the whole shard, where discovery
  picks the highest term); one with an empty journal waits two more leases
  first, so a broker with data wins the cold start.  An active broker claims
  on every heartbeat, which renews its lease.
- **Promotion.**  A lease naming this broker as holder makes it active in the
  lease's term (``Promote``; the glue persists the term before acting, and
  heartbeats at once).  A broker's id is its journal's (``broker.termfile``),
  so a broker restarted on its journal while discovery still names it holder
  claims again, and discovery renews its lease (rule 1): everything it acked
  is in that journal.  A new active broker does *not* ack alone yet: the
  lease that promoted it says nothing about whom discovery records as its
  protector (a restarted holder resumes a lease whose protector is still the
  standby it named before it died), so it acks alone only under the acking
  rule below, like any active broker that lost its standby.
- **Accepting.**  An active broker accepts commands only while it has heard,
  within one lease, discovery confirming its lease or its in-sync standby
  (``accepting``): cut off from both, it fences itself.
- **Acking.**  An active broker with an in-sync standby acks a batch once the
  standby has acked it (the glue waits for that).  When the standby is lost,
  (or has none yet, just promoted) it must first tell discovery, in a
  heartbeat sent *as active* (``in_sync=false``), and get an answer with its
  lease still held in its term; only then ``alone`` is true and it acks
  without the standby.  Discovery then refuses the lease to that standby
  until this broker names it in sync again (discovery's rule 4).

What discovery's lease confirms is measured from when the heartbeat was *sent*
(``sent_at``): discovery's lease runs at least ``lease.ms`` from a moment
after that, so ``sent_at + lease.ms`` is a safe lower bound on this side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from xlmate.heartbeat import Lease

Role = Literal["active", "standby"]

ACTIVE: Final = "active"
STANDBY: Final = "standby"
EMPTY_JOURNAL_LEASES: Final = 2  # leases an empty broker waits before a cold-start claim


@dataclass(frozen=True, slots=True)
class Report:
    """What this broker's next heartbeat to discovery says."""

    role: Role
    term: int
    claim: bool
    in_sync: bool
    peer: str | None


@dataclass(frozen=True, slots=True)
class Promote:
    """Become active in ``term`` (persist it first)."""

    term: int


@dataclass(frozen=True, slots=True)
class Demote:
    """Stop accepting, drop what was not replicated, rejoin as standby in ``term``."""

    term: int
    why: str


@dataclass(frozen=True, slots=True)
class AdoptTerm:
    """Stay in the role, but persist and use ``term`` from now on."""

    term: int


Effect = Promote | Demote | AdoptTerm | None


class Election:
    """The role and lease state of one paired broker (module docstring)."""

    def __init__(
        self,
        me: str,
        *,
        term: int,
        lease_ms: int,
        now: int,
        empty: bool = False,
    ) -> None:
        if lease_ms < 1:
            raise ValueError("lease_ms must be positive")
        self.me = me
        self.term = term
        self.lease_ms = lease_ms
        self.role: Role = STANDBY
        self.started = now
        self.empty = empty  # started with an empty journal (waits longer on a cold start)
        # Standby side.
        self.synced = False  # in sync with the active broker ``active_id``
        self.active_id: str | None = None
        self.active_heard: int | None = None  # last replication frame from the active
        # Active side.
        self.standby_id: str | None = None  # the in-sync standby, None when unprotected
        self.standby_heard: int | None = None
        self.alone = False  # discovery confirmed an in_sync=false report in our term
        self.lease_until: int | None = None  # our lease, as discovery last confirmed it
        self._reported_alone = False  # a heartbeat saying in_sync=false went out
        self.holder_seen: str | None = None  # discovery's last answer: who holds the lease
        self.no_holder_since: int | None = None  # discovery says nobody ever held it, since

    # --- what to say -----------------------------------------------------------

    def report(self, now: int) -> Report:
        """The heartbeat to send now (``sent`` must be called with its time)."""
        if self.role == ACTIVE:
            in_sync = self.standby_id is not None
            return Report(ACTIVE, self.term, True, in_sync, self.standby_id)
        return Report(STANDBY, self.term, self._should_claim(now), self.synced, self.active_id)

    def sent(self, report: Report) -> None:
        """A heartbeat with ``report`` went out (an unprotected one starts the alone clock)."""
        if report.role == ACTIVE and not report.in_sync:
            self._reported_alone = True

    def _should_claim(self, now: int) -> bool:
        if self.holder_seen == self.me:
            return True  # we hold it (restarted on our journal): renew (rule 1)
        if self.synced:
            heard = self.active_heard if self.active_heard is not None else self.started
            return now - heard >= self.lease_ms
        if self.no_holder_since is None:
            return False
        if self.empty:
            return now - self.no_holder_since >= EMPTY_JOURNAL_LEASES * self.lease_ms
        return True

    # --- discovery's answers -------------------------------------------------------

    def on_lease(self, lease: Lease, sent_at: int, now: int) -> Effect:
        """Discovery answered a heartbeat sent at ``sent_at`` with ``lease``."""
        self.holder_seen = lease.holder
        if lease.holder is None:
            if self.no_holder_since is None:
                self.no_holder_since = now
        else:
            self.no_holder_since = None
        if lease.holder == self.me and lease.ms > 0:
            until = sent_at + lease.ms
            if self.role == STANDBY:
                if lease.term < self.term:
                    return None  # a grant older than what we know: ignore
                self._become_active(lease.term, until)
                return Promote(lease.term)
            effect: Effect = None
            if lease.term > self.term:
                self.term = lease.term
                effect = AdoptTerm(lease.term)
            if lease.term == self.term:
                self.lease_until = until
                if self._reported_alone and self.standby_id is None:
                    self.alone = True
            return effect
        if lease.term > self.term and lease.holder is not None:
            return self._higher_term(lease.term, f"discovery granted term {lease.term}")
        return None

    def _become_active(self, term: int, until: int) -> None:
        self.role, self.term, self.lease_until = ACTIVE, term, until
        self.synced, self.active_id = False, None
        self.standby_id, self.standby_heard = None, None
        # Not alone yet: discovery may still record a protector for this lease (a
        # holder restarted on its journal resumes the lease it held, protected by the
        # standby it named then).  The next heartbeat, sent as active, says
        # in_sync=false; discovery's answer to it lets us ack alone.
        self.alone, self._reported_alone = False, False

    def _higher_term(self, term: int, why: str) -> Effect:
        self.term = term
        if self.role == ACTIVE:
            self._become_standby()
            return Demote(term, why)
        return AdoptTerm(term)

    def _become_standby(self) -> None:
        self.role = STANDBY
        self.synced, self.active_id, self.active_heard = False, None, None
        self.standby_id, self.standby_heard = None, None
        self.alone, self._reported_alone, self.lease_until = False, False, None

    # --- the peer ----------------------------------------------------------------------

    def on_peer_term(self, role: Role, term: int) -> tuple[Effect, bool]:
        """The peer says it is ``role`` in ``term``: (effect, whether to refuse it as stale).

        A higher term than ours wins over us.  A peer that claims to be active
        in a term not above ours while we are active is stale (refused).
        """
        if term > self.term:
            return self._higher_term(term, f"the peer is {role} in term {term}"), False
        stale = role == ACTIVE and self.role == ACTIVE
        return None, stale

    def active_frame(self, active_id: str, now: int) -> None:
        """A replication frame from the active broker (standby side)."""
        self.active_id = active_id
        self.active_heard = now

    def in_sync(self, active_id: str, now: int) -> None:
        """The standby has applied the snapshot and the stream so far."""
        self.synced, self.active_id, self.active_heard = True, active_id, now

    def out_of_sync(self) -> None:
        """The standby lost the stream (a gap, a refusal, the active went alone)."""
        self.synced = False

    def standby_frame(self, standby_id: str, now: int) -> None:
        """A frame from our in-sync standby (active side)."""
        if standby_id == self.standby_id:
            self.standby_heard = now

    def standby_synced(self, standby_id: str, now: int) -> None:
        """The standby acked the snapshot: from now on batches wait for its acks."""
        self.standby_id, self.standby_heard = standby_id, now
        self.alone, self._reported_alone = False, False

    def standby_lost(self) -> None:
        """The standby stopped acking: hold acks until discovery confirms we may go alone."""
        self.standby_id, self.standby_heard = None, None
        self.alone, self._reported_alone = False, False

    # --- questions ----------------------------------------------------------------------

    def accepting(self, now: int) -> bool:
        """Whether this broker may take commands now (active and not cut off from both)."""
        if self.role != ACTIVE:
            return False
        if self.lease_until is not None and now < self.lease_until:
            return True
        heard = self.standby_heard
        return self.standby_id is not None and heard is not None and now - heard < self.lease_ms

    def may_ack_alone(self) -> bool:
        """Whether batches may be acked without a standby's ack."""
        return self.role == ACTIVE and self.standby_id is None and self.alone
