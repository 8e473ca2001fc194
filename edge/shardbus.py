"""The edge's bus to every broker shard: one ``BusClient`` per shard, one face to the edge.

With N broker shards (docs/architecture.md, "Broker shards") each game has one
owning broker.  ``ShardedBus`` keeps a ``BusClient`` (PUB, SUB, DEALER) per shard,
connected to the addresses ``edge.shardmap.Routing`` gives, and offers the rest
of the edge the calls of a single bus, keyed by game: ``subscribe``,
``unsubscribe``, ``open``, ``fetch``, ``pgn`` and ``publish_game`` go to the
game's shard only; ``publish_all`` (the edge's beat) goes to every shard.

Cost: a game's shard is hashed once when its first socket subscribes and kept
with its subscription count (so the table is bounded by the games this edge
serves); anything else about a game (a command, a fetch) looks it up there
and hashes only for a game with no socket here (an HTTP view).  Events need
no lookup at all: each shard's SUB hands them straight to ``on_message``.

A game whose shard has no known broker gets ``ShardUnknown`` (a
``BrokerUnavailable``) for requests, and its commands are not sent: they time
out into ``unavailable`` like those of an unreachable broker.  When discovery
gives a shard a new address, that shard's client is replaced and its games
re-subscribed; its requests in flight fail and are retried by their owners.
Each shard's beat reaches ``on_beat(shard, epoch)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq.asyncio

from xlmate.config import EdgeConfig
from xlmate.constants import Color
from xlmate.edge.bus import BrokerUnavailable, BusClient, Reply
from xlmate.edge.shardmap import Routing
from xlmate.heartbeat import ShardMap
from xlmate.wire import CMD_TOPIC, BusMessage

log = logging.getLogger("xlmate.edge.bus")


class ShardUnknown(BrokerUnavailable):
    """The game's shard has no known broker (discovery has never listed one)."""


class ShardedBus:
    """One ``BusClient`` per shard behind the calls of one (module docstring)."""

    def __init__(
        self,
        config: EdgeConfig,
        context: zmq.asyncio.Context,
        routing: Routing,
        on_message: Callable[[bytes, BusMessage], None],
        on_bad_frame: Callable[[], None],
        on_beat: Callable[[int, str], None],
    ) -> None:
        self.config = config
        self.routing = routing
        self._ctx = context
        self._on_message = on_message
        self._on_bad_frame = on_bad_frame
        self._on_beat = on_beat
        self.links: dict[int, BusClient] = {}
        self._games: dict[str, list[int]] = {}  # game -> [shard, local subscriptions]
        self._retired: list[BusClient] = []  # replaced clients, until their readers end
        self._start_args: tuple[Any, ...] | None = None
        for shard in sorted(routing.routes):
            self.links[shard] = self._link(shard)

    def _link(self, shard: int) -> BusClient:
        address = self.routing.routes[shard]
        return BusClient(
            self.config,
            self._ctx,
            self._on_message,
            self._on_bad_frame,
            address=(address.xsub, address.xpub, address.catchup),
            on_beat=lambda epoch: self._on_beat(shard, epoch),
        )

    # --- lifecycle ---------------------------------------------------------------

    def start(self, *args: Any) -> None:
        """Start every shard's readers (``BusClient.start``'s arguments, kept for new ones)."""
        self._start_args = args
        for link in self.links.values():
            link.start(*args)

    def close(self) -> None:
        """Close every shard's sockets; idempotent."""
        for link in [*self.links.values(), *self._retired]:
            link.close()

    async def wait_closed(self) -> None:
        """Wait for every reader to end."""
        for link in [*self.links.values(), *self._retired]:
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

    def link(self, game_id: str) -> BusClient | None:
        """The bus of the game's shard, or None while that shard has no known broker."""
        return self.links.get(self.shard_of(game_id))

    def update(self, shard_map: ShardMap) -> None:
        """Take discovery's shard map: connect to new shards, reconnect moved ones."""
        before = self.routing.count
        changed = self.routing.update(shard_map)
        if changed is None:
            log.error(
                "discovery says the cluster has %d shards, this edge routes by %d: ignored "
                "(the shard count is fixed for a cluster's life)",
                shard_map.count,
                self.routing.count,
            )
            return
        if self.routing.count != before:
            log.info("routing games over %d broker shards", self.routing.count)
            changed = sorted(self.routing.routes)
            for shard in [s for s in self.links if s not in self.routing.routes]:
                self._retire(self.links.pop(shard))
        for shard in changed:
            old = self.links.pop(shard, None)
            if old is not None:
                self._retire(old)
            address = self.routing.routes[shard]
            log.info("shard %d/%d: broker at %s", shard, self.routing.count, address.xsub)
            link = self.links[shard] = self._link(shard)
            if self._start_args is not None:
                link.start(*self._start_args)
        if changed:
            self._resubscribe(rehash=self.routing.count != before, shards=set(changed))

    def reopen(self, shard: int) -> bool:
        """Close ``shard``'s sockets and open new ones to the same broker (Lazy Pirate).

        For a broker silent too long: libzmq reconnects a dropped TCP connection by
        itself, but not one it hung up on for a protocol error (such as a frame over
        its size limit), so new sockets are the only way back.  Subscriptions and
        the readers come back with them; requests in flight on the old sockets fail
        and are retried by their callers.  False if the shard has no broker address.
        """
        old = self.links.pop(shard, None)
        if old is None or shard not in self.routing.routes:
            if old is not None:
                self.links[shard] = old
            return False
        self._retire(old)
        link = self.links[shard] = self._link(shard)
        if self._start_args is not None:
            link.start(*self._start_args)
        self._resubscribe(rehash=False, shards={shard})
        return True

    def _retire(self, link: BusClient) -> None:
        """Close a replaced shard client; keep it until its readers have ended."""
        link.close()
        self._retired = [old for old in self._retired if not old.finished]
        self._retired.append(link)

    def _resubscribe(self, *, rehash: bool, shards: set[int]) -> None:
        """Subscribe the games of re-created shard clients again (all games if N changed)."""
        for game_id, entry in self._games.items():
            if rehash:
                entry[0] = self.routing.shard_of(game_id)
            if entry[0] in shards:
                link = self.links.get(entry[0])
                if link is not None:
                    link.subscribe(game_id)

    # --- subscriptions ---------------------------------------------------------------

    def subscribe(self, game_id: str) -> None:
        """One more local interest in a game; the first subscribes on its shard's bus."""
        entry = self._games.get(game_id)
        if entry is not None:
            entry[1] += 1
            return
        shard = self.routing.shard_of(game_id)
        self._games[game_id] = [shard, 1]
        link = self.links.get(shard)
        if link is not None:
            link.subscribe(game_id)

    def unsubscribe(self, game_id: str) -> None:
        """One less; the last one unsubscribes."""
        entry = self._games.get(game_id)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del self._games[game_id]
        link = self.links.get(entry[0])
        if link is not None:
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
        """Queue a message for every shard (the edge's beat)."""
        for link in self.links.values():
            link.publish(CMD_TOPIC, body)

    def flush(self) -> None:
        """Send what every shard's bus queued, now."""
        for link in self.links.values():
            link.flush()

    # --- requests ----------------------------------------------------------------------

    def _require(self, game_id: str) -> BusClient:
        link = self.link(game_id)
        if link is None:
            raise ShardUnknown(self.unknown_reason(game_id))
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
