"""Microbenchmark of the broker's command path, without the network: CPU per move.

It drives a real ``BrokerServer`` (not started: no TCP, no discovery) the way
its command loop does: each turn hands ``_on_bus`` the XSUB messages an edge
would have published (the edge's own encoder builds them), then ``_commit``
journals the batch (a real ``os.write`` to a temporary journal; no fsync, that
is the worker thread's) and ``_send_all`` sends what waited for the fsync on
a real XPUB socket (``inproc``, with no subscriber: libzmq drops the
messages, so the sends cost their Python and libzmq calls, not a copy).  So a
move pays for decode, the game, the journal record, the event, the ack and
the send, as in the broker; not for the awaited receive, the fsync hand-off
or the other loops (``xlmate bench`` measures the whole process).

Games are seeded random playouts (a pool of ``--pool``, 400 by default,
against the load generator's 64), ``--games`` in flight, each resigned after ``--max-plies``
plies like the load generator's (the first ones earlier, at random, so that
games end spread out), then replaced by a new one (opened through
``Authority.open`` for both seats, as the catch-up loop does; that is timed
too).  ``--per-turn`` commands per loop turn (about 15 under
``xlmate bench --games 100``, from the broker's batch and command counters),
in XSUB messages of ``--per-message`` commands.

Which tree is measured is whatever ``xlmate`` imports, so compare trees with
``PYTHONPATH``:

    PYTHONPATH=/tmp/before .venv/bin/python benchmarks/broker_core.py
    .venv/bin/python benchmarks/broker_core.py --tree before=/tmp/before --tree after=.
        # each tree in its own process, alternating, --reps times: us per move
    .venv/bin/python benchmarks/broker_core.py --tree before=/tmp/before --tree after=. \\
        --instructions     # CPU instructions per move under callgrind: slow but steady

``--instructions`` runs each tree under ``valgrind --tool=callgrind`` twice,
with ``--moves M`` and ``--moves 2M`` timed moves after the same warm-up,
and divides the difference by ``M``: setup and warm-up cancel out.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import chess

T0 = 1_700_000_000_000
EDGES = ("eu-west-8101", "us-east-8102")


def playout(rng: random.Random, max_plies: int) -> list[str]:
    """A random legal game in UCI, cut where it ends by itself or at ``max_plies``."""
    board = chess.Board()
    moves: list[str] = []
    while len(moves) < max_plies and not board.is_game_over(claim_draw=False):
        move = rng.choice(list(board.generate_legal_moves()))
        moves.append(move.uci())
        board.push(move)
    return moves


GAME_ID_LEN = 16  # every game id has this length, so a body is a template (below)
PLACEHOLDER = "#" * GAME_ID_LEN


class Driver:
    """Feeds one broker the bus traffic of ``games`` closed-loop games.

    Everything but the broker's own work is prepared ahead: each pooled
    script's command bodies are encoded once with a placeholder game id
    (msgpack writes a string's length before it, so substituting an id of the
    same length gives the bytes an edge would send), so that under callgrind
    the driver adds little to each move, and the same in every tree.
    """

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        import zmq
        import zmq.asyncio

        from xlmate.broker.server import BrokerServer
        from xlmate.config import BrokerConfig

        self.args = args
        self.rng = random.Random(args.seed)
        config = BrokerConfig(journal_dir=workdir, discovery=None, fsync="always")
        self.server = server = BrokerServer(config)
        server.journal.open()
        self.ctx = zmq.asyncio.Context()
        xpub = self.ctx.socket(zmq.XPUB)  # no subscriber: libzmq drops what it is sent
        xpub.bind("inproc://xpub")
        server.xpub = server.router = xpub  # (no catch-up replies are sent here)
        server._shadows[xpub] = zmq.Socket.shadow(xpub.underlying)
        self.now = T0
        self.serial = 0
        self.pool = [self._bodies(playout(self.rng, args.max_plies)) for _ in range(args.pool)]
        self.games: dict[str, list[bytes]] = {}  # game -> bodies still to send, last first
        for _ in range(args.games):
            self._new_game()
        for bodies in self.games.values():  # stagger the first games' ends (keep the resign)
            del bodies[1 : 1 + self.rng.randrange(len(bodies))]
        self.order = list(self.games)
        self.cursor = 0

    @staticmethod
    def _bodies(script: list[str]) -> list[bytes]:
        """The bus bodies of a game's commands (its moves, then a resignation), last first."""
        from xlmate.messages import Move, Resign, command_to_wire
        from xlmate.wire import CommandMsg, encode

        commands = [Move(uci) for uci in script] + [Resign()]
        bodies = [
            encode(
                CommandMsg(
                    game_id=PLACEHOLDER,
                    edge_id=EDGES[ply % 2],
                    seat="white" if ply % 2 == 0 else "black",
                    command_id=f"m{ply}",
                    command=command_to_wire(command),
                )
            )
            for ply, command in enumerate(commands)
        ]
        return bodies[::-1]

    def _new_game(self) -> None:
        from xlmate.broker.authority import Batch
        from xlmate.wire import OpenRequest

        self.serial += 1
        game_id = f"g{self.serial:06d}-{self.rng.randrange(1 << 30):08x}"
        assert len(game_id) == GAME_ID_LEN
        batch = Batch()
        for n, seat in enumerate(("white", "black")):
            request = OpenRequest(
                request_id=n, game_id=game_id, seat=seat, player_id=f"p-{seat}", clock=None
            )
            self.server.authority.open(request, self.now, batch)
        self.server._commit(batch, self.now)
        template = self.pool[self.serial % len(self.pool)]
        placeholder, real = PLACEHOLDER.encode(), game_id.encode()
        self.games[game_id] = [body.replace(placeholder, real) for body in template]

    def turn(self) -> int:
        """One loop turn: ``per_turn`` commands; returns how many."""
        from xlmate.broker.authority import Batch

        server, args, order, games = self.server, self.args, self.order, self.games
        count = len(order)
        chosen = [order[(self.cursor + n) % count] for n in range(args.per_turn)]
        self.cursor += args.per_turn
        bodies = [games[game_id].pop() for game_id in chosen]
        per = args.per_message
        messages = [[b"cmd", *bodies[i : i + per]] for i in range(0, len(bodies), per)]
        self.now += 2
        started = time.perf_counter_ns()
        batch = Batch()
        for frames in messages:
            server._on_bus(frames, self.now, batch)
        server._commit(batch, self.now)
        waiting, server._outbox = server._outbox, []
        server.journal.bytes_synced = server.journal.bytes_written  # as if fsynced
        server._send_all(waiting)
        self.elapsed_ns += time.perf_counter_ns() - started
        live = server.authority.games
        for game_id in chosen:
            if game_id not in live and game_id in games:  # it ended: a new one takes its place
                del games[game_id]
                order.remove(game_id)
                self._new_game()
                order.append(next(reversed(games)))
        return len(bodies)

    def run(self, moves: int) -> float:
        """Play ``moves`` commands after the warm-up; microseconds per command."""
        self.elapsed_ns = 0
        done = 0
        while done < self.args.warmup:
            done += self.turn()
        self.elapsed_ns = 0
        done = 0
        while done < moves:
            done += self.turn()
        return self.elapsed_ns / 1000 / max(1, done)


