"""The registry of live edges (discovery.registry), with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from xlmate.discovery.registry import Registry
from xlmate.heartbeat import Heartbeat


def hb(edge_id: str = "e1", **changes: Any) -> Heartbeat:
    fields: dict[str, Any] = {
        "id": edge_id,
        "region": "eu-west",
        "url": f"ws://{edge_id}.example:8101",
        "load": 0.1,
        "connections": 10,
        "capacity": 100,
        "draining": False,
        "interval_ms": 1000,
    }
    fields.update(changes)
    return Heartbeat(**fields)


def ids(nodes: Any) -> list[str]:
    return sorted(n.id for n in nodes)


def test_new_edge_joins_and_is_healthy() -> None:
    """A first heartbeat adds the edge (previous is None) and it is healthy at once."""
    reg = Registry()
    result = reg.beat(hb(), now=100.0)
    assert result.accepted and result.previous is None
    assert result.current is not None and result.current.last_seen == 100.0
    assert ids(reg.healthy(100.0)) == ["e1"]
    assert len(reg) == 1 and "e1" in reg


def test_healthy_until_three_intervals_not_after() -> None:
    """An edge silent for exactly 3 intervals is still healthy; a moment later it is not."""
    reg = Registry()
    reg.beat(hb(interval_ms=1000), now=10.0)
    assert ids(reg.healthy(12.9)) == ["e1"]
    assert ids(reg.healthy(13.0)) == ["e1"]
    assert reg.evict(13.0) == []
    assert reg.healthy(13.001) == []


def test_evict_removes_only_silent_edges() -> None:
    """evict() forgets edges past 3 intervals, returns them, and keeps the others."""
    reg = Registry()
    reg.beat(hb("old"), now=0.0)
    reg.beat(hb("fresh"), now=2.5)
    gone = reg.evict(now=3.5)
    assert [n.id for n in gone] == ["old"]
    assert "old" not in reg and "fresh" in reg
    assert ids(reg.healthy(3.5)) == ["fresh"]


def test_each_edge_uses_its_own_interval() -> None:
    """A 100 ms edge expires after 0.3 s while a 5 s edge is kept for 15 s."""
    reg = Registry()
    reg.beat(hb("fast", interval_ms=100), now=0.0)
    reg.beat(hb("slow", interval_ms=5000), now=0.0)
    assert ids(reg.healthy(0.3)) == ["fast", "slow"]
    assert ids(reg.healthy(0.31)) == ["slow"]
    assert ids(reg.healthy(15.0)) == ["slow"]
    assert reg.healthy(15.01) == []


def test_latest_heartbeat_sets_the_interval() -> None:
    """When an edge changes its interval, expiry follows the newest heartbeat."""
    reg = Registry()
    reg.beat(hb(interval_ms=5000), now=0.0)
    reg.beat(hb(interval_ms=100), now=1.0)
    assert reg.healthy(1.31) == []


def test_heartbeats_keep_an_edge_alive_and_update_it() -> None:
    """Regular heartbeats keep an edge forever; each one replaces its status (previous given)."""
    reg = Registry()
    reg.beat(hb(load=0.0), now=0.0)
    for i in range(1, 20):
        result = reg.beat(hb(load=i / 100), now=i * 1.0)
        assert result.previous is not None
        assert result.previous.load == (i - 1) / 100
    assert reg.evict(21.0) == []
    node = reg.get("e1")
    assert node is not None and node.load == 0.19 and node.last_seen == 19.0


def test_reregistration_after_eviction_is_a_new_join() -> None:
    """An edge that comes back after eviction (or after expiring unswept) is new again."""
    reg = Registry()
    reg.beat(hb(), now=0.0)
    reg.evict(now=10.0)
    result = reg.beat(hb(), now=10.0)
    assert result.accepted and result.previous is None
    reg.beat(hb(), now=20.0)  # expired at 13.0 but never swept
    assert reg.beat(hb(), now=30.0).previous is None


def test_draining_edge_stays_healthy_but_unavailable() -> None:
    """Draining is status, not death: the edge stays listed but placement may not offer it."""
    reg = Registry()
    reg.beat(hb(draining=True), now=0.0)
    (node,) = reg.healthy(0.0)
    assert node.draining and not node.available


def test_full_registry_refuses_new_ids_but_updates_known_ones() -> None:
    """Beyond max_nodes a new id is refused; known ids still update; an expired one frees a slot."""
    reg = Registry(max_nodes=2)
    reg.beat(hb("a", interval_ms=100), now=0.0)
    reg.beat(hb("b"), now=0.0)
    refused = reg.beat(hb("c"), now=0.1)
    assert not refused.accepted and "c" not in reg
    assert reg.beat(hb("b", load=0.5), now=0.1).accepted
    assert reg.beat(hb("c"), now=1.0).accepted  # "a" expired at 0.3: evicted to make room
    assert ids(reg.healthy(1.0)) == ["b", "c"]


def test_remove_forgets_at_once() -> None:
    """remove() (an edge's goodbye) forgets it immediately; unknown ids are fine."""
    reg = Registry()
    reg.beat(hb(), now=0.0)
    assert reg.remove("e1") is not None
    assert reg.remove("e1") is None
    assert reg.healthy(0.0) == []


def test_all_lists_every_edge_with_its_age() -> None:
    """all() gives every known edge (expired too) by id, with seconds since its last heartbeat."""
    reg = Registry()
    reg.beat(hb("b"), now=1.0)
    reg.beat(hb("a"), now=4.0)
    listing = reg.all(now=6.0)
    assert [(n.id, age) for n, age in listing] == [("a", 2.0), ("b", 5.0)]
    view = listing[1][0].operator_view(6.0)
    assert view["last_heartbeat_s"] == 5.0
    assert set(view) >= {"id", "url", "region", "load", "connections", "capacity", "draining"}


def test_bad_limits_are_rejected() -> None:
    """A registry needs room for one edge and at least one missed interval."""
    with pytest.raises(ValueError):
        Registry(max_nodes=0)
    with pytest.raises(ValueError):
        Registry(misses=0)
