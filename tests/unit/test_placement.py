"""Placement (discovery.placement) and the region table (discovery.regions): pure, no sockets."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xlmate.discovery.placement import place, rendezvous_score
from xlmate.discovery.regions import RegionTable, default_table, load_table, parse_table
from xlmate.discovery.registry import Node
from xlmate.errors import ConfigError
from xlmate.heartbeat import Heartbeat

TABLE = default_table()
REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-northeast", "sa-east"]


def node(
    edge_id: str,
    region: str = "eu-west",
    load: float = 0.0,
    *,
    connections: int | None = None,
    capacity: int = 100,
    draining: bool = False,
) -> Node:
    if connections is None:
        connections = round(load * capacity)
    hb = Heartbeat(
        id=edge_id,
        region=region,
        url=f"ws://{edge_id}.example",
        load=load,
        connections=connections,
        capacity=capacity,
        draining=draining,
    )
    return Node(hb, last_seen=0.0)


def ids(nodes: list[Node]) -> list[str]:
    return [n.id for n in nodes]


def hrw_winner(game_id: str, nodes: list[Node]) -> str:
    return max(nodes, key=lambda n: (rendezvous_score(game_id, n.id), n.id)).id


# --- region and load ----------------------------------------------------------------------


def test_asked_region_first_least_loaded_first() -> None:
    """Edges of the asked region come first, least loaded first, then the other regions."""
    nodes = [
        node("eu-a", "eu-west", 0.7),
        node("us-a", "us-east", 0.0),
        node("eu-b", "eu-west", 0.2),
        node("eu-c", "eu-west", 0.5),
    ]
    assert ids(place(nodes, "eu-west", None, TABLE)) == ["eu-b", "eu-c", "eu-a", "us-a"]
    assert ids(place(nodes, "us-east", None, TABLE)) == ["us-a", "eu-b", "eu-c", "eu-a"]


def test_equal_load_ties_broken_by_id() -> None:
    """Edges with the same load are ordered by id, whatever the input order."""
    nodes = [node("c"), node("a"), node("b")]
    assert ids(place(nodes, "eu-west", None, TABLE)) == ["a", "b", "c"]


def test_nearest_region_when_asked_region_is_empty() -> None:
    """No edge in ap-south: eu-central (110 ms) first, then eu-west (120), then us-east (190)."""
    nodes = [node("us", "us-east"), node("euw", "eu-west"), node("euc", "eu-central", 0.9)]
    assert ids(place(nodes, "ap-south", None, TABLE)) == ["euc", "euw", "us"]


def test_nearest_region_fallback_is_sticky_for_a_game() -> None:
    """Asked region empty: the game's edge is chosen by hash inside the nearest region."""
    nodes = [node("euc-1", "eu-central", 0.9), node("euc-2", "eu-central"), node("euw", "eu-west")]
    for game in ("g1", "g2", "g3", "g4", "g5"):
        result = place(nodes, "ap-south", game, TABLE)
        assert result[0].id == hrw_winner(game, nodes[:2])
        assert result[2].id == "euw"


def test_unknown_region_gets_least_loaded_anywhere() -> None:
    """A region nobody knows: the least-loaded edge anywhere; a gameId changes nothing."""
    nodes = [node("a", "eu-west", 0.4), node("b", "us-east", 0.1), node("c", "ap-south", 0.2)]
    assert ids(place(nodes, "mars-1", None, TABLE)) == ["b", "c", "a"]
    assert ids(place(nodes, "mars-1", "game-1", TABLE)) == ["b", "c", "a"]
    assert ids(place(nodes, None, None, TABLE)) == ["b", "c", "a"]
    assert ids(place(nodes, None, "game-1", TABLE)) == ["b", "c", "a"]


def test_region_missing_from_table_still_serves_its_own_edges() -> None:
    """Edges in a region the table lacks (e.g. "local") serve clients asking for it first."""
    nodes = [node("l1", "local", 0.5), node("e1", "eu-west", 0.0), node("u1", "us-east", 0.3)]
    assert ids(place(nodes, "local", None, TABLE)) == ["l1", "e1", "u1"]


def test_regions_the_table_cannot_place_come_last() -> None:
    """After the known-distance regions, edges of unplaced regions follow by load."""
    nodes = [node("x", "local", 0.0), node("us", "us-east", 0.9), node("euc", "eu-central", 0.5)]
    assert ids(place(nodes, "eu-west", None, TABLE)) == ["euc", "us", "x"]


