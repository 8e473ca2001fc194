"""The live broker shards, fed by brokers' heartbeats.  Pure: time is the ``now`` argument.

A cluster has a fixed number of shards N (docs/architecture.md, "Broker
shards").  Discovery learns N from ``--shards N``, or else from the first broker
that registers, and keeps it for its own life; a broker that says another N is
refused (``shard_count``) and exits.  Each (shard, role) has at most one live
broker: a heartbeat from another broker instance (another ``epoch``) for a
shard and role whose broker is still live is refused (``shard_taken``).  A
broker is live until it has been silent for ``MISSES`` of its own intervals,
or until it says goodbye; a broker restarted after a crash therefore waits at
most that long before it is accepted (it keeps retrying meanwhile).

``shard_map()`` is what edges route by: the count and, for each shard that
has one, its live active broker and, for a pair, its live standby, each with
the role and term its heartbeat declared (docs/architecture.md, "Broker
pairs").  Entries of brokers outside a pair (active, term 0) keep the 5-item
form edges older than pairs read.

The brokers of a pair (heartbeats with a ``repl`` endpoint) are kept by id, not
by role: their roles change at a failover, and which of them may be active is
decided by the shard's lease (``discovery.leases``), not here.  Their ids name
their journals, so a restarted one replaces its own entry at once.  When two
brokers of a shard say they are in the same role (a dead active one not yet
evicted, next to the one that took over), the map lists the one in the
highest term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from xlmate.heartbeat import (
    SHARD_COUNT,
    SHARD_TAKEN,
    BrokerHeartbeat,
    ShardAddress,
    ShardMap,
)

MISSES: Final = 3


@dataclass(frozen=True, slots=True)
class BrokerEntry:
    """One broker as discovery knows it: its last heartbeat and when it arrived."""

    heartbeat: BrokerHeartbeat
    last_seen: float  # the registry's clock, seconds
    since: float  # when this instance (epoch) was first accepted

    def expires_at(self, misses: int = MISSES) -> float:
        """The time after which this broker counts as gone."""
        return self.last_seen + misses * self.heartbeat.interval_ms / 1000.0

    def view(self, now: float) -> dict[str, Any]:
        """The ``GET /v1/brokers`` entry."""
        hb = self.heartbeat
        return {
            "id": hb.id,
            "shard": hb.shard,
            "role": hb.role,
            "epoch": hb.epoch,
            "term": hb.term,
            "lag": hb.lag,
            "in_sync": hb.in_sync,
            # an active broker of a pair (it replicates, or has had a term) without a standby
            "unprotected": hb.role == "active"
            and (hb.repl is not None or hb.term > 0)
            and not hb.in_sync,
            "peer": hb.peer,
            "health": "ok" if hb.ready else "recovering",
            "xsub": hb.xsub,
            "xpub": hb.xpub,
            "catchup": hb.catchup,
            "repl": hb.repl,
            "http": hb.http,
            "interval_ms": hb.interval_ms,
            "last_heartbeat_s": round(max(0.0, now - self.last_seen), 3),
            "up_s": round(max(0.0, now - self.since), 3),
        }


@dataclass(frozen=True, slots=True)
class BrokerBeatResult:
    """What one broker heartbeat did: accepted, or refused with a code and a sentence.

    ``previous`` is the entry it replaced (None: a broker that just joined);
    ``replaced`` is True when it took the place of another instance (a restart).
    """

    accepted: bool
    error: str | None = None
    message: str | None = None
    previous: BrokerEntry | None = None


class BrokerRegistry:
    """Live brokers by (shard, role); the cluster's shard count."""

    def __init__(self, shards: int | None = None, *, misses: int = MISSES) -> None:
        if shards is not None and shards < 1:
            raise ValueError("shards must be at least 1")
        if misses < 1:
            raise ValueError("misses must be at least 1")
        self.shards = shards  # None until fixed by the first broker
        self.fixed_by = "--shards" if shards is not None else None
        self._entries: dict[tuple[int, str], BrokerEntry] = {}
        self._misses = misses

    def __len__(self) -> int:
        return len(self._entries)

    def _alive(self, entry: BrokerEntry, now: float) -> bool:
        return now <= entry.expires_at(self._misses)

    def beat(self, hb: BrokerHeartbeat, now: float) -> BrokerBeatResult:
        """Record a broker's heartbeat, or refuse it (module docstring)."""
        if self.shards is None:
            self.shards = hb.shards
            self.fixed_by = f"the first broker ({hb.id})"
        if hb.shards != self.shards:
            return BrokerBeatResult(
                False,
                SHARD_COUNT,
                f"this cluster has {self.shards} shards (fixed by {self.fixed_by}); "
                f"a broker started with --shard {hb.shard}/{hb.shards} cannot join it",
            )
        key = (hb.shard, hb.role if hb.repl is None else f"pair:{hb.id}")
        previous = self._entries.get(key)
        if previous is not None and not self._alive(previous, now):
            previous = None
        if previous is not None and previous.heartbeat.epoch != hb.epoch and hb.repl is None:
            other = previous.heartbeat
            return BrokerBeatResult(
                False,
                SHARD_TAKEN,
                f"shard {hb.shard}/{hb.shards} already has a live {hb.role} broker "
                f"({other.id}, epoch {other.epoch}, at {other.xsub})",
            )
        since = previous.since if previous is not None else now
        self._entries[key] = BrokerEntry(hb, now, since)
        return BrokerBeatResult(True, previous=previous)

    def remove(self, broker_id: str) -> BrokerEntry | None:
        """Forget the broker with this id now (it said goodbye); its entry or None."""
        for key, entry in self._entries.items():
            if entry.heartbeat.id == broker_id:
                del self._entries[key]
                return entry
        return None

    def evict(self, now: float) -> list[BrokerEntry]:
        """Forget every broker silent for more than ``misses`` of its intervals; the evicted."""
        gone = [key for key, entry in self._entries.items() if not self._alive(entry, now)]
        return [self._entries.pop(key) for key in sorted(gone)]

    def alive(self, now: float) -> list[BrokerEntry]:
        """Live brokers, by shard then role."""
        return [
            self._entries[key]
            for key in sorted(self._entries)
            if self._alive(self._entries[key], now)
        ]

    def shard_map(self, now: float) -> ShardMap | None:
        """The count and each shard's live brokers, active first, each with its role and
        term; None until the count is known.  Two live brokers of a shard in one role (a
        dead active one not yet evicted, next to the one that took over): the one in the
        highest term."""
        if self.shards is None:
            return None
        best: dict[tuple[int, str], BrokerHeartbeat] = {}
        for entry in self.alive(now):
            hb = entry.heartbeat
            place = (hb.shard, hb.role)
            if place not in best or hb.term > best[place].term:
                best[place] = hb
        brokers = tuple(
            ShardAddress(hb.shard, hb.epoch, hb.xsub, hb.xpub, hb.catchup, hb.role, hb.term)
            for _, hb in sorted(best.items())
        )
        return ShardMap(self.shards, brokers)

    def view(self, now: float) -> dict[str, Any]:
        """The ``GET /v1/brokers`` answer: the count, every shard and its live brokers."""
        alive = self.alive(now)
        shards = []
        for index in range(1, (self.shards or 0) + 1):
            brokers = [e.view(now) for e in alive if e.heartbeat.shard == index]
            shards.append({"shard": index, "brokers": brokers, "up": bool(brokers)})
        return {"count": self.shards, "fixed_by": self.fixed_by, "shards": shards}
