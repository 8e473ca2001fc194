"""The load generator: closed-loop and open-loop drivers, idle sockets, scaling levels.

A *play* is one scripted game (``games.Script``) between two links, white and
black, on edges of different regions when the target has several.  Latency is
the mover's send to the opponent's receipt of that move, both read from this
process's ``perf_counter``.  The same definition holds for relays, which do not
ack: a move "lands" when the opponent has it.

- Closed loop: every play has exactly one move in flight; the receiver of a
  move sends the next one at once (or after ``think_ms``).
- Open loop: a pacer offers ``rate`` moves a second; each goes to the play that
  has waited longest for its turn.  A play still has one move in flight at a
  time; an offer with no play free is counted as ``unserved``.

A play whose script runs out resigns (or ended by itself) and its slot starts
a fresh game.  Anything unexpected (an error frame, a close, a move that does
not come within ``move_timeout``) is counted by kind and the slot starts over.

Phases of a run: start the cluster (or not), open the idle connections and
measure idle CPU and memory, open the measured games, warm up, measure.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import sys
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final, Protocol

from xlmate.bench import BenchError
from xlmate.bench.config import BenchConfig
from xlmate.bench.games import Script, game_pool
from xlmate.bench.launcher import LocalCluster, http_status, raise_nofile
from xlmate.bench.links import (
    CLOSED,
    GameClientLink,
    Handler,
    Link,
    Message,
    ThinLink,
    ignore,
    player_url,
)
from xlmate.bench.report import (
    EdgeMemory,
    IdleReport,
    Latency,
    LevelReport,
    ProcessStats,
    RunReport,
    Watched,
    format_report,
    host_stats,
    myself,
    snapshot,
    system_cpu_s,
    window_stats,
)
from xlmate.config import cluster_secret
from xlmate.tokens import Clock, mint_seat_token

log = logging.getLogger("xlmate.bench")

OPEN_TIMEOUT_S: Final = 15.0
CONNECT_CONCURRENCY: Final = 64  # sockets being opened at once (the edges' accept backlog)
RETRYABLE: Final = frozenset({"rate_limited", "unavailable"})
RETRY_DELAY_S: Final = 0.1
RESTART_DELAY_S: Final = 0.2
WATCHDOG_S: Final = 0.5
MAX_SAMPLES: Final = 10  # error details kept for the report


# --- what gets measured ----------------------------------------------------------


class Stats:
    """Counters of a run; latencies only count inside the measurement window."""

    def __init__(self) -> None:
        self.window: tuple[float, float] | None = None
        self.measuring = False
        self.latencies: list[float] = []
        self.acks: list[float] = []
        self.errors: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()
        self.samples: list[str] = []
        self.moves_all = 0
        self.offered = 0
        self.unserved = 0
        self.games_started = 0
        self.games_finished = 0
        self.phase = "setup"

    def open_window(self) -> float:
        """Start measuring now; forget what the previous window counted."""
        self.latencies, self.acks = [], []
        self.offered = self.unserved = 0
        self.measuring = True
        return time.perf_counter()

    def close_window(self) -> float:
        """Stop measuring now."""
        self.measuring = False
        return time.perf_counter()

    def landed(self, latency: float) -> None:
        """A move reached the opponent ``latency`` seconds after it was sent."""
        self.moves_all += 1
        if self.measuring:
            self.latencies.append(latency)

    def acked(self, latency: float) -> None:
        """The mover's own ack came ``latency`` seconds after the send."""
        if self.measuring:
            self.acks.append(latency)

    def error(self, kind: str, detail: str | None = None) -> None:
        """Count one error of ``kind``; keep the first few ``detail`` texts as evidence."""
        self.errors[kind] += 1
        if detail is not None and len(self.samples) < MAX_SAMPLES:
            self.samples.append(f"{kind}: {detail}")

    def anomaly(self, kind: str, detail: str) -> None:
        """Count something the target did that a correct client absorbs (a duplicate ``v``)."""
        self.anomalies[kind] += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(f"{kind}: {detail}")