# --- exclusions ---------------------------------------------------------------------------


def test_draining_and_full_edges_are_never_offered() -> None:
    """Draining edges, edges at capacity and edges reporting load 1 are left out."""
    nodes = [
        node("draining", draining=True),
        node("full", connections=100, capacity=100),
        node("load-one", load=1.0, connections=10),
        node("ok", load=0.9),
    ]
    assert ids(place(nodes, "eu-west", None, TABLE)) == ["ok"]
    assert ids(place(nodes, "eu-west", "game-1", TABLE)) == ["ok"]


def test_nothing_available_is_empty() -> None:
    """No edges, or only unusable ones: an empty answer (the server says 503)."""
    assert place([], "eu-west", None, TABLE) == []
    assert place([node("d", draining=True)], None, "g", TABLE) == []


def test_full_region_falls_back_to_nearest() -> None:
    """A region whose only edge is full is treated as empty: nearest region's edge first."""
    nodes = [node("euw", "eu-west", connections=100, capacity=100), node("euc", "eu-central")]
    assert ids(place(nodes, "eu-west", "game-1", TABLE)) == ["euc"]


# --- stickiness ---------------------------------------------------------------------------


def test_game_is_sticky_within_region() -> None:
    """Both players of a game asking for the same region get the same first edge of 3."""
    nodes = [
        node("e1", load=0.3),
        node("e2", load=0.1),
        node("e3", load=0.2),
        node("us", "us-east"),
    ]
    for game in [f"game-{i}" for i in range(50)]:
        first = place(nodes, "eu-west", game, TABLE)
        second = place(list(reversed(nodes)), "eu-west", game, TABLE)
        assert first[0].id == second[0].id == hrw_winner(game, nodes[:3])
        assert ids(first) == ids(second)
        assert first[-1].id == "us"
        assert sorted(ids(first[1:3])) == sorted({"e1", "e2", "e3"} - {first[0].id})


def test_sticky_choice_ignores_load_changes() -> None:
    """Loads change with every heartbeat; a game's edge does not (while it has room)."""
    games = [f"g{i}" for i in range(40)]
    before = [node("e1", load=0.1), node("e2", load=0.5), node("e3", load=0.9)]
    after = [node("e1", load=0.9), node("e2", load=0.1), node("e3", load=0.5)]
    for game in games:
        assert (
            place(before, "eu-west", game, TABLE)[0].id
            == place(after, "eu-west", game, TABLE)[0].id
        )


def test_rest_after_sticky_edge_is_least_loaded() -> None:
    """After the game's edge, the region's other edges follow least loaded first."""
    nodes = [node("e1", load=0.3), node("e2", load=0.1), node("e3", load=0.2)]
    result = place(nodes, "eu-west", "some-game", TABLE)
    rest = [n for n in nodes if n.id != result[0].id]
    assert ids(result[1:]) == ids(sorted(rest, key=lambda n: (n.load, n.id)))


def test_different_games_spread_over_the_region() -> None:
    """3000 games over 3 edges: each edge gets roughly a third."""
    nodes = [node("e1"), node("e2"), node("e3")]
    counts = Counter(place(nodes, "eu-west", f"game-{i}", TABLE)[0].id for i in range(3000))
    assert set(counts) == {"e1", "e2", "e3"}
    assert all(850 < c < 1150 for c in counts.values()), counts


def test_adding_an_edge_moves_few_games() -> None:
    """A 4th edge in the region takes about a quarter of the games, all of them moving to it."""
    three = [node("e1"), node("e2"), node("e3")]
    four = [*three, node("e4")]
    games = [f"game-{i}" for i in range(2000)]
    moved = 0
    for game in games:
        old = place(three, "eu-west", game, TABLE)[0].id
        new = place(four, "eu-west", game, TABLE)[0].id
        if old != new:
            moved += 1
            assert new == "e4"
    assert 0.18 < moved / len(games) < 0.32


def test_edges_elsewhere_move_no_games() -> None:
    """Adding an edge in another region changes no game's edge in this one."""
    nodes = [node("e1"), node("e2"), node("e3")]
    more = [*nodes, node("us-1", "us-east"), node("ap-1", "ap-south")]
    for i in range(200):
        game = f"game-{i}"
        assert (
            place(nodes, "eu-west", game, TABLE)[0].id == place(more, "eu-west", game, TABLE)[0].id
        )


