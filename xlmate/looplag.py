"""Event-loop lag: how late the loop runs a callback that is due, as a metric.

Theory of operation: a task sleeps ``interval`` seconds again and again; each time
it wakes it measures how much later than asked it woke up.  That delay is the time
the loop spent on everything else that was ready (callbacks, a garbage collection,
a blocking call): exactly what every message waiting in that process waited on top
of its own work.  A stall of 300 ms shows up as one wake-up 300 ms late, whatever
caused it.

The pieces:

* ``LagRecorder``, the pure core: takes one lag sample at a time with the time it
  was taken (time is an input, so it is tested without a clock), keeps a histogram
  with cumulative-compatible buckets, the count and sum, the number of stalls (lags
  of ``stall_s`` or more), the largest lag ever and the largest over the recent
  window (the current window and the one before it, so a scrape always covers at
  least ``window_s`` seconds, whatever the scrape interval);
* ``LoopLagProbe``, the task: owns it (``start`` / ``close``), with the clock and the
  sleep injectable for tests;
* ``LagCollector``: exposes a recorder to Prometheus at scrape time (no lock or
  metric call per sample):

  - ``xlmate_loop_lag_seconds`` (histogram),
  - ``xlmate_loop_lag_max_seconds`` (gauge: largest lag over the recent window),
  - ``xlmate_loop_stalls_total`` (counter: lags of ``stall_s`` or more).

A sample costs one timer and one wake-up per ``interval`` (100 a second by
default): negligible next to any server's own work.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("xlmate.looplag")

BUCKETS_S: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
INTERVAL_S: Final = 0.01
STALL_S: Final = 0.05  # the bound: no stall over 50 ms in any process
WINDOW_S: Final = 10.0


class LagRecorder:
    """Lag samples in, histogram and maxima out; time is an input (see module docstring)."""

    __slots__ = (
        "_bucket_counts",
        "_current_max",
        "_previous_max",
        "_window_start",
        "buckets",
        "count",
        "max_ever",
        "stall_s",
        "stalls",
        "sum",
        "window_s",
    )

    def __init__(
        self,
        *,
        buckets: tuple[float, ...] = BUCKETS_S,
        stall_s: float = STALL_S,
        window_s: float = WINDOW_S,
        now: float = 0.0,
    ) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be strictly increasing and not empty")
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.buckets = buckets
        self.stall_s = stall_s
        self.window_s = window_s
        self.count = 0
        self.sum = 0.0
        self.stalls = 0
        self.max_ever = 0.0
        self._bucket_counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self._current_max = 0.0
        self._previous_max = 0.0
        self._window_start = now

    def record(self, lag: float, now: float) -> None:
        """One sample: the loop ran a due wake-up ``lag`` seconds late, at time ``now``."""
        lag = max(0.0, lag)  # a clock can wake a hair early; that is no lag
        self._roll(now)
        self.count += 1
        self.sum += lag
        self._bucket_counts[bisect.bisect_left(self.buckets, lag)] += 1
        if lag >= self.stall_s:
            self.stalls += 1
        if lag > self.max_ever:
            self.max_ever = lag
        if lag > self._current_max:
            self._current_max = lag

    def recent_max(self, now: float) -> float:
        """The largest lag over the last one to two windows before ``now``."""
        self._roll(now)
        return max(self._current_max, self._previous_max)

    def cumulative_buckets(self) -> list[tuple[str, int]]:
        """``(upper bound, samples at or below it)`` pairs, Prometheus style, ending in +Inf."""
        pairs = []
        total = 0
        for bound, count in zip((*self.buckets, float("inf")), self._bucket_counts, strict=True):
            total += count
            pairs.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return pairs

    def _roll(self, now: float) -> None:
        elapsed = now - self._window_start
        if elapsed < self.window_s:
            return
        # One window over: the current one becomes the previous one.  Two or more
        # over: nothing was recorded in the one before now, so it is empty.
        self._previous_max = self._current_max if elapsed < 2 * self.window_s else 0.0
        self._current_max = 0.0
        self._window_start = now - (elapsed % self.window_s)


class LoopLagProbe:
    """The task feeding a ``LagRecorder``: sleep ``interval``, record how late it woke."""

    def __init__(
        self,
        recorder: LagRecorder | None = None,
        *,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.recorder = recorder if recorder is not None else LagRecorder(now=clock())
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the probe task on the running loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        """Stop the probe task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self, samples: int | None = None) -> None:
        """Measure until cancelled (or ``samples`` wake-ups, for tests)."""
        clock, sleep, interval, recorder = self._clock, self._sleep, self.interval, self.recorder
        taken = 0
        try:
            while samples is None or taken < samples:
                asked = clock()
                await sleep(interval)
                woke = clock()
                recorder.record(woke - asked - interval, woke)
                taken += 1
        except Exception:  # nothing fails silently: the probe's owner sees it stop in the log
            log.exception("loop-lag probe failed")
            raise


class LagCollector(Collector):
    """A recorder's metrics, read at scrape time (names in the module docstring)."""

    def __init__(
        self,
        recorder: LagRecorder,
        clock: Callable[[], float] = time.monotonic,
        prefix: str = "xlmate_",
    ) -> None:
        self.recorder = recorder
        self._clock = clock
        self._prefix = prefix

    def collect(self) -> Iterator[HistogramMetricFamily | GaugeMetricFamily | CounterMetricFamily]:
        rec, p = self.recorder, self._prefix
        yield HistogramMetricFamily(
            f"{p}loop_lag_seconds",
            "how late the event loop ran a due wake-up",
            buckets=rec.cumulative_buckets(),
            sum_value=rec.sum,
        )
        yield GaugeMetricFamily(
            f"{p}loop_lag_max_seconds",
            f"largest event-loop lag over the last {rec.window_s:g}-{2 * rec.window_s:g} s",
            value=rec.recent_max(self._clock()),
        )
        yield CounterMetricFamily(
            f"{p}loop_stalls",
            f"event-loop lags of {rec.stall_s * 1000:g} ms or more",
            value=rec.stalls,
        )
