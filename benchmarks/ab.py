"""Before/after: ``xlmate bench`` on two or more variants, alternating, side by side.

A variant is a name and environment settings for the whole cluster (every
process the bench starts inherits them), e.g. another source tree through
``PYTHONPATH`` or another event loop through ``XLMATE_LOOP``::

    benchmarks/ab.py --variant before:PYTHONPATH=/tmp/before --variant after: --reps 3
    benchmarks/ab.py --variant asyncio:XLMATE_LOOP=asyncio --variant uvloop:XLMATE_LOOP=uvloop

Prints, per variant, the median moves/s, p50/p99 latency and CPU per move of
each role, and writes every report to ``--out`` (JSON).  Arguments after
``--`` go to ``xlmate bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``name:KEY=VAL,KEY=VAL`` -> (name, env)."""
    name, _, settings = text.partition(":")
    env: dict[str, str] = {}
    for item in filter(None, settings.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"bad variant setting {item!r}: expected KEY=VALUE")
        env[key] = value
    return name, env


def run_once(env: dict[str, str], bench_args: list[str]) -> dict[str, Any]:
    """One ``xlmate bench --json`` run; its report."""
    command = [str(Path(sys.executable).parent / "xlmate"), "bench", "--json", *bench_args]
    done = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"bench failed ({done.returncode}):\n{done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def cpu_ms_per_move(report: dict[str, Any]) -> dict[str, float]:
    """CPU milliseconds per move of each role (edges summed)."""
    out: dict[str, float] = {}
    moves = max(1, report["moves"])
    for proc in report["processes"]:
        role = proc["role"]
        out[role] = out.get(role, 0.0) + 1000 * proc["cpu_s"] / moves
    return out


def summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repetitions."""
    roles = sorted({role for r in reports for role in cpu_ms_per_move(r)})
    return {
        "moves_per_s": statistics.median(r["moves_per_s"] for r in reports),
        "each": [round(r["moves_per_s"]) for r in reports],
        "p50": statistics.median(r["latency_ms"]["p50"] for r in reports),
        "p99": statistics.median(r["latency_ms"]["p99"] for r in reports),
        "errors": sum(r["errors"]["total"] for r in reports),
        "cpu": {
            role: statistics.median(cpu_ms_per_move(r).get(role, 0.0) for r in reports)
            for role in roles
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, help="name:KEY=VAL,...")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/xlmate-ab.json"))
    parser.add_argument("bench_args", nargs="*", help="after --: arguments of xlmate bench")
    args = parser.parse_args()
    bench_args = args.bench_args or ["--games", "100", "--duration", "10", "--warmup", "3"]
    variants = [parse_variant(v) for v in args.variant]
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    for rep in range(args.reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for name, env in order:
            report = run_once(env, bench_args)
            reports[name].append(report)
            print(
                f"[ab] rep {rep + 1}/{args.reps} {name}: {report['moves_per_s']:.0f} moves/s,"
                f" p99 {report['latency_ms']['p99']:.1f} ms",
                file=sys.stderr,
            )
    args.out.write_text(json.dumps(reports, indent=1))
    first = None
    print(f"xlmate bench {' '.join(bench_args)}; {args.reps} reps alternating; medians")
    for name, _ in variants:
        s = summary(reports[name])
        first = first or s["moves_per_s"]
        cpu = "  ".join(f"{role} {ms:.3f}" for role, ms in s["cpu"].items())
        print(
            f"{name:>12}: {s['moves_per_s']:7.0f} moves/s ({s['moves_per_s'] / first:.2f}x)"
            f"  each {s['each']}  p50 {s['p50']:.1f}  p99 {s['p99']:.1f} ms"
            f"  errors {s['errors']}  CPU ms/move: {cpu}"
        )
    print(f"reports: {args.out}")


if __name__ == "__main__":
    main()
