"""Where an edge sends each game: the shard map, from configuration or from discovery.  Pure.

A game belongs to shard ``shard_of(game_id, N)`` (``xlmate.shards``); the edge
needs, for each shard, the addresses of its broker (XSUB, XPUB, catch-up).
``Routing`` keeps them, from one of three sources:

* ``static``: ``--broker K/N=XSUB,XPUB,CATCHUP`` once per shard.  Complete (every
  shard 1..N named, with one N) or refused at start; discovery's map is then
  ignored.
* ``default``: no ``--broker``: the single broker of ``--broker-host`` and its
  ports (a cluster of one shard, as before shards) until discovery's first
  shard map says otherwise.
* ``discovery``: the shard map in discovery's replies to the edge's heartbeats.

A shard that drops out of discovery's map (its broker silent, or restarting)
keeps its last known address: the edge's sockets keep reconnecting there, which
is where a restarted broker comes back.  Only a new address for a shard
changes anything (``update`` returns the shards whose address changed), and
only a shard never known at all is *unknown* (``address`` returns None): its
games are refused on connect (close 1011 naming the shard).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from xlmate.errors import ConfigError
from xlmate.heartbeat import ENDPOINT_RE, ShardAddress, ShardMap
from xlmate.shards import ShardSpec, shard_of

Source = Literal["static", "default", "discovery"]
STATIC_EPOCH: Final = "static"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """The three ZeroMQ endpoints of one shard's broker."""

    xsub: str
    xpub: str
    catchup: str

    @classmethod
    def of(cls, entry: ShardAddress) -> BrokerAddress:
        """The endpoints of a shard map entry (its epoch is not an address)."""
        return cls(entry.xsub, entry.xpub, entry.catchup)


def parse_broker_option(text: str) -> tuple[ShardSpec, BrokerAddress]:
    """``"K/N=tcp://h:1,tcp://h:2,tcp://h:3"`` -> (shard K of N, its endpoints)."""
    spec_text, sep, endpoints = text.partition("=")
    if not sep:
        raise ConfigError(
            f"--broker is K/N=XSUB,XPUB,CATCHUP (e.g. 1/2=tcp://b1:5555,tcp://b1:5556,"
            f"tcp://b1:5557), not {text!r}"
        )
    spec = ShardSpec.parse(spec_text)
    parts = [p.strip() for p in endpoints.split(",")]
    if len(parts) != 3 or not all(ENDPOINT_RE.fullmatch(p) for p in parts):
        raise ConfigError(
            f"--broker {spec_text}: give three tcp://HOST:PORT endpoints, XSUB,XPUB,CATCHUP"
        )
    return spec, BrokerAddress(*parts)


def static_routes(options: Iterable[str]) -> tuple[int, dict[int, BrokerAddress]]:
    """The shard count and every shard's broker from ``--broker`` options; ConfigError if the
    options disagree on N, name a shard twice or leave one out."""
    count: int | None = None
    routes: dict[int, BrokerAddress] = {}
    for text in options:
        spec, address = parse_broker_option(text)
        if count is not None and spec.count != count:
            raise ConfigError(f"--broker options disagree on the shard count ({count} and {spec})")
        count = spec.count
        if spec.index in routes:
            raise ConfigError(f"--broker names shard {spec} twice")
        routes[spec.index] = address
    if count is None:
        raise ConfigError("no --broker option")
    missing = [k for k in range(1, count + 1) if k not in routes]
    if missing:
        raise ConfigError(f"--broker names no broker for shard(s) {missing} of {count}")
    return count, routes


class Routing:
    """The edge's shard map (module docstring)."""

    def __init__(self, count: int, routes: dict[int, BrokerAddress], source: Source) -> None:
        self.count = count
        self.routes = dict(routes)
        self.source: Source = source

    def shard_of(self, game_id: str) -> int:
        """The shard that owns ``game_id`` (callers cache it per game)."""
        return shard_of(game_id, self.count)

    def address(self, shard: int) -> BrokerAddress | None:
        """The broker of ``shard``, or None while it has never been known."""
        return self.routes.get(shard)

    def update(self, shard_map: ShardMap) -> list[int] | None:
        """Take discovery's map; the shards whose address changed (new ones included).

        Ignored (returns ``[]``) under a static configuration.  A map with another
        count than the one in use returns None: the caller logs it and keeps its
        map (N is fixed for a cluster's life).  Only the ``default`` map of one
        shard gives way to discovery's first map whatever its count: the caller
        sees ``count`` change and re-routes every game.
        """
        if self.source == "static":
            return []
        if shard_map.count != self.count:
            if self.source != "default":
                return None
            self.count, self.routes = shard_map.count, {}
        self.source = "discovery"
        changed = []
        for entry in shard_map.brokers:
            address = BrokerAddress.of(entry)
            if self.routes.get(entry.shard) != address:
                self.routes[entry.shard] = address
                changed.append(entry.shard)
        return changed
