"""Discovery's lease rules for broker pairs (discovery.leases) and the lease on the wire
(xlmate.heartbeat): pure, time passed by hand, boundaries exact."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from xlmate.discovery.leases import Leases
from xlmate.errors import WireError
from xlmate.heartbeat import (
    BrokerHeartbeat,
    Lease,
    Reply,
    decode_reply,
    decode_request,
    encode_broker_heartbeat,
    encode_reply,
)

LEASE = 1.0  # seconds: 4 intervals of 250 ms


def hb(name: str, *, term: int = 0, claim: bool = True, **extra: Any) -> BrokerHeartbeat:
    """A paired broker's heartbeat (interval 250 ms, so a 1 s lease)."""
    return BrokerHeartbeat(
        id=name,
        shard=1,
        shards=1,
        epoch=name,
        xsub="tcp://127.0.0.1:1",
        xpub="tcp://127.0.0.1:2",
        catchup="tcp://127.0.0.1:3",
        interval_ms=250,
        term=term,
        claim=claim,
        repl="tcp://127.0.0.1:4",
        **extra,
    )


def test_pair_fields_round_trip_and_old_heartbeats_and_replies_still_parse() -> None:
    """The pair fields survive encode/decode; a heartbeat or reply without them gets defaults."""
    beat = hb("a", term=3, in_sync=True, peer="b", lag=2, ready=False)
    assert decode_request(encode_broker_heartbeat(beat)) == beat
    old = {k: v for k, v in msgpack.unpackb(encode_broker_heartbeat(beat)).items()}
    for key in ("term", "claim", "in_sync", "peer", "repl", "lag", "ready"):
        del old[key]
    parsed = decode_request(msgpack.packb(old))
    assert isinstance(parsed, BrokerHeartbeat)
    assert (parsed.term, parsed.claim, parsed.in_sync, parsed.peer, parsed.ready) == (
        0,
        False,
        False,
        None,
        True,
    )
    reply = Reply(True, lease=Lease("a", 3, 750))
    assert decode_reply(encode_reply(reply)) == reply
    assert decode_reply(msgpack.packb({"k": "reply", "ok": True})).lease is None


@pytest.mark.parametrize(
    "bad",
    [{"term": -1}, {"term": True}, {"claim": 1}, {"lag": -2}, {"peer": ""}, {"repl": "x"}],
)
def test_bad_pair_fields_are_wire_errors(bad: dict[str, Any]) -> None:
    """Each malformed pair field is refused as a WireError."""
    raw = {**msgpack.unpackb(encode_broker_heartbeat(hb("a"))), **bad}
    with pytest.raises(WireError):
        decode_request(msgpack.packb(raw))


@pytest.mark.parametrize("bad", [[1], {"term": 1}, {"holder": "", "term": 1, "ms": 1}])
def test_bad_leases_are_wire_errors(bad: Any) -> None:
    """A reply whose lease is not a valid lease map is a WireError."""
    with pytest.raises(WireError):
        decode_reply(msgpack.packb({"k": "reply", "ok": True, "lease": bad}))


def test_cold_start_waits_one_lease_then_grants_term_one_to_the_highest_term() -> None:
    """Rule 2: no grant in discovery's first lease; then the claimant with the highest
    reported term wins, in term highest + 1."""
    leases = Leases(started=0.0)
    assert not leases.beat(hb("a", term=4), 0.5).granted
    assert not leases.beat(hb("b", term=2), 0.99).granted
    assert not leases.beat(hb("b", term=2), 1.0).granted  # a reports a higher term
    decision = leases.beat(hb("a", term=4), 1.0)
    assert decision.granted and decision.lease == Lease("a", 5, 1000)


def test_a_holder_renews_and_another_broker_waits_until_the_lease_has_expired() -> None:
    """Rules 1 and 3: renewals move the expiry; a claim before it names the holder."""
    leases = Leases(started=-10.0)
    assert leases.beat(hb("a"), 0.0).granted
    assert leases.beat(hb("a", term=1, in_sync=True, peer="b"), 0.5).renewed
    refused = leases.beat(hb("b", term=1, in_sync=True), 1.5)
    assert not refused.granted and refused.lease == Lease("a", 1, 0)
    assert "held by a" in refused.why
    granted = leases.beat(hb("b", term=1, in_sync=True), 1.5001)
    assert granted.granted and granted.lease.term == 2


def test_only_the_standby_named_in_sync_may_take_over() -> None:
    """Rule 2: after expiry a broker the holder never named in sync is refused."""
    leases = Leases(started=-10.0)
    leases.beat(hb("a"), 0.0)
    leases.beat(hb("a", term=1, in_sync=True, peer="b"), 0.1)
    assert "named b" in leases.beat(hb("c", term=1), 5.0).why
    assert leases.beat(hb("b", term=1), 5.0).granted


def test_an_unprotected_active_broker_cannot_be_replaced() -> None:
    """Rule 4: once the holder reports in_sync=false, its old standby is never granted,
    until the holder names it in sync again."""
    leases = Leases(started=-10.0)
    leases.beat(hb("a"), 0.0)
    leases.beat(hb("a", term=1, in_sync=True, peer="b"), 0.1)
    leases.beat(hb("a", term=1, in_sync=False), 0.2)
    assert not leases.beat(hb("b", term=1, in_sync=True), 100.0).granted
    leases.beat(hb("a", term=1, in_sync=True, peer="b"), 101.0)
    assert not leases.beat(hb("b", term=1), 101.5).granted  # (held)
    assert leases.beat(hb("b", term=1), 102.01).granted


def test_a_broker_that_does_not_claim_changes_nothing_but_its_reported_term_counts() -> None:
    """A standby's heartbeat is answered with the lease; its term raises the next grant."""
    leases = Leases(started=-10.0)
    leases.beat(hb("b", term=7, claim=False), 0.0)
    assert leases.beat(hb("b", term=7, claim=False), 0.1).lease == Lease(None, 0, 0)
    assert not leases.beat(hb("a", term=1), 0.2).granted  # b reported term 7
    assert leases.beat(hb("a", term=1), 0.2 + 0.75 + 0.001).lease.term == 8  # b's report aged


def test_a_heartbeat_older_than_one_applied_changes_nothing() -> None:
    """A late heartbeat (boot, beat not above the last applied from that broker) neither
    renews nor names a protector; a new boot orders after every beat of the old one;
    heartbeats without boot and beat are not checked."""
    leases = Leases(started=-10.0)
    assert leases.beat(hb("a", boot=1, beat=1), 0.0).granted
    leases.beat(hb("a", term=1, boot=1, beat=3, in_sync=False), 0.2)
    late = leases.beat(hb("a", term=1, boot=1, beat=2, in_sync=True, peer="b"), 0.3)
    assert not late.renewed and "older" in late.why
    shard = leases.get(1)
    assert shard is not None and shard.protector is None
    restarted = leases.beat(hb("a", term=1, boot=2, beat=1, in_sync=True, peer="b"), 0.4)
    assert restarted.renewed
    stale = leases.beat(hb("a", term=1, boot=1, beat=4, in_sync=False), 0.5)  # old process
    assert not stale.renewed and stale.why
    assert leases.beat(hb("c", term=0, claim=False), 0.6).why == ""
    assert leases.beat(hb("c", term=0, claim=False), 0.7).why == ""
    assert leases.beat(hb("b", term=1, boot=1, beat=1), 5.0).granted  # a named b last
