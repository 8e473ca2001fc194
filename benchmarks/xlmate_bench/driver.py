"""The driver: keeps ``slots`` scripted games going, closed or open loop.

A *play* is one scripted game (``games.Script``) between two links, white and
black, placed by a planner.  Latency is the mover's send to the opponent's
receipt of that move, both read from this process's ``perf_counter``.  The
same definition holds for relays, which do not ack: a move "lands" when the
opponent has it.

- Closed loop: every play has exactly one move in flight; the receiver of a
  move sends the next one at once (or after ``think_ms``).
- Open loop: a pacer offers ``rate`` moves a second; each goes to the play that
  has waited longest for its turn.  A play still has one move in flight at a
  time; an offer with no play free is counted as ``unserved``.

A play whose script runs out resigns (or ended by itself) and its slot starts
a fresh game.  Anything unexpected (an error frame, a close, a move that does
not come within ``move_timeout``) is counted by kind and the slot starts over.
Every task the driver starts is kept in ``_tasks`` (or is its watchdog or
pacer) and ``stop`` cancels and awaits them all.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from xlmate_bench.config import BenchConfig
from xlmate_bench.games import Script
from xlmate_bench.links import CLOSED, Link, Message
from xlmate_bench.planners import Planner
from xlmate_bench.stats import Stats

log = logging.getLogger("xlmate.bench")

OPEN_TIMEOUT_S: Final = 15.0
CONNECT_CONCURRENCY: Final = 64  # sockets being opened at once (the edges' accept backlog)
RETRYABLE: Final = frozenset({"rate_limited", "unavailable"})
RETRY_DELAY_S: Final = 0.1
RESTART_DELAY_S: Final = 0.2
WATCHDOG_S: Final = 0.5


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
