"""Each shard's lease: discovery's vote in a broker pair.  Pure: time is the ``now`` argument.

A broker pair (docs/architecture.md, "Broker pairs") has three votes: its two
brokers and discovery.  Discovery's vote is this table: per shard, which broker
holds the lease (may be active), in which term, until when, and which standby
the holder last named as in sync.  A paired broker heartbeats every
``lease_ms / 4``; its lease is therefore ``4 * interval_ms`` (no extra field on
the wire).  The rules, numbered as in the docs:

1. A claim from the current holder renews the lease (expires = now + lease)
   and records who protects it: the ``peer`` it names when ``in_sync``, else
   nobody.
2. A claim from another broker X is granted only when the lease has expired
   (or nobody ever held it), discovery has been up for at least one lease
   (a live active broker re-claims first after a discovery restart), and
   either X is the standby the holder last named in sync, or nobody has held
   the lease in this discovery's life (then the highest reported term wins:
   X's term is at least that of every broker of the shard heard recently).
   A grant sets the term to the highest term discovery has seen for the
   shard plus one, and records the new holder as protected by nobody.
3. Otherwise the answer names the current holder and term: X stays standby.
4. An active broker that reports ``in_sync=false`` is unprotected (rule 1
   records nobody): its standby cannot be granted the lease until the active
   names it in sync again.  This is what lets a lone active broker go on
   safely: whatever it acks alone exists only on its disk, and no other
   broker can take the shard from it.

Heartbeats are applied in their broker's order: a broker gives up on a
request whose reply is late and sends a newer one (Lazy Pirate), but the old
one may still reach discovery afterwards.  Applied then, an old "my standby is
in sync" would undo a newer "in_sync=false" that let the broker ack alone, and
rule 4 would no longer hold.  So a heartbeat whose (``boot``, ``beat``) is not
above the last one applied from the same broker changes nothing (a broker
that sends neither, 0/0, is not checked).

Nothing here is persisted: after a discovery restart the table starts empty,
the grace of rule 2 lets the live active broker renew first, and a broker
that is not in sync never claims while a holder exists (a broker rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from xlmate.heartbeat import BrokerHeartbeat, Lease

LEASE_INTERVALS: Final = 4  # a paired broker's lease is this many of its heartbeat intervals
REPORT_INTERVALS: Final = 3  # a broker's reported term counts for this many intervals


def lease_s(hb: BrokerHeartbeat) -> float:
    """The lease length (seconds) a broker heartbeating every ``interval_ms`` asks for."""
    return LEASE_INTERVALS * hb.interval_ms / 1000.0


@dataclass(slots=True)
class ShardLease:
    """One shard's lease state."""

    holder: str | None = None
    term: int = 0  # the term of the current (or last) holder
    highest: int = 0  # the highest term discovery has seen for the shard
    expires: float = 0.0
    protector: str | None = None  # the standby the holder last named in sync
    ever_held: bool = False  # someone held the lease in this discovery's life
    reported: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (term, until)
    order: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> last (boot, beat)

    def view(self, now: float) -> Lease:
        """The ``Lease`` a reply carries."""
        left = max(0, round((self.expires - now) * 1000)) if self.holder is not None else 0
        return Lease(self.holder, self.term, left)


@dataclass(frozen=True, slots=True)
class Decision:
    """What a heartbeat did to the lease: granted (a new term), renewed, or neither."""

    lease: Lease
    granted: bool = False
    renewed: bool = False
    why: str = ""  # a refused claim: why (for the log)


class Leases:
    """The lease of every shard (module docstring)."""

    def __init__(self, started: float) -> None:
        self.started = started  # when this discovery started (rule 2's grace)
        self._shards: dict[int, ShardLease] = {}

    def get(self, shard: int) -> ShardLease | None:
        """The state of ``shard``'s lease, if any paired broker reported it."""
        return self._shards.get(shard)

    def beat(self, hb: BrokerHeartbeat, now: float) -> Decision:
        """Apply one paired broker's heartbeat (rules 1-4); the lease to answer with."""
        st = self._shards.setdefault(hb.shard, ShardLease())
        order = (hb.boot, hb.beat)
        if order != (0, 0):
            last = st.order.get(hb.id)
            if last is not None and order <= last:
                return Decision(st.view(now), why="a heartbeat older than one already applied")
            st.order[hb.id] = order
        st.highest = max(st.highest, hb.term)
        st.reported = {k: v for k, v in st.reported.items() if v[1] >= now}
        st.reported[hb.id] = (hb.term, now + REPORT_INTERVALS * hb.interval_ms / 1000.0)
        if not hb.claim:
            return Decision(st.view(now))
        length = lease_s(hb)
        if st.holder == hb.id:  # rule 1 (and rule 4: in_sync=false records nobody)
            st.expires = now + length
            st.protector = hb.peer if hb.in_sync else None
            return Decision(st.view(now), renewed=True)
        why = self._refusal(st, hb, now, length)
        if why:
            return Decision(st.view(now), why=why)
        st.term = st.highest + 1
        st.highest = st.term
        st.holder, st.expires, st.protector, st.ever_held = hb.id, now + length, None, True
        return Decision(st.view(now), granted=True)

    def _refusal(self, st: ShardLease, hb: BrokerHeartbeat, now: float, length: float) -> str:
        """Why rule 2 does not grant ``hb``'s claim ('' when it does)."""
        if st.holder is not None and now <= st.expires:
            return f"the lease is held by {st.holder} in term {st.term}"
        if now - self.started < length:
            return "discovery started less than one lease ago"
        if st.ever_held:
            if st.protector != hb.id:
                named = st.protector or "no standby"
                return f"the last holder {st.holder} named {named} in sync, not {hb.id}"
            return ""
        best = max(term for term, _ in st.reported.values())
        if hb.term < best:
            return f"another broker of the shard reports a higher term ({best} > {hb.term})"
        return ""
