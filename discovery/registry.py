"""The set of live edges, fed by heartbeats.  Pure: time is the ``now`` argument.

An edge is *healthy* until it has been silent for more than ``MISSES`` of its
own heartbeat intervals (the ``interval_ms`` in its last heartbeat), so edges
that beat every 100 ms and every 5 s can share one discovery.  ``healthy()``
applies that rule on every call, so an evicted-but-not-yet-swept edge is never
offered; ``evict()`` forgets such edges for good.  The registry holds at most
``max_nodes`` edges and refuses new ids beyond that (known ids still update).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from xlmate.heartbeat import Heartbeat

MISSES: Final = 3
DEFAULT_MAX_NODES: Final = 10_000


@dataclass(frozen=True, slots=True)
class Node:
    """One edge as discovery knows it: its last heartbeat and when it arrived."""

    heartbeat: Heartbeat
    last_seen: float  # the registry's clock, seconds

    @property
    def id(self) -> str:
        return self.heartbeat.id

    @property
    def region(self) -> str:
        return self.heartbeat.region

    @property
    def url(self) -> str:
        return self.heartbeat.url

    @property
    def load(self) -> float:
        return self.heartbeat.load

    @property
    def draining(self) -> bool:
        return self.heartbeat.draining

    @property
    def has_room(self) -> bool:
        """Whether it takes one more client: under capacity and load below 1."""
        hb = self.heartbeat
        return hb.connections < hb.capacity and hb.load < 1.0

    @property
    def available(self) -> bool:
        """Whether placement may offer it: not draining, with room."""
        return not self.heartbeat.draining and self.has_room

    def expires_at(self, misses: int = MISSES) -> float:
        """The time after which this edge counts as gone."""
        return self.last_seen + misses * self.heartbeat.interval_ms / 1000.0

    def public(self) -> dict[str, Any]:
        """The docs/protocol.md ``Node`` object: ``{id, url, region, load}``."""
        return {"id": self.id, "url": self.url, "region": self.region, "load": self.load}

    def operator_view(self, now: float) -> dict[str, Any]:
        """The ``GET /v1/nodes`` entry."""
        hb = self.heartbeat
        return {
            "id": hb.id,
            "url": hb.url,
            "region": hb.region,
            "load": hb.load,
            "connections": hb.connections,
            "capacity": hb.capacity,
            "draining": hb.draining,
            "interval_ms": hb.interval_ms,
            "last_heartbeat_s": round(max(0.0, now - self.last_seen), 3),
            "shards": hb.shards,
            "unready": list(hb.unready),
        }


@dataclass(frozen=True, slots=True)
class BeatResult:
    """What one heartbeat did: ``previous`` is the entry it replaced (None: a new edge)."""

    accepted: bool
    previous: Node | None
    current: Node | None


class Registry:
    """Live edges by id."""

    def __init__(self, *, max_nodes: int = DEFAULT_MAX_NODES, misses: int = MISSES) -> None:
        if max_nodes < 1 or misses < 1:
            raise ValueError("max_nodes and misses must be at least 1")
        self._nodes: dict[str, Node] = {}
        self._max_nodes = max_nodes
        self._misses = misses

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def get(self, node_id: str) -> Node | None:
        """The entry of ``node_id``, expired or not."""
        return self._nodes.get(node_id)

    def _alive(self, node: Node, now: float) -> bool:
        return now <= node.expires_at(self._misses)

    def beat(self, hb: Heartbeat, now: float) -> BeatResult:
        """Record a heartbeat; a new id beyond ``max_nodes`` is refused."""
        previous = self._nodes.get(hb.id)
        if previous is not None and not self._alive(previous, now):
            previous = None  # it had expired: this is a new arrival, not an update
        if hb.id not in self._nodes and len(self._nodes) >= self._max_nodes:
            self.evict(now)
            if len(self._nodes) >= self._max_nodes:
                return BeatResult(False, None, None)
        node = Node(hb, now)
        self._nodes[hb.id] = node
        return BeatResult(True, previous, node)

    def remove(self, node_id: str) -> Node | None:
        """Forget an edge now (it said goodbye); its entry, or None if unknown."""
        return self._nodes.pop(node_id, None)

    def evict(self, now: float) -> list[Node]:
        """Forget every edge silent for more than ``misses`` of its intervals; the evicted."""
        gone = [node for node in self._nodes.values() if not self._alive(node, now)]
        for node in gone:
            del self._nodes[node.id]
        return sorted(gone, key=lambda n: n.id)

    def healthy(self, now: float) -> list[Node]:
        """Edges that heartbeated within ``misses`` intervals (draining or full ones too)."""
        return [node for node in self._nodes.values() if self._alive(node, now)]

    def all(self, now: float) -> list[tuple[Node, float]]:
        """Every known edge with the seconds since its last heartbeat, by id."""
        return [
            (node, max(0.0, now - node.last_seen))
            for node in sorted(self._nodes.values(), key=lambda n: n.id)
        ]