# --- where the players connect ------------------------------------------------------


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
        link = ThinLink(
            player_url(target, game_id, token),
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
        status, body = await asyncio.to_thread(http_status, url, 3.0)
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
        for url, color in zip(urls, ("white", "black"), strict=True):
            token = mint_seat_token(self.secret, game_id, color, clock=self.clock)  # type: ignore[arg-type]
            if self.config.client == "gameclient" and kind == "g":
                self.book.acquire(url, bind=False)  # GameClient cannot pick its address
                link: Link = GameClientLink(url, game_id, token, color, handler)
                self._placed[id(link)] = _Placed(url, None)
            else:
                link = self.thin(url, game_id, token, color, handler)
            out.append(link)
        return out


# --- the games being played -------------------------------------------------------------


class State(Enum):
    """Where a play is."""

    CONNECTING = "connecting"
    READY = "ready"  # the side to move may send
    IN_FLIGHT = "in_flight"  # a move is on its way to the opponent
    RESIGNING = "resigning"
    DONE = "done"


@dataclass(eq=False)
class Play:
    """One scripted game in one slot."""

    slot: int
    number: int
    script: Script
    links: list[Link] = field(default_factory=list)
    state: State = State.CONNECTING
    ply: int = 0
    cid: str = ""
    sent_at: float = 0.0
    ack_pending: bool = False
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def mover(self) -> Link:
        """The link whose turn it is."""
        return self.links[self.ply % 2]

    @property
    def receiver(self) -> Link:
        """The link that receives the move in flight."""
        return self.links[(self.ply + 1) % 2]


class Driver:
    """Keeps ``slots`` games going, closed or open loop (see the module docstring)."""

    def __init__(
        self,
        config: BenchConfig,
        planner: Planner,
        pool: Sequence[Script],
        stats: Stats,
    ) -> None:
        self.config = config
        self.planner = planner
        self.pool = pool
        self.stats = stats
        self.open_loop = config.rate is not None
        self.think = config.think_ms / 1000
        self.plays: dict[int, Play] = {}
        self.ready: deque[Play] = deque()
        self.slots = 0
        self.stopping = False
        self._numbers = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connect = asyncio.Semaphore(CONNECT_CONCURRENCY)
        self._watchdog: asyncio.Task[None] | None = None
        self._pacer: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in a task that ``stop`` cancels if it is still running."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def add_games(self, count: int) -> None:
        """Open ``count`` more slots; return once each has its first game connected."""
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch())
        first = self.slots
        self.slots += count
        await asyncio.gather(*(self._start(slot) for slot in range(first, self.slots)))

    def start_pacer(self) -> None:
        """Open loop: start offering ``rate`` moves a second."""
        if self.open_loop and self._pacer is None:
            self._pacer = asyncio.create_task(self._pace(float(self.config.rate or 1)))

    async def stop(self) -> None:
        """Stop sending, close every link, wait for the background tasks."""
        self.stopping = True
        for task in (self._pacer, self._watchdog):
            if task is not None:
                task.cancel()
        plays = list(self.plays.values())
        for play in plays:
            play.state = State.DONE
        await asyncio.gather(*(self._close_links(play) for play in plays))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _start(self, slot: int) -> None:
        """Start a new game in ``slot`` (retrying until it connects or the run stops)."""
        while not self.stopping:
            number = next(self._numbers)
            play = Play(slot, number, self.pool[number % len(self.pool)])

            async def handler(link: Link, message: Message, play: Play = play) -> None:
                await self._on_message(play, link, message)

            try:
                async with self._connect:
                    play.links = await self.planner.links(number, "g", handler)
                    await asyncio.gather(*(link.open(OPEN_TIMEOUT_S) for link in play.links))
            except Exception as exc:  # any failure to connect is counted, and retried
                self.stats.error(f"connect:{type(exc).__name__}")
                log.debug("game %d did not connect: %r", number, exc)
                await self._close_links(play)
                await asyncio.sleep(RESTART_DELAY_S)
                continue
            if self.stopping:
                await self._close_links(play)
                return
            self.plays[slot] = play
            self.stats.games_started += 1
            play.state = State.READY
            await self._advance(play)
            return

    async def _close_links(self, play: Play) -> None:
        """Close a play's sockets and give back their source addresses."""
        links, play.links = play.links, []
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
        for link in links:
            self.planner.release(link)

    def _end(self, play: Play, *, finished: bool) -> None:
        """The play is over (or given up): close it, start the slot's next game."""
        if play.state is State.DONE:
            return
        play.state = State.DONE
        if finished:
            self.stats.games_finished += 1
        self._spawn(self._close_links(play))
        if not self.stopping:
            self._spawn(self._restart(play.slot, 0.0 if finished else RESTART_DELAY_S))

    async def _restart(self, slot: int, delay: float) -> None:
        """Start the slot's next game, after ``delay`` when the last one failed."""
        if delay:
            await asyncio.sleep(delay)
        await self._start(slot)

    # --- moves ------------------------------------------------------------------------

    async def _advance(self, play: Play) -> None:
        """The side to move may send: now, after thinking, or when the pacer says."""
        if self.open_loop:
            self.ready.append(play)
        elif self.think:
            asyncio.get_running_loop().call_later(
                self.think, lambda: self._spawn(self._send_move(play))
            )
        else:
            await self._send_move(play)

    async def _send_move(self, play: Play) -> None:
        """Send the side to move's next scripted move, if the play is ready for it."""
        if play.state is not State.READY or self.stopping:
            return
        play.state = State.IN_FLIGHT
        play.cid = f"m{next(play.ids)}"
        play.ack_pending = True
        play.sent_at = time.perf_counter()
        await play.mover.send_move(play.script.moves[play.ply], play.cid)

    async def _resend(self, play: Play, cid: str) -> None:
        """Re-send a move the edge refused for now (``rate_limited``, ``unavailable``)."""
        await asyncio.sleep(RETRY_DELAY_S)
        if play.state is State.IN_FLIGHT and play.cid == cid:
            await play.mover.send_move(play.script.moves[play.ply], cid)

    async def _on_message(self, play: Play, link: Link, message: Message) -> None:
        """Every message a play's link receives after its first state frame."""
        if play.state is State.DONE:
            return
        kind = message.get("type")
        if kind == "move":
            if message.get("by") == link.color:
                return  # the cluster echoes our own move to us
            await self._on_move(play, link, message)
        elif kind == "ack":
            if play.ack_pending and message.get("id") == play.cid:
                play.ack_pending = False
                self.stats.acked(time.perf_counter() - play.sent_at)
        elif kind in ("game_over", "resign"):
            if play.state is State.RESIGNING:
                self._end(play, finished=True)
            elif not (play.state is State.IN_FLIGHT and self._last_move_in_flight(play)):
                # (A game that ends itself: the mover may hear game_over before
                # the opponent hears the move; that move's receipt ends the play.)
                self.stats.error(
                    f"game_over:{message.get('reason', kind)}",
                    f"game {play.number} at {link.color}: {message}; state {play.state.value}",
                )
                self._end(play, finished=False)
        elif kind == "sync":
            await self._on_state(play, link, message)
        elif kind == "error":
            self._on_error(play, link, message)
        elif kind == CLOSED:
            self.stats.error(f"closed:{message.get('code')}")
            self._end(play, finished=False)

    @staticmethod
    def _last_move_in_flight(play: Play) -> bool:
        """Whether the move in flight is the last of a script that ends the game."""
        return play.script.ends_itself and play.ply == len(play.script.moves) - 1

    async def _on_move(self, play: Play, link: Link, message: Message) -> None:
        """The opponent received a move: measure it, then advance, finish or resign."""
        now = time.perf_counter()
        if (
            play.state is not State.IN_FLIGHT
            or link is not play.receiver
            or message.get("uci") != play.script.moves[play.ply]
        ):
            expected = play.script.moves[play.ply] if play.ply < len(play.script.moves) else None
            self.stats.error(
                "unexpected_move",
                f"game {play.number} at {link.color}: got {message.get('uci')} "
                f"v={message.get('v')} by={message.get('by')}; state {play.state.value}, "
                f"ply {play.ply}, expected {expected}",
            )
            self._end(play, finished=False)
            return
        self.stats.landed(now - play.sent_at)
        play.ply += 1
        if play.ply < len(play.script.moves):
            play.state = State.READY
            await self._advance(play)
        elif play.script.ends_itself:
            self._end(play, finished=True)
        else:
            play.state = State.RESIGNING
            play.cid = f"r{next(play.ids)}"
            play.sent_at = now
            await link.send_resign(play.cid)

    async def _on_state(self, play: Play, link: Link, message: Message) -> None:
        """A full state in mid-game (an edge repairs a socket that fell behind with one).

        Its events are not sent again (docs/protocol.md: a client takes the state),
        so a state that already holds the move in flight is that move's receipt,
        and one that shows the game over ends a resignation.
        """
        moves = message.get("moves") or []
        if play.state is State.IN_FLIGHT and link is play.receiver and len(moves) > play.ply:
            await self._on_move(play, link, {"type": "move", "uci": moves[play.ply]})
        elif play.state is State.RESIGNING and message.get("status") == "over":
            self._end(play, finished=True)

    def _on_error(self, play: Play, link: Link, message: Message) -> None:
        """An ``error`` frame: retry what can be retried, give up on the play otherwise."""
        code = str(message.get("code"))
        cid = message.get("id")
        self.stats.error(f"error:{code}", f"game {play.number} at {link.color}: {message}")
        if (
            play.state is State.IN_FLIGHT
            and link is play.mover
            and code in RETRYABLE
            and cid in (None, play.cid)
        ):
            self._spawn(self._resend(play, play.cid))
        elif cid is not None and cid == play.cid:
            self._end(play, finished=False)

    async def _watch(self) -> None:
        """Give up on plays whose move (or resignation) did not land in time."""
        timeout = self.config.move_timeout
        while True:
            await asyncio.sleep(WATCHDOG_S)
            now = time.perf_counter()
            for play in list(self.plays.values()):
                busy = play.state in (State.IN_FLIGHT, State.RESIGNING)
                if busy and now - play.sent_at > timeout:
                    links = ", ".join(
                        f"{link.color} at v{getattr(link, 'last_v', '?')}" for link in play.links
                    )
                    self.stats.error(
                        "timeout",
                        f"game {play.number} ({play.state.value}, ply {play.ply} of "
                        f"{len(play.script.moves)}, ack pending {play.ack_pending}): {links}",
                    )
                    self._end(play, finished=False)

    async def _pace(self, rate: float) -> None:
        """Offer one move every ``1/rate`` s to the play that has waited longest."""
        interval = 1.0 / rate
        due = time.perf_counter()
        stats, ready = self.stats, self.ready
        while True:
            now = time.perf_counter()
            if now < due:
                await asyncio.sleep(due - now)
                continue
            while due <= now:
                due += interval
                if stats.measuring:
                    stats.offered += 1
                while ready and ready[0].state is not State.READY:
                    ready.popleft()
                if ready:
                    await self._send_move(ready.popleft())
                elif stats.measuring:
                    stats.unserved += 1


