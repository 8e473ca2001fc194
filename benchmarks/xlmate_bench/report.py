"""Numbers of a run: latency percentiles, per-process CPU and RSS, the table and the JSON.

Process figures come from psutil: CPU seconds (user + system, all threads) are
sampled at both ends of a window, so ``cpu_percent`` is the share of one core
the process used in that window (a process with threads can pass 100).  RSS is
sampled at the end of the window.

Everything here is plain data plus formatting: the runner fills it in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

# psutil is in the "bench" and "test" extras, not a product dependency: without it the
# import fails, and ``xlmate bench`` names the extra to install.
import psutil  # type: ignore[import-untyped, unused-ignore]

MIB = 1024 * 1024


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of an ascending list."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of a set of latencies, in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Latency:
        """Summarise latencies given in seconds."""
        ordered = sorted(seconds)
        if not ordered:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        ms = 1000.0
        return cls(
            count=len(ordered),
            p50=round(percentile(ordered, 50) * ms, 3),
            p90=round(percentile(ordered, 90) * ms, 3),
            p99=round(percentile(ordered, 99) * ms, 3),
            max=round(ordered[-1] * ms, 3),
            mean=round(sum(ordered) / len(ordered) * ms, 3),
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """One process at one instant."""

    cpu_s: float
    rss: int


class Watched:
    """A process whose CPU and memory the report shows (and its loop-lag metrics URL)."""

    def __init__(self, name: str, role: str, pid: int, metrics_url: str | None = None) -> None:
        self.name = name
        self.role = role
        self.pid = pid
        self.metrics_url = metrics_url
        self._proc: psutil.Process | None
        try:
            self._proc = psutil.Process(pid)
        except psutil.Error:
            self._proc = None

    def sample(self) -> Sample | None:
        """CPU seconds so far and RSS now; None when the process is gone."""
        if self._proc is None:
            return None
        try:
            with self._proc.oneshot():
                times = self._proc.cpu_times()
                rss = self._proc.memory_info().rss
        except psutil.Error:
            return None
        return Sample(times.user + times.system, rss)


def myself() -> Watched:
    """The load generator (this process)."""
    return Watched("loadgen", "loadgen", os.getpid())


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """One process over one window."""

    name: str
    role: str
    pid: int
    cpu_s: float
    cpu_percent: float
    rss_mib: float


def window_stats(
    watched: Sequence[Watched],
    before: dict[int, Sample | None],
    after: dict[int, Sample | None],
    wall_s: float,
) -> list[ProcessStats]:
    """Per-process CPU and RSS between two snapshots ``wall_s`` seconds apart."""
    out = []
    for proc in watched:
        start, end = before.get(proc.pid), after.get(proc.pid)
        if start is None or end is None:
            continue
        cpu = max(0.0, end.cpu_s - start.cpu_s)
        out.append(
            ProcessStats(
                name=proc.name,
                role=proc.role,
                pid=proc.pid,
                cpu_s=round(cpu, 3),
                cpu_percent=round(100 * cpu / wall_s, 1) if wall_s > 0 else 0.0,
                rss_mib=round(end.rss / MIB, 1),
            )
        )
    return out


HOST: Final = -1  # snapshot key of the whole machine's busy CPU seconds


def host_busy_s() -> float:
    """CPU seconds the whole machine (all cores, every process) has been busy."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    busy: float = sum(times) - idle
    return busy


def snapshot(watched: Sequence[Watched]) -> dict[int, Sample | None]:
    """Sample every watched process now, and the machine (key ``HOST``)."""
    out: dict[int, Sample | None] = {proc.pid: proc.sample() for proc in watched}
    out[HOST] = Sample(host_busy_s(), 0)
    return out


def host_stats(
    before: dict[int, Sample | None],
    after: dict[int, Sample | None],
    stats: Sequence[ProcessStats],
    wall_s: float,
) -> dict[str, float]:
    """The machine over a window: cores busy, and how much of that was not ours.

    Other work on the machine (other users' tests, say) competes for the same
    cores; ``others_percent`` (in % of one core) shows how much there was.
    """
    start, end = before.get(HOST), after.get(HOST)
    if start is None or end is None or wall_s <= 0:
        return {}
    busy = max(0.0, end.cpu_s - start.cpu_s)
    ours = sum(p.cpu_s for p in stats)
    return {
        "cores": float(psutil.cpu_count() or 0),
        "busy_percent": round(100 * busy / wall_s, 1),
        "others_percent": round(max(0.0, 100 * (busy - ours) / wall_s), 1),
    }


def system_cpu_s(stats: Sequence[ProcessStats]) -> float:
    """CPU seconds of the system under test: every process but the load generator."""
    return sum(p.cpu_s for p in stats if p.role != "loadgen")


