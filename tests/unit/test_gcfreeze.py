"""xlmate.gcfreeze: when the freezer runs, what it calls, and the GC metrics (no timing)."""

from __future__ import annotations

import asyncio
import gc

import pytest
import uvloop
from prometheus_client import generate_latest

from xlmate import metrics
from xlmate.errors import ConfigError
from xlmate.gcfreeze import GcFreezer, GcStats, freeze_wanted, thaw_every, watch
from xlmate.supervision import Supervisor


def test_freezer_is_wanted_on_uvloop_only() -> None:
    """auto freezes on uvloop, never on asyncio's loop (it leaks there); off turns it off."""
    uv = uvloop.new_event_loop()
    plain = asyncio.new_event_loop()
    try:
        assert freeze_wanted(uv, {})
        assert freeze_wanted(uv, {"XLMATE_GC_FREEZE": "auto"})
        assert not freeze_wanted(uv, {"XLMATE_GC_FREEZE": "off"})
        assert not freeze_wanted(plain, {})
        with pytest.raises(ConfigError):
            freeze_wanted(uv, {"XLMATE_GC_FREEZE": "always"})
    finally:
        uv.close()
        plain.close()


async def test_each_round_collects_young_then_freezes_and_thaws_fully_every_period() -> None:
    """A round is sleep, gc.collect(1), gc.freeze(); every thaw period, unfreeze and collect(2)."""
    calls: list[str] = []

    async def sleep(delay: float) -> None:
        calls.append(f"sleep {delay:g}")

    def collect(generation: int) -> int:
        calls.append(f"collect {generation}")
        return 0

    freezer = GcFreezer(
        2.0,
        thaw=6.0,
        collect=collect,
        freeze=lambda: calls.append("freeze"),
        unfreeze=lambda: calls.append("unfreeze"),
        sleep=sleep,
    )
    await freezer.run(rounds=4)
    young = ["sleep 2", "collect 1", "freeze"]
    thaw = ["sleep 2", "unfreeze", "collect 2", "freeze"]
    assert calls == young + young + thaw + young
    assert freezer.freezes == 4 and freezer.thaws == 1
    with pytest.raises(ValueError):
        GcFreezer(0)
    with pytest.raises(ValueError):
        GcFreezer(1.0, thaw=0)


def test_thaw_period_comes_from_the_environment() -> None:
    """XLMATE_GC_THAW_S sets the thaw period; 10 minutes without it; nonsense is an error."""
    assert thaw_every({}) == 600.0
    assert thaw_every({"XLMATE_GC_THAW_S": "30"}) == 30.0
    for bad in ("soon", "0", "-5"):
        with pytest.raises(ConfigError):
            thaw_every({"XLMATE_GC_THAW_S": bad})


async def test_the_supervisor_owns_the_freezer() -> None:
    """start runs the freezer as a supervised loop; the supervisor's close stops it cleanly."""
    frozen = asyncio.Event()

    async def sleep(_delay: float) -> None:
        await asyncio.sleep(0)

    freezer = GcFreezer(collect=lambda _g: 0, freeze=frozen.set, unfreeze=lambda: None, sleep=sleep)
    supervisor = Supervisor("test", lambda: None)
    freezer.start(supervisor, "test.gc_freezer")
    await asyncio.wait_for(frozen.wait(), 5)
    await supervisor.close()
    assert len(supervisor) == 0 and supervisor.failure is None


def test_stats_time_each_collection_by_generation() -> None:
    """on_gc adds each collection's start-to-stop time to its generation and keeps the longest."""
    now = [0.0]
    stats = GcStats(clock=lambda: now[0])
    for generation, took in ((0, 0.001), (2, 0.3), (2, 0.1), (1, 0.004)):
        stats.on_gc("start", {"generation": generation})
        now[0] += took
        stats.on_gc("stop", {"generation": generation, "collected": 0, "uncollectable": 0})
    assert stats.pause_total == pytest.approx([0.001, 0.004, 0.4])
    assert stats.pause_max == pytest.approx([0.001, 0.004, 0.3])


def test_metrics_count_collections_and_frozen_objects() -> None:
    """The scrape has collections, pause time and maxima per generation, and the frozen count."""
    registry = metrics.new_registry()
    watch(registry)
    gc.collect()  # at least one full collection in this process, timed by the hook
    text = generate_latest(registry).decode()
    for generation in ("0", "1", "2"):
        assert f'xlmate_gc_collections_total{{generation="{generation}"}}' in text
        assert f'xlmate_gc_pause_seconds_total{{generation="{generation}"}}' in text
        assert f'xlmate_gc_pause_max_seconds{{generation="{generation}"}}' in text
    assert f"xlmate_gc_frozen_objects {float(gc.get_freeze_count())}" in text
