"""Broker pairs on the edge and in discovery, pure: shard map entries, which member of a
pair is active (edge.shardmap), term fencing, edge readiness and placement on ready edges."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xlmate.discovery.brokers import BrokerRegistry
from xlmate.discovery.placement import place, ready_for
from xlmate.discovery.regions import default_table
from xlmate.discovery.registry import Node
from xlmate.edge.shardmap import BrokerAddress, Routing, static_routes
from xlmate.errors import ConfigError, WireError
from xlmate.heartbeat import (
    BrokerHeartbeat,
    Heartbeat,
    Reply,
    ShardAddress,
    ShardMap,
    decode_reply,
    decode_request,
    encode_heartbeat,
    encode_reply,
)
from xlmate.shards import shard_of

A = BrokerAddress("tcp://a:1", "tcp://a:2", "tcp://a:3")
B = BrokerAddress("tcp://b:1", "tcp://b:2", "tcp://b:3")
C = BrokerAddress("tcp://c:1", "tcp://c:2", "tcp://c:3")


def entry(
    address: BrokerAddress, role: str = "active", term: int = 0, shard: int = 1
) -> ShardAddress:
    return ShardAddress(shard, "ep", address.xsub, address.xpub, address.catchup, role, term)


def pair(active: BrokerAddress, standby: BrokerAddress, term: int) -> ShardMap:
    return ShardMap(1, (entry(active, "active", term), entry(standby, "standby", term)))


# --- the shard map on the wire ------------------------------------------------------------


def test_entries_outside_a_pair_keep_the_five_item_form_and_pairs_carry_seven() -> None:
    """An (active, term 0) entry is the 5 items older edges read; a pair's entries carry role
    and term; both forms parse back to the same map."""
    lone = ShardMap(2, (entry(A, shard=2),))
    assert lone.to_wire() == {"n": 2, "b": [[2, "ep", "tcp://a:1", "tcp://a:2", "tcp://a:3"]]}
    two = pair(A, B, 3)
    assert two.to_wire()["b"][1] == [1, "ep", "tcp://b:1", "tcp://b:2", "tcp://b:3", "standby", 3]
    for shard_map in (lone, two):
        assert ShardMap.from_wire(shard_map.to_wire()) == shard_map
        reply = Reply(True, shards=shard_map)
        assert decode_reply(encode_reply(reply)) == reply


def test_a_shard_appears_at_most_once_per_role_and_bad_entries_are_refused() -> None:
    """Two actives (or two standbys) for one shard, a bad role, a negative term or an entry of
    another length are WireErrors."""
    with pytest.raises(WireError, match="once per role"):
        ShardMap(1, (entry(A), entry(B)))
    ok = [1, "ep", "tcp://a:1", "tcp://a:2", "tcp://a:3"]
    for bad in ([*ok, "leader", 1], [*ok, "active", -1], [*ok, "active", True], [*ok, "active"]):
        with pytest.raises(WireError):
            ShardMap.from_wire({"n": 1, "b": [bad]})
    assert pair(A, B, 1).get(1, "standby") == entry(B, "standby", 1)
    assert pair(A, B, 1).of(1) == [entry(A, "active", 1), entry(B, "standby", 1)]


def test_heartbeats_older_than_pairs_and_readiness_still_parse() -> None:
    """A broker heartbeat without the pair fields and an edge heartbeat without shards/unready
    parse with their defaults (lone active broker in term 0; an edge ready for everything)."""
    old_broker = {
        "k": "broker_heartbeat",
        "id": "b1",
        "shard": 1,
        "shards": 1,
        "epoch": "e",
        "xsub": "tcp://h:1",
        "xpub": "tcp://h:2",
        "catchup": "tcp://h:3",
    }
    hb = decode_request(msgpack.packb(old_broker))
    assert isinstance(hb, BrokerHeartbeat)
    assert (hb.role, hb.term, hb.claim, hb.in_sync, hb.peer, hb.repl, hb.lag, hb.ready) == (
        "active",
        0,
        False,
        False,
        None,
        None,
        0,
        True,
    )
    old_edge = {"k": "heartbeat", "id": "e1", "region": "eu-west", "url": "ws://e1:1"}
    edge = decode_request(msgpack.packb(old_edge))
    assert isinstance(edge, Heartbeat) and (edge.shards, edge.unready) == (0, ())
    assert ready_for(edge, 4, "any-game")


def test_edge_readiness_fields_are_checked_and_normalised() -> None:
    """unready is a bounded list of shard numbers (sorted, deduplicated); shards is 0..256."""
    hb = Heartbeat(id="e", region="r", url="ws://e:1", shards=3, unready=[3, 1, 3])  # type: ignore[arg-type]
    assert hb.unready == (1, 3)
    assert decode_request(encode_heartbeat(hb)) == hb
    for bad in ({"unready": [0]}, {"unready": ["1"]}, {"unready": 2}, {"shards": -1}):
        with pytest.raises(WireError):
            Heartbeat(id="e", region="r", url="ws://e:1", **bad)  # type: ignore[arg-type]
    with pytest.raises(WireError):
        Heartbeat(id="e", region="r", url="ws://e:1", unready=list(range(1, 258)))  # type: ignore[arg-type]


# --- which member is active ---------------------------------------------------------------


def test_a_lone_configured_broker_is_active_in_term_zero() -> None:
    """A broker known only from configuration (no beat yet) is the shard's active one."""
    routing = Routing(1, {1: A}, "default")
    assert routing.address(1) == A and routing.accepts(1, A) and routing.term(1) == 0
    assert routing.on_beat(1, A, "e1", "active", 0) is False  # its beat confirms it
    assert routing.address(1) == A


