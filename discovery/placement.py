"""Which edge a client should use: a pure function of the live edges and the question.

``place(nodes, region, game_id, distances)`` returns the edges to offer, best
first (docs/protocol.md section 3):

1. Only edges that are not draining and have room (``Node.available``), and
   that are ready (``ready_for``): with a ``game_id``, the edge hears the
   active broker of the game's shard; without one, it hears at least one
   shard's.  An edge whose shard count is not the cluster's has not had
   discovery's shard map yet and is ready for nothing.  Edges older than
   readiness (``shards`` 0 in their heartbeat) are always ready.
2. With a ``region``: the edges of that region first.  If it has none, the
   edges of the nearest region that has some (``RegionTable.by_distance``),
   then the next nearest, and so on; edges of regions the table does not
   place come last, all together.  Within each group, least loaded first.
3. With a ``game_id`` too: the first edge of that first region is chosen by
   rendezvous (highest-random-weight) hashing of the game id over the region's
   edges, with blake2b, so both players of a game land on the same edge, the
   choice survives restarts of discovery, and adding or removing one edge
   moves only the games that must move (about 1/n of them).
4. No region, or a region with no edges and no entry in the table: every edge,
   least loaded first (``game_id`` does not matter then).

Ties are broken by edge id, so the answer is deterministic.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable

from xlmate.discovery.regions import UNKNOWN, RegionTable
from xlmate.discovery.registry import Node
from xlmate.heartbeat import Heartbeat
from xlmate.shards import shard_of


def ready_for(hb: Heartbeat, cluster_shards: int | None, game_id: str | None) -> bool:
    """Whether the edge of ``hb`` can serve ``game_id`` now (rule 1).

    ``cluster_shards`` is the cluster's shard count, None while discovery does
    not know it (then the edge's own count is trusted).
    """
    if hb.shards == 0:
        return True  # an edge from before readiness: as before, always ready
    if cluster_shards is not None and hb.shards != cluster_shards:
        return False  # it routes by another map: it has not had discovery's yet
    if game_id is None:
        return len(hb.unready) < hb.shards
    return shard_of(game_id, hb.shards) not in hb.unready


def rendezvous_score(game_id: str, node_id: str) -> int:
    """The weight of ``node_id`` for ``game_id``: stable across processes and versions."""
    game = game_id.encode()
    data = len(game).to_bytes(4, "big") + game + node_id.encode()
    digest = hashlib.blake2b(data, digest_size=8, person=b"xlmate-hrw").digest()
    return int.from_bytes(digest, "big")


def _by_load(node: Node) -> tuple[float, str]:
    return (node.load, node.id)


def _least_loaded(nodes: list[Node], limit: int | None) -> list[Node]:
    """``nodes`` least loaded first; only the first ``limit`` when given (a heap, not a sort)."""
    if limit is not None and limit < len(nodes):
        return heapq.nsmallest(limit, nodes, key=_by_load)
    return sorted(nodes, key=_by_load)


def place(
    nodes: Iterable[Node],
    region: str | None,
    game_id: str | None,
    distances: RegionTable,
    *,
    limit: int | None = None,
    shards: int | None = None,
) -> list[Node]:
    """The edges to offer for ``region`` and ``game_id``, best first (module docstring).

    ``limit`` keeps only that many (the answer is then a prefix of the full one);
    ``shards`` is the cluster's shard count, if known (readiness, rule 1).
    """
    if limit is not None and limit < 1:
        return []
    candidates = [
        node for node in nodes if node.available and ready_for(node.heartbeat, shards, game_id)
    ]
    if not candidates:
        return []
    by_region: dict[str, list[Node]] = {}
    for node in candidates:
        by_region.setdefault(node.region, []).append(node)

    if region is None or (region not in by_region and region not in distances):
        return _least_loaded(candidates, limit)

    order = distances.by_distance(region, by_region)
    if region in by_region:
        order.remove(region)
        order.insert(0, region)
    elif distances.distance(region, order[0]) == UNKNOWN:
        # a known region, but the table places none of the regions with edges
        return _least_loaded(candidates, limit)

    first = by_region[order[0]]
    result: list[Node] = []
    if game_id is not None:
        chosen = max(first, key=lambda n: (rendezvous_score(game_id, n.id), n.id))
        result.append(chosen)
        first = [n for n in first if n is not chosen]
    unplaced: list[Node] = []
    groups = [first]
    for name in order[1:]:
        if distances.distance(region, name) == UNKNOWN:
            unplaced.extend(by_region[name])
        else:
            groups.append(by_region[name])
    groups.append(unplaced)
    for group in groups:
        room = None if limit is None else limit - len(result)
        if room is not None and room <= 0:
            break
        result.extend(_least_loaded(group, room))
    return result
