#!/usr/bin/env python3
"""Minimal reproduction of the event-loop stall of a process holding thousands of WebSockets.

Standalone: needs only ``websockets`` (and ``uvloop`` for ``--loop uvloop``), not xlmate,
so it can go upstream as it is.  Two processes:

* the **server** (the process under test) serves WebSockets with the edge's ``serve()``
  settings (``max_size=4096, max_queue=16, ping_interval=20, ping_timeout=20,
  close_timeout=2, compression=None``) and an edge-shaped handler: a writer task waiting
  on a bounded queue per socket (as ``edge/session.py`` keeps one) and a reader that
  forwards each text frame to the socket's partner (sockets are paired like the two
  players of a game) through the Sans-I/O protocol, as the edge's fan-out does;
* the **clients** (always on asyncio's loop unless ``--client-loop``) open ``--n`` sockets
  spread over source addresses 127.0.0.2.., answer the server's pings (websockets does
  that by itself) and send ``--rate`` frames a second in total to random sockets.

The server measures loop lag with a probe task (sleep ``--tick`` s, record how late it
woke up), times every garbage collection (``gc.callbacks``), counts keepalive pings per
second, and reports, over ``--duration`` s after all sockets are open: lag percentiles,
every stall over ``--stall-ms`` with what overlapped it (a collection, pings), and per
generation the collections' count, total and max duration.  A watchdog thread samples
the main thread's Python stack when the loop has not ticked for ``--stall-ms``, to say
where a stall is spent.

Bisecting switches: ``--ping-interval 0`` (no keepalive), ``--gc default|freeze|off``
(``gc.freeze()`` once the sockets are open, ``freeze-every``: ``gc.freeze()`` every
``--freeze-s`` s, the workaround, or ``gc.disable()``), ``--gc-threshold``
(``gc.set_threshold``), ``--no-writer`` (no per-socket writer task), ``--sweeper``
(one keepalive task for every socket instead of websockets' task per socket).

    benchmarks/uvloop_stall.py run --loop uvloop --n 5000 --duration 45
    benchmarks/uvloop_stall.py run --loop asyncio --n 5000 --duration 45
    benchmarks/uvloop_stall.py run --loop uvloop --n 5000 --gc freeze
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Coroutine
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

PER_SOURCE = 900  # sockets per source address (the edge allows 1000 per IP)


# This script imports nothing of the project on purpose: it is the reproduction to
# attach to an upstream report, so these few helpers are its own.


def raise_fd_limit() -> None:
    """Thousands of sockets need more than the usual 1024 descriptors."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_on(loop_name: str, main: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run`` on uvloop or asyncio's own loop."""
    if loop_name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def rss_kib() -> int:
    """Resident set size of this process, KiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank), 0 if empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the server (the process under test) ------------------------------------------------


class GcTimer:
    """Times every collection through ``gc.callbacks``, and counts promotions to the
    oldest generation.

    CPython (before 3.14) runs a full collection when the objects promoted to the
    oldest generation since the last full one exceed 25 % of those that survived it:
    so the rate of promotions says how often full collections come, and the number
    of tracked objects how long each takes.  A gen-1 collection promotes what was in
    generations 0 and 1 and is not garbage: counted here at no cost beyond ``len``
    of the young generations.
    """

    def __init__(self) -> None:
        self.events: list[tuple[float, float, int, int]] = []  # start, seconds, gen, collected
        self.cpu: list[tuple[int, float]] = []  # (generation, thread CPU seconds)
        self._cpu_start = 0.0
        self.promoted: list[tuple[float, int]] = []  # (time, objects promoted to gen 2)
        self.promoted_types: collections.Counter[str] = collections.Counter()
        self._start = 0.0
        self._young = 0
        self._sampled = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._start = now
            self._cpu_start = time.thread_time()
            if info["generation"] == 1:
                young = gc.get_objects(0) + gc.get_objects(1)
                self._young = len(young) - 1  # not the list itself
                self._sampled += 1
                if self._sampled % 10 == 0:  # what is about to be promoted, now and then
                    self.promoted_types.update(type(o).__name__ for o in young)
                del young
        else:
            self.cpu.append((info["generation"], time.thread_time() - self._cpu_start))
            self.events.append(
                (self._start, now - self._start, info["generation"], info["collected"])
            )
            if info["generation"] == 1:
                self.promoted.append((now, max(0, self._young - info["collected"])))


class Watchdog(threading.Thread):
    """Samples the main thread's stack whenever the loop has not ticked for ``limit`` s."""

    def __init__(self, limit: float) -> None:
        super().__init__(daemon=True)
        self.limit = limit
        self.last_tick = time.perf_counter()
        self.samples: collections.Counter[str] = collections.Counter()
        self.main_id = threading.main_thread().ident
        self.stopped = False

    def run(self) -> None:
        while not self.stopped:
            time.sleep(self.limit / 5)
            if time.perf_counter() - self.last_tick < self.limit:
                continue
            frame = sys._current_frames().get(self.main_id or 0)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)[-6:]
            key = " <- ".join(
                f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(stack)
            )
            self.samples[key] += 1


