#!/usr/bin/env python3
"""Does the edge's GC freezer leak what closed sockets leave?  Rounds of open, hold, close.

A real broker and one real edge (``xlmate`` processes, the edge's default loop and
freezer unless ``--env`` says otherwise); each round opens ``--sockets`` player
sockets (both seats of games nobody moves in), holds them long enough to be frozen
(several freezer rounds), closes them all from the client side, waits, and reads the
edge's ``/metrics``: ``xlmate_gc_frozen_objects``, the tracked objects it holds, and
its connections.  Frozen objects that grow round after round with no socket open are
what a closed socket left in frozen cycles (BENCHMARKS.md, "The GC pause").

    benchmarks/freeze_leak.py --sockets 2000 --rounds 4
    benchmarks/freeze_leak.py --close abort                  # clients that just vanish
    benchmarks/freeze_leak.py --env XLMATE_LOOP=asyncio      # no freezer there: the control
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from xlmate.tokens import mint_seat_token
from xlmate_bench.cluster import Cluster, http_get, raise_nofile

HOLD_S = 4.0  # four freezer rounds: every long-lived object of a socket is frozen
SETTLE_S = 4.0  # after closing: handlers end, the freezer runs its young collections


def scrape(base: str) -> dict[str, float]:
    """The edge's unlabelled samples."""
    status, body = http_get(f"{base}/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if not sample.labels:
                out[sample.name] = sample.value
    return out


async def open_sockets(url: str, secret: str, count: int) -> list[ClientConnection]:
    """``count`` player sockets, 900 per source address (the edge allows 1,000)."""
    links: list[ClientConnection] = []
    gate = asyncio.Semaphore(100)

    games = {n: uuid.uuid4().hex[:12] for n in range(0, count, 2)}  # both seats: one game

    async def seat(number: int) -> None:
        game = f"leak-{games[number - number % 2]}"
        color = "white" if number % 2 == 0 else "black"
        token = mint_seat_token(secret, game, color)
        address = f"127.0.0.{2 + number // 900}"
        async with gate:
            ws = await connect(
                f"{url}/v1/games/{game}/ws?token={token}",
                local_addr=(address, 0),
                compression=None,
                ping_interval=None,
            )
            await ws.recv()
            links.append(ws)

    await asyncio.gather(*(seat(n) for n in range(count)))
    return links


async def close_all(links: list[ClientConnection], how: str) -> None:
    """Close every socket: a closing handshake each, or (``abort``) end the TCP connection."""
    if how == "abort":
        for ws in links:
            ws.transport.abort()
    else:
        await asyncio.gather(*(ws.close() for ws in links))


async def rounds(cluster: Cluster, base: str, url: str, sockets: int, count: int, how: str) -> None:
    before = scrape(base)
    print(f"start: frozen {before.get('xlmate_gc_frozen_objects', 0):.0f}", flush=True)
    for number in range(1, count + 1):
        started = time.perf_counter()
        links = await open_sockets(url, cluster.secret, sockets)
        opened = time.perf_counter() - started
        await asyncio.sleep(HOLD_S)
        held = scrape(base)
        await close_all(links, how)
        await asyncio.sleep(SETTLE_S)
        after = scrape(base)
        print(
            f"round {number}: {sockets} sockets opened in {opened:.1f} s; "
            f"held: frozen {held['xlmate_gc_frozen_objects']:.0f}, "
            f"connections {held['xlmate_edge_connections']:.0f}; "
            f"closed: frozen {after['xlmate_gc_frozen_objects']:.0f}, "
            f"connections {after['xlmate_edge_connections']:.0f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--close", choices=("clean", "abort"), default="clean")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the edge")
    args = parser.parse_args()
    raise_nofile()
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start_broker()
            edge = cluster.start_edge("eu-west", env=env)
            time.sleep(2)
            asyncio.run(rounds(cluster, edge.http, edge.url, args.sockets, args.rounds, args.close))
        finally:
            cluster.terminate(15)  # SIGTERM: exit handlers run (e.g. benchmarks/lagprobe)
            cluster.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
