"""Replication on and off, side by side: a lone broker vs a broker pair under the same load.

    .venv/bin/python benchmarks/pairs.py                 # 3 reps each, 100 games, 8 s
    .venv/bin/python benchmarks/pairs.py --reps 5 --games 200 --duration 10

Each rep starts a fresh cluster on free loopback ports (discovery, the broker,
or the pair, and two edges, all real ``xlmate`` processes, ``--fsync always``),
drives it with ``xlmate bench --discovery`` (closed loop) watching every
server process, and stops it.  Variants alternate rep by rep so that the
machine's load drifts alike for both.  Reported per variant (medians): moves a
second, the move latency p50 and p99 (send -> the opponent sees it), the
active broker's CPU per move, the standby's CPU per move, the edges' CPU per
move.  Results go to ``benchmarks/results/<date>-pairs.json``; BENCHMARKS.md
("Broker pairs") quotes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xlmate_bench.cluster import Cluster, Proc, free_port, http_json, wait_until, xlmate_command

ROOT = Path(__file__).resolve().parent.parent


def start(workdir: Path, paired: bool) -> tuple[Cluster, dict[str, Proc]]:
    """Discovery, the broker (or a pair) and two edges; the server processes by name."""
    c = Cluster(workdir)
    c.start_discovery()
    brokers: dict[str, Proc] = {}
    if not paired:
        brokers["broker"] = c.start_broker()
    else:
        repl = (free_port(), free_port())
        for n, name in enumerate(("broker", "standby")):
            ports = (
                (c.xsub_port, c.xpub_port, c.catchup_port, c.broker_http_port)
                if n == 0
                else (free_port(), free_port(), free_port(), free_port())
            )
            args = [
                "broker",
                *("--xsub-port", str(ports[0])),
                *("--xpub-port", str(ports[1])),
                *("--catchup-port", str(ports[2])),
                *("--http-port", str(ports[3])),
                *("--journal-dir", str(workdir / f"journal-{name}")),
                *("--discovery", f"tcp://127.0.0.1:{c.rep_port}"),
                *("--repl-port", str(repl[n])),
                *("--peer", f"tcp://127.0.0.1:{repl[1 - n]}"),
            ]
            proc = c._spawn(name, args, f"http://127.0.0.1:{ports[3]}/healthz")
            proc.wait_healthy()
            brokers[name] = proc
            if n == 0:  # the first one becomes active alone, then the standby syncs
                wait_until(lambda p=proc: role(p) == ("active", False), 20, "the active broker")
        wait_until(lambda: role(brokers["broker"]) == ("active", True), 20, "a protected pair")
    procs = dict(brokers)
    for region in ("eu-west", "us-east"):
        edge = c.start_edge(region)
        procs[f"edge-{region}"] = edge.proc
    c.wait_registered(*c.edges)
    if paired:  # the edges route to the active broker (discovery's map) before the load
        epoch = http_json(brokers["broker"].health_url)[1]["epoch"]

        def routed() -> bool:
            for edge in c.edges:
                body = http_json(f"{edge.http}/healthz")[1]
                view = body.get("shards", {}).get("brokers", {}).get("1", {})
                if view.get("epoch") != epoch or not view.get("up"):
                    return False
            return True

        wait_until(routed, 20, "the edges to route to the active broker")
    return c, procs


def role(proc: Proc) -> tuple[str, bool]:
    """(role, in_sync) from a paired broker's /healthz."""
    try:
        status, body = http_json(proc.health_url, timeout=1)
    except OSError:
        return ("", False)
    pair = body.get("pair") if status == 200 and isinstance(body, dict) else None
    return (pair.get("role", ""), bool(pair.get("in_sync"))) if pair else ("", False)


def run(workdir: Path, paired: bool, opts: argparse.Namespace) -> dict[str, Any]:
    """One rep: the bench's JSON report, plus CPU per move by process."""
    c, procs = start(workdir, paired)
    try:
        watch = [f"--watch={name}={proc.pid}" for name, proc in procs.items()]
        out = subprocess.run(
            [
                *xlmate_command(),
                "bench",
                *("--discovery", c.discovery_url),
                *("--games", str(opts.games)),
                *("--duration", str(opts.duration)),
                *("--warmup", str(opts.warmup)),
                "--json",
                "--quiet",
                *watch,
            ],
            env=c.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=opts.duration + opts.warmup + 120,
        )
        report: dict[str, Any] = json.loads(out.stdout)
    finally:
        c.terminate(10)
    moves = report["moves"]
    cpu = {p["name"]: p["cpu_s"] for p in report["processes"]}
    report["cpu_ms_per_move"] = {
        "broker": 1000 * cpu.get("broker", 0.0) / moves,
        "standby": 1000 * cpu.get("standby", 0.0) / moves,
        "edges": 1000 * sum(v for k, v in cpu.items() if k.startswith("edge")) / moves,
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--games", type=int, default=100)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--keep", type=Path, help="keep each rep's logs and journals here")
    opts = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"lone": [], "pair": []}
    with tempfile.TemporaryDirectory(prefix="xlmate-pairs-") as tmp:
        for rep in range(opts.reps):
            for variant in ("lone", "pair"):
                workdir = (opts.keep or Path(tmp)) / f"{variant}-{rep}"
                workdir.mkdir(parents=True)
                report = run(workdir, variant == "pair", opts)
                runs[variant].append(report)
                print(
                    f"rep {rep + 1} {variant}: {report['moves_per_s']} moves/s, "
                    f"p50 {report['latency_ms']['p50']} ms, p99 {report['latency_ms']['p99']} ms, "
                    f"broker {report['cpu_ms_per_move']['broker']:.3f} ms/move, "
                    f"standby {report['cpu_ms_per_move']['standby']:.3f} ms/move",
                    flush=True,
                )
    medians = {
        variant: {
            "moves_per_s": statistics.median(r["moves_per_s"] for r in reports),
            "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in reports),
            "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in reports),
            **{
                f"{k}_cpu_ms_per_move": round(
                    statistics.median(r["cpu_ms_per_move"][k] for r in reports), 4
                )
                for k in ("broker", "standby", "edges")
            },
        }
        for variant, reports in runs.items()
    }
    print(json.dumps(medians, indent=2))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    path = ROOT / "benchmarks" / "results" / f"{stamp}-pairs.json"
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}
    path.write_text(json.dumps({"options": options, "medians": medians, "runs": runs}, indent=1))
    print(f"written {path}")


if __name__ == "__main__":
    main()
