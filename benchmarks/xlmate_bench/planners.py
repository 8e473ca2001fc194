"""Where the two players of a game connect, and as what: the planners.

A planner turns "game number ``n``" into two links (not yet open), white's and
black's, and takes back what it gave (a source address) when a link closes.

- ``RelayPlanner``: players straight to relays (the baselines), white on
  ``urls[n % k]``, black on the next one; no tokens; plain WebSockets, or
  Socket.IO (``--relay-protocol socketio``) for the Socket.IO baseline.
- ``ClusterPlanner``: seats minted like ``xlmate game new``, each player placed
  by discovery in its region (white in one region, black in the next).

Both pick source addresses from an ``AddressBook`` so that thousands of sockets
to one loopback edge stay under its per-IP limit.
"""

from __future__ import annotations

import asyncio
import secrets
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from xlmate.constants import COLORS
from xlmate.tokens import Clock, mint_seat_token
from xlmate_bench import BenchError
from xlmate_bench.cluster import http_json_async
from xlmate_bench.config import BenchConfig
from xlmate_bench.links import (
    GameClientLink,
    Handler,
    Link,
    SocketIOLink,
    ThinLink,
    player_url,
    socketio_url,
)
from xlmate_bench.stats import Stats


class AddressBook:
    """Source addresses for sockets to loopback targets, under the edges' per-IP limit.

    Every (source address, target) pair holds at most ``per_address`` sockets;
    addresses are 127.0.0.2, 127.0.0.3, ... (all of 127/8 is local on Linux, and
    ``websockets`` passes ``local_addr`` to ``loop.create_connection``).
    """

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self.live: Counter[tuple[str, str]] = Counter()  # (target, address) -> sockets
        self.per_target: Counter[str] = Counter()

    def acquire(self, target: str, *, bind: bool = True) -> tuple[str, int] | None:
        """A source address for one more socket to ``target``.

        None when the socket cannot choose (``bind=False``) or the target is not
        on loopback; the socket is counted either way.
        """
        self.per_target[target] += 1
        host = urllib.parse.urlsplit(target).hostname or ""
        if not bind or not host.startswith("127."):
            return None
        for last in range(2, 255):
            address = f"127.0.0.{last}"
            if self.live[(target, address)] < self.per_address:
                self.live[(target, address)] += 1
                return (address, 0)
        raise BenchError(f"more than {253 * self.per_address} sockets to {target}")

    def release(self, target: str, local_addr: tuple[str, int] | None) -> None:
        """One socket to ``target`` is closed."""
        self.per_target[target] -= 1
        if local_addr is not None:
            self.live[(target, local_addr[0])] -= 1


class Planner(Protocol):
    """Where the two players of game number ``number`` connect, and as what."""

    book: AddressBook

    async def links(self, number: int, kind: str, handler: Handler) -> list[Link]:
        """White's and black's links (not yet open) for a new game."""

    def release(self, link: Link) -> None:
        """Give back what ``links`` took for this link (its source address)."""


@dataclass
class _Placed:
    """Where a link was opened to, and from which source address."""

    target: str
    local_addr: tuple[str, int] | None


class _BasePlanner:
    """Game ids, thin links and source addresses, shared by both planners."""

    def __init__(self, config: BenchConfig, stats: Stats) -> None:
        self.config = config
        self.stats = stats
        self.book = AddressBook(config.per_address)
        self.tag = secrets.token_hex(3)
        self._placed: dict[int, _Placed] = {}

    def game_id(self, number: int, kind: str) -> str:
        """A game id unique to this run: ``b<tag><kind><number>``."""
        return f"b{self.tag}{kind}{number}"

    def thin(
        self, target: str, game_id: str, token: str | None, color: str, handler: Handler
    ) -> Link:
        """A ``ThinLink`` to ``target``, from a source address the book picks."""
        local = self.book.acquire(target)
        link_class, url = (
            (SocketIOLink, socketio_url(target, game_id))
            if self.config.relay_protocol == "socketio"
            else (ThinLink, player_url(target, game_id, token))
        )
        link = link_class(
            url,
            color,
            handler,
            local_addr=local,
            compression=self.config.compression,
            anomaly=self.stats.anomaly,
        )
        self._placed[id(link)] = _Placed(target, local)
        return link

    def release(self, link: Link) -> None:
        """Give back the link's source address."""
        placed = self._placed.pop(id(link), None)
        if placed is not None:
            self.book.release(placed.target, placed.local_addr)


class RelayPlanner(_BasePlanner):
    """Players straight to relays: white on ``urls[n % k]``, black on the next one."""

    async def links(self, number: int, kind: str, handler: Handler) -> list[Link]:
        """White's and black's links (not yet open) for game ``number``."""
        urls = self.config.target_urls
        game_id = self.game_id(number, kind)
        return [
            self.thin(urls[(number + seat) % len(urls)], game_id, None, color, handler)
            for seat, color in enumerate(("white", "black"))
        ]


class ClusterPlanner(_BasePlanner):
    """Seats minted like ``xlmate game new``, each placed by discovery in its region."""

    def __init__(
        self,
        config: BenchConfig,
        stats: Stats,
        discovery_url: str,
        secret: str,
        regions: Sequence[str],
    ) -> None:
        super().__init__(config, stats)
        self.discovery_url = discovery_url.rstrip("/")
        self.secret = secret
        self.regions = list(regions)
        self.clock = Clock.parse(config.clock)

    async def place(self, region: str, game_id: str) -> str:
        """Ask discovery which edge a player of ``game_id`` in ``region`` should use."""
        query = urllib.parse.urlencode({"region": region, "gameId": game_id})
        url = f"{self.discovery_url}/v1/nodes/discovery?{query}"
        status, body = await http_json_async(url)
        if status != 200 or not isinstance(body, dict) or "node" not in body:
            raise OSError(f"discovery answered {status}: {body}")
        return str(body["node"]["url"])

    async def links(self, number: int, kind: str, handler: Handler) -> list[Link]:
        """White's and black's links (not yet open) for game ``number``."""
        game_id = self.game_id(number, kind)
        count = len(self.regions)
        regions = (self.regions[number % count], self.regions[(number + 1) % count])
        urls = await asyncio.gather(*(self.place(region, game_id) for region in regions))
        out: list[Link] = []
        for url, color in zip(urls, COLORS, strict=True):
            token = mint_seat_token(self.secret, game_id, color, clock=self.clock)
            if self.config.client == "gameclient" and kind == "g":
                self.book.acquire(url, bind=False)  # GameClient cannot pick its address
                link: Link = GameClientLink(url, game_id, token, color, handler)
                self._placed[id(link)] = _Placed(url, None)
            else:
                link = self.thin(url, game_id, token, color, handler)
            out.append(link)
        return out
