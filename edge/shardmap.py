"""Where an edge sends each game: the shard map, from configuration or from discovery.  Pure.

A game belongs to shard ``shard_of(game_id, N)`` (``xlmate.shards``); the edge
needs, for each shard, the addresses of its broker (XSUB, XPUB, catch-up), or
of both brokers of a pair, and which of them is active.  ``Routing`` keeps
them, from one of three sources:

* ``static``: ``--broker K/N=XSUB,XPUB,CATCHUP`` once per shard, or twice for a
  shard served by a broker pair (two addresses).  Complete (every shard 1..N
  named, with one N) or refused at start; discovery's map is then ignored, and
  which broker of a pair is active is learnt from their beats alone.
* ``default``: no ``--broker``: the single broker of ``--broker-host`` and its
  ports (a cluster of one shard, as before shards) until discovery's first
  shard map says otherwise.
* ``discovery``: the shard map in discovery's replies to the edge's heartbeats.

A shard that drops out of discovery's map (its broker silent, or restarting)
keeps its last known address: the edge's sockets keep reconnecting there, which
is where a restarted broker comes back.  Only a new address for a shard
changes anything (``update`` returns the shards whose address changed), and
only a shard never known at all is *unknown* (``known`` is False): its games
are refused on connect (close 1011 naming the shard).

Pairs (docs/architecture.md, "Broker pairs").  A shard has one or two
*members*, each a broker's addresses with the role, term and epoch it last
declared, in its ``ctl`` beat or in discovery's map.  The shard's *term* is the
highest term seen from any member or map entry, and never goes down.  Its
*active* member is the one that declared itself ``active`` in that term
(rules in ``ShardRoute.choose``); the edge sends the shard's commands and
catch-up requests to it alone, and takes events, heads and acks from it alone
(``accepts``): a broker of a lower term is fenced off.  The first beat of a
higher term switches at once, without waiting for discovery.  When no member
is active in the shard's term (a standby reported a term whose active broker
has not been heard yet) there is no active member: requests fail as for an
unreachable broker and commands wait to be re-sent, until a beat or a map
names the active one.

A beat's declaration always replaces what the member said before; a map
entry is older news and changes a member only when its term is higher.  When
the map lists a shard, members it does not list are dropped (a broker that
moved, a standby that left), except a member the edge hears beating now (the
caller says which: discovery may have lost it, after a restart of discovery or
in a partition between the two) and an active member whose term is above
every entry of the map (the edge heard the failover before discovery's map
caught up).  A member known only from configuration or from a map (it has not
beaten yet) whose role is unknown counts as active in term 0: the lone broker
of a cluster without pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from xlmate.errors import ConfigError
from xlmate.heartbeat import ENDPOINT_RE, ShardAddress, ShardMap
from xlmate.shards import ShardSpec, shard_of

Source = Literal["static", "default", "discovery"]
STATIC_EPOCH: Final = "static"
MAX_MEMBERS: Final = 3  # a pair, and one broker that moved while a map catches up


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


Route = BrokerAddress | tuple[BrokerAddress, BrokerAddress]  # a lone broker, or a pair


def static_routes(options: Iterable[str]) -> tuple[int, dict[int, Route]]:
    """The shard count and every shard's broker (or pair) from ``--broker`` options;
    ConfigError if the options disagree on N, name one broker twice, give a shard more
    than two, or leave one out."""
    count: int | None = None
    routes: dict[int, Route] = {}
    for text in options:
        spec, address = parse_broker_option(text)
        if count is not None and spec.count != count:
            raise ConfigError(f"--broker options disagree on the shard count ({count} and {spec})")
        count = spec.count
        known = routes.get(spec.index)
        if known is None:
            routes[spec.index] = address
        elif isinstance(known, tuple):
            raise ConfigError(f"--broker names more than two brokers (a pair) for shard {spec}")
        elif known == address:
            raise ConfigError(f"--broker names shard {spec} twice")
        else:
            routes[spec.index] = (known, address)
    if count is None:
        raise ConfigError("no --broker option")
    missing = [k for k in range(1, count + 1) if k not in routes]
    if missing:
        raise ConfigError(f"--broker names no broker for shard(s) {missing} of {count}")
    return count, routes


@dataclass(slots=True)
class Member:
    """One broker of a shard as the edge knows it."""

    address: BrokerAddress
    role: str | None = None  # "active" / "standby"; None: never declared
    term: int = 0
    epoch: str | None = None
    beaten: bool = False  # its own beat said role and term (not only a map)


@dataclass(slots=True)
class ShardRoute:
    """The members of one shard, its term and its active member (module docstring)."""

    members: dict[BrokerAddress, Member] = field(default_factory=dict)
    term: int = 0
    active: BrokerAddress | None = None

    def add(self, address: BrokerAddress) -> Member:
        """The member at ``address``, created if new."""
        member = self.members.get(address)
        if member is None:
            member = self.members[address] = Member(address)
        return member

    def choose(self) -> bool:
        """Re-elect the active member; True if it changed.

        1. The shard's term is the highest declared by any member (never lower
           than before).
        2. The members that declared ``active`` in that term are candidates; in
           term 0, so are members that never declared a role (a lone broker).
        3. The current active member stays if it is a candidate (a tie never
           flaps); otherwise the first candidate in the order members were learnt.
        4. No candidate: no active member.
        """
        self.term = max([self.term, *(m.term for m in self.members.values())])
        candidates = [
            a
            for a, m in self.members.items()
            if (m.role == "active" and m.term == self.term) or (m.role is None and self.term == 0)
        ]
        before = self.active
        if before not in candidates:
            self.active = candidates[0] if candidates else None
        return self.active != before


class Routing:
    """The edge's shard map (module docstring)."""

    def __init__(self, count: int, routes: Mapping[int, Route], source: Source) -> None:
        self.count = count
        self.source: Source = source
        self.shards: dict[int, ShardRoute] = {}
        for shard, members in routes.items():
            route = self.shards[shard] = ShardRoute()
            for address in members if isinstance(members, tuple) else (members,):
                route.add(address)
            route.choose()

    # --- queries -------------------------------------------------------------------

    def shard_of(self, game_id: str) -> int:
        """The shard that owns ``game_id`` (callers cache it per game)."""
        return shard_of(game_id, self.count)

    def known(self, shard: int) -> bool:
        """Whether ``shard`` has ever had a broker (its games may connect)."""
        return shard in self.shards

    def address(self, shard: int) -> BrokerAddress | None:
        """The active broker of ``shard``, or None when it has none (or is unknown)."""
        route = self.shards.get(shard)
        return route.active if route is not None else None

    def members(self, shard: int) -> list[BrokerAddress]:
        """Every broker of ``shard`` the edge connects to."""
        route = self.shards.get(shard)
        return list(route.members) if route is not None else []

    def member(self, shard: int, address: BrokerAddress) -> Member | None:
        """What ``address`` last declared for ``shard``."""
        route = self.shards.get(shard)
        return route.members.get(address) if route is not None else None

    def term(self, shard: int) -> int:
        """The highest term seen for ``shard``."""
        route = self.shards.get(shard)
        return route.term if route is not None else 0

    def accepts(self, shard: int, address: BrokerAddress) -> bool:
        """Whether events, heads and acks from ``address`` count: it is the active member."""
        route = self.shards.get(shard)
        return route is not None and route.active == address

    # --- inputs --------------------------------------------------------------------

    def on_beat(self, shard: int, address: BrokerAddress, epoch: str, role: str, term: int) -> bool:
        """A member's ``ctl`` beat; True if the shard's active member changed.

        A beat from an address the edge no longer routes to changes nothing.
        """
        route = self.shards.get(shard)
        member = route.members.get(address) if route is not None else None
        if route is None or member is None:
            return False
        member.role, member.term, member.epoch, member.beaten = role, term, epoch, True
        return route.choose()

    def update(
        self, shard_map: ShardMap, heard: Callable[[int, BrokerAddress], bool] = lambda s, a: False
    ) -> list[int] | None:
        """Take discovery's map; the shards whose members changed (new ones included).

        ``heard(shard, address)`` says whether that broker beats now (a member the
        map does not list is kept while it does).

        Ignored (returns ``[]``) under a static configuration.  A map with another
        count than the one in use returns None: the caller logs it and keeps its
        map (N is fixed for a cluster's life).  Only the ``default`` map of one
        shard gives way to discovery's first map whatever its count: the caller
        sees ``count`` change and re-routes every game.  Which member is active
        may change too: callers compare ``address`` before and after.
        """
        if self.source == "static":
            return []
        if shard_map.count != self.count:
            if self.source != "default":
                return None
            self.count, self.shards = shard_map.count, {}
        self.source = "discovery"
        changed = []
        for shard in sorted({entry.shard for entry in shard_map.brokers}):
            if self._merge(shard, shard_map.of(shard), heard):
                changed.append(shard)
        return changed

    def _merge(
        self, shard: int, entries: list[ShardAddress], heard: Callable[[int, BrokerAddress], bool]
    ) -> bool:
        """One shard's map entries into its members; True if the members changed."""
        route = self.shards.setdefault(shard, ShardRoute())
        before = list(route.members)
        listed = set()
        for entry in entries:
            address = BrokerAddress.of(entry)
            listed.add(address)
            member = route.add(address)
            if not member.beaten or entry.term > member.term:
                member.role, member.term, member.epoch = entry.role, entry.term, entry.epoch
        newest = max(entry.term for entry in entries)
        for address, member in list(route.members.items()):
            newer = address == route.active and member.term > newest and member.beaten
            if address not in listed and not (newer or heard(shard, address)):
                del route.members[address]
        while len(route.members) > MAX_MEMBERS:  # (cannot happen with one map of a pair)
            del route.members[next(a for a in route.members if a != route.active)]
        if route.active not in route.members:
            route.active = None
        route.choose()
        return list(route.members) != before