# --- idle sockets ------------------------------------------------------------------------


class IdlePool:
    """Extra sockets that only listen: both players of games nobody moves in."""

    def __init__(self, planner: Planner, stats: Stats) -> None:
        self.planner = planner
        self.stats = stats
        self.links: list[Link] = []
        self._sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        self._numbers = itertools.count()

    async def open(self, count: int) -> None:
        """Open ``count`` sockets (``count // 2`` games, plus one lone white if odd)."""
        games = [2] * (count // 2) + ([1] if count % 2 else [])
        await asyncio.gather(*(self._open_game(seats) for seats in games))

    async def _open_game(self, seats: int) -> None:
        """Open the sockets of one idle game (``seats`` of them)."""
        number = next(self._numbers)
        async with self._sem:
            try:
                links = (await self.planner.links(number, "i", ignore))[:seats]
            except Exception as exc:  # counted; the run goes on
                self.stats.error(f"idle_connect:{type(exc).__name__}")
                return
            results = await asyncio.gather(
                *(link.open(OPEN_TIMEOUT_S) for link in links), return_exceptions=True
            )
        for link, result in zip(links, results, strict=True):
            if isinstance(result, BaseException):
                self.stats.error(f"idle_connect:{type(result).__name__}")
                await link.close()
                self.planner.release(link)
            else:
                self.links.append(link)

    async def close(self) -> None:
        """Close them all."""
        links, self.links = self.links, []
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY * 4)

        async def one(link: Link) -> None:
            async with sem:
                await link.close()
            self.planner.release(link)

        await asyncio.gather(*(one(link) for link in links), return_exceptions=True)


