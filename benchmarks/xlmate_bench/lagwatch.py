"""Event-loop stalls of every process of a run, over the measured window.

Every XLMate process, both Python relays and the Socket.IO baseline expose the
loop-lag probe's metrics on ``/metrics`` (``xlmate/looplag.py``):
``xlmate_loop_lag_seconds`` (a histogram of how late a 10 ms timer woke) and
``xlmate_loop_stalls_total`` (lags of 50 ms or more).  ``LagWatch`` scrapes them
at both ends of a window; the difference is what happened inside it:

- ``stalls``: lags of 50 ms or more in the window (exact);
- ``max_gt_ms`` / ``max_le_ms``: the bounds of the highest histogram bucket
  that gained a sample in the window: the longest lag is more than the first
  and at most the second (None past the last bucket, 1 s).

The load generator runs no ``/metrics``; ``OwnProbe`` measures its loop the same
way in-process, with the exact longest lag (``max_ms``), so a stall of the load
generator is not taken for one of the system under test.

A process that answers no ``/metrics`` (redis-server) is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from xlmate_bench.cluster import http_get_async
from xlmate_bench.report import LoopLag, Watched

STALL_S: Final = 0.05  # xlmate/looplag.py's STALL_S: the bound
TICK_S: Final = 0.01
SCRAPE_TIMEOUT_S: Final = 3.0


@dataclass(frozen=True, slots=True)
class _Scrape:
    """The loop-lag histogram of one process at one instant."""

    buckets: dict[float, float]  # upper bound (s) -> cumulative count
    stalls: float


def parse(text: str) -> _Scrape | None:
    """The loop-lag histogram and stall count in a ``/metrics`` body (None if absent)."""
    buckets: dict[float, float] = {}
    stalls: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "xlmate_loop_lag_seconds_bucket":
                buckets[float(sample.labels["le"])] = sample.value
            elif sample.name == "xlmate_loop_stalls_total":
                stalls = sample.value
    if not buckets or stalls is None:
        return None
    return _Scrape(buckets, stalls)


def between(name: str, before: _Scrape, after: _Scrape) -> LoopLag:
    """What the loop did between two scrapes of the same process."""
    low, high = 0.0, 0.0
    previous_bound, previous_gain = 0.0, 0.0
    for bound in sorted(after.buckets):
        gained = after.buckets[bound] - before.buckets.get(bound, 0.0)
        if gained > previous_gain:  # a sample landed in (previous bound, bound]
            low, high = previous_bound, bound
        previous_bound, previous_gain = bound, gained
    return LoopLag(
        name=name,
        samples=int(previous_gain),  # the +Inf bucket: every sample of the window
        stalls=int(after.stalls - before.stalls),
        max_gt_ms=round(low * 1000, 3),
        max_le_ms=None if math.isinf(high) else round(high * 1000, 3),
    )


async def _scrape(url: str) -> _Scrape | None:
    """One process's loop-lag metrics, or None if it serves none."""
    try:
        status, body = await http_get_async(url, SCRAPE_TIMEOUT_S)
    except OSError:
        return None
    return parse(body.decode(errors="replace")) if status == 200 else None


class OwnProbe:
    """This process's loop lag, for the windows ``LagWatch`` opens (module docstring)."""

    def __init__(self) -> None:
        self.samples = 0
        self.stalls = 0
        self.max_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start measuring (a task this object owns; ``stop`` ends it)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="bench.loop_lag")

    def reset(self) -> None:
        """Forget what was measured so far: a window starts."""
        self.samples, self.stalls, self.max_s = 0, 0, 0.0

    async def _run(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lag = max(0.0, time.perf_counter() - asked - TICK_S)
            self.samples += 1
            if lag >= STALL_S:
                self.stalls += 1
            self.max_s = max(self.max_s, lag)

    async def stop(self) -> None:
        """Stop measuring; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class LagWatch:
    """Scrapes every watched process with a metrics URL at ``begin`` and ``end``."""

    def __init__(self, watched: Sequence[Watched], own: OwnProbe) -> None:
        self.watched = [w for w in watched if w.metrics_url]
        self.own = own
        self._before: dict[str, _Scrape] = {}

    async def begin(self) -> None:
        """The window opens."""
        scrapes = await asyncio.gather(*(_scrape(str(w.metrics_url)) for w in self.watched))
        self._before = {w.name: s for w, s in zip(self.watched, scrapes, strict=True) if s}
        self.own.reset()

    async def end(self, own_name: str = "loadgen") -> list[LoopLag]:
        """The window closes: each process's stalls in it, the load generator first."""
        own = self.own
        out = [
            LoopLag(
                name=own_name,
                samples=own.samples,
                stalls=own.stalls,
                max_gt_ms=round(own.max_s * 1000, 3),
                max_le_ms=round(own.max_s * 1000, 3),
                max_ms=round(own.max_s * 1000, 3),
            )
        ]
        scrapes = await asyncio.gather(*(_scrape(str(w.metrics_url)) for w in self.watched))
        for proc, after in zip(self.watched, scrapes, strict=True):
            before = self._before.get(proc.name)
            if before is not None and after is not None:
                out.append(between(proc.name, before, after))
        return out
