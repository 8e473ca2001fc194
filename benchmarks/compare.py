"""Side by side: the XLMate cluster and three baselines: a one-process relay, the Redis
pub/sub relay, and Socket.IO 4 with the Redis adapter.

``benchmarks/run`` runs this with the project's virtualenv.  One run:

1. makes sure ``redis-server`` (Debian package) and the ``redis`` client are
   installed, starts ``redis-server`` on a free loopback port with no
   persistence, ``relay_single.py`` once and ``relay_redis.py`` twice; for the
   Socket.IO baseline it installs ``benchmarks/socketio`` (pinned by its
   ``package-lock.json``) with ``npm ci`` into the run's temporary directory,
   never into the product, and starts ``server.js`` twice with Node (only the
   baselines ``--targets`` names are started);
2. for each repetition, runs the *same* load generator (``xlmate bench``)
   against each target in turn (the order rotates between repetitions; the
   cluster is started fresh by ``xlmate bench`` each time, with its default
   ``fsync=always``);
3. prints medians, the ratios of the cluster's throughput and of its server CPU
   per move to each baseline's, each process's event-loop stalls in the
   measured windows (the loop-lag probes' ``/metrics``), and writes everything
   to ``benchmarks/results/<date>.json``;
4. stops what it started.

Other work on the machine skews numbers on 2 cores, so before each run it
waits (bounded) until the machine is quiet, and every report records how busy
the machine was with work that was not ours (``others_percent``).

``--scaling`` instead measures the cluster's CPU per move at 100, 1000 and
5000 live games at a fixed total move rate.

``--shards 1,2`` instead runs the cluster with each number of broker shards
(the same load, the order rotating between repetitions) and prints, side by
side, the throughput, the latency, the whole system's CPU per move and the
brokers' (summed over the shards) CPU per move and busiest broker's CPU share.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlmate_bench import nodeapp
from xlmate_bench.cluster import ClusterError, free_port, raise_nofile, wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"  # the versions scripts/setup pins
RESULTS = HERE / "results"
TARGETS = ("cluster", "relay-single", "relay-redis", "relay-socketio")
BASELINES = {"relay-redis": "redis", "relay-single": "single", "relay-socketio": "socketio"}
XLMATE = str(Path(sys.executable).parent / "xlmate")


def say(text: str) -> None:
    """Progress on stderr."""
    print(f"[run] {text}", file=sys.stderr, flush=True)


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on loopback ``port``."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- dependencies -----------------------------------------------------------------


def ensure_redis_server() -> str:
    """The path of ``redis-server``, installing Debian's package if it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    say("redis-server is missing: apt-get install redis-server")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "redis-server"]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit("redis-server is still missing after apt-get install")
    return found


def ensure_python_deps() -> None:
    """``redis`` (+ hiredis) and ``psutil`` in this interpreter: the ``bench`` extra."""
    try:
        import psutil  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        say("installing the bench extra: redis, hiredis, psutil")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "-c",
                str(CONSTRAINTS),
                "redis>=5",
                "hiredis>=2",
                "psutil>=5.9",
            ],
            check=True,
        )


# --- processes we start -------------------------------------------------------------


