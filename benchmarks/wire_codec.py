"""Microbenchmark of the bus codec on the messages every move costs: microseconds each.

Per move the broker decodes a ``cmd``, encodes one or two ``ev`` (the last
carrying the ack) and journals a ``cmd`` record; every subscribed edge decodes
the ``ev`` messages.  This times those operations on ``xlmate.wire`` and, with
``--baseline REV``, on ``xlmate/wire.py`` as of git revision ``REV`` (loaded
under another name), alternating which goes first so machine noise hits both
alike.  It first checks that both versions write the same bytes.

    .venv/bin/python benchmarks/wire_codec.py                     # current only
    .venv/bin/python benchmarks/wire_codec.py --baseline main     # before vs after

A baseline from before the messages had named attributes (fields named by
their wire keys, ``EventMsg(g=..., a=[...])``) is built from the current
message's wire map, so both versions encode and decode the same message.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import xlmate.wire as current  # noqa: E402
from baseline_module import load_baseline  # noqa: E402

JSON = (
    b'{"type":"move","gameId":"Vq3xT0aZ9w","v":12,"uci":"g1f3","san":"Nf3","from":"g1",'
    b'"to":"f3","promotion":null,"fen":"rnbqkbnr/pppp1ppp/8/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R'
    b' b KQkq - 1 2","by":"white","clock":{"white":298000,"black":300000,"increment":2000,'
    b'"running":"black"}}'
)
MESSAGES: dict[str, Any] = {
    "cmd": current.CommandMsg(
        game_id="Vq3xT0aZ9w",
        edge_id="eu-west-8101",
        seat="white",
        command_id="17",
        command={"t": "move", "u": "g1f3"},
    ),
    "ev": current.EventMsg(game_id="Vq3xT0aZ9w", v=12, json=JSON),
    "ev+ack": current.EventMsg(
        game_id="Vq3xT0aZ9w",
        v=12,
        json=JSON,
        ack=current.AckRef("eu-west-8101", "white", "17"),
    ),
}


def as_version(module: ModuleType, message: Any) -> Any:
    """``message`` as a message of ``module`` (named fields, or the older wire-key fields)."""
    if hasattr(module, "BUS"):
        return message
    raw = current.BUS.to_map(message)
    kind = raw.pop("k")
    cls = next(c for c in vars(module).values() if getattr(c, "KIND", None) == kind)
    return cls(**raw)


def operations(module: ModuleType) -> dict[str, Callable[[], Any]]:
    """The timed operations of one version, by name."""
    ops: dict[str, Callable[[], Any]] = {}
    for name, message in MESSAGES.items():
        built = as_version(module, message)
        data = module.encode(built)
        ops[f"encode {name}"] = lambda m=built: module.encode(m)
        ops[f"decode {name}"] = lambda d=data: module.decode(d)
    return ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="git revision of xlmate/wire.py to compare")
    parser.add_argument("--number", type=int, default=100_000, help="calls per timing")
    parser.add_argument("--reps", type=int, default=7, help="timings per operation and version")
    args = parser.parse_args()
    versions = {"current": operations(current)}
    if args.baseline:
        baseline = load_baseline(args.baseline, "xlmate/wire.py", "wire_baseline")
        for name, message in MESSAGES.items():
            old = baseline.encode(as_version(baseline, message))
            assert old == current.encode(message), f"{name}: the bytes differ from the baseline"
        print(f"bytes identical to baseline {args.baseline}")
        versions["baseline"] = operations(baseline)
    samples: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        order = list(versions) if rep % 2 == 0 else list(reversed(versions))
        for version in order:
            for op, call in versions[version].items():
                seconds = timeit.timeit(call, number=args.number)
                samples.setdefault((op, version), []).append(seconds / args.number * 1e6)
    for op in versions["current"]:
        line = f"{op:14s} current {statistics.median(samples[(op, 'current')]):5.2f} us"
        if "baseline" in versions:
            now = statistics.median(samples[(op, "current")])
            before = statistics.median(samples[(op, "baseline")])
            line += f"   baseline {before:5.2f} us   current/baseline {now / before:.3f}"
        print(line)


if __name__ == "__main__":
    main()
