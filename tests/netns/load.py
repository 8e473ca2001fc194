"""A bounded load of real games, every acked move recorded, checked afterwards.

``Load`` seats ``games`` games through discovery (white asks for an edge in
one region, black in another, so every game crosses two edges and the
broker), and plays each from a seeded script of legal moves with the Python
client (xlmate/client.py), which re-sends unacked commands with the same id
across reconnects and ``unavailable`` answers.  Each game moves at most once
per ``pace_s`` (the load's rate: a few dozen games stay well inside two
cores, so that a lease is never lost to CPU starvation rather than to the
fault under test); it is not a wait for a condition.

Every ack is recorded with its ``v`` and the time it arrived.  ``check``
then proves, per game, that nothing acked was lost or applied twice and that
the game has exactly one history: the acked ``v`` are 1..N in order, the
state an edge serves holds exactly the acked moves, and both players saw
every ``v`` once, in order, never going back, with those same moves.

``stalls(t)`` measures, per game, how long after ``t`` (a fault) its next
ack came: a figure to report, never to assert on (no timed assertions).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

from tests.integration.cluster import Cluster, http_json_async
from tests.integration.games import assert_clean_history, mint_game
from tests.support.chess_games import random_game
from xlmate.client import CommandFailed, GameClient
from xlmate.tokens import Clock

PLIES: Final = 300  # 250 or more: longer than any scenario plays at its pace
HALF_AN_HOUR: Final = Clock(1800, 0)
CONNECT_TIMEOUT_S: Final = 20.0
CHECK_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 40.0  # a move in flight is acked or fails (client timeout 30 s)


@dataclass
class Game:
    """One game of the load: its players, its script and what was acked."""

    gid: str
    white: GameClient
    black: GameClient
    script: list[str]
    acks: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, v)
    error: str | None = None

    @property
    def acked(self) -> list[str]:
        """The moves acked so far, in order."""
        return self.script[: len(self.acks)]

    def last_ack(self) -> float:
        """When the last move was acked (0 before any)."""
        return self.acks[-1][0] if self.acks else 0.0


@dataclass
class Load:
    """Games played by background tasks while a test injects faults (module docstring)."""

    games: list[Game]
    pace_s: float
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def start(
        cls,
        cluster: Cluster,
        games: int,
        *,
        regions: tuple[str, str] = ("eu-west", "us-east"),
        pace_s: float = 0.25,
        seed: int = 0,
    ) -> Load:
        """Seat ``games`` games through discovery and start playing them."""
        seated: list[Game] = []
        try:
            for i in range(games):
                gid, white_token, black_token = mint_game(HALF_AN_HOUR)
                white = GameClient(
                    gid,
                    token=white_token,
                    discovery_url=cluster.discovery_url,
                    region=regions[0],
                    command_timeout=30.0,
                    seed=seed * 1000 + 2 * i,
                )
                black = GameClient(
                    gid,
                    token=black_token,
                    discovery_url=cluster.discovery_url,
                    region=regions[1],
                    command_timeout=30.0,
                    seed=seed * 1000 + 2 * i + 1,
                )
                seated.append(Game(gid, white, black, random_game(seed * 1000 + i, PLIES)))
            await asyncio.gather(
                *(c.connect(CONNECT_TIMEOUT_S) for g in seated for c in (g.white, g.black))
            )
        except BaseException:
            await asyncio.gather(
                *(c.close() for g in seated for c in (g.white, g.black)), return_exceptions=True
            )
            raise
        load = cls(seated, pace_s)
        load.tasks = [asyncio.create_task(load._play(g), name=f"load.{g.gid}") for g in seated]
        return load

    async def _play(self, game: Game) -> None:
        """Play the script, one move per ``pace_s`` at most, recording every ack."""
        next_at = time.monotonic()
        for ply, uci in enumerate(game.script):
            with contextlib.suppress(TimeoutError):  # the load's pace, cut short by stop()
                await asyncio.wait_for(self.stopping.wait(), max(0.0, next_at - time.monotonic()))
            if self.stopping.is_set():
                return
            next_at = time.monotonic() + self.pace_s
            player = game.white if ply % 2 == 0 else game.black
            try:
                v = await player.move(uci)
            except CommandFailed as exc:
                game.error = f"ply {ply + 1} ({uci}): {exc}"
                return
            game.acks.append((time.monotonic(), v))

    # --- progress -----------------------------------------------------------------------

    def acked(self) -> int:
        """Moves acked so far, all games together."""
        return sum(len(g.acks) for g in self.games)

    def counts(self) -> list[int]:
        """Moves acked so far, per game."""
        return [len(g.acks) for g in self.games]

    def moved_since(self, counts: list[int], by: int = 1) -> bool:
        """Whether every game acked at least ``by`` more moves than ``counts``."""
        failed = [g.error for g in self.games if g.error]
        if failed:
            raise AssertionError(f"a game failed: {failed[0]}")
        return all(len(g.acks) >= n + by for g, n in zip(self.games, counts, strict=True))

    def errors(self) -> list[str]:
        """Games that stopped on a command the cluster refused or never acked."""
        return [f"{g.gid}: {g.error}" for g in self.games if g.error]

    def stalls(self, since: float) -> list[float]:
        """Per game: seconds from ``since`` to its first ack after it (games that have not
        moved since are left out)."""
        out = []
        for game in self.games:
            after = [t for t, _ in game.acks if t > since]
            if after:
                out.append(after[0] - since)
        return out

    def max_gaps(self, since: float) -> list[float]:
        """Per game: the longest time between two acks (or ``since`` and the first) after
        ``since``."""
        out = []
        for game in self.games:
            times = [since, *(t for t, _ in game.acks if t > since)]
            out.append(max((b - a for a, b in itertools.pairwise(times)), default=0.0))
        return out

    # --- the end ------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop playing; moves in flight are awaited until acked or failed (so that what
        was acked is known exactly), then cancelled after ``STOP_TIMEOUT_S``; idempotent."""
        self.stopping.set()
        _, late = await asyncio.wait(self.tasks, timeout=STOP_TIMEOUT_S)
        for task in late:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        assert not late, f"{len(late)} moves still unanswered {STOP_TIMEOUT_S} s after stop()"

    async def close(self) -> None:
        """Cancel what still plays and close every client; idempotent (also on failure)."""
        self.stopping.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(
            *(c.close() for g in self.games for c in (g.white, g.black)), return_exceptions=True
        )

    async def check(self, cluster: Cluster) -> None:
        """After ``stop``: 0 acked moves lost or doubled, one history per game (module
        docstring).  Reads each game's state from a live edge."""
        assert not self.errors(), self.errors()
        for game in self.games:
            versions = [v for _, v in game.acks]
            assert versions == list(range(1, len(versions) + 1)), (
                f"{game.gid}: acked v {versions} (a gap is a lost move, a repeat a double)"
            )
            served = await served_moves(cluster, game.gid)
            assert served == game.acked, f"{game.gid}: the cluster holds {served}"
            for client in (game.white, game.black):
                await client.wait_for_v(len(game.acks), CHECK_TIMEOUT_S)
                assert_clean_history(client, game.acked)


async def served_moves(cluster: Cluster, gid: str) -> list[str]:
    """The moves of ``gid`` as a live edge serves them (``GET /v1/games/{id}``)."""
    for edge in cluster.edges:
        if edge.proc.alive():
            status, state = await http_json_async(f"{edge.http}/v1/games/{gid}")
            if status == 200:
                return list(state["moves"])
    raise AssertionError(f"no edge serves {gid}")


def summary(values: list[float]) -> str:
    """``n, p50, p99, max`` of ``values`` in milliseconds, for a report line."""
    if not values:
        return "n=0"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"n={len(ordered)} p50={statistics.median(ordered) * 1000:.0f} ms "
        f"p99={p99 * 1000:.0f} ms max={ordered[-1] * 1000:.0f} ms"
    )


@contextlib.asynccontextmanager
async def playing(
    cluster: Cluster,
    games: int,
    *,
    regions: tuple[str, str] = ("eu-west", "us-east"),
    pace_s: float = 0.25,
    seed: int = 0,
) -> AsyncIterator[Load]:
    """``Load.start`` as a context: the clients are closed whatever happens."""
    load = await Load.start(cluster, games, regions=regions, pace_s=pace_s, seed=seed)
    try:
        yield load
    finally:
        await load.close()