def child(args: argparse.Namespace) -> None:
    """Measure the tree on ``sys.path`` and print one JSON line."""
    asyncio.set_event_loop(asyncio.new_event_loop())  # zmq.asyncio wants a loop
    with tempfile.TemporaryDirectory() as tmp:
        driver = Driver(args, Path(tmp))
        gc.collect()
        results = [driver.run(args.moves) for _ in range(max(1, args.reps))]
        print(json.dumps({"us_per_move": results}))


def run_tree(path: str, extra: list[str], *, callgrind: bool = False) -> Any:
    env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
    command = [sys.executable, __file__, "--child", *extra]
    if callgrind:
        out = tempfile.mktemp(suffix=".callgrind")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        for line in done.stderr.splitlines():
            if "Collected" in line:
                os.unlink(out)
                return int(line.split()[-1])
        raise SystemExit("no instruction count from callgrind:\n" + done.stderr[-2000:])
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=100)
    parser.add_argument("--max-plies", type=int, default=160)
    parser.add_argument("--pool", type=int, default=400, help="distinct playouts, reused")
    parser.add_argument("--per-turn", type=int, default=15)
    parser.add_argument("--per-message", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20_000, help="commands before timing")
    parser.add_argument("--moves", type=int, default=40_000, help="commands timed per rep")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tree", action="append", default=[], help="name=path (repeat)")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or not args.tree:
        child(args)
        return
    common = [
        f"--games={args.games}",
        f"--max-plies={args.max_plies}",
        f"--pool={args.pool}",
        f"--per-turn={args.per_turn}",
        f"--per-message={args.per_message}",
        f"--warmup={args.warmup}",
        f"--seed={args.seed}",
    ]
    trees = [tuple(t.split("=", 1)) for t in args.tree]
    if args.instructions:
        moves = args.moves
        for name, path in trees:
            one = run_tree(path, [*common, f"--moves={moves}", "--reps=1"], callgrind=True)
            two = run_tree(path, [*common, f"--moves={moves}", "--reps=2"], callgrind=True)
            print(f"{name:>12}: {(two - one) / moves:10.0f} instructions per command")
        return
    results: dict[str, list[float]] = {name: [] for name, _ in trees}
    for rep in range(args.reps):
        for name, path in trees if rep % 2 == 0 else trees[::-1]:
            out = run_tree(path, [*common, f"--moves={args.moves}", "--reps=1"])
            results[name] += out["us_per_move"]
    first = None
    for name, values in results.items():
        median = statistics.median(values)
        first = first or median
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:>12}: {median:6.1f} us per command ({median / first:.2f}x)  each {each}")


if __name__ == "__main__":
    main()
