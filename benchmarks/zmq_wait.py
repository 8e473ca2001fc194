"""Microbenchmark: CPU of the event-loop thread per wake-up, awaited pyzmq receive vs ``Readable``.

The broker's command loop sleeps until the XSUB socket has a message, then
reads what is queued.  This measures what the sleeping and waking costs the
loop's thread, on uvloop as in the broker: a sender thread pushes one
message at a time with a pause between (so every message is one wake-up),
and the loop either awaits ``zmq.asyncio``'s ``recv_multipart`` or waits with
``xlmate.zmqnow.Readable`` and reads with a non-blocking ``recv_multipart``
on a plain socket.  Only the loop thread's CPU time counts
(``time.thread_time``), so the sender and other processes on the machine
do not; variants alternate, ``--reps`` times each, medians.

    .venv/bin/python benchmarks/zmq_wait.py --messages 5000 --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import uvloop
import zmq
import zmq.asyncio

from xlmate.zmqnow import Readable


def sender(ctx: zmq.Context[zmq.Socket[bytes]], address: str, count: int, gap_s: float) -> None:
    sock = ctx.socket(zmq.PUSH)
    sock.connect(address)
    for _ in range(count):
        sock.send_multipart([b"cmd", b"x" * 80])
        deadline = time.perf_counter() + gap_s
        while time.perf_counter() < deadline:  # (sleep() is too coarse for 100 us)
            pass
    sock.close(linger=1000)


async def one_run(kind: str, count: int, gap_s: float, serial: int) -> float:
    """Loop-thread CPU microseconds per message for one variant."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.PULL)
    address = f"inproc://wait-{serial}"
    sock.bind(address)
    plain = zmq.Socket.shadow(sock.underlying)
    thread = threading.Thread(
        target=sender, args=(zmq.Context.shadow(ctx.underlying), address, count, gap_s)
    )
    thread.start()
    received = 0
    started = time.thread_time()
    if kind == "awaited":
        while received < count:
            await sock.recv_multipart()
            received += 1
            while True:  # then drain what is queued, as the broker does
                try:
                    plain.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                received += 1
    else:
        async with Readable(plain) as readable:
            while received < count:
                await readable.wait()
                while True:
                    try:
                        plain.recv_multipart(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    received += 1
    used = time.thread_time() - started
    thread.join()
    sock.close(linger=0)
    ctx.term()
    return used / count * 1e6


async def main(args: argparse.Namespace) -> None:
    results: dict[str, list[float]] = {"awaited": [], "readable": []}
    serial = 0
    for rep in range(args.reps):
        for kind in ("awaited", "readable") if rep % 2 == 0 else ("readable", "awaited"):
            serial += 1
            results[kind].append(await one_run(kind, args.messages, args.gap_us / 1e6, serial))
    for kind, values in results.items():
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"{kind:>9}: {statistics.median(values):5.1f} us loop CPU per message  each {each}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--gap-us", type=float, default=200.0)
    parser.add_argument("--reps", type=int, default=5)
    uvloop.run(main(parser.parse_args()))