@dataclass
class Started:
    """A background process of this run."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.popen.pid

    @property
    def url(self) -> str:
        """Its WebSocket base URL (relays)."""
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 5 s."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def start(name: str, args: Sequence[str], port: int, logdir: Path) -> Started:
    """Start ``args`` in the background and wait until it listens on ``port``."""
    log = logdir / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            list(args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    proc = Started(name, popen, port, log)

    def up() -> bool:
        if popen.poll() is not None:
            raise SystemExit(f"{name} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        return listening(port)

    try:
        wait_until(up, 20, f"{name} to listen on {port}")
    except ClusterError as exc:
        proc.stop()
        raise SystemExit(str(exc)) from exc
    return proc


def start_pair_member(name: str, command: Sequence[str], redis_url: str, logdir: Path) -> Started:
    """One process of a Redis-backed pair (Python relay or Socket.IO) on a free port."""
    port = free_port()
    return start(name, [*command, "--port", str(port), "--redis-url", redis_url], port, logdir)


# --- measuring ------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as f:
        mem_kib = int(f.readline().split()[1])
    versions = {}
    for module in ("websockets", "zmq", "chess", "msgpack", "redis"):
        try:
            versions[module] = str(__import__(module).__version__)
        except (ImportError, AttributeError):
            versions[module] = "?"
    redis_server = shutil.which("redis-server")
    if redis_server:
        out = subprocess.run([redis_server, "--version"], capture_output=True, text=True)
        versions["redis-server"] = out.stdout.split()[2] if out.stdout else "?"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions,
    }


def wait_quiet(max_wait: float, busy_limit: float) -> float:
    """Wait (at most ``max_wait`` s) until the machine is under ``busy_limit`` % busy.

    Returns the last reading (% of all cores).  Other users' tests on a shared
    2-core machine would otherwise be measured along with ours.
    """
    import psutil  # type: ignore[import-untyped, unused-ignore]

    deadline = time.monotonic() + max_wait
    while True:
        busy = float(psutil.cpu_percent(interval=1.0))
        if busy < busy_limit or time.monotonic() > deadline:
            return busy
        say(f"machine {busy:.0f}% busy with other work; waiting for it to calm down")


def bench(args: Sequence[str], timeout: float) -> dict[str, Any]:
    """One ``xlmate bench ... --json`` run; its report."""
    cmd = [XLMATE, "bench", *args, "--json", "--quiet"]
    say(" ".join(cmd[1:]))
    for attempt in (1, 2):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode == 0:
            break
        say(f"xlmate bench failed ({done.returncode}), attempt {attempt}:\n{done.stderr[-2000:]}")
    else:
        raise SystemExit("xlmate bench failed twice; giving up")
    report: dict[str, Any] = json.loads(done.stdout)
    report["command"] = "xlmate " + " ".join(["bench", *args, "--json"])
    return report


def median(values: Sequence[float]) -> float:
    """The median (0 for none)."""
    return float(statistics.median(values)) if values else 0.0


def summary(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repetitions of one target."""

    def med(get: Callable[[dict[str, Any]], float]) -> float:
        return round(median([get(r) for r in reports]), 3)

    return {
        "reps": len(reports),
        "moves_per_s": med(lambda r: r["moves_per_s"]),
        "moves_per_s_each": [r["moves_per_s"] for r in reports],
        "p50_ms": med(lambda r: r["latency_ms"]["p50"]),
        "p90_ms": med(lambda r: r["latency_ms"]["p90"]),
        "p99_ms": med(lambda r: r["latency_ms"]["p99"]),
        "max_ms": med(lambda r: r["latency_ms"]["max"]),
        "errors": sum(r["errors"]["total"] for r in reports),
        "cpu_ms_per_move": med(lambda r: r["cpu_ms_per_move"]),
        "loadgen_cpu_percent": med(
            lambda r: next(p["cpu_percent"] for p in r["processes"] if p["role"] == "loadgen")
        ),
        "others_percent": med(lambda r: r.get("host", {}).get("others_percent", 0.0)),
        "loop_lag": lag_summary(reports),
    }


def stable_name(report: dict[str, Any], name: str) -> str:
    """A process's name that is the same in every repetition: a started cluster's edges
    are named by their port, which changes; they become ``edge-1``, ``edge-2``, ..."""
    edges = [p["name"] for p in report.get("processes", []) if p["role"] == "edge"]
    if name in edges and report.get("target", {}).get("launched"):
        return f"edge-{edges.index(name) + 1}"
    return name


