"""The edge's shard map (edge.shardmap): static options, discovery's maps, pure."""

from __future__ import annotations

import pytest

from xlmate.edge.shardmap import BrokerAddress, Routing, parse_broker_option, static_routes
from xlmate.errors import ConfigError
from xlmate.heartbeat import ShardAddress, ShardMap
from xlmate.shards import ShardSpec, shard_of


def addr(shard: int, host: str = "b") -> BrokerAddress:
    return BrokerAddress(*(f"tcp://{host}{shard}:{p}" for p in (1, 2, 3)))


def entry(shard: int, host: str = "b", epoch: str = "e") -> ShardAddress:
    a = addr(shard, host)
    return ShardAddress(shard, epoch, a.xsub, a.xpub, a.catchup)


def test_broker_option_parses_and_refuses_with_the_format() -> None:
    """K/N=XSUB,XPUB,CATCHUP parses; anything else is a ConfigError showing the format."""
    spec, address = parse_broker_option("2/3=tcp://h:1, tcp://h:2,tcp://h:3")
    assert spec == ShardSpec(2, 3) and address == BrokerAddress(
        "tcp://h:1", "tcp://h:2", "tcp://h:3"
    )
    for bad in ("tcp://h:1,tcp://h:2,tcp://h:3", "1/2=tcp://h:1,tcp://h:2", "1/2=a,b,c", "x=a,b,c"):
        with pytest.raises(ConfigError, match=r"K/N|three tcp"):
            parse_broker_option(bad)


def test_static_routes_must_name_every_shard_once_with_one_count() -> None:
    """Static --broker options are complete and consistent, or refused with the reason."""
    opts = [f"{k}/2=tcp://b{k}:1,tcp://b{k}:2,tcp://b{k}:3" for k in (2, 1)]
    assert static_routes(opts) == (2, {1: addr(1), 2: addr(2)})
    with pytest.raises(ConfigError, match=r"shard\(s\) \[2\]"):
        static_routes(opts[1:])
    with pytest.raises(ConfigError, match="twice"):
        static_routes([opts[0], opts[0], opts[1]])
    with pytest.raises(ConfigError, match="disagree"):
        static_routes([opts[0], "1/3=tcp://b:1,tcp://b:2,tcp://b:3"])


def test_discovery_replaces_the_default_and_keeps_addresses_of_brokers_that_left() -> None:
    """The default one-shard map gives way to discovery's; a shard missing from a later map
    keeps its last address; only a new address counts as a change."""
    routing = Routing(1, {1: addr(1, "default")}, "default")
    assert routing.update(ShardMap(2, (entry(1),))) == [1]
    assert (routing.count, routing.source, routing.address(2)) == (2, "discovery", None)
    assert routing.update(ShardMap(2, (entry(1, epoch="e2"), entry(2)))) == [2]
    assert routing.update(ShardMap(2, ())) == []
    assert routing.address(1) == addr(1) and routing.address(2) == addr(2)
    assert routing.update(ShardMap(2, (entry(2, host="moved"),))) == [2]
    assert routing.address(2) == addr(2, "moved")


def test_a_map_with_another_count_is_ignored_once_routing_is_not_the_default() -> None:
    """N is fixed for a cluster's life: a map of another count is refused (None)."""
    routing = Routing(2, {1: addr(1), 2: addr(2)}, "discovery")
    assert routing.update(ShardMap(3, (entry(3),))) is None
    assert routing.count == 2 and routing.address(3) is None


def test_static_routing_ignores_discovery() -> None:
    """Under --broker options discovery's maps change nothing."""
    routing = Routing(2, {1: addr(1), 2: addr(2)}, "static")
    assert routing.update(ShardMap(2, (entry(1, host="elsewhere"),))) == []
    assert routing.address(1) == addr(1)


def test_routing_uses_the_shard_function() -> None:
    """Routing.shard_of is xlmate.shards.shard_of with the map's count."""
    routing = Routing(4, {}, "discovery")
    assert [routing.shard_of(f"g{i}") for i in range(50)] == [
        shard_of(f"g{i}", 4) for i in range(50)
    ]