def test_the_edge_follows_the_active_member_of_a_pair_from_the_map() -> None:
    """Discovery's map of a pair: both members are connected, the active one is routed to and
    only it is accepted."""
    routing = Routing(1, {1: A}, "default")
    assert routing.update(pair(A, B, 1)) == [1]
    assert routing.members(1) == [A, B]
    assert routing.address(1) == A and routing.term(1) == 1
    assert routing.accepts(1, A) and not routing.accepts(1, B)


def test_a_beat_of_a_higher_term_switches_at_once_and_fences_the_old_active() -> None:
    """The standby's first beat as active in a higher term switches; the old active's beats
    and messages, in its lower term, no longer count, and a stale map does not switch back."""
    routing = Routing(1, {1: A}, "default")
    routing.update(pair(A, B, 1))
    assert routing.on_beat(1, B, "eb", "standby", 1) is False
    assert routing.on_beat(1, B, "eb", "active", 2) is True
    assert routing.address(1) == B and routing.term(1) == 2
    assert not routing.accepts(1, A) and routing.accepts(1, B)
    assert routing.on_beat(1, A, "ea", "active", 1) is False  # a lower term: fenced
    assert routing.address(1) == B
    assert routing.update(pair(A, B, 1)) == []  # discovery has not caught up yet
    assert routing.address(1) == B and routing.term(1) == 2
    assert routing.on_beat(1, A, "ea2", "standby", 2) is False  # it rejoined as standby
    assert routing.update(pair(B, A, 2)) == [] and routing.address(1) == B


def test_the_map_alone_switches_when_it_shows_a_higher_term() -> None:
    """An edge that missed the beat learns the failover from discovery's map."""
    routing = Routing(1, {1: A}, "default")
    routing.update(pair(A, B, 1))
    routing.on_beat(1, A, "ea", "active", 1)
    routing.on_beat(1, B, "eb", "standby", 1)
    routing.update(ShardMap(1, (entry(B, "active", 2),)))  # A evicted, B took over
    assert routing.address(1) == B and routing.members(1) == [B]


def test_a_higher_term_with_no_active_member_known_means_no_active_member() -> None:
    """A standby reporting a term above the active one's: the active is stale, so nothing is
    accepted until a member declares itself active in that term."""
    routing = Routing(1, {1: A}, "default")
    routing.update(pair(A, B, 1))
    routing.on_beat(1, A, "ea", "active", 1)
    assert routing.on_beat(1, B, "eb", "standby", 2) is True
    assert routing.address(1) is None and routing.term(1) == 2
    assert not routing.accepts(1, A) and not routing.accepts(1, B)
    assert routing.on_beat(1, A, "ea", "active", 3) is True
    assert routing.address(1) == A


def test_a_tie_never_flaps_and_the_term_never_goes_down() -> None:
    """Two members active in the same term (broken invariants): the current one stays."""
    routing = Routing(1, {1: A}, "default")
    routing.update(pair(A, B, 4))
    routing.on_beat(1, A, "ea", "active", 4)
    assert routing.on_beat(1, B, "eb", "active", 4) is False
    assert routing.address(1) == A
    routing.on_beat(1, B, "eb", "active", 0)
    assert routing.term(1) == 4