# --- progress ----------------------------------------------------------------------------


async def _progress(stats: Stats, started: float) -> None:
    """One line on stderr, rewritten every second: phase, moves/s, errors."""
    tty = sys.stderr.isatty()
    last_moves, last_t = stats.moves_all, time.perf_counter()
    while True:
        await asyncio.sleep(1.0)
        now = time.perf_counter()
        rate = (stats.moves_all - last_moves) / (now - last_t)
        last_moves, last_t = stats.moves_all, now
        line = (
            f"[bench] {now - started:6.1f}s {stats.phase:<10} moves {stats.moves_all:>8}  "
            f"{rate:8.1f}/s  errors {sum(stats.errors.values())}"
        )
        sys.stderr.write(f"\r{line}" if tty else f"{line}\n")
        sys.stderr.flush()


# --- a run ----------------------------------------------------------------------------------


@dataclass
class _Target:
    """What a run drives: its planner, the processes to report, edge URLs to names."""

    planner: Planner
    watched: list[Watched]
    edge_urls: dict[str, str]  # WebSocket base URL -> watched process name
    description: dict[str, Any]
    cluster: LocalCluster | None = None


def _parse_watch(config: BenchConfig) -> tuple[list[Watched], dict[str, str]]:
    """``--watch`` entries as watched processes, and relay URLs to their names."""
    watched, urls = [], {}
    for name, pid in config.watch:
        base, _, url = name.partition("@")
        role = base.split("-")[0]
        watched.append(Watched(base, role, pid))
        if url:
            urls[url] = base
    return watched, urls


