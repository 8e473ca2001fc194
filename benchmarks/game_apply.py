"""Microbenchmark of ``Game.apply`` for moves: microseconds per move on seeded random games.

It plays ``--games`` random legal games (seeded, at most ``--max-plies``
plies each, ending early when the game ends) through ``broker.game.Game``
and prints the median time per applied move over ``--reps`` repetitions.

``--baseline REV`` (a git revision such as ``HEAD``, or a path to a copy of
``broker/game.py``) loads that other version of the module under another name
(it imports the current ``broker.fastchess``, if it imports one at all)
and times both in the same run, alternating which goes first, so machine
noise hits both alike.  Before timing it checks that both versions produce
exactly the same events for every game (clocks included), so a speed-up
cannot hide a change of behaviour.

    .venv/bin/python benchmarks/game_apply.py                       # current only
    .venv/bin/python benchmarks/game_apply.py --baseline HEAD       # before vs after
    .venv/bin/python benchmarks/game_apply.py --baseline HEAD --instructions
        # CPU instructions per move under valgrind instead of time: slow but steady

Timings on a shared machine are noisy.  ``--instructions`` runs this script
under ``valgrind --tool=callgrind`` for each version, once with ``--reps 0``
and once with ``--reps 2``, and divides the difference (two timed passes) by
the moves played, which leaves out the setup.

Module-level caches of ``broker.fastchess`` (parsed moves, FEN rank texts)
are warm when timing starts, as they are in a broker that has run for a while.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import chess

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import xlmate.broker.game as current  # noqa: E402
from baseline_module import load_baseline  # noqa: E402
from xlmate.messages import Move  # noqa: E402

T0 = 1_700_000_000_000
STEP_MS = 1_000  # between moves: well inside the 10-minute clocks, so no flag falls


def random_games(count: int, max_plies: int, seed: int) -> list[list[Move]]:
    """Seeded random legal games as ``Move`` commands, cut where the game itself ends."""
    rng = random.Random(seed)
    games: list[list[Move]] = []
    for index in range(count):
        game = current.Game(f"g{index}", current.TimeControl(600_000, 0), T0)
        moves: list[Move] = []
        for ply in range(max_plies):
            legal = sorted(move.uci() for move in game.board.legal_moves)
            command = Move(rng.choice(legal))
            game.apply(game.turn, command, T0 + (ply + 1) * STEP_MS)
            moves.append(command)
            if game.status == "over":
                break
        games.append(moves)
    return games


def play_all(module: ModuleType, games: list[list[Move]]) -> list[list[dict[str, Any]]]:
    """Every event of every game under ``module`` (for the equality check)."""
    out: list[list[dict[str, Any]]] = []
    for index, moves in enumerate(games):
        game = module.Game(f"g{index}", module.TimeControl(600_000, 0), T0)
        events: list[dict[str, Any]] = []
        for ply, command in enumerate(moves):
            events += game.apply(game.turn, command, T0 + (ply + 1) * STEP_MS).events
        out.append(events)
    return out


def time_once(module: ModuleType, games: list[list[Move]]) -> float:
    """Seconds spent inside ``Game.apply`` playing every game once on fresh games."""
    fresh = [module.Game(f"g{i}", module.TimeControl(600_000, 0), T0) for i in range(len(games))]
    colors = ("white", "black")
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for game, moves in zip(fresh, games, strict=True):
            apply = game.apply
            now = T0
            for ply, command in enumerate(moves):
                now += STEP_MS
                apply(colors[ply & 1], command, now)
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def instructions(argv: Sequence[str], version: str, plies: int) -> float:
    """Instructions per move of ``version``: callgrind totals at two rep counts, differenced."""
    totals: list[int] = []
    for reps in (0, 2):
        with tempfile.TemporaryDirectory() as scratch:
            run = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={scratch}/callgrind.out",
                    sys.executable,
                    __file__,
                    *argv,
                    "--only",
                    version,
                    "--no-check",
                    "--reps",
                    str(reps),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
        collected = [line for line in run.stderr.splitlines() if "Collected :" in line]
        totals.append(int(collected[-1].split(":")[-1].strip().replace(",", "")))
    return (totals[1] - totals[0]) / 2 / plies


def main() -> None:
    """Parse the options, check equal behaviour, time, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=200, help="random games (default 200)")
    parser.add_argument("--max-plies", type=int, default=200, help="plies per game at most")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per version")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the games")
    parser.add_argument("--baseline", help="git revision or file of broker/game.py to compare")
    parser.add_argument("--only", choices=["current", "baseline"], help="time one version only")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions with callgrind instead"
    )
    # For the runs under valgrind: the parent has checked already.
    parser.add_argument("--no-check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    games = random_games(args.games, args.max_plies, args.seed)
    plies = sum(len(moves) for moves in games)
    print(f"{len(games)} games, {plies} moves (seed {args.seed}, python-chess {chess.__version__})")

    versions: dict[str, ModuleType] = {"current": current}
    if args.baseline is not None:
        versions["baseline"] = load_baseline(args.baseline, "broker/game.py", "game_baseline")
        if not args.no_check:
            if play_all(versions["baseline"], games) != play_all(current, games):
                raise SystemExit("the two versions produce different events")
            print(f"events identical to baseline {args.baseline}")
    if args.only is not None:
        versions = {args.only: versions[args.only]}

    if args.instructions:
        argv = ["--games", str(args.games), "--max-plies", str(args.max_plies)]
        argv += ["--seed", str(args.seed)]
        if args.baseline is not None:
            argv += ["--baseline", args.baseline]
        counts = {name: instructions(argv, name, plies) for name in versions}
        for name, count in counts.items():
            print(f"{name:>8}: {count:,.0f} instructions/move (callgrind)")
        if len(counts) == 2:
            print(f"current/baseline: {counts['current'] / counts['baseline']:.3f}")
        return

    samples: dict[str, list[float]] = {name: [] for name in versions}
    for module in versions.values():
        time_once(module, games)  # warm-up
    names = list(versions)
    for rep in range(args.reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            samples[name].append(time_once(versions[name], games) / plies * 1e6)

    if args.reps < 1:
        return
    for name, values in samples.items():
        spread = f"min {min(values):.2f}, max {max(values):.2f}"
        print(f"{name:>8}: {statistics.median(values):.2f} us/move median ({spread})")
    if len(samples) == 2:
        ratio = statistics.median(samples["current"]) / statistics.median(samples["baseline"])
        print(f"current/baseline: {ratio:.3f}")


if __name__ == "__main__":
    main()