def test_members_the_map_stops_listing_are_dropped_but_a_newer_active_is_kept() -> None:
    """A broker that moved or left the map is dropped; an active member of a term above the
    map's stays (the map lags the beat); beats from dropped members change nothing."""
    routing = Routing(1, {1: A}, "default")
    routing.update(pair(A, B, 1))
    routing.on_beat(1, B, "eb", "active", 2)
    assert routing.update(ShardMap(1, (entry(A, "active", 1), entry(C, "standby", 1)))) == [1]
    assert set(routing.members(1)) == {A, B, C}
    assert routing.address(1) == B
    routing.update(ShardMap(1, (entry(B, "active", 2), entry(C, "standby", 2))))
    assert set(routing.members(1)) == {B, C}
    assert routing.on_beat(1, A, "ea", "active", 9) is False  # not a member any more
    assert routing.address(1) == B


def test_static_routing_ignores_maps_but_follows_beats() -> None:
    """Under --broker options the map changes nothing; beats still carry role and term."""
    routing = Routing(1, {1: A}, "static")
    assert routing.update(pair(B, C, 5)) == [] and routing.members(1) == [A]
    routing.on_beat(1, A, "ea", "active", 0)
    assert routing.address(1) == A


BEATS = st.lists(
    st.tuples(
        st.sampled_from([A, B, C]),
        st.sampled_from(["active", "standby"]),
        st.integers(0, 5),
        st.booleans(),  # a beat (True) or a map entry listing (address, role, term)
    ),
    max_size=40,
)


@given(BEATS)
def test_fencing_invariants_under_any_sequence_of_beats_and_maps(events: list) -> None:  # type: ignore[type-arg]
    """Whatever arrives: the term never goes down, the active member (if any) declared itself
    active in that term, and exactly the active member is accepted."""
    routing = Routing(1, {1: A}, "default")
    term = 0
    for address, role, t, is_beat in events:
        if is_beat:
            routing.on_beat(1, address, "ep", role, t)
        else:
            other = next(x for x in (A, B, C) if x != address)
            other_role = "standby" if role == "active" else "active"
            routing.update(ShardMap(1, (entry(address, role, t), entry(other, other_role, t))))
        assert routing.term(1) >= term
        term = routing.term(1)
        active = routing.address(1)
        for member in routing.members(1):
            assert routing.accepts(1, member) == (member == active)
        if active is not None:
            member = routing.member(1, active)
            assert member is not None and member.term == term
            assert member.role == "active" or (member.role is None and term == 0)
        assert len(routing.members(1)) <= 3


# --- discovery: the map it builds, readiness and placement -----------------------------------


def broker(epoch: str, role: str, term: int, **extra: object) -> BrokerHeartbeat:
    return BrokerHeartbeat(
        id=f"b-{epoch}",
        shard=1,
        shards=1,
        epoch=epoch,
        xsub=f"tcp://{epoch}:1",
        xpub=f"tcp://{epoch}:2",
        catchup=f"tcp://{epoch}:3",
        role=role,
        term=term,
        **extra,  # type: ignore[arg-type]
    )


def test_discovery_lists_both_members_with_role_and_term_and_shows_them_to_operators() -> None:
    """The map carries the pair; GET /v1/brokers shows role, epoch, term, lag, in_sync,
    unprotected and health for each broker."""
    reg = BrokerRegistry(1)
    reg.beat(broker("a", "active", 3, in_sync=False, repl="tcp://a:9"), 0.0)
    reg.beat(broker("b", "standby", 3, lag=12, ready=False), 0.0)
    shard_map = reg.shard_map(0.0)
    assert shard_map is not None
    assert [(b.epoch, b.role, b.term) for b in shard_map.brokers] == [
        ("a", "active", 3),
        ("b", "standby", 3),
    ]
    views = reg.view(0.5)["shards"][0]["brokers"]
    assert [(v["role"], v["term"], v["lag"], v["in_sync"], v["unprotected"]) for v in views] == [
        ("active", 3, 0, False, True),
        ("standby", 3, 12, False, False),
    ]
    assert [v["health"] for v in views] == ["ok", "recovering"]
    assert views[0]["last_heartbeat_s"] == 0.5 and views[0]["repl"] == "tcp://a:9"


def edge(edge_id: str, shards: int, unready: tuple[int, ...] = ()) -> Node:
    hb = Heartbeat(
        id=edge_id,
        region="eu-west",
        url=f"ws://{edge_id}:1",
        capacity=10,
        shards=shards,
        unready=unready,
    )
    return Node(hb, 0.0)


