"""Discovery's broker registry (discovery.brokers), the broker heartbeat and shard map
formats (xlmate.heartbeat), and constant metric labels: pure, no sockets."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from xlmate import heartbeat, metrics, shards
from xlmate.discovery.brokers import BrokerRegistry
from xlmate.errors import WireError
from xlmate.heartbeat import (
    SHARD_COUNT,
    SHARD_TAKEN,
    BrokerHeartbeat,
    Reply,
    ShardAddress,
    ShardMap,
    decode_reply,
    decode_request,
    encode_broker_heartbeat,
    encode_reply,
)


def beat(shard: int = 1, count: int = 2, epoch: str = "e1", **extra: Any) -> BrokerHeartbeat:
    port = 5000 + 10 * shard
    return BrokerHeartbeat(
        id=f"shard-{shard}-of-{count}.{epoch}",
        shard=shard,
        shards=count,
        epoch=epoch,
        xsub=f"tcp://127.0.0.1:{port}",
        xpub=f"tcp://127.0.0.1:{port + 1}",
        catchup=f"tcp://127.0.0.1:{port + 2}",
        **extra,
    )


def test_broker_heartbeat_round_trips_and_refuses_bad_fields() -> None:
    """A broker heartbeat decodes to itself; bad shards, endpoints and roles are WireErrors."""
    hb = beat(2, 3, http="http://127.0.0.1:8099")
    assert decode_request(encode_broker_heartbeat(hb)) == hb
    for bad in (
        {"shard": 0},
        {"shard": 4},
        {"shards": 0},
        {"shards": heartbeat.MAX_SHARDS + 1},
        {"shard": True},
        {"xsub": "http://x:1"},
        {"xpub": "tcp://no-port"},
        {"http": "ftp://x:1"},
        {"role": "leader"},
        {"epoch": ""},
        {"interval_ms": 5},
    ):
        raw = {**msgpack.unpackb(encode_broker_heartbeat(hb)), **bad}
        with pytest.raises(WireError):
            decode_request(msgpack.packb(raw))


def test_the_shard_limits_agree() -> None:
    """The wire format and the shard function allow the same largest shard count."""
    assert heartbeat.MAX_SHARDS == shards.MAX_SHARDS


def test_a_reply_carries_the_shard_map_and_the_biggest_map_fits() -> None:
    """A reply with a shard map round-trips; a map of MAX_SHARDS brokers fits a reply frame."""
    full = ShardMap(
        heartbeat.MAX_SHARDS,
        tuple(
            ShardAddress(
                i, f"epoch{i:08d}", *(f"tcp://broker-{i}.example.internal:{p}" for p in (1, 2, 3))
            )
            for i in range(1, heartbeat.MAX_SHARDS + 1)
        ),
    )
    data = encode_reply(Reply(True, shards=full))
    assert len(data) < heartbeat.MAX_REPLY_FRAME
    assert decode_reply(data) == Reply(True, shards=full)
    assert full.get(7) == full.brokers[6] and ShardMap(2).get(1) is None


@pytest.mark.parametrize(
    "raw",
    [
        {"n": 2, "b": [[1, "e", "tcp://a:1", "tcp://a:2"]]},
        {"n": 2, "b": [[3, "e", "tcp://a:1", "tcp://a:2", "tcp://a:3"]]},
        {"n": 2, "b": [[1, "e", "tcp://a:1", "tcp://a:2", "tcp://a:3"]] * 2},
        {"n": "2", "b": []},
        {"b": []},
        [2],
    ],
)
def test_bad_shard_maps_are_refused(raw: Any) -> None:
    """Short entries, a shard out of range, a shard twice, or no count: refused."""
    frame = msgpack.packb({"k": "reply", "ok": True, "shards": raw})
    with pytest.raises(WireError):
        decode_reply(frame)


def test_the_first_broker_fixes_the_count_and_another_count_is_refused() -> None:
    """Without --shards the first broker's N is the cluster's; a broker with another N is
    refused with shard_count and a sentence naming both counts."""
    reg = BrokerRegistry()
    assert reg.shard_map(0.0) is None
    assert reg.beat(beat(1, 2), 0.0).accepted
    refused = reg.beat(beat(1, 3, epoch="x"), 0.1)
    assert (refused.accepted, refused.error) == (False, SHARD_COUNT)
    assert refused.message is not None and "2 shards" in refused.message
    assert "--shard 1/3" in refused.message
    fixed = BrokerRegistry(4)
    refused = fixed.beat(beat(1, 2), 0.0)
    assert refused.error == SHARD_COUNT and "--shards" in (refused.message or "")


def test_a_second_live_broker_for_a_shard_is_refused_until_the_first_expires() -> None:
    """Another epoch on a live shard is shard_taken; once the first is silent 3 intervals
    (or said goodbye) the newcomer is accepted."""
    reg = BrokerRegistry(2)
    assert reg.beat(beat(1, epoch="old", interval_ms=500), 0.0).accepted
    assert reg.beat(beat(1, epoch="old", interval_ms=500), 1.0).accepted  # same broker again
    taken = reg.beat(beat(1, epoch="new"), 2.0)
    assert (taken.accepted, taken.error) == (False, SHARD_TAKEN)
    assert "old" in (taken.message or "")
    assert reg.beat(beat(2, epoch="other"), 2.0).accepted  # another shard is free
    assert reg.beat(beat(1, epoch="new"), 2.6).accepted  # 1.0 + 3 x 0.5 s passed
    assert reg.remove("shard-1-of-2.new") is not None
    assert reg.beat(beat(1, epoch="newest"), 2.7).accepted  # a goodbye frees it at once


def test_a_standby_role_does_not_take_the_active_place() -> None:
    """A standby of a live shard is not refused; the map lists the active broker, then the
    standby, each with its role (broker pairs: edges connect to both)."""
    reg = BrokerRegistry(2)
    assert reg.beat(beat(1, epoch="b", role="standby"), 0.0).accepted
    assert reg.beat(beat(1, epoch="a"), 0.0).accepted
    shard_map = reg.shard_map(0.0)
    assert shard_map is not None and [b.epoch for b in shard_map.brokers] == ["a", "b"]
    assert [b.role for b in shard_map.brokers] == ["active", "standby"]
    assert shard_map.get(1) == shard_map.brokers[0]
    assert shard_map.get(1, "standby") == shard_map.brokers[1]


def test_shard_map_and_view_follow_expiry() -> None:
    """A silent broker leaves the map and the view marks its shard down; evict forgets it."""
    reg = BrokerRegistry(2)
    reg.beat(beat(1, epoch="a", interval_ms=1000), 0.0)
    reg.beat(beat(2, epoch="b", interval_ms=1000), 2.0)
    at = reg.shard_map(4.0)
    assert at is not None and at.count == 2 and [b.shard for b in at.brokers] == [2]
    view = reg.view(4.0)
    assert view["count"] == 2
    assert [(s["shard"], s["up"]) for s in view["shards"]] == [(1, False), (2, True)]
    assert view["shards"][1]["brokers"][0]["epoch"] == "b"
    assert [e.heartbeat.epoch for e in reg.evict(4.0)] == ["a"]
    assert len(reg) == 1


def test_constant_labels_go_on_every_sample() -> None:
    """with_labels adds the labels to samples with and without labels, never to comments."""
    text = (
        b"# HELP xlmate_a_total a\n# TYPE xlmate_a_total counter\n"
        b'xlmate_a_total 1.0\nxlmate_b_total{kind="cmd"} 2.0\n'
    )
    labels = metrics.constant_labels({"shard": "1", "shards": '2"'})
    assert metrics.with_labels(text, labels) == (
        b"# HELP xlmate_a_total a\n# TYPE xlmate_a_total counter\n"
        b'xlmate_a_total{shard="1",shards="2\\""} 1.0\n'
        b'xlmate_b_total{shard="1",shards="2\\"",kind="cmd"} 2.0\n'
    )