@dataclass(frozen=True, slots=True)
class LoopLag:
    """One process's event loop over one window (``xlmate_bench.lagwatch``)."""

    name: str
    samples: int
    stalls: int
    max_gt_ms: float  # the longest lag is more than this ...
    max_le_ms: float | None  # ... and at most this (None: past the last bucket)
    max_ms: float | None = None  # exact, where the process is this one


@dataclass(frozen=True, slots=True)
class EdgeMemory:
    """RSS that an edge (or relay) gained per connection it holds."""

    name: str
    connections: int
    rss_before_mib: float
    rss_after_mib: float
    kib_per_connection: float


@dataclass
class IdleReport:
    """The idle phase: only idle connections open, nothing moving."""

    connections: int
    window_s: float
    open_s: float  # time it took to open them all
    memory: list[EdgeMemory] = field(default_factory=list)
    processes: list[ProcessStats] = field(default_factory=list)


@dataclass
class LevelReport:
    """One level of the scaling scenario: ``games`` live games at a fixed move rate."""

    games: int
    moves: int
    moves_per_s: float
    window_s: float
    latency_ms: Latency
    system_cpu_s: float
    cpu_ms_per_move: float
    errors: int
    processes: list[ProcessStats] = field(default_factory=list)
    host: dict[str, float] = field(default_factory=dict)
    # With --level-idle: the same sockets measured with no move first, which splits the
    # cost into idle (CPU per socket per second) and move (CPU per move above idle).
    sockets: int = 0
    idle_window_s: float = 0.0
    idle_cpu_s: float = 0.0
    idle_us_per_socket_s: float = 0.0  # idle system CPU / sockets / second
    move_ms: float = 0.0  # (system CPU - idle CPU rate x window) / moves
    idle_processes: list[ProcessStats] = field(default_factory=list)
    loop_lag: list[LoopLag] = field(default_factory=list)  # each process's stalls, moving window


@dataclass
class RunReport:
    """Everything one ``xlmate bench`` run measured."""

    label: str
    target: dict[str, Any]
    scenario: dict[str, Any]
    window_s: float = 0.0
    moves: int = 0
    moves_per_s: float = 0.0
    latency_ms: Latency = field(default_factory=lambda: Latency.of([]))
    ack_latency_ms: Latency | None = None
    errors: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)  # absorbed, e.g. duplicate v
    samples: list[str] = field(default_factory=list)  # the first few errors/anomalies, as evidence
    games_started: int = 0
    games_finished: int = 0
    open_loop: dict[str, Any] | None = None
    processes: list[ProcessStats] = field(default_factory=list)
    host: dict[str, float] = field(default_factory=dict)
    system_cpu_s: float = 0.0
    cpu_ms_per_move: float = 0.0
    idle: IdleReport | None = None
    scaling: list[LevelReport] = field(default_factory=list)
    scaling_ratios: dict[str, float] = field(default_factory=dict)
    move_cost_ratios: dict[str, float] = field(default_factory=dict)  # move_ms vs first level
    loop_lag: list[LoopLag] = field(default_factory=list)  # each process's stalls, the window

    @property
    def error_total(self) -> int:
        """All errors of the run."""
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``--json``)."""
        data = asdict(self)
        data["errors"] = {"total": self.error_total, "by_kind": dict(self.errors)}
        return data


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """One table row: the first cell left-aligned, the others right-aligned."""
    return "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table, first column left-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    lines += [_row([str(c) for c in r], widths) for r in rows]
    return "\n".join(lines)


def _process_table(stats: Sequence[ProcessStats]) -> str:
    """The per-process CPU/RSS table."""
    rows = [[p.name, str(p.pid), f"{p.cpu_percent:.1f}", f"{p.rss_mib:.1f}"] for p in stats]
    return table(["process", "pid", "cpu %", "rss MiB"], rows)


def _lag_table(lags: Sequence[LoopLag]) -> str:
    """Each process's event-loop stalls over the window."""

    def longest(lag: LoopLag) -> str:
        if lag.max_ms is not None:
            return f"{lag.max_ms:.1f}"
        if lag.max_le_ms is None:
            return f"> {lag.max_gt_ms:.0f}"
        return f"{lag.max_gt_ms:.0f}-{lag.max_le_ms:.0f}"

    rows = [[lag.name, str(lag.samples), str(lag.stalls), longest(lag)] for lag in lags]
    return table(["loop", "samples", "stalls >= 50 ms", "longest lag ms"], rows)


def _host_line(host: dict[str, float]) -> str:
    """One line on how busy the machine was, and how much of it was not ours."""
    if not host:
        return ""
    return (
        f"machine: {host['busy_percent']:.0f}% busy of {host['cores'] * 100:.0f}%, "
        f"{host['others_percent']:.0f}% of it not by the processes above"
    )


