"""Loop-lag probe for every Python process of a benchmark, without touching the product.

With this directory on ``PYTHONPATH`` (an absolute path: the benchmark starts its
processes in other working directories) and ``XLMATE_LAGPROBE_DIR`` set, every Python
process started (the load generator and each ``xlmate`` process it launches) runs,
inside whatever ``asyncio.Runner`` runs (``asyncio.run``, ``xlmate.eventloop.run``):

* a probe task sleeping 10 ms again and again; a wake-up later than 20 ms is a stall;
* ``gc.callbacks`` timing every collection;
* a watchdog thread sampling the main thread's Python stack while the loop is stalled;

and appends one JSON line per stall (with the CPU time the loop's thread used during
it: next to none means the process waited for a core), per collection over 5 ms and
per stack sample to
``$XLMATE_LAGPROBE_DIR/<pid>.jsonl`` (with the process's command line and loop), plus a
summary at exit (lag histogram, collections per generation).  Read them with
``benchmarks/lagprobe/summarize.py``.

``XLMATE_GC_FREEZE_S=10`` also tries the workaround of ``benchmarks/uvloop_stall.md``
(``gc.collect(1); gc.freeze()`` every 10 s); the summary at exit counts the cyclic garbage left
(frozen or not), which is what freezing could leak.

    PYTHONPATH=$PWD/benchmarks/lagprobe XLMATE_LAGPROBE_DIR=/tmp/lag XLMATE_LOOP=uvloop \\
        xlmate bench --scaling 1000,5000 --rate 100 --edges 2 --duration 20
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import gc
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

TICK = 0.010
STALL = 0.020
GC_REPORT = 0.005
BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class _Probe:
    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, f"{os.getpid()}.jsonl")
        self.file = open(self.path, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
        self.histogram = [0] * (len(BUCKETS_MS) + 1)
        self.max_ms = 0.0
        self.last_tick = time.perf_counter()
        self.running = False
        self.gc_start = 0.0
        self.gc_stats = {0: [0, 0.0, 0.0], 1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}
        self.main_id = threading.main_thread().ident
        self.loop_name = ""
        self.freezer: asyncio.Task[None] | None = None
        self.write({"start": " ".join(sys.argv)[:200], "t": time.time()})
        gc.callbacks.append(self.on_gc)
        threading.Thread(target=self.watch, daemon=True).start()
        atexit.register(self.summary)

    def write(self, record: dict[str, Any]) -> None:
        record["pid"] = os.getpid()
        self.file.write(json.dumps(record) + "\n")

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self.gc_start = now
            return
        seconds = now - self.gc_start
        stats = self.gc_stats[info["generation"]]
        stats[0] += 1
        stats[1] += seconds
        stats[2] = max(stats[2], seconds)
        if seconds >= GC_REPORT:
            self.write(
                {
                    "gc": info["generation"],
                    "ms": round(seconds * 1000, 1),
                    "collected": info["collected"],
                    "objects": len(gc.get_objects(info["generation"])),
                    "t": time.time(),
                }
            )

    def watch(self) -> None:
        while True:
            time.sleep(STALL / 2)
            if not self.running or time.perf_counter() - self.last_tick < 2 * STALL:
                continue
            frame = sys._current_frames().get(self.main_id or 0)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)[-8:]
            where = " <- ".join(
                f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(stack)
            )
            self.write({"sample": where, "t": time.time()})

    async def freeze_every(self, seconds: float) -> None:
        """The workaround under test: move every surviving object to the permanent
        generation, so a full collection only scans what is younger than ``seconds``."""
        while True:
            await asyncio.sleep(seconds)
            gc.collect(1)  # young cyclic garbage first: frozen, it would never go
            gc.freeze()

    async def run(self) -> None:
        self.loop_name = type(asyncio.get_running_loop()).__module__
        freeze_s = float(os.environ.get("XLMATE_GC_FREEZE_S", "0"))
        if freeze_s > 0:
            self.freezer = asyncio.get_running_loop().create_task(self.freeze_every(freeze_s))
        self.write({"loop": self.loop_name, "t": time.time()})
        self.running = True
        try:
            while True:
                start, cpu = time.perf_counter(), time.thread_time()
                await asyncio.sleep(TICK)
                now = self.last_tick = time.perf_counter()
                cpu = time.thread_time() - cpu  # little CPU in a stall: waiting for a core
                lag = now - start - TICK
                ms = lag * 1000
                self.max_ms = max(self.max_ms, ms)
                index = next((i for i, b in enumerate(BUCKETS_MS) if ms < b), len(BUCKETS_MS))
                self.histogram[index] += 1
                if lag >= STALL:
                    self.write(
                        {
                            "stall_ms": round(ms, 1),
                            "cpu_ms": round(cpu * 1000, 1),
                            "t": time.time() - lag,
                        }
                    )
        finally:
            self.running = False

    def summary(self) -> None:
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        gc.set_debug(gc.DEBUG_SAVEALL)
        garbage = gc.collect()  # cyclic garbage, frozen or not, left at exit
        gc.set_debug(0)
        kinds = collections.Counter(type(o).__name__ for o in gc.garbage).most_common(8)
        gc.garbage.clear()
        self.write(
            {
                "summary": True,
                "loop": self.loop_name,
                "max_ms": round(self.max_ms, 1),
                "histogram_le_ms": dict(
                    zip([*map(str, BUCKETS_MS), "inf"], self.histogram, strict=True)
                ),
                "gc": {
                    str(g): [n, round(t * 1000, 1), round(m * 1000, 1)]
                    for g, (n, t, m) in self.gc_stats.items()
                },
                "frozen_at_exit": frozen,
                "cyclic_garbage_at_exit": garbage,
                "cyclic_garbage_types": kinds,
                "t": time.time(),
            }
        )


def _install(directory: str) -> None:
    probe = _Probe(directory)
    original = asyncio.Runner.run

    def run(self: asyncio.Runner, coro: Any, *, context: Any = None) -> Any:
        async def probed() -> Any:
            task = asyncio.get_running_loop().create_task(probe.run())
            try:
                return await coro
            finally:
                task.cancel()

        return original(self, probed(), context=context)

    asyncio.Runner.run = run  # type: ignore[method-assign]


if os.environ.get("XLMATE_LAGPROBE_DIR"):
    _install(os.environ["XLMATE_LAGPROBE_DIR"])
