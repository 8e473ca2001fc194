"""Idle sockets: both players of games nobody moves in, to measure what a socket costs.

A failure to open one is counted (``idle_connect:<error>``) and the run goes on.
"""

from __future__ import annotations

import asyncio
import itertools

from xlmate_bench.driver import CONNECT_CONCURRENCY, OPEN_TIMEOUT_S
from xlmate_bench.links import Link, ignore
from xlmate_bench.planners import Planner
from xlmate_bench.stats import Stats


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