def _regions_of(discovery_url: str, fallback: Sequence[str]) -> list[str]:
    """The distinct regions discovery knows, in listing order."""
    status, body = http_status(f"{discovery_url.rstrip('/')}/v1/nodes", 3.0)
    if status != 200 or not isinstance(body, dict):
        raise BenchError(f"discovery at {discovery_url} answered {status}")
    regions: list[str] = []
    for node in body.get("nodes", []):
        region = node.get("region")
        if isinstance(region, str) and region not in regions and not node.get("draining"):
            regions.append(region)
    return regions or list(fallback)


def _target(config: BenchConfig, stats: Stats) -> _Target:
    """Set up the target of ``config`` (starting a cluster if asked to)."""
    watched, urls = _parse_watch(config)
    watched.insert(0, myself())
    if config.target == "relay":
        return _Target(
            RelayPlanner(config, stats),
            watched,
            urls,
            {"kind": "relay", "urls": list(config.target_urls)},
        )
    if config.target == "discovery":
        assert config.discovery_url is not None
        regions = _regions_of(config.discovery_url, config.regions)
        secret, _ = cluster_secret()
        return _Target(
            ClusterPlanner(config, stats, config.discovery_url, secret, regions),
            watched,
            urls,
            {"kind": "cluster", "discovery": config.discovery_url, "regions": regions},
        )
    regions = list(config.regions[: config.edges])
    cluster = LocalCluster(
        edges=config.edges,
        regions=regions,
        fsync=config.fsync,
        workdir=None if config.workdir is None else Path(config.workdir),
    )
    cluster.start()
    for component in cluster.components:
        watched.append(Watched(component.name, component.role, component.pid))
        if component.url:
            urls[component.url] = component.name
    return _Target(
        ClusterPlanner(config, stats, cluster.discovery_url, cluster.secret, regions),
        watched,
        urls,
        {
            "kind": "cluster",
            "launched": True,
            "edges": config.edges,
            "regions": regions,
            "fsync": config.fsync,
        },
        cluster,
    )


def _scenario(config: BenchConfig) -> dict[str, Any]:
    """The scenario part of the report."""
    return {
        "mode": config.mode,
        "games": config.games,
        "rate": config.rate,
        "duration_s": config.duration,
        "warmup_s": config.warmup,
        "think_ms": config.think_ms,
        "client": config.client,
        "compression": config.compression,
        "idle_connections": config.idle_connections,
        "seed": config.seed,
        "max_plies": config.max_plies,
        "scaling": list(config.scaling),
    }


async def _measure_idle(
    config: BenchConfig, target: _Target, stats: Stats, idle: IdlePool
) -> IdleReport:
    """Open the idle sockets, then measure CPU with only them open, and RSS per socket."""
    stats.phase = "idle-open"
    before = snapshot(target.watched)
    started = time.perf_counter()
    await idle.open(config.idle_connections)
    opened_s = time.perf_counter() - started
    stats.phase = "idle"
    start = snapshot(target.watched)
    t0 = time.perf_counter()
    await asyncio.sleep(config.idle_seconds)
    wall = time.perf_counter() - t0
    after = snapshot(target.watched)
    report = IdleReport(
        connections=len(idle.links),
        window_s=round(wall, 3),
        open_s=round(opened_s, 3),
        processes=window_stats(target.watched, start, after, wall),
    )
    counts = target.planner.book.per_target
    by_name = {w.name: w for w in target.watched}
    for url, name in target.edge_urls.items():
        proc = by_name.get(name)
        if proc is None:
            continue
        b, a = before.get(proc.pid), after.get(proc.pid)
        if b is None or a is None:
            continue
        conns = counts.get(url, 0)
        mib = 1024 * 1024
        report.memory.append(
            EdgeMemory(
                name=name,
                connections=conns,
                rss_before_mib=round(b.rss / mib, 1),
                rss_after_mib=round(a.rss / mib, 1),
                kib_per_connection=round((a.rss - b.rss) / 1024 / conns, 2) if conns else 0.0,
            )
        )
    return report