def format_report(report: RunReport) -> str:
    """The human-readable report."""
    sc = report.scenario
    shape = (
        f"closed loop, {sc['games']} games"
        if sc["mode"] == "closed"
        else f"open loop, {sc['rate']:g} moves/s over {sc['games']} games"
    )
    lines = [
        f"target    {report.label}",
        f"scenario  {shape}, {sc['duration_s']:g} s measured after {sc['warmup_s']:g} s warmup"
        + (f", think {sc['think_ms']:g} ms" if sc.get("think_ms") else ""),
    ]
    if not report.scaling:
        lat = report.latency_ms
        lines += [
            "",
            table(
                ["moves", "moves/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"],
                [
                    [
                        str(report.moves),
                        f"{report.moves_per_s:.1f}",
                        f"{lat.p50:.2f}",
                        f"{lat.p90:.2f}",
                        f"{lat.p99:.2f}",
                        f"{lat.max:.2f}",
                        str(report.error_total),
                    ]
                ],
            ),
        ]
        if report.ack_latency_ms is not None and report.ack_latency_ms.count:
            ack = report.ack_latency_ms
            lines.append(
                f"ack (mover's send -> its ack): p50 {ack.p50:.2f}  p99 {ack.p99:.2f}  "
                f"max {ack.max:.2f} ms"
            )
        if report.open_loop:
            ol = report.open_loop
            lines.append(
                f"open loop: offered {ol['offered_per_s']:g}/s, "
                f"unserved {ol['unserved']} (no game free at the scheduled time)"
            )
        if report.anomalies:
            lines.append(
                "absorbed by the client (not errors): "
                + ", ".join(f"{k} {v}" for k, v in sorted(report.anomalies.items()))
            )
        lines += [f"  e.g. {sample}" for sample in report.samples[:5]]
        if report.errors:
            lines.append(
                "errors: " + ", ".join(f"{k} {v}" for k, v in sorted(report.errors.items()))
            )
        lines.append(
            f"games started {report.games_started}, finished {report.games_finished}; "
            f"system CPU {report.cpu_ms_per_move:.3f} ms per move"
        )
        lines += ["", _process_table(report.processes), _host_line(report.host)]
        if report.loop_lag:
            lines += ["", _lag_table(report.loop_lag)]
    if report.idle is not None:
        idle = report.idle
        lines += [
            "",
            f"idle: {idle.connections} extra connections opened in {idle.open_s:.1f} s; "
            f"CPU over {idle.window_s:g} s with nothing moving:",
            _process_table(idle.processes),
        ]
        if idle.memory:
            lines += [
                "",
                table(
                    ["edge", "connections", "rss before", "rss after", "KiB/conn"],
                    [
                        [
                            m.name,
                            str(m.connections),
                            f"{m.rss_before_mib:.1f}",
                            f"{m.rss_after_mib:.1f}",
                            f"{m.kib_per_connection:.1f}",
                        ]
                        for m in idle.memory
                    ],
                ),
            ]
    if report.scaling:
        lines += [
            "",
            table(
                [
                    "live games",
                    "moves/s",
                    "p50 ms",
                    "p99 ms",
                    "system CPU s",
                    "CPU ms/move",
                    "errors",
                ],
                [
                    [
                        str(level.games),
                        f"{level.moves_per_s:.1f}",
                        f"{level.latency_ms.p50:.2f}",
                        f"{level.latency_ms.p99:.2f}",
                        f"{level.system_cpu_s:.2f}",
                        f"{level.cpu_ms_per_move:.3f}",
                        str(level.errors),
                    ]
                    for level in report.scaling
                ],
            ),
        ]
        if report.scaling_ratios:
            lines.append(
                "CPU per move relative to the first level: "
                + ", ".join(f"{k} {v:.2f}x" for k, v in report.scaling_ratios.items())
            )
        if any(level.idle_window_s for level in report.scaling):
            lines += [
                "",
                "idle cost (no move, same sockets) and move cost (CPU above idle, per move):",
                table(
                    ["live games", "sockets", "idle CPU %", "idle us/socket/s", "move ms"],
                    [
                        [
                            str(level.games),
                            str(level.sockets),
                            f"{100 * level.idle_cpu_s / level.idle_window_s:.1f}",
                            f"{level.idle_us_per_socket_s:.2f}",
                            f"{level.move_ms:.3f}",
                        ]
                        for level in report.scaling
                        if level.idle_window_s
                    ],
                ),
            ]
        if report.move_cost_ratios:
            lines.append(
                "move cost relative to the first level: "
                + ", ".join(f"{k} {v:.2f}x" for k, v in report.move_cost_ratios.items())
            )
        for level in report.scaling:
            lines += [
                "",
                f"{level.games} live games:",
                _process_table(level.processes),
                _host_line(level.host),
            ]
            if level.loop_lag:
                lines += [_lag_table(level.loop_lag)]
    return "\n".join(lines)