def test_readiness_rules() -> None:
    """Ready for a game: the edge hears its shard's active broker and routes by the cluster's
    N; without a game, it hears some shard; an edge older than readiness is always ready."""
    game = "game-1"
    shard = shard_of(game, 2)
    other = 3 - shard
    assert ready_for(edge("e", 2, (other,)).heartbeat, 2, game)
    assert not ready_for(edge("e", 2, (shard,)).heartbeat, 2, game)
    assert not ready_for(edge("e", 1).heartbeat, 2, game)  # no map yet: routes by 1
    assert ready_for(edge("e", 1).heartbeat, None, game)  # N unknown: the edge's own
    assert ready_for(edge("e", 2, (shard,)).heartbeat, 2, None)
    assert not ready_for(edge("e", 2, (1, 2)).heartbeat, 2, None)
    assert ready_for(edge("e", 0).heartbeat, 2, game)


def test_placement_skips_edges_not_ready_for_the_games_shard() -> None:
    """Whatever the rendezvous hash prefers, an edge unready for the game's shard is not
    offered; when no edge is ready nothing is."""
    games = [f"g{i}" for i in range(40)]
    for game in games:
        shard = shard_of(game, 2)
        nodes = [edge("e1", 2, (shard,)), edge("e2", 2), edge("e3", 2, (3 - shard,))]
        placed = [n.id for n in place(nodes, "eu-west", game, default_table(), shards=2)]
        assert "e1" not in placed and set(placed) == {"e2", "e3"}
        assert place([nodes[0]], "eu-west", game, default_table(), shards=2) == []


def test_a_pair_can_be_configured_by_hand_and_its_beats_say_which_is_active() -> None:
    """--broker K/N twice with two addresses is a pair; the same address twice or a third
    broker is refused; the beats pick the active one."""
    one = "1/1=tcp://a:1,tcp://a:2,tcp://a:3"
    two = "1/1=tcp://b:1,tcp://b:2,tcp://b:3"
    count, routes = static_routes([one, two])
    assert (count, routes) == (1, {1: (A, B)})
    with pytest.raises(ConfigError, match="twice"):
        static_routes([one, one])
    with pytest.raises(ConfigError, match="more than two"):
        static_routes([one, two, "1/1=tcp://c:1,tcp://c:2,tcp://c:3"])
    routing = Routing(count, routes, "static")
    assert routing.members(1) == [A, B] and routing.address(1) == A  # until a beat says
    routing.on_beat(1, A, "ea", "standby", 2)
    assert routing.address(1) is None
    assert routing.on_beat(1, B, "eb", "active", 2) is True
    assert routing.address(1) == B and not routing.accepts(1, A)


_ITEMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from(["active", "standby", "ep", "tcp://h:1", "leader", ""]),
    st.text(max_size=8),
)


@given(
    st.lists(st.lists(_ITEMS, max_size=8), max_size=4),
    st.one_of(st.integers(-2, 300), st.none(), st.text(max_size=2)),
)
def test_any_shard_map_parses_or_raises_wire_error(entries: list, count: object) -> None:  # type: ignore[type-arg]
    """Whatever entries a map holds, from_wire gives a valid map or a WireError."""
    try:
        shard_map = ShardMap.from_wire({"n": count, "b": entries})
    except WireError:
        return
    assert ShardMap.from_wire(shard_map.to_wire()) == shard_map


@given(
    st.dictionaries(
        st.sampled_from(["id", "region", "url", "shards", "unready"]),
        st.one_of(_ITEMS, st.lists(_ITEMS, max_size=4)),
    )
)
def test_any_edge_heartbeat_with_readiness_parses_or_raises_wire_error(obj: dict) -> None:  # type: ignore[type-arg]
    """Random readiness fields on an edge heartbeat: a valid heartbeat or a WireError."""
    obj = {"k": "heartbeat", "id": "e", "region": "r", "url": "ws://e:1", **obj}
    try:
        hb = decode_request(msgpack.packb(obj))
    except WireError:
        return
    assert isinstance(hb, Heartbeat) and all(1 <= k <= 256 for k in hb.unready)
    assert 0 <= hb.shards <= 256 and list(hb.unready) == sorted(set(hb.unready))


def test_a_member_the_edge_hears_stays_when_the_map_forgets_it() -> None:
    """After a discovery restart the map may list the standby alone for a moment: the active
    broker the edge still hears stays active; one it does not hear is dropped."""
    routing = Routing(1, {1: A}, "default")
    routing.update(pair(A, B, 1))
    routing.on_beat(1, A, "ea", "active", 1)
    routing.on_beat(1, B, "eb", "standby", 1)
    standby_only = ShardMap(1, (entry(B, "standby", 1),))
    assert routing.update(standby_only, lambda shard, address: address == A) == []
    assert routing.address(1) == A and routing.members(1) == [A, B]
    assert routing.update(standby_only) == [1]  # A silent too: dropped, no active member
    assert routing.address(1) is None and routing.members(1) == [B]