async def _window(
    config: BenchConfig, target: _Target, stats: Stats
) -> tuple[float, list[ProcessStats], float, dict[str, float]]:
    """Warm up, then measure one window: (wall s, process stats, system CPU s, machine)."""
    stats.phase = "warmup"
    await asyncio.sleep(config.warmup)
    stats.phase = "measure"
    before = snapshot(target.watched)
    t0 = stats.open_window()
    await asyncio.sleep(config.duration)
    t1 = stats.close_window()
    after = snapshot(target.watched)
    wall = t1 - t0
    procs = window_stats(target.watched, before, after, wall)
    return wall, procs, system_cpu_s(procs), host_stats(before, after, procs, wall)


async def run(config: BenchConfig) -> RunReport:
    """Run one benchmark and return its report (the cluster, if launched, is stopped)."""
    raise_nofile()
    pool = game_pool(config.seed, config.pool, config.max_plies)
    stats = Stats()
    started = time.perf_counter()
    progress = asyncio.create_task(_progress(stats, started)) if config.progress else None
    target = _target(config, stats)
    label = config.label or (
        f"relay {' '.join(config.target_urls)}"
        if config.target == "relay"
        else f"cluster ({len(target.description.get('regions', []))} regions)"
    )
    report = RunReport(label=label, target=target.description, scenario=_scenario(config))
    driver = Driver(config, target.planner, pool, stats)
    idle = IdlePool(target.planner, stats)
    try:
        if config.idle_connections:
            report.idle = await _measure_idle(config, target, stats, idle)
        if config.scaling:
            await _run_scaling(config, target, stats, driver, report)
        else:
            stats.phase = "connect"
            await driver.add_games(config.games)
            driver.start_pacer()
            wall, procs, cpu, host = await _window(config, target, stats)
            report.host = host
            report.window_s = round(wall, 3)
            report.moves = len(stats.latencies)
            report.moves_per_s = round(report.moves / wall, 1)
            report.latency_ms = Latency.of(stats.latencies)
            if stats.acks:
                report.ack_latency_ms = Latency.of(stats.acks)
            report.processes = procs
            report.system_cpu_s = round(cpu, 3)
            report.cpu_ms_per_move = round(1000 * cpu / report.moves, 4) if report.moves else 0.0
            if driver.open_loop:
                report.open_loop = {
                    "offered_per_s": config.rate,
                    "offered": stats.offered,
                    "unserved": stats.unserved,
                }
    finally:
        stats.phase = "stopping"
        await driver.stop()
        await idle.close()
        if progress is not None:
            progress.cancel()
            if sys.stderr.isatty():
                sys.stderr.write("\n")
        if target.cluster is not None:
            target.cluster.stop()
    report.errors = dict(stats.errors)
    report.anomalies = dict(stats.anomalies)
    report.samples = list(stats.samples)
    report.games_started = stats.games_started
    report.games_finished = stats.games_finished
    return report


async def _run_scaling(
    config: BenchConfig, target: _Target, stats: Stats, driver: Driver, report: RunReport
) -> None:
    """CPU per move at a fixed move rate as the number of live games grows."""
    for level in sorted(set(config.scaling)):
        stats.phase = f"open {level}"
        await driver.add_games(level - driver.slots)
        driver.start_pacer()
        errors_before = sum(stats.errors.values())
        wall, procs, cpu, host = await _window(config, target, stats)
        moves = len(stats.latencies)
        report.scaling.append(
            LevelReport(
                games=level,
                moves=moves,
                moves_per_s=round(moves / wall, 1),
                window_s=round(wall, 3),
                latency_ms=Latency.of(stats.latencies),
                system_cpu_s=round(cpu, 3),
                cpu_ms_per_move=round(1000 * cpu / moves, 4) if moves else 0.0,
                errors=sum(stats.errors.values()) - errors_before,
                processes=procs,
                host=host,
            )
        )
    base = report.scaling[0].cpu_ms_per_move if report.scaling else 0.0
    if base:
        report.scaling_ratios = {
            f"{level.games}/{report.scaling[0].games}": round(level.cpu_ms_per_move / base, 3)
            for level in report.scaling[1:]
        }


async def main(config: BenchConfig) -> None:
    """``xlmate bench``: run, then print the table (or the JSON) on stdout."""
    report = await run(config)
    if config.json_output:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
