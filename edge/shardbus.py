"""The edge's bus to every broker shard: one ``BusClient`` per broker, one face to the edge.

With N broker shards (docs/architecture.md, "Broker shards") each game has one
owning shard.  ``ShardedBus`` keeps a ``BusClient`` (PUB, SUB, DEALER) per broker
of each shard, connected to the addresses ``edge.shardmap.Routing`` gives: one
for a lone broker, two for a pair (docs/architecture.md, "Broker pairs").  It
offers the rest of the edge the calls of a single bus, keyed by game:
``subscribe``, ``unsubscribe``, ``open``, ``fetch``, ``pgn`` and ``publish_game``
go to the game's shard only; ``publish_all`` (the edge's beat) goes to every
shard.

Pairs.  Subscriptions go to every member of the shard (a standby publishes only
its beats, and a switch then loses nothing); commands, presence, edge beats
and catch-up requests go to the *active* member only, and only its events,
heads and acks are taken: every other member's client is fenced
(``BusClient.accepting`` is False; what it drops is counted).  Every member's
beat reaches ``Routing.on_beat``; when the active member changes, on a beat of
a higher term or on discovery's map, the fences move at once, requests in
flight to the old one fail (their owners retry on the new one) and
``on_beat`` tells the edge, which refreshes the shard's games and re-sends
their commands (the broker applies a re-sent command at most once).

Cost: a game's shard is hashed once when its first socket subscribes and kept
with its subscription count (so the table is bounded by the games this edge
serves); anything else about a game (a command, a fetch) looks it up there
and hashes only for a game with no socket here (an HTTP view).  Events need
no lookup at all: each broker's SUB hands them straight to ``on_message``.

A game whose shard has no known broker gets ``ShardUnknown`` (a
``BrokerUnavailable``) for requests, and its commands are not sent: they time
out into ``unavailable`` like those of an unreachable broker.  When discovery
gives a shard a new broker, its client is created and the shard's games
subscribed on it; a broker that left the map has its client closed.
Each broker's beat reaches ``on_beat(shard, address, epoch, switched)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq.asyncio

from xlmate.config import EdgeConfig
from xlmate.constants import Color
from xlmate.edge.bus import BrokerUnavailable, BusClient, Reply
from xlmate.edge.shardmap import BrokerAddress, Routing
from xlmate.heartbeat import ShardMap
from xlmate.wire import CMD_TOPIC, BrokerBeat, BusMessage

log = logging.getLogger("xlmate.edge.bus")

BeatCallback = Callable[[int, BrokerAddress, str, bool], None]  # shard, member, epoch, switched


class ShardUnknown(BrokerUnavailable):
    """The game's shard has no known broker (discovery has never listed one)."""


class NoActiveBroker(BrokerUnavailable):
    """The game's shard has brokers, but none is active in the highest term seen."""


