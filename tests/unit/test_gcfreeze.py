"""xlmate.gcfreeze: when the freezer runs, what it calls, and the GC metrics (no timing)."""

from __future__ import annotations

import asyncio
import gc

import pytest
import uvloop
from prometheus_client import generate_latest

from xlmate import metrics
from xlmate.errors import ConfigError
from xlmate.gcfreeze import GcFreezer, GcStats, freeze_wanted, watch
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


async def test_each_round_collects_the_young_generations_then_freezes() -> None:
    """A round is sleep(interval), gc.collect(1), gc.freeze(), in that order."""
    calls: list[str] = []

    async def sleep(delay: float) -> None:
        calls.append(f"sleep {delay:g}")

    def collect(generation: int) -> int:
        calls.append(f"collect {generation}")
        return 0

    freezer = GcFreezer(2.0, collect=collect, freeze=lambda: calls.append("freeze"), sleep=sleep)
    await freezer.run(rounds=2)
    assert calls == ["sleep 2", "collect 1", "freeze"] * 2
    assert freezer.freezes == 2
    with pytest.raises(ValueError):
        GcFreezer(0)


async def test_the_supervisor_owns_the_freezer() -> None:
    """start runs the freezer as a supervised loop; the supervisor's close stops it cleanly."""
    frozen = asyncio.Event()

    async def sleep(_delay: float) -> None:
        await asyncio.sleep(0)

    freezer = GcFreezer(collect=lambda _g: 0, freeze=frozen.set, sleep=sleep)
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