def test_rendezvous_score_is_pinned() -> None:
    """The hash is blake2b-based and fixed: changing it would move every live game."""
    assert rendezvous_score("game-1", "edge-a") == 4132430228195627972
    assert rendezvous_score("game-1", "edge-b") == 11904507487261099849
    assert rendezvous_score("game-1", "edge-a") != rendezvous_score("game-2", "edge-a")


# --- determinism --------------------------------------------------------------------------

_node = st.builds(
    node,
    st.sampled_from([f"e{i}" for i in range(12)]),
    st.sampled_from([*REGIONS[:4], "local"]),
    st.sampled_from([0.0, 0.1, 0.5, 0.99, 1.0]),
    draining=st.booleans(),
)


@given(
    st.lists(_node, max_size=12, unique_by=lambda n: n.id),
    st.one_of(st.none(), st.sampled_from([*REGIONS, "local", "mars"])),
    st.one_of(st.none(), st.sampled_from(["g1", "g2", "abc-DEF_9"])),
    st.randoms(use_true_random=False),
)
def test_placement_is_deterministic_and_complete(
    nodes: list[Node], region: str | None, game: str | None, rnd: random.Random
) -> None:
    """Any input order gives the same answer: every available edge once; a limit cuts a prefix."""
    expected = place(nodes, region, game, TABLE)
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    assert ids(place(shuffled, region, game, TABLE)) == ids(expected)
    assert sorted(ids(expected)) == sorted(n.id for n in nodes if n.available)
    if expected and region is not None and any(n.region == region for n in expected):
        assert expected[0].region == region
    for limit in (1, 2, 5):
        assert ids(place(shuffled, region, game, TABLE, limit=limit)) == ids(expected)[:limit]


# --- the region table ---------------------------------------------------------------------


def test_default_table_is_symmetric_and_complete() -> None:
    """The built-in table knows all 7 regions, every pair both ways, the same each way."""
    assert TABLE.regions == frozenset(REGIONS)
    for a in REGIONS:
        assert TABLE.distance(a, a) == 0
        for b in REGIONS:
            if a != b:
                assert 0 < TABLE.distance(a, b) == TABLE.distance(b, a) < float("inf")


def test_default_table_is_plausible() -> None:
    """Neighbours are nearest: eu-west -> eu-central, us-east -> us-west, sa-east -> us-east."""
    assert TABLE.by_distance("eu-west", REGIONS)[1] == "eu-central"
    assert TABLE.by_distance("us-east", REGIONS)[1] == "us-west"
    assert TABLE.by_distance("ap-northeast", REGIONS)[1] == "us-west"
    assert TABLE.by_distance("sa-east", REGIONS)[1] == "us-east"


def test_table_from_json_file(tmp_path: Path) -> None:
    """A JSON table is read, each pair written once is mirrored, and it replaces the default."""
    path = tmp_path / "regions.json"
    path.write_text(json.dumps({"distances": {"north": {"south": 50, "east": 10}, "east": {}}}))
    table = load_table(path)
    assert table.regions == frozenset({"north", "south", "east"})
    assert table.distance("south", "north") == 50
    assert table.distance("east", "south") == float("inf")
    assert table.by_distance("north", ["south", "east", "west"]) == ["east", "south", "west"]
    assert parse_table(table.to_json()).to_json() == table.to_json()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", '{"distances"'),
        ('{"distances": []}', '{"distances"'),
        ('{"distances": {}}', "no distances"),
        ('{"distances": {"a": 5}}', "must be an object"),
        ('{"distances": {"a": {"b": -1}}}', "finite number >= 0"),
        ('{"distances": {"a": {"b": "far"}}}', "must be a number"),
        ('{"distances": {"a": {"b": true}}}', "must be a number"),
        ('{"distances": {"a": {"a": 3}}}', "must be 0"),
        ('{"distances": {"a": {"b": 1}, "b": {"a": 2}}}', "symmetric"),
        ('{"distances": {"EU": {"b": 1}}}', "[a-z0-9-]"),
    ],
)
def test_bad_table_file_is_config_error(tmp_path: Path, content: str, message: str) -> None:
    """Each kind of bad table file is a ConfigError naming the file and the problem."""
    path = tmp_path / "regions.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_table(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_table_file_is_config_error(tmp_path: Path) -> None:
    """A table file that cannot be read is a ConfigError, not an OSError."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_table(tmp_path / "nope.json")


def test_table_agrees_when_pair_is_given_both_ways() -> None:
    """A pair written both ways with the same number is fine."""
    table = RegionTable({("a", "b"): 5, ("b", "a"): 5})
    assert table.distance("a", "b") == 5