class Server:
    """The edge-shaped WebSocket server and its measurements."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.conns: dict[int, ServerConnection] = {}
        self.next_id = 0
        self.gc_timer = GcTimer()
        self.pings: collections.Counter[int] = collections.Counter()  # per whole second
        self.frames_in = 0
        self.lags: list[tuple[float, float]] = []  # (perf_counter at wake-up, lag s)
        # CPU time of the loop's thread while the probe slept: a stall with little CPU
        # is the process waiting for a core (machine load), not the loop working
        self.cpu_during: dict[float, float] = {}
        self.watchdog = Watchdog(args.stall_ms / 1000)
        self.freezer: asyncio.Task[None] | None = None
        self.sweeper: asyncio.Task[None] | None = None
        self.last_ping: dict[int, tuple[bytes, float]] = {}

    async def handler(self, ws: ServerConnection) -> None:
        """Edge-shaped: a queue and a writer task per socket, a reader forwarding frames."""
        my_id = self.next_id
        self.next_id += 1
        self.conns[my_id] = ws
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=256)
        writer = None if self.args.no_writer else asyncio.create_task(self._write(ws, queue))
        try:
            async for frame in ws:
                self.frames_in += 1
                partner = self.conns.get(my_id ^ 1)
                if partner is not None and partner.protocol.state is State.OPEN:
                    data = frame.encode() if isinstance(frame, str) else frame
                    partner.protocol.send_text(data)
                    partner.transport.write(b"".join(partner.protocol.data_to_send()))
        except ConnectionClosed:
            pass
        finally:
            del self.conns[my_id]
            self.last_ping.pop(my_id, None)
            if writer is not None:
                writer.cancel()

    @staticmethod
    async def _write(ws: ServerConnection, queue: asyncio.Queue[bytes]) -> None:
        while True:
            data = await queue.get()
            await ws.send(data, text=True)

    async def sweep(self, interval: int = 20, timeout: float = 20.0) -> None:
        """One keepalive for every socket instead of websockets' task per socket (see
        ``socket_memory.py``): each second, ping the sockets of the next 1/20 slot; close
        with 1011 one whose previous ping is still unanswered after ``timeout``.  Keeps
        per socket only the payload and time of its last ping (untracked by the GC)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            slot = int(now) % interval
            for conn_id, ws in [(i, ws) for i, ws in self.conns.items() if i % interval == slot]:
                previous = self.last_ping.get(conn_id)
                if previous is not None and previous[0] in ws.pending_pings:
                    if now - previous[1] > timeout:
                        await ws.close(1011, "keepalive ping timeout")
                    continue
                data = os.urandom(4)
                with contextlib.suppress(ConnectionClosed):
                    await ws.ping(data)
                    self.last_ping[conn_id] = (data, now)

    def count_pings(self) -> None:
        """Wrap ``ServerConnection.ping`` to count keepalive pings per second."""
        original = ServerConnection.ping
        pings = self.pings

        async def ping(conn: ServerConnection, data: Any = None) -> Any:
            pings[int(time.perf_counter())] += 1
            return await original(conn, data)

        ServerConnection.ping = ping  # type: ignore[method-assign]

    async def probe(self, stop: asyncio.Event) -> None:
        """Sleep ``tick`` s again and again; record how late each wake-up is."""
        tick = self.args.tick
        while not stop.is_set():
            start, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(tick)
            now = time.perf_counter()
            self.watchdog.last_tick = now
            self.lags.append((now, now - start - tick))
            self.cpu_during[now] = time.thread_time() - cpu

    async def main(self) -> None:
        args = self.args
        raise_fd_limit()
        if args.gc_threshold:
            gc.set_threshold(*(int(x) for x in args.gc_threshold.split(",")))
        gc.callbacks.append(self.gc_timer)
        self.count_pings()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with serve(
            self.handler,
            "127.0.0.1",
            args.port,
            max_size=4096,
            max_queue=16,
            ping_interval=None if args.sweeper else (args.ping_interval or None),
            ping_timeout=20,
            close_timeout=2,
            compression=None,
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(json.dumps({"ready": port}), flush=True)
            rss_before = rss_kib()
            self.watchdog.start()
            probe = asyncio.create_task(self.probe(stop))
            if args.sweeper:
                self.sweeper = asyncio.create_task(self.sweep())
            while len(self.conns) < args.n:
                await asyncio.sleep(0.2)
            if args.gc == "freeze":
                gc.collect()
                gc.freeze()
            elif args.gc == "freeze-every":
                self.freezer = asyncio.create_task(freeze_every(args.freeze_s))
            elif args.gc == "off":
                gc.disable()
            t0 = time.perf_counter()
            print(json.dumps({"connected": len(self.conns)}), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
            t1 = time.perf_counter()
            stop.set()
            await probe
            self.watchdog.stopped = True
            print(json.dumps(self.report(t0, t1, rss_before)), flush=True)
            os._exit(0)  # closing thousands of sockets is not what is measured

    def report(self, t0: float, t1: float, rss_before: int) -> dict[str, Any]:
        args = self.args
        lags = [lag for at, lag in self.lags if t0 <= at <= t1]
        stall_limit = args.stall_ms / 1000
        gcs = [e for e in self.gc_timer.events if t0 <= e[0] <= t1]
        stalls = []
        for at, lag in self.lags:
            if not (t0 <= at <= t1) or lag < stall_limit:
                continue
            began = at - lag - args.tick
            overlapping = [e for e in gcs if e[0] < at and e[0] + e[1] > began]
            stalls.append(
                {
                    "t": round(began - t0, 2),
                    "ms": round(lag * 1000, 1),
                    "cpu_ms": round(self.cpu_during.get(at, 0.0) * 1000, 1),
                    "gc": [
                        {"gen": g, "ms": round(d * 1000, 1), "collected": c}
                        for _s, d, g, c in overlapping
                    ],
                    "pings_that_second": self.pings.get(int(began), 0) + self.pings.get(int(at), 0),
                }
            )
        by_gen = {}
        for gen in (0, 1, 2):
            durations = [d * 1000 for _s, d, g, _c in gcs if g == gen]
            cpu = [c * 1000 for g, c in self.gc_timer.cpu if g == gen]  # whole run
            by_gen[str(gen)] = {
                "count": len(durations),
                "total_ms": round(sum(durations), 1),
                "max_ms": round(max(durations, default=0.0), 1),
                "max_cpu_ms_whole_run": round(max(cpu, default=0.0), 1),
            }
        ping_rate = [n for sec, n in self.pings.items() if t0 <= sec <= t1]
        promoted = sum(n for at, n in self.gc_timer.promoted if t0 <= at <= t1)
        tracked = len(gc.get_objects())
        full_ms, full_cpu_ms = full_collection_ms()
        sampled = sum(self.gc_timer.promoted_types.values()) or 1
        return {
            "loop": args.loop,
            "versions": {
                "python": sys.version.split()[0],
                "websockets": websockets.__version__,
                "uvloop": _uvloop_version(),
            },
            "n": len(self.conns),
            "duration_s": round(t1 - t0, 1),
            "settings": {
                "ping_interval": args.ping_interval,
                "gc": args.gc,
                "gc_threshold": gc.get_threshold(),
                "writer_task": not args.no_writer,
                "sweeper": args.sweeper,
                "rate": args.rate,
            },
            "lag_ms": {
                "samples": len(lags),
                "p50": round(pct(lags, 0.5) * 1000, 2),
                "p99": round(pct(lags, 0.99) * 1000, 2),
                "p999": round(pct(lags, 0.999) * 1000, 2),
                "max": round(max(lags, default=0.0) * 1000, 1),
            },
            "stalls": stalls,
            "gc": by_gen,
            "gc_tracked_objects": tracked,
            "gc_tracked_per_socket": round(tracked / max(1, len(self.conns)), 1),
            "full_collection_ms_at_end": round(full_ms, 1),
            "full_collection_cpu_ms_at_end": round(full_cpu_ms, 1),
            "promoted_to_gen2_per_s": round(promoted / (t1 - t0), 1),
            "promoted_per_socket_per_minute": round(
                promoted / (t1 - t0) * 60 / max(1, len(self.conns)), 2
            ),
            "promoted_types_share": {
                t: round(c / sampled, 3) for t, c in self.gc_timer.promoted_types.most_common(12)
            },
            "pings": {"total": sum(ping_rate), "max_per_s": max(ping_rate, default=0)},
            "frames_in": self.frames_in,
            "rss_kib_per_socket": round((rss_kib() - rss_before) / max(1, len(self.conns)), 1),
            "watchdog_stacks": self.watchdog.samples.most_common(5),
        }


async def freeze_every(seconds: float) -> None:
    """The workaround: every ``seconds``, collect the young generations (short), then move
    every survivor to the permanent generation (O(1)), so that no collection scans the
    long-lived socket state again.  What it can leak: cyclic garbage made of objects
    that were already frozen (``socket_memory.py`` counts it per closed socket)."""
    while True:
        await asyncio.sleep(seconds)
        gc.collect(1)  # young cyclic garbage first: frozen, it would never go
        gc.freeze()


def full_collection_ms(repeat: int = 3) -> tuple[float, float]:
    """The shortest of ``repeat`` full collections: wall ms, and this thread's CPU ms (which
    a loaded machine does not inflate by descheduling the process)."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.thread_time()
        gc.collect()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.thread_time() - cpu) * 1000)
    return min(walls), min(cpus)


def _uvloop_version() -> str | None:
    try:
        import uvloop
    except ImportError:
        return None
    return str(uvloop.__version__)


# --- the clients ------------------------------------------------------------------------


async def clients_main(args: argparse.Namespace) -> None:
    """Open ``n`` sockets, keep them open, send ``rate`` frames a second across them."""
    raise_fd_limit()
    url = f"ws://127.0.0.1:{args.port}/"
    conns: list[ClientConnection] = []
    gate = asyncio.Semaphore(100)

    async def open_one(i: int) -> None:
        source = f"127.0.0.{2 + i // PER_SOURCE}"
        async with gate:
            ws = await connect(
                url,
                local_addr=(source, 0),
                ping_interval=None,  # browsers do not ping; the server's pings keep it alive
                compression=None,
                max_queue=16,
                open_timeout=60,
            )
        conns.append(ws)

    async def drain(ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    await asyncio.gather(*(open_one(i) for i in range(args.n)))
    readers = [asyncio.create_task(drain(ws)) for ws in conns]
    print(json.dumps({"clients_open": len(conns)}), flush=True)
    frame = json.dumps({"type": "move", "uci": "e2e4", "id": 1})
    rng = random.Random(1)
    interval = 1.0 / args.rate if args.rate else 3600.0
    while True:
        await asyncio.sleep(interval)
        if args.rate:
            ws = conns[rng.randrange(len(conns))]
            with contextlib.suppress(ConnectionClosed):
                await ws.send(frame)
    del readers


# --- both, side by side -----------------------------------------------------------------


def run_main(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, then the clients; return the server's report."""
    me = os.path.abspath(__file__)
    common = ["--n", str(args.n), "--rate", str(args.rate)]
    server_cmd = [sys.executable, me, "server", "--loop", args.loop, *common]
    server_cmd += ["--duration", str(args.duration), "--tick", str(args.tick)]
    server_cmd += ["--stall-ms", str(args.stall_ms), "--ping-interval", str(args.ping_interval)]
    server_cmd += ["--gc", args.gc, "--freeze-s", str(args.freeze_s)]
    if args.gc_threshold:
        server_cmd += ["--gc-threshold", args.gc_threshold]
    if args.sweeper:
        server_cmd.append("--sweeper")
    if args.no_writer:
        server_cmd.append("--no-writer")
    server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = json.loads(server.stdout.readline())["ready"]
    client_cmd = [sys.executable, me, "clients", "--loop", args.client_loop, *common]
    clients = subprocess.Popen([*client_cmd, "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        report: dict[str, Any] = {}
        for line in server.stdout:
            message = json.loads(line)
            if "connected" in message:
                print(f"all {message['connected']} sockets open; measuring", file=sys.stderr)
            elif "lag_ms" in message:
                report = message
        server.wait()
        return report
    finally:
        clients.terminate()
        clients.wait()
        if server.poll() is None:
            server.kill()


def summary(report: dict[str, Any]) -> str:
    """One line per run for side-by-side tables."""
    lag = report["lag_ms"]
    g2 = report["gc"]["2"]
    return (
        f"{report['loop']:8} n={report['n']} {report['settings']} "
        f"lag p50={lag['p50']} p99={lag['p99']} max={lag['max']} ms, "
        f"stalls {len(report['stalls'])}, gen2 {g2['count']}x max {g2['max_ms']} ms, "
        f"promoted/s {report['promoted_to_gen2_per_s']}, "
        f"full collection {report['full_collection_ms_at_end']} ms "
        f"({report['full_collection_cpu_ms_at_end']} ms CPU) "
        f"over {report['gc_tracked_objects']} objects"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("run", "server", "clients"))
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--client-loop", choices=("uvloop", "asyncio"), default="asyncio")
    parser.add_argument("--n", type=int, default=5000, help="sockets")
    parser.add_argument("--rate", type=float, default=50.0, help="client frames/s in total")
    parser.add_argument("--duration", type=float, default=45.0, help="measured seconds")
    parser.add_argument("--tick", type=float, default=0.01, help="probe interval, s")
    parser.add_argument("--stall-ms", type=float, default=50.0)
    parser.add_argument("--ping-interval", type=float, default=20.0, help="0: no keepalive")
    parser.add_argument(
        "--gc", choices=("default", "freeze", "freeze-every", "off"), default="default"
    )
    parser.add_argument("--freeze-s", type=float, default=1.0, help="for --gc freeze-every")
    parser.add_argument("--gc-threshold", default="", help="e.g. 700,10,10")
    parser.add_argument("--no-writer", action="store_true", help="no writer task per socket")
    parser.add_argument("--sweeper", action="store_true", help="one keepalive task for all")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the whole report")
    args = parser.parse_args(argv)
    if args.mode == "server":
        run_on(args.loop, Server(args).main())
    elif args.mode == "clients":
        run_on(args.client_loop, clients_main(args))
    else:
        report = run_main(args)
        print(json.dumps(report, indent=1) if args.json else summary(report))


if __name__ == "__main__":
    main()