class ShardedBus:
    """One ``BusClient`` per broker behind the calls of one (module docstring)."""

    def __init__(
        self,
        config: EdgeConfig,
        context: zmq.asyncio.Context,
        routing: Routing,
        on_message: Callable[[bytes, BusMessage], None],
        on_bad_frame: Callable[[], None],
        on_beat: BeatCallback,
        on_fenced: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.routing = routing
        self._ctx = context
        self._on_message = on_message
        self._on_bad_frame = on_bad_frame
        self._on_beat = on_beat
        self._on_fenced = on_fenced
        self.links: dict[int, dict[BrokerAddress, BusClient]] = {}
        self._games: dict[str, list[int]] = {}  # game -> [shard, local subscriptions]
        self._retired: list[BusClient] = []  # replaced clients, until their readers end
        self._start_args: tuple[Any, ...] | None = None
        self._stale: dict[BrokerAddress, int] = {}  # a stale active broker, logged for a term
        for shard in sorted(routing.shards):
            self.links[shard] = {a: self._link(shard, a) for a in routing.members(shard)}
            self._fence(shard)

    def _link(self, shard: int, address: BrokerAddress) -> BusClient:
        return BusClient(
            self.config,
            self._ctx,
            self._on_message,
            self._on_bad_frame,
            address=(address.xsub, address.xpub, address.catchup),
            on_beat=lambda beat: self._beat(shard, address, beat),
            on_fenced=self._on_fenced,
        )

    def _connected(self, address: BrokerAddress) -> bool:
        return any(address in members for members in self.links.values())

    def _all_links(self) -> list[BusClient]:
        return [link for members in self.links.values() for link in members.values()]

    # --- lifecycle ---------------------------------------------------------------

    def start(self, *args: Any) -> None:
        """Start every broker's readers (``BusClient.start``'s arguments, kept for new ones)."""
        self._start_args = args
        for link in self._all_links():
            link.start(*args)

    def close(self) -> None:
        """Close every broker's sockets; idempotent."""
        for link in [*self._all_links(), *self._retired]:
            link.close()

    async def wait_closed(self) -> None:
        """Wait for every reader to end."""
        for link in [*self._all_links(), *self._retired]:
            await link.wait_closed()

    # --- routing -------------------------------------------------------------------

    @property
    def count(self) -> int:
        """The cluster's shard count as this edge knows it."""
        return self.routing.count

    def shard_of(self, game_id: str) -> int:
        """The game's shard: cached while it has a socket here, hashed otherwise."""
        entry = self._games.get(game_id)
        return entry[0] if entry is not None else self.routing.shard_of(game_id)

    def known(self, game_id: str) -> bool:
        """Whether the game's shard has ever had a broker (else its sockets are refused)."""
        return self.routing.known(self.shard_of(game_id))

    def link(self, game_id: str) -> BusClient | None:
        """The active broker's bus for the game's shard, or None while it has none."""
        return self.active_link(self.shard_of(game_id))

    def active_link(self, shard: int) -> BusClient | None:
        """The bus of ``shard``'s active broker, or None."""
        address = self.routing.address(shard)
        members = self.links.get(shard)
        return members.get(address) if members is not None and address is not None else None

    def _fence(self, shard: int) -> None:
        """Let only the active member's events, heads and acks through."""
        active = self.routing.address(shard)
        for address, link in self.links.get(shard, {}).items():
            link.accepting = address == active

    def _switched(self, shard: int, before: BrokerAddress | None) -> None:
        """The active member of ``shard`` changed: move the fence, fail the old one's
        requests in flight (their owners retry on the new one)."""
        self._fence(shard)
        old = self.links.get(shard, {}).get(before) if before is not None else None
        if old is not None:
            old.fail_requests("its broker is no longer the active one")
        active = self.routing.address(shard)
        member = self.routing.member(shard, active) if active is not None else None
        if member is not None:
            # A first active broker is news, not trouble; a change of broker is a failover.
            log.log(
                logging.WARNING if before is not None else logging.INFO,
                "shard %d/%d: broker at %s is active in term %d (was %s)",
                shard,
                self.routing.count,
                active.xsub if active else None,
                member.term,
                before.xsub if before else "none",
            )
        else:
            log.warning(
                "shard %d/%d: no broker is active in term %d yet",
                shard,
                self.routing.count,
                self.routing.term(shard),
            )

    def _beat(self, shard: int, address: BrokerAddress, beat: BrokerBeat) -> None:
        """A member's beat: it may switch the shard's active member."""
        before = self.routing.address(shard)
        switched = self.routing.on_beat(shard, address, beat.epoch, beat.role, beat.term)
        if switched:
            self._switched(shard, before)
        term = self.routing.term(shard)
        if beat.role == "active" and beat.term < term and self._stale.get(address) != beat.term:
            self._stale[address] = beat.term  # (once per broker and term, not every beat)
            log.warning(
                "shard %d/%d: broker at %s says it is active in term %d, below term %d: "
                "fenced (its events and acks are dropped)",
                shard,
                self.routing.count,
                address.xsub,
                beat.term,
                term,
            )
        self._on_beat(shard, address, beat.epoch, switched)

    def update(
        self, shard_map: ShardMap, heard: Callable[[int, BrokerAddress], bool] = lambda s, a: False
    ) -> list[int]:
        """Take discovery's shard map: connect to new brokers, drop those that left (unless
        ``heard``: they beat now); the shards known before whose active broker changed
        (the caller refreshes their games; a change of the shard count re-routes every
        game instead)."""
        before = self.routing.count
        actives = {shard: self.routing.address(shard) for shard in self.routing.shards}
        changed = self.routing.update(shard_map, heard)
        if changed is None:
            log.error(
                "discovery says the cluster has %d shards, this edge routes by %d: ignored "
                "(the shard count is fixed for a cluster's life)",
                shard_map.count,
                self.routing.count,
            )
            return []
        if self.routing.count != before:
            log.info("routing games over %d broker shards", self.routing.count)
            changed = sorted(set(self.links) | set(self.routing.shards))
            actives = {}
        for shard in changed:
            members = self.links.setdefault(shard, {})
            wanted = self.routing.members(shard)
            for address in [a for a in members if a not in wanted]:
                self._retire(members.pop(address))
            for address in [a for a in wanted if a not in members]:
                log.info("shard %d/%d: broker at %s", shard, self.routing.count, address.xsub)
                link = members[address] = self._link(shard, address)
                if self._start_args is not None:
                    link.start(*self._start_args)
            if not members:
                del self.links[shard]
        if changed:
            self._resubscribe(rehash=self.routing.count != before, shards=set(changed))
            self._stale = {a: t for a, t in self._stale.items() if self._connected(a)}
        switched = []
        for shard in self.routing.shards:
            self._fence(shard)
            if shard in actives and self.routing.address(shard) != actives[shard]:
                switched.append(shard)
                self._switched(shard, actives[shard])
        return switched

    def reopen(self, shard: int, address: BrokerAddress) -> bool:
        """Close one broker's sockets and open new ones to it (Lazy Pirate).

        For a broker silent too long: libzmq reconnects a dropped TCP connection by
        itself, but not one it hung up on for a protocol error (such as a frame over
        its size limit), so new sockets are the only way back.  Subscriptions and
        the readers come back with them; requests in flight on the old sockets fail
        and are retried by their callers.  False if the edge no longer routes there.
        """
        members = self.links.get(shard)
        if members is None or address not in members or address not in self.routing.members(shard):
            return False
        self._retire(members.pop(address))
        link = members[address] = self._link(shard, address)
        if self._start_args is not None:
            link.start(*self._start_args)
        self._fence(shard)
        for game_id, entry in self._games.items():
            if entry[0] == shard:
                link.subscribe(game_id)
        return True

    def _retire(self, link: BusClient) -> None:
        """Close a replaced client; keep it until its readers have ended."""
        link.close()
        self._retired = [old for old in self._retired if not old.finished]
        self._retired.append(link)

    def _resubscribe(self, *, rehash: bool, shards: set[int]) -> None:
        """Subscribe the games of changed shards on their new clients (all games if N
        changed); a client already subscribed only counts one more interest, so only
        new clients are told (``BusClient.subscribe_once``)."""
        for game_id, entry in self._games.items():
            if rehash:
                entry[0] = self.routing.shard_of(game_id)
            if entry[0] in shards:
                for link in self.links.get(entry[0], {}).values():
                    link.subscribe_once(game_id)

    # --- subscriptions ---------------------------------------------------------------

    def subscribe(self, game_id: str) -> None:
        """One more local interest in a game; the first subscribes on its shard's buses."""
        entry = self._games.get(game_id)
        if entry is not None:
            entry[1] += 1
            return
        shard = self.routing.shard_of(game_id)
        self._games[game_id] = [shard, 1]
        for link in self.links.get(shard, {}).values():
            link.subscribe_once(game_id)

    def unsubscribe(self, game_id: str) -> None:
        """One less; the last one unsubscribes."""
        entry = self._games.get(game_id)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del self._games[game_id]
        for link in self.links.get(entry[0], {}).values():
            link.unsubscribe(game_id)

    @property
    def subscriptions(self) -> int:
        """How many games this edge is subscribed to."""
        return len(self._games)

    # --- publishing --------------------------------------------------------------------

    def publish_game(self, game_id: str, body: bytes) -> None:
        """Queue a command or presence report for the game's shard (dropped if it has none:
        commands are re-sent until they time out)."""
        link = self.link(game_id)
        if link is not None:
            link.publish(CMD_TOPIC, body)

    def publish_all(self, body: bytes) -> None:
        """Queue a message for every shard's active broker (the edge's beat)."""
        for shard in self.links:
            link = self.active_link(shard)
            if link is not None:
                link.publish(CMD_TOPIC, body)

    def flush(self) -> None:
        """Send what every broker's bus queued, now."""
        for link in self._all_links():
            link.flush()

    # --- requests ----------------------------------------------------------------------

    def _require(self, game_id: str) -> BusClient:
        link = self.link(game_id)
        if link is None:
            if not self.known(game_id):
                raise ShardUnknown(self.unknown_reason(game_id))
            shard = self.shard_of(game_id)
            raise NoActiveBroker(
                f"shard {shard}/{self.count} has no active broker in term "
                f"{self.routing.term(shard)} yet"
            )
        return link

    def unknown_reason(self, game_id: str) -> str:
        """The close reason for a game whose shard has no known broker (at most 123 bytes)."""
        return f"shard {self.shard_of(game_id)}/{self.count} has no broker yet"

    async def open(
        self,
        game_id: str,
        seat: Color,
        player_id: str | None,
        clock: list[int] | None,
        since: int | None,
    ) -> Reply:
        """``BusClient.open`` on the game's shard."""
        return await self._require(game_id).open(game_id, seat, player_id, clock, since)

    async def fetch(self, game_id: str, since: int | None) -> Reply:
        """``BusClient.fetch`` on the game's shard."""
        return await self._require(game_id).fetch(game_id, since)

    async def pgn(self, game_id: str) -> Reply:
        """``BusClient.pgn`` on the game's shard."""
        return await self._require(game_id).pgn(game_id)
