#!/usr/bin/env python3
"""Where an idle WebSocket's memory goes in an edge-shaped server, and what cuts save.

Two processes.  The **server** serves WebSockets with the edge's ``serve()`` arguments
(``edge/server.py``: ``max_size=MAX_CLIENT_FRAME, max_queue=16, ping_interval=20,
ping_timeout=20, close_timeout=2, compression=None``, a ``process_request`` hook) and an
edge-shaped handler: it parses the path and query, builds the edge's own ``Session``
(``xlmate.edge.session``: bounded queue, writer task, ``TokenBucket``), joins a room
(a set per game), sends a sync-sized first frame and reads with ``async for``.  The
**clients** open ``--warm`` sockets, then ``--n`` more (source addresses 127.0.0.2..,
as the load generator does), and stay idle.

The server measures the difference between the two plateaus (after the warm-up sockets
and after all sockets, each after a full collection), divided by ``--n``:

* RSS per socket (run without ``--tracemalloc``: tracing costs memory of its own);
* with ``--tracemalloc F``: bytes per socket by allocation site, attributed to the
  innermost frame in websockets, xlmate or this script (else the innermost frame), and
  by innermost ``file:line``;
* GC-tracked objects per socket, by type.

Variants (``--variant``) and settings to measure cuts one at a time:
``edge`` (the edge's Session), ``lean`` (a Session without a writer task or queue until
a frame has to wait, see ``LeanSession``), ``bare`` (websockets alone: the handler only
reads); ``--max-queue``, ``--write-limit``, ``--ping-interval 0`` (no keepalive task per
socket), ``--sweeper`` (instead, one keepalive task for every socket: ``sweep``),
``--drop-handshake`` (empty the handshake's headers once read).  After the plateaus,
the clients close every socket and the server counts the cyclic garbage left per
closed socket (what only the cycle collector frees; see ``uvloop_stall.md``).

    benchmarks/socket_memory.py run --n 4000                      # RSS per socket
    benchmarks/socket_memory.py run --n 2000 --tracemalloc 12     # by allocation site
    benchmarks/socket_memory.py run --n 4000 --variant lean --ping-interval 0
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import linecache
import os
import re
import subprocess
import sys
import time
import tracemalloc
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from xlmate import eventloop
from xlmate.constants import MAX_CLIENT_FRAME
from xlmate.edge.session import Flusher, Session, TokenBucket
from xlmate_bench.cluster import raise_nofile

PER_SOURCE = 900
WS_PATH = re.compile(r"^/v1/games/([^/]+)/(ws|spectate)$")
SYNC = json.dumps(
    {
        "type": "sync",
        "v": 0,
        "fen": "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1",
        "moves": [],
        "status": "waiting",
        "you": "white",
        "clock": {"white": 300000, "black": 300000},
        "players": {"white": {"online": True}, "black": {"online": False}},
    }
).encode()
OWN_FILES = ("websockets/", "xlmate/", "edge/", "socket_memory.py")


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class LeanSession:
    """The cuts to ``Session`` in one class: no queue and no writer task until a frame
    has to wait behind a backed-up transport; the rate limiter's state in slots of its own.

    Same direct path as ``Session.send`` (Sans-I/O framing, one write per loop turn is
    left out here: an idle socket never writes).  Only for measuring memory.
    """

    __slots__ = (
        "closed",
        "game_id",
        "last",
        "queue",
        "remote",
        "seat",
        "strikes",
        "tokens",
        "writer",
        "ws",
    )

    def __init__(self, ws: ServerConnection, game_id: str, seat: str | None, remote: str) -> None:
        self.ws = ws
        self.game_id = game_id
        self.seat = seat
        self.remote = remote
        self.tokens = 40.0
        self.last = time.monotonic()
        self.strikes = 0
        self.closed = False
        self.queue: collections.deque[bytes] | None = None  # created on first backlog
        self.writer: asyncio.Task[None] | None = None  # likewise

    def send(self, data: bytes) -> None:
        ws = self.ws
        if self.queue is None and not ws.paused and ws.protocol.state is State.OPEN:
            ws.protocol.send_text(data)
            ws.transport.write(b"".join(ws.protocol.data_to_send()))
            return
        if self.queue is None:
            self.queue = collections.deque()
            self.writer = asyncio.create_task(self._write())
        self.queue.append(data)

    async def _write(self) -> None:
        assert self.queue is not None
        while self.queue:
            await self.ws.send(self.queue.popleft(), text=True)
        self.queue = self.writer = None

    def stop(self) -> None:
        self.closed = True
        if self.writer is not None:
            self.writer.cancel()


class EdgeShaped:
    """The server: the edge's serve() arguments and the shape of its handler."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sessions: set[Any] = set()
        self.rooms: dict[str, set[Any]] = {}
        self.per_ip: dict[str, int] = {}
        self.flusher = Flusher()
        self.sweeper_task: asyncio.Task[None] | None = None
        self.open = 0
        self.conns: set[ServerConnection] = set()
        self.pongs: dict[ServerConnection, tuple[bytes, float]] = {}

    async def handle(self, ws: ServerConnection) -> None:
        """Like ``EdgeServer._handle``: parse, build a session, join, sync, read."""
        args = self.args
        self.open += 1
        self.conns.add(ws)
        try:
            if args.drop_handshake:
                # Empty the handshake's headers once the handler has what it needs from
                # them (the edge reads the path and X-Forwarded-For at connect time).
                # Not ``ws.request = None``: websockets takes a None request to mean the
                # handshake is still to come and fails the next frame.  Emptying matters
                # because the suspended parser generator of ``ServerProtocol.parse()``
                # keeps the request referenced for the connection's lifetime.
                for message in (ws.request, ws.response):
                    if message is not None:
                        message.headers.clear()
            if args.variant == "bare":
                async for _frame in ws:
                    pass
                return
            parts = urlsplit(f"/v1/games/g{self.open // 2}/ws?token=t&v=0")
            match = WS_PATH.match(parts.path)
            assert match is not None
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            game_id, _kind = match.groups()
            remote = str(ws.remote_address[0])
            session: Any
            if args.variant == "edge":
                session = Session(
                    ws,
                    game_id,
                    "white" if self.open % 2 else "black",
                    remote=remote,
                    queue_limit=256,
                    rate=TokenBucket(20.0, 40.0, time.monotonic()),
                    flusher=self.flusher,
                )
            else:
                session = LeanSession(ws, game_id, "white", remote)
            self.sessions.add(session)
            self.per_ip[remote] = self.per_ip.get(remote, 0) + 1
            self.rooms.setdefault(game_id, set()).add(session)
            del query
            session.send(SYNC)  # (the edge keeps each socket's v in its Feed, edge/delivery.py)
            try:
                async for _frame in ws:
                    pass
            except ConnectionClosed:
                pass
            finally:
                session.stop()
                self.sessions.discard(session)
                self.rooms.get(game_id, set()).discard(session)
        finally:
            self.open -= 1
            self.conns.discard(ws)
            self.pongs.pop(ws, None)

    async def sweep(self, interval: float = 20.0, timeout: float = 20.0) -> None:
        """One keepalive for every socket (the cut proposed for websockets' per-socket
        task): each second, ping the next 1/``interval`` of the sockets; close with 1011
        a socket whose previous ping got no pong within ``timeout``.

        Per socket it keeps only the last ping's payload and time (bytes and a float,
        which the cycle collector does not track); the pong future is dropped, so it
        lives in ``ws.pending_pings`` only until the pong (websockets removes it then):
        nothing per socket lives long enough to reach the oldest GC generation.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            slot = int(now) % int(interval)
            for ws in [ws for ws in self.conns if hash(ws) % int(interval) == slot]:
                previous = self.pongs.get(ws)
                if previous is not None and previous[0] in ws.pending_pings:
                    if now - previous[1] > timeout:
                        await ws.close(1011, "keepalive ping timeout")
                    continue
                data = os.urandom(4)
                with contextlib.suppress(ConnectionClosed):
                    await ws.ping(data)
                    self.pongs[ws] = (data, now)

    async def settle(self, target: int) -> None:
        """Wait until ``target`` sockets are open and nothing has moved for a second."""
        while self.open < target:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5 + (21.0 if self.args.sweeper else 0.0))  # every socket pinged
        gc.collect()

    def measure(self) -> dict[str, Any]:
        gc.collect()
        types = collections.Counter(type(o).__name__ for o in gc.get_objects())
        snap = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        return {"rss": rss_bytes(), "types": types, "snap": snap, "open": self.open}

    async def main(self) -> None:
        args = self.args
        raise_nofile()
        if args.tracemalloc:
            tracemalloc.start(args.tracemalloc)
        async with serve(
            self.handle,
            "127.0.0.1",
            args.port,
            process_request=lambda _conn, _request: None,
            max_size=MAX_CLIENT_FRAME,
            max_queue=args.max_queue or None,
            write_limit=args.write_limit,
            ping_interval=None if args.sweeper else (args.ping_interval or None),
            ping_timeout=20,
            close_timeout=2,
            open_timeout=10,
            compression=None,
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(json.dumps({"ready": port}), flush=True)
            if args.sweeper:
                self.sweeper_task = asyncio.create_task(self.sweep())
            await self.settle(args.warm)
            before = self.measure()
            print(json.dumps({"baseline": before["open"]}), flush=True)
            await self.settle(args.warm + args.n)
            after = self.measure()
            report = self.report(before, after)
            print(json.dumps({"measured": True}), flush=True)
            report["closed"] = await self.cyclic_garbage(after["open"])
            print(json.dumps(report), flush=True)
            os._exit(0)

    async def cyclic_garbage(self, opened: int) -> dict[str, Any]:
        """Once the clients have closed every socket: what only the cycle collector frees.

        Objects of a closed socket that sit in reference cycles outlive it until a
        collection of their generation; for long-lived sockets that is a full one.
        """
        gc.collect()
        gc.disable()
        while self.open > 0:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        gc.set_debug(gc.DEBUG_SAVEALL)
        collected = gc.collect()
        types = collections.Counter(type(o).__name__ for o in gc.garbage)
        gc.garbage.clear()
        gc.set_debug(0)
        return {
            "cyclic_objects_per_closed_socket": round(collected / opened, 1),
            "types_per_closed_socket": {t: round(c / opened, 2) for t, c in types.most_common(15)},
        }

    def report(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        args = self.args
        n = after["open"] - before["open"]
        types = after["types"] - before["types"]
        report: dict[str, Any] = {
            "loop": args.loop,
            "variant": args.variant,
            "settings": {
                "max_queue": args.max_queue,
                "write_limit": args.write_limit,
                "ping_interval": args.ping_interval,
                "drop_handshake": args.drop_handshake,
                "tracemalloc": args.tracemalloc,
            },
            "n": n,
            "rss_kib_per_socket": round((after["rss"] - before["rss"]) / n / 1024, 2),
            "gc_objects_per_socket": round(sum(types.values()) / n, 1),
            "gc_types_per_socket": {t: round(c / n, 2) for t, c in types.most_common(25)},
        }
        if after["snap"] is not None:
            diff = after["snap"].compare_to(before["snap"], "traceback")
            by_owner: collections.Counter[str] = collections.Counter()
            by_line: collections.Counter[str] = collections.Counter()
            for stat in diff:
                if stat.size_diff <= 0:
                    continue
                frames = list(reversed(stat.traceback))  # innermost first
                inner = frames[0] if frames else None
                owner = next(
                    (f for f in frames if any(part in f.filename for part in OWN_FILES)),
                    inner,
                )
                if owner is not None:
                    by_owner[_where(owner)] += stat.size_diff
                if inner is not None:
                    by_line[_where(inner)] += stat.size_diff
            total = sum(s.size_diff for s in diff)
            report["traced_bytes_per_socket"] = round(total / n)
            report["by_owner_bytes_per_socket"] = {
                k: round(v / n) for k, v in by_owner.most_common(60)
            }
            report["by_line_bytes_per_socket"] = {
                k: round(v / n) for k, v in by_line.most_common(30)
            }
        return report


def _where(frame: Any) -> str:
    path = frame.filename
    for marker in ("site-packages/", "lib/python3", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    source = linecache.getline(frame.filename, frame.lineno).strip()[:70]
    return f"{path}:{frame.lineno} {source}"


async def clients_main(args: argparse.Namespace) -> None:
    """Open ``warm`` sockets, wait for a line on stdin, open ``n`` more, stay idle."""
    raise_nofile()
    url = f"ws://127.0.0.1:{args.port}/v1/games/g/ws"
    conns: list[ClientConnection] = []
    gate = asyncio.Semaphore(100)

    async def open_one(i: int) -> None:
        async with gate:
            ws = await connect(
                url,
                local_addr=(f"127.0.0.{2 + i // PER_SOURCE}", 0),
                ping_interval=None,
                compression="deflate" if args.client_deflate else None,
                open_timeout=60,
            )
        conns.append(ws)

    async def drain(ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    await asyncio.gather(*(open_one(i) for i in range(args.warm)))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    await asyncio.gather(*(open_one(args.warm + i) for i in range(args.n)))
    readers = [asyncio.create_task(drain(ws)) for ws in conns]
    await loop.run_in_executor(None, sys.stdin.readline)  # measured: close them all
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    await asyncio.Event().wait()
    del readers


def run_main(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, then the clients; return the server's report."""
    me = os.path.abspath(__file__)
    passed = ["--n", str(args.n), "--warm", str(args.warm), "--loop", args.loop]
    server_cmd = [sys.executable, me, "server", *passed, "--variant", args.variant]
    server_cmd += ["--max-queue", str(args.max_queue), "--write-limit", str(args.write_limit)]
    server_cmd += ["--ping-interval", str(args.ping_interval)]
    server_cmd += ["--tracemalloc", str(args.tracemalloc)]
    if args.drop_handshake:
        server_cmd.append("--drop-handshake")
    if args.sweeper:
        server_cmd.append("--sweeper")
    server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = json.loads(server.stdout.readline())["ready"]
    client_cmd = [sys.executable, me, "clients", *passed, "--port", str(port)]
    if args.client_deflate:
        client_cmd.append("--client-deflate")
    clients = subprocess.Popen(
        client_cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert clients.stdin is not None
    try:
        report: dict[str, Any] = {}
        for line in server.stdout:
            message = json.loads(line)
            if "baseline" in message:
                clients.stdin.write("go\n")
                clients.stdin.flush()
            elif "measured" in message:
                clients.stdin.write("close\n")
                clients.stdin.flush()
            elif "n" in message:
                report = message
        server.wait()
        return report
    finally:
        clients.kill()
        clients.wait()
        if server.poll() is None:
            server.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("run", "server", "clients"))
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="asyncio")
    parser.add_argument("--variant", choices=("edge", "lean", "bare"), default="edge")
    parser.add_argument("--n", type=int, default=4000, help="sockets measured")
    parser.add_argument("--warm", type=int, default=200, help="sockets before the baseline")
    parser.add_argument("--max-queue", type=int, default=16, help="0: unbounded (None)")
    parser.add_argument("--write-limit", type=int, default=32768)
    parser.add_argument("--ping-interval", type=float, default=20.0, help="0: no keepalive")
    parser.add_argument("--drop-handshake", action="store_true")
    parser.add_argument("--sweeper", action="store_true", help="one edge-wide keepalive task")
    parser.add_argument("--tracemalloc", type=int, default=0, help="frames; 0: off")
    parser.add_argument("--client-deflate", action="store_true", help="offer permessage-deflate")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.mode == "server":
        eventloop.run(EdgeShaped(args).main(), args.loop)
    elif args.mode == "clients":
        asyncio.run(clients_main(args))
    else:
        print(json.dumps(run_main(args), indent=1))


if __name__ == "__main__":
    main()
