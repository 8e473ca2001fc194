"""A run of ``xlmate bench``: its phases, from setting up the target to the report.

The work is split by job: ``targets`` sets up what is driven (starting a local
cluster through the shared launcher if asked to), ``planners`` place each
game's two players, ``driver`` keeps the measured games going (closed or open
loop), ``idle`` holds sockets nobody plays on, ``stats`` counts, and
``report`` turns the counts into numbers, a table and JSON.  This module only
sequences them.

Phases of a run: set up the target, open the idle connections and measure idle
CPU and memory, open the measured games, warm up, measure (once, or once per
``--scaling`` level).

Once its sockets are open (before each warmup), the load generator runs one full
collection and ``gc.freeze()``s what it holds (``_freeze_heap``): with 10,000
sockets it holds ~800,000 objects, and a full collection over them stopped it
for up to 1.6 s mid-window, a stall that landed in every target's latencies
(BENCHMARKS.md).  Its own loop lag is reported with the others'.

Whatever happens, the driver, the idle sockets, the progress line and the
started cluster are stopped in that order.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from xlmate_bench.cluster import raise_nofile
from xlmate_bench.config import BenchConfig
from xlmate_bench.driver import Driver
from xlmate_bench.games import Script, game_pool
from xlmate_bench.idle import IdlePool
from xlmate_bench.lagwatch import LagWatch, OwnProbe
from xlmate_bench.report import (
    EdgeMemory,
    IdleReport,
    Latency,
    LevelReport,
    LoopLag,
    ProcessStats,
    RunReport,
    format_report,
    host_stats,
    snapshot,
    system_cpu_s,
    window_stats,
)
from xlmate_bench.stats import Stats
from xlmate_bench.targets import Target, setup

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


def _freeze_heap() -> None:
    """Collect, then keep what this process holds out of later collections (docstring)."""
    gc.collect()
    gc.freeze()


async def _measure_idle(
    config: BenchConfig, target: Target, stats: Stats, idle: IdlePool
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


@dataclass
class Window:
    """One measured window: wall s, process stats, system CPU s, machine, loop stalls."""

    wall: float
    procs: list[ProcessStats]
    cpu: float
    host: dict[str, float]
    lags: list[LoopLag]


async def _window(config: BenchConfig, target: Target, stats: Stats, lag: LagWatch) -> Window:
    """Warm up, then measure one window."""
    stats.phase = "warmup"
    await asyncio.sleep(config.warmup)
    stats.phase = "measure"
    await lag.begin()
    before = snapshot(target.watched)
    t0 = stats.open_window()
    await asyncio.sleep(config.duration)
    t1 = stats.close_window()
    after = snapshot(target.watched)
    lags = await lag.end()
    wall = t1 - t0
    procs = window_stats(target.watched, before, after, wall)
    return Window(wall, procs, system_cpu_s(procs), host_stats(before, after, procs, wall), lags)


async def run(config: BenchConfig) -> RunReport:
    """Run one benchmark and return its report (the cluster, if launched, is stopped)."""
    raise_nofile()
    pool = game_pool(config.seed, config.pool, config.max_plies)
    stats = Stats()
    started = time.perf_counter()
    progress = asyncio.create_task(_progress(stats, started)) if config.progress else None
    try:
        target = setup(config, stats)
        try:
            report = await _drive(config, target, pool, stats)
        finally:
            target.close()
    finally:
        if progress is not None:
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)
            if sys.stderr.isatty():
                sys.stderr.write("\n")
    report.errors = dict(stats.errors)
    report.anomalies = dict(stats.anomalies)
    report.samples = list(stats.samples)
    report.games_started = stats.games_started
    report.games_finished = stats.games_finished
    return report


async def _drive(
    config: BenchConfig, target: Target, pool: list[Script], stats: Stats
) -> RunReport:
    """The phases against a target that is up; the driver and idle sockets closed at the end."""
    label = config.label or (
        f"relay {' '.join(config.target_urls)}"
        if config.target == "relay"
        else f"cluster ({len(target.description.get('regions', []))} regions)"
    )
    report = RunReport(label=label, target=target.description, scenario=_scenario(config))
    driver = Driver(config, target.planner, pool, stats)
    idle = IdlePool(target.planner, stats)
    own = OwnProbe()
    own.start()
    lag = LagWatch(target.watched, own)
    try:
        if config.idle_connections:
            report.idle = await _measure_idle(config, target, stats, idle)
        if config.scaling:
            await _run_scaling(config, target, stats, driver, report, lag)
        else:
            await _run_once(config, target, stats, driver, report, lag)
    finally:
        stats.phase = "stopping"
        await own.stop()
        await driver.stop()
        await idle.close()
    return report


async def _run_once(
    config: BenchConfig,
    target: Target,
    stats: Stats,
    driver: Driver,
    report: RunReport,
    lag: LagWatch,
) -> None:
    """All the games at once, one measurement window."""
    stats.phase = "connect"
    await driver.add_games(config.games)
    _freeze_heap()
    driver.start_pacer()
    window = await _window(config, target, stats, lag)
    wall, procs, cpu = window.wall, window.procs, window.cpu
    report.host = window.host
    report.loop_lag = window.lags
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


async def _idle_window(
    config: BenchConfig, target: Target, stats: Stats, driver: Driver
) -> tuple[float, list[ProcessStats], float]:
    """No move offered: settle for the warmup, then CPU over ``level_idle_s``."""
    await driver.pause_pacer()
    stats.phase = "level idle"
    await asyncio.sleep(config.warmup)  # moves in flight land
    before = snapshot(target.watched)
    t0 = time.perf_counter()
    await asyncio.sleep(config.level_idle_s)
    after = snapshot(target.watched)
    wall = time.perf_counter() - t0
    procs = window_stats(target.watched, before, after, wall)
    return wall, procs, system_cpu_s(procs)


async def _run_scaling(
    config: BenchConfig,
    target: Target,
    stats: Stats,
    driver: Driver,
    report: RunReport,
    lag: LagWatch,
) -> None:
    """CPU per move at a fixed move rate as the number of live games grows.

    With ``--level-idle`` each level is first measured with no move at all: that
    CPU rate is the idle cost of the level's sockets (and of the cluster being up),
    and the move cost is what the moving window spent above it, per move.
    """
    for level in sorted(set(config.scaling)):
        stats.phase = f"open {level}"
        await driver.add_games(level - driver.slots)
        _freeze_heap()
        idle: tuple[float, list[ProcessStats], float] | None = None
        if config.level_idle_s:
            idle = await _idle_window(config, target, stats, driver)
        driver.start_pacer()
        errors_before = sum(stats.errors.values())
        window = await _window(config, target, stats, lag)
        wall, procs, cpu = window.wall, window.procs, window.cpu
        moves = len(stats.latencies)
        result = LevelReport(
            games=level,
            moves=moves,
            moves_per_s=round(moves / wall, 1),
            window_s=round(wall, 3),
            latency_ms=Latency.of(stats.latencies),
            system_cpu_s=round(cpu, 3),
            cpu_ms_per_move=round(1000 * cpu / moves, 4) if moves else 0.0,
            errors=sum(stats.errors.values()) - errors_before,
            processes=procs,
            host=window.host,
            loop_lag=window.lags,
        )
        if idle is not None:
            idle_wall, idle_procs, idle_cpu = idle
            sockets = 2 * level + config.idle_connections
            idle_rate = idle_cpu / idle_wall
            result.sockets = sockets
            result.idle_window_s = round(idle_wall, 3)
            result.idle_cpu_s = round(idle_cpu, 3)
            result.idle_us_per_socket_s = round(1e6 * idle_rate / sockets, 3)
            result.move_ms = round(1000 * (cpu - idle_rate * wall) / moves, 4) if moves else 0.0
            result.idle_processes = idle_procs
        report.scaling.append(result)
    first = report.scaling[0] if report.scaling else None
    if first is not None and first.cpu_ms_per_move:
        report.scaling_ratios = {
            f"{level.games}/{first.games}": round(level.cpu_ms_per_move / first.cpu_ms_per_move, 3)
            for level in report.scaling[1:]
        }
    if first is not None and first.move_ms > 0:
        report.move_cost_ratios = {
            f"{level.games}/{first.games}": round(level.move_ms / first.move_ms, 3)
            for level in report.scaling[1:]
        }


async def main(config: BenchConfig) -> None:
    """``xlmate bench``: run, then print the table (or the JSON) on stdout."""
    report = await run(config)
    if config.json_output:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
