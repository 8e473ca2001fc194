"""xlmate.looplag: the recorder's arithmetic and the probe, on a fake clock (no timing)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from xlmate import metrics
from xlmate.looplag import LagCollector, LagRecorder, LoopLagProbe


class FakeTime:
    """A clock and a sleep: each sleep advances the clock by its delay plus a scripted lag."""

    def __init__(self, lags: list[float]) -> None:
        self.now = 1000.0
        self.lags = list(lags)

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(0)  # a real suspension point, as asyncio.sleep is
        self.now += delay + (self.lags.pop(0) if self.lags else 0.0)


def test_histogram_counts_each_sample_in_its_bucket() -> None:
    """Samples land in the first bucket whose bound is at or above them, cumulatively."""
    rec = LagRecorder(buckets=(0.001, 0.01, 0.1), stall_s=0.05)
    for lag in (0.0005, 0.001, 0.002, 0.05, 0.5, -0.001):
        rec.record(lag, now=1.0)
    assert rec.cumulative_buckets() == [("0.001", 3), ("0.01", 4), ("0.1", 5), ("+Inf", 6)]
    assert rec.count == 6
    assert rec.sum == pytest.approx(0.0005 + 0.001 + 0.002 + 0.05 + 0.5)  # negative clamped to 0
    assert rec.stalls == 2  # 0.05 (at the bound) and 0.5
    assert rec.max_ever == 0.5


def test_recent_max_covers_one_to_two_windows() -> None:
    """A stall stays visible through the next window and is forgotten after that."""
    rec = LagRecorder(window_s=10.0, now=0.0)
    rec.record(0.3, now=1.0)
    rec.record(0.01, now=2.0)
    assert rec.recent_max(now=5.0) == 0.3
    assert rec.recent_max(now=15.0) == 0.3  # the previous window
    rec.record(0.02, now=16.0)
    assert rec.recent_max(now=25.0) == 0.02  # 0.3's window is two windows back
    assert rec.recent_max(now=60.0) == 0.0  # nothing recorded for a long time
    assert rec.max_ever == 0.3


def test_recorder_refuses_bad_settings() -> None:
    """Unsorted buckets or a non-positive window are errors, not silent nonsense."""
    with pytest.raises(ValueError):
        LagRecorder(buckets=(0.1, 0.01))
    with pytest.raises(ValueError):
        LagRecorder(window_s=0)
    with pytest.raises(ValueError):
        LoopLagProbe(interval=0)


async def test_probe_records_how_late_each_wake_up_was() -> None:
    """The probe records wake-up time minus asked time minus the interval, per sleep."""
    fake = FakeTime([0.0, 0.003, 0.3, 0.0])
    probe = LoopLagProbe(interval=0.01, clock=fake.clock, sleep=fake.sleep)
    await probe.run(samples=4)
    rec = probe.recorder
    assert rec.count == 4
    assert rec.sum == pytest.approx(0.303)
    assert rec.max_ever == pytest.approx(0.3)
    assert rec.stalls == 1
    assert rec.recent_max(fake.clock()) == pytest.approx(0.3)


async def test_start_and_close_own_the_task() -> None:
    """start runs one task that records samples; close cancels it and leaves none behind."""
    fake = FakeTime([])
    probe = LoopLagProbe(interval=0.01, clock=fake.clock, sleep=fake.sleep)
    probe.start()
    probe.start()  # idempotent: still one task
    while probe.recorder.count < 3:
        await asyncio.sleep(0)
    await probe.close()
    count = probe.recorder.count
    for _ in range(5):
        await asyncio.sleep(0)
    assert probe.recorder.count == count  # stopped
    await probe.close()  # idempotent


async def test_probe_failure_is_raised_not_swallowed() -> None:
    """A probe whose sleep fails ends with that error (its owner sees it)."""

    async def broken(_delay: float) -> None:
        raise RuntimeError("boom")

    probe = LoopLagProbe(sleep=broken)
    with pytest.raises(RuntimeError):
        await probe.run()


def test_collector_exposes_histogram_max_and_stalls() -> None:
    """The scrape shows the recorder's buckets, sum, recent max and stall count."""
    rec = LagRecorder(buckets=(0.01, 0.1), stall_s=0.05, window_s=10.0, now=0.0)
    rec.record(0.005, now=1.0)
    rec.record(0.07, now=2.0)
    registry = metrics.new_registry()
    registry.register(LagCollector(rec, clock=lambda: 3.0))
    text = generate_latest(registry).decode()
    assert 'xlmate_loop_lag_seconds_bucket{le="0.01"} 1.0' in text
    assert 'xlmate_loop_lag_seconds_bucket{le="0.1"} 2.0' in text
    assert 'xlmate_loop_lag_seconds_bucket{le="+Inf"} 2.0' in text
    assert "xlmate_loop_lag_seconds_count 2.0" in text
    assert "xlmate_loop_lag_max_seconds 0.07" in text
    assert "xlmate_loop_stalls_total 1.0" in text
