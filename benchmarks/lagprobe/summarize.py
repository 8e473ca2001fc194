#!/usr/bin/env python3
"""Summarize the loop-lag probe's files (see ``sitecustomize.py`` here), one block per process.

    benchmarks/lagprobe/summarize.py /tmp/lag [--stall-ms 50]

Per process: its command line and loop, the largest lag, the lag histogram, the
collections per generation (count, total ms, max ms), and each stall of
``--stall-ms`` or more with the collections that overlapped it and the most
frequent stack sampled by the watchdog during stalls.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
from typing import Any


def summarize(path: pathlib.Path, stall_ms: float) -> str:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    start = next((r["start"] for r in records if "start" in r), "?")
    summary = next((r for r in records if r.get("summary")), None)
    stalls = [r for r in records if r.get("stall_ms", 0) >= stall_ms]
    gcs = [r for r in records if "gc" in r and "ms" in r]
    samples: collections.Counter[str] = collections.Counter(
        r["sample"] for r in records if "sample" in r
    )
    lines = [f"== pid {path.stem}: {start}"]
    if summary is not None:
        lines.append(f"   loop {summary['loop']}, max lag {summary['max_ms']} ms")
        lines.append(f"   wake-ups by lag (< ms): {summary['histogram_le_ms']}")
        lines.append(f"   gc per generation [count, total ms, max ms]: {summary['gc']}")
    lines.append(f"   stalls >= {stall_ms:g} ms: {len(stalls)}")
    for stall in stalls[:15]:
        began, ended = stall["t"], stall["t"] + stall["stall_ms"] / 1000 + 0.01
        overlapping = [
            f"gen{g['gc']} {g['ms']} ms ({g['objects']} objects in gen)"
            for g in gcs
            if g["t"] - g["ms"] / 1000 < ended and g["t"] > began
        ]
        cpu = f"{stall['cpu_ms']:6.1f} ms CPU" if "cpu_ms" in stall else ""
        lines.append(
            f"     {stall['stall_ms']:7.1f} ms {cpu}  gc: {', '.join(overlapping) or 'none'}"
        )
    for where, count in samples.most_common(4):
        lines.append(f"   sampled {count}x during stalls: {where}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=pathlib.Path)
    parser.add_argument("--stall-ms", type=float, default=50.0)
    args = parser.parse_args()
    blocks: list[Any] = [
        summarize(path, args.stall_ms) for path in sorted(args.directory.glob("*.jsonl"))
    ]
    print("\n".join(blocks))


if __name__ == "__main__":
    main()