def lag_summary(reports: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each process's event-loop stalls (>= 50 ms) per repetition, and its longest lag.

    ``longest_ms`` is exact for the load generator (its own probe) and the upper
    bound of the histogram bucket for the others (None: past the last bucket, 1 s).
    """
    out: dict[str, dict[str, Any]] = {}
    for report in reports:
        for lag in report.get("loop_lag", []):
            name = stable_name(report, lag["name"])
            row = out.setdefault(name, {"stalls_each": [], "longest_ms_each": []})
            row["stalls_each"].append(lag["stalls"])
            row["longest_ms_each"].append(lag["max_le_ms"])
    for row in out.values():
        longest = row["longest_ms_each"]
        row["longest_ms"] = None if None in longest else max(longest, default=0.0)
    return out


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An aligned text table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if i else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def write_results(data: dict[str, Any]) -> Path:
    """``benchmarks/results/<date>.json`` (``<date>-2.json``, ... if taken)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    day = dt.date.today().isoformat()
    path = RESULTS / f"{day}.json"
    n = 2
    while path.exists():
        path = RESULTS / f"{day}-{n}.json"
        n += 1
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


# --- the two experiments -----------------------------------------------------------------


def compare(opts: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    """The cluster vs the relays, ``opts.reps`` times, side by side."""
    ensure_python_deps()
    raise_nofile()  # before starting relays: they inherit it (thousands of sockets)
    common = [
        "--games",
        str(opts.games),
        "--duration",
        str(opts.duration),
        "--warmup",
        str(opts.warmup),
        *opts.bench_arg,
    ]
    if opts.rate:
        common += ["--rate", str(opts.rate)]
    names = [n for n in opts.targets.split(",") if n]
    unknown = set(names) - set(TARGETS)
    if unknown:
        raise SystemExit(f"unknown --targets: {', '.join(sorted(unknown))} (of {TARGETS})")
    started: list[Started] = []
    try:
        targets = {
            "cluster": ["--edges", str(opts.edges), "--label", f"cluster ({opts.edges} edges)"]
        }
        redis: Started | None = None
        if {"relay-redis", "relay-socketio"} & set(names):
            rport = free_port()
            redis = start(
                "redis-server",
                [
                    ensure_redis_server(),
                    *("--port", str(rport), "--bind", "127.0.0.1", "--save", ""),
                    *("--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"),
                ],
                rport,
                logdir,
            )
            started.append(redis)
        if "relay-single" in names:
            sport = free_port()
            single = start(
                "relay-single",
                [sys.executable, str(HERE / "relay_single.py"), "--port", str(sport)],
                sport,
                logdir,
            )
            started.append(single)
            targets["relay-single"] = [
                *("--target-url", single.url),
                *("--watch", f"relay={single.pid}@{single.url}"),
                *("--label", "one-process relay"),
            ]
        if "relay-redis" in names:
            assert redis is not None
            pair = [
                start_pair_member(
                    f"relay-redis-{side}",
                    [sys.executable, str(HERE / "relay_redis.py")],
                    f"redis://127.0.0.1:{redis.port}/0",
                    logdir,
                )
                for side in ("a", "b")
            ]
            started += pair
            targets["relay-redis"] = [
                *[arg for r in pair for arg in ("--target-url", r.url)],
                *[arg for r in pair for arg in ("--watch", f"relay-{r.name[-1]}={r.pid}@{r.url}")],
                *("--watch", f"redis={redis.pid}"),
                *("--label", "Redis pub/sub relay (2 edges)"),
            ]
        if "relay-socketio" in names:
            assert redis is not None
            say("npm ci: the Socket.IO baseline (benchmarks/socketio), in the run's temp dir")
            app = nodeapp.install(logdir / "socketio")
            sio = [
                start_pair_member(
                    f"socketio-{side}",
                    ["node", str(app / "server.js")],
                    f"redis://127.0.0.1:{redis.port}",
                    logdir,
                )
                for side in ("a", "b")
            ]
            started += sio
            targets["relay-socketio"] = [
                *[arg for r in sio for arg in ("--target-url", r.url)],
                *("--relay-protocol", "socketio"),
                *[arg for r in sio for arg in ("--watch", f"sio-{r.name[-1]}={r.pid}@{r.url}")],
                *("--watch", f"redis={redis.pid}"),
                *("--label", "Socket.IO 4 + Redis adapter (2 Node processes)"),
            ]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        timeout = opts.warmup + opts.duration + 180
        for rep in range(opts.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                busy = wait_quiet(opts.wait_quiet, opts.busy_limit)
                report = bench([*common, *targets[name]], timeout)
                report["busy_before_percent"] = busy
                report["rep"] = rep + 1
                runs[name].append(report)
                say(
                    f"rep {rep + 1} {name}: {report['moves_per_s']} moves/s, "
                    f"p99 {report['latency_ms']['p99']} ms, errors {report['errors']['total']}"
                )
    finally:
        for proc in reversed(started):
            proc.stop()
    summaries = {name: summary(reports) for name, reports in runs.items() if reports}
    return {"summaries": summaries, "ratios": ratios(summaries, runs), "runs": runs}


def ratios(
    summaries: dict[str, dict[str, Any]], runs: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The cluster against each baseline: throughput (``cluster/X``), server CPU per move
    (``cluster/X cpu``) and p99 (``cluster/X p99``), of the medians and per repetition."""
    out: dict[str, Any] = {}
    cluster = summaries.get("cluster")
    if not cluster:
        return out
    measures = (
        ("", "moves_per_s", lambda r: r["moves_per_s"]),
        (" cpu", "cpu_ms_per_move", lambda r: r["cpu_ms_per_move"]),
        (" p99", "p99_ms", lambda r: r["latency_ms"]["p99"]),
    )
    for other, short in BASELINES.items():
        if other not in summaries:
            continue
        for suffix, field, get in measures:
            key = f"cluster/{short}{suffix}"
            if summaries[other][field]:
                out[key] = round(cluster[field] / summaries[other][field], 3)
            out[f"{key} per rep"] = [
                round(get(c) / get(o), 3)
                for c, o in zip(runs["cluster"], runs[other], strict=False)
                if get(o)
            ]
    return out


def print_compare(result: dict[str, Any]) -> None:
    """The comparison table on stdout."""
    rows = [
        [
            name,
            f"{s['moves_per_s']:.0f}",
            " ".join(f"{v:.0f}" for v in s["moves_per_s_each"]),
            f"{s['p50_ms']:.2f}",
            f"{s['p90_ms']:.2f}",
            f"{s['p99_ms']:.2f}",
            f"{s['max_ms']:.2f}",
            str(s["errors"]),
            f"{s['cpu_ms_per_move']:.3f}",
            f"{s['loadgen_cpu_percent']:.0f}",
            f"{s['others_percent']:.0f}",
        ]
        for name, s in result["summaries"].items()
    ]
    header = [
        "target",
        "moves/s",
        "each rep",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "CPU ms/move",
        "loadgen %",
        "others %",
    ]
    print(table(header, rows))
    for key, value in result["ratios"].items():
        if not key.endswith("per rep"):
            each = result["ratios"].get(f"{key} per rep", [])
            print(f"{key}: {value:.2f}x (per rep: {', '.join(f'{v:.2f}' for v in each)})")
    lag_rows = [
        [
            name,
            process,
            " ".join(str(n) for n in row["stalls_each"]),
            "> 1000" if row["longest_ms"] is None else f"{row['longest_ms']:.0f}",
        ]
        for name, s in result["summaries"].items()
        for process, row in s["loop_lag"].items()
    ]
    if lag_rows:
        print("\nevent-loop stalls in the measured windows (loop-lag probes):")
        header = ["target", "process", "stalls >= 50 ms, each rep", "longest lag <= ms"]
        print(table(header, lag_rows))


def scaling(opts: argparse.Namespace) -> dict[str, Any]:
    """The cluster's CPU per move as live games grow, at a fixed total move rate."""
    ensure_python_deps()
    args = [
        "--scaling",
        opts.levels,
        "--rate",
        str(opts.rate or 100),
        "--edges",
        str(opts.edges),
        "--duration",
        str(opts.duration),
        "--warmup",
        str(opts.warmup),
        *opts.bench_arg,
    ]
    runs = []
    for _ in range(opts.reps):
        wait_quiet(opts.wait_quiet, opts.busy_limit)
        runs.append(bench(args, timeout=1800))
    levels: dict[int, list[dict[str, Any]]] = {}
    for report in runs:
        for level in report["scaling"]:
            levels.setdefault(level["games"], []).append(level)
    rows = {
        games: {
            "cpu_ms_per_move": round(median([x["cpu_ms_per_move"] for x in items]), 4),
            "cpu_ms_per_move_each": [x["cpu_ms_per_move"] for x in items],
            "moves_per_s": round(median([x["moves_per_s"] for x in items]), 1),
            "p99_ms": round(median([x["latency_ms"]["p99"] for x in items]), 2),
            "errors": sum(x["errors"] for x in items),
            # with --bench-arg=--level-idle --bench-arg=S: idle cost and move cost apart
            "idle_us_per_socket_s": round(median([x["idle_us_per_socket_s"] for x in items]), 3),
            "idle_us_per_socket_s_each": [x["idle_us_per_socket_s"] for x in items],
            "idle_cpu_percent": round(
                median(
                    [
                        100 * x["idle_cpu_s"] / x["idle_window_s"]
                        for x in items
                        if x["idle_window_s"]
                    ]
                ),
                2,
            ),
            "move_ms": round(median([x["move_ms"] for x in items]), 4),
            "move_ms_each": [x["move_ms"] for x in items],
            "stalls_each": [sum(lag["stalls"] for lag in x.get("loop_lag", [])) for x in items],
        }
        for games, items in sorted(levels.items())
    }
    first = next(iter(rows.values()), None)
    ratios = {
        f"{games}/{next(iter(rows))}": round(row["cpu_ms_per_move"] / first["cpu_ms_per_move"], 3)
        for games, row in list(rows.items())[1:]
        if first and first["cpu_ms_per_move"]
    }
    if first and first["move_ms"] > 0:
        for games, row in list(rows.items())[1:]:
            ratios[f"move {games}/{next(iter(rows))}"] = round(row["move_ms"] / first["move_ms"], 3)
        each = [r["move_cost_ratios"] for r in runs if r.get("move_cost_ratios")]
        for key in each[0] if each else {}:
            ratios[f"move {key} per rep"] = [e.get(key) for e in each]
    return {"levels": rows, "ratios": ratios, "runs": runs}


def role_cpu_ms_per_move(report: dict[str, Any], role: str) -> float:
    """CPU ms per move of the processes of one role (their share of the system's)."""
    system = [p for p in report["processes"] if p["role"] != "loadgen"]
    total = sum(p["cpu_s"] for p in system)
    mine = sum(p["cpu_s"] for p in system if p["role"] == role)
    return float(report["cpu_ms_per_move"]) * mine / total if total else 0.0


def shards(opts: argparse.Namespace) -> dict[str, Any]:
    """The cluster with 1, 2, ... broker shards under the same load, side by side."""
    ensure_python_deps()
    counts = [int(n) for n in opts.shards.split(",") if n.strip()]
    common = [
        *("--games", str(opts.games), "--edges", str(opts.edges)),
        *("--duration", str(opts.duration), "--warmup", str(opts.warmup)),
        *opts.bench_arg,
    ]
    if opts.rate:
        common += ["--rate", str(opts.rate)]
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    timeout = opts.warmup + opts.duration + 180
    for rep in range(opts.reps):
        order = counts[rep % len(counts) :] + counts[: rep % len(counts)]
        for count in order:
            busy = wait_quiet(opts.wait_quiet, opts.busy_limit)
            label = f"cluster ({opts.edges} edges, {count} shards)"
            report = bench([*common, "--shards", str(count), "--label", label], timeout)
            report["busy_before_percent"] = busy
            report["rep"] = rep + 1
            runs[count].append(report)
            say(
                f"rep {rep + 1} shards={count}: {report['moves_per_s']} moves/s, "
                f"broker CPU {role_cpu_ms_per_move(report, 'broker'):.3f} ms/move"
            )
    rows = {}
    for count, reports in runs.items():
        base = summary(reports)
        base["broker_cpu_ms_per_move"] = round(
            median([role_cpu_ms_per_move(r, "broker") for r in reports]), 4
        )
        base["edge_cpu_ms_per_move"] = round(
            median([role_cpu_ms_per_move(r, "edge") for r in reports]), 4
        )
        base["busiest_broker_percent"] = round(
            median(
                [
                    max(p["cpu_percent"] for p in r["processes"] if p["role"] == "broker")
                    for r in reports
                ]
            ),
            1,
        )
        rows[count] = base
    return {"shards": rows, "runs": runs}


def print_shards(result: dict[str, Any]) -> None:
    """The shards table on stdout."""
    rows = [
        [
            str(count),
            f"{s['moves_per_s']:.0f}",
            " ".join(f"{v:.0f}" for v in s["moves_per_s_each"]),
            f"{s['p50_ms']:.2f}",
            f"{s['p99_ms']:.2f}",
            str(s["errors"]),
            f"{s['cpu_ms_per_move']:.3f}",
            f"{s['broker_cpu_ms_per_move']:.3f}",
            f"{s['edge_cpu_ms_per_move']:.3f}",
            f"{s['busiest_broker_percent']:.0f}",
            f"{s['others_percent']:.0f}",
        ]
        for count, s in result["shards"].items()
    ]
    header = [
        "shards",
        "moves/s",
        "each rep",
        "p50 ms",
        "p99 ms",
        "errors",
        "CPU ms/move",
        "brokers ms/move",
        "edges ms/move",
        "busiest broker %",
        "others %",
    ]
    print(table(header, rows))


def print_scaling(result: dict[str, Any]) -> None:
    """The scaling table on stdout."""
    rows = [
        [
            str(games),
            f"{row['moves_per_s']:.1f}",
            f"{row['cpu_ms_per_move']:.3f}",
            " ".join(f"{v:.3f}" for v in row["cpu_ms_per_move_each"]),
            f"{row['p99_ms']:.2f}",
            str(row["errors"]),
            f"{row['idle_us_per_socket_s']:.2f}",
            f"{row['move_ms']:.3f}",
            " ".join(f"{v:.3f}" for v in row["move_ms_each"]),
        ]
        for games, row in result["levels"].items()
    ]
    header = ["live games", "moves/s", "CPU ms/move", "each rep", "p99 ms", "errors"]
    print(table([*header, "idle us/socket/s", "move ms", "each rep"], rows))
    print(
        ", ".join(
            f"{k}: {v:.2f}x" for k, v in result["ratios"].items() if isinstance(v, float | int)
        )
    )


def main() -> None:
    """Parse options, run, print, save."""
    parser = argparse.ArgumentParser(prog="benchmarks/run", description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=100, help="concurrent games")
    parser.add_argument("--rate", type=float, help="open loop moves/s (scaling: default 100)")
    parser.add_argument(
        "--duration", type=float, help="seconds measured (default 10; 30 with --scaling)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each target")
    parser.add_argument("--edges", type=int, default=2, help="edges of the cluster")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)}",
    )
    parser.add_argument(
        "--bench-arg", action="append", default=[], help="extra xlmate bench argument (repeat)"
    )
    parser.add_argument("--scaling", action="store_true", help="CPU per move vs live games")
    parser.add_argument("--levels", default="100,1000,5000", help="live games (--scaling)")
    parser.add_argument("--shards", help="compare these broker shard counts, e.g. 1,2")
    parser.add_argument("--wait-quiet", type=float, default=60.0, help="max s to wait for quiet")
    parser.add_argument("--busy-limit", type=float, default=30.0, help="quiet: under this %% busy")
    parser.add_argument("--no-save", action="store_true", help="do not write results/<date>.json")
    opts = parser.parse_args()
    if opts.duration is None:
        # Scaling: long enough to hold two of the edges' 15 s presence refreshes.
        opts.duration = 30.0 if opts.scaling else 10.0
    started = dt.datetime.now(dt.UTC)
    logdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"xlmate-run-{os.getpid()}"
    logdir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": "benchmarks/run " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "options": vars(opts),
    }
    try:
        if opts.scaling:
            data["scaling"] = scaling(opts)
            print_scaling(data["scaling"])
        elif opts.shards:
            data["shards"] = shards(opts)
            print_shards(data["shards"])
        else:
            data["compare"] = compare(opts, logdir)
            print_compare(data["compare"])
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    data["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if not opts.no_save:
        say(f"results: {write_results(data)}")


if __name__ == "__main__":
    main()
