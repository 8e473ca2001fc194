"""The shard function and ``ShardSpec`` (xlmate.shards): pure, no sockets."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xlmate.errors import ConfigError
from xlmate.shards import MAX_SHARDS, ShardSpec, jump_hash, shard_key, shard_of

# The vectors of docs/architecture.md ("Broker shards"): change both together, never one.
VECTORS = [
    ("a", 0x6AFEE0053452D833, (1, 1, 4, 6)),
    ("game-1", 0x98857DEE4B08059F, (2, 2, 2, 6)),
    ("g2", 0x6837428C1DF8256E, (1, 1, 1, 5)),
    ("abc123", 0x3F667CA8E07A3D34, (1, 1, 1, 8)),
    ("XyZ_-09", 0xBCDF66B2F4CE4A98, (2, 2, 2, 8)),
]
GAME_IDS = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
    min_size=1,
    max_size=64,
)


@pytest.mark.parametrize(("game_id", "key", "shards"), VECTORS)
def test_documented_vectors(game_id: str, key: int, shards: tuple[int, ...]) -> None:
    """The documented key and shard of each vector game id for N = 2, 3, 4, 8."""
    assert shard_key(game_id) == key
    assert tuple(shard_of(game_id, n) for n in (2, 3, 4, 8)) == shards


def test_jump_hash_matches_the_reference_implementation() -> None:
    """jump_hash gives the published reference outputs (Lamping and Veach's algorithm)."""
    assert jump_hash(1, 1) == 0
    assert jump_hash(42, 57) == 43
    assert jump_hash(0xDEAD10CC, 666) == 361
    assert jump_hash(256, 1024) == 520
    with pytest.raises(ValueError):
        jump_hash(1, 0)


@given(GAME_IDS, st.integers(1, 64))
def test_every_game_has_exactly_one_owner(game_id: str, count: int) -> None:
    """Of the N specs of a cluster, exactly one owns any game id, the one shard_of names."""
    owners = [k for k in range(1, count + 1) if ShardSpec(k, count).owns(game_id)]
    assert owners == [shard_of(game_id, count)]


@given(GAME_IDS, st.integers(1, 63))
def test_growing_the_count_moves_a_game_only_to_the_new_shard(game_id: str, count: int) -> None:
    """Jump hashing is consistent: from N to N+1 shards a game stays or moves to shard N+1."""
    before, after = shard_of(game_id, count), shard_of(game_id, count + 1)
    assert after in (before, count + 1)


def test_games_spread_evenly() -> None:
    """10,000 game ids split over 2 and 4 shards within 5% of an even share each."""
    for count in (2, 4):
        spread = Counter(shard_of(f"game-{i}", count) for i in range(10_000))
        assert set(spread) == set(range(1, count + 1))
        share = 10_000 / count
        assert all(abs(n - share) < 0.05 * share for n in spread.values()), spread


def test_one_shard_owns_everything() -> None:
    """The default 1/1 owns every game, as a broker did before shards."""
    spec = ShardSpec()
    assert (spec.index, spec.count, spec.sharded) == (1, 1, False)
    assert all(spec.owns(f"g{i}") for i in range(100))


@pytest.mark.parametrize(
    ("text", "index", "count"), [("1/2", 1, 2), ("2/2", 2, 2), (" 3 / 8 ", 3, 8), ("1/1", 1, 1)]
)
def test_parse(text: str, index: int, count: int) -> None:
    """K/N parses to shard K of N and prints back as K/N."""
    spec = ShardSpec.parse(text)
    assert (spec.index, spec.count) == (index, count)
    assert str(spec) == f"{index}/{count}"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "written K/N"),
        ("2", "written K/N"),
        ("1-2", "written K/N"),
        ("a/b", "written K/N"),
        ("-1/2", "written K/N"),
        ("0/2", "1 to 2"),
        ("3/2", "1 to 2"),
        ("1/0", "count must be 1 to"),
        (f"1/{MAX_SHARDS + 1}", "count must be 1 to"),
    ],
)
def test_parse_refuses_with_the_rule(text: str, says: str) -> None:
    """A bad --shard value is a ConfigError that states the rule it broke."""
    with pytest.raises(ConfigError, match=says):
        ShardSpec.parse(text)
