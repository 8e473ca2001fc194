"""``xlmate bench``: its scripted games, and tiny real runs against a cluster and a relay."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import XLMATE, free_port, wait_until
from xlmate.broker.game import Game, TimeControl
from xlmate.messages import Move
from xlmate_bench.games import game_pool

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 50  # a tiny run takes ~15 s; the limit only stops a hung one


def run_bench(cwd: Path, *args: str) -> dict[str, Any]:
    """Run ``xlmate bench ... --json --quiet`` and return its report."""
    done = subprocess.run(
        [XLMATE, "bench", *args, "--json", "--quiet"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def assert_sane(report: dict[str, Any]) -> None:
    """Moves were measured, latencies are ordered, nothing failed."""
    assert report["moves"] > 0 and report["moves_per_s"] > 0
    lat = report["latency_ms"]
    assert lat["count"] == report["moves"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert report["errors"]["total"] == 0, (report["errors"], report["samples"])


def test_scripts_are_legal_and_end_where_the_broker_ends_the_game() -> None:
    """Every scripted move is legal, and a game is over after its last move iff it says so."""
    for number, script in enumerate(game_pool(seed=7, count=12, max_plies=400)):
        game = Game(f"g{number}", TimeControl.from_claim(None), 0)
        for ply, uci in enumerate(script.moves):
            assert game.status != "over", f"game {number} ended before ply {ply}"
            game.apply("white" if ply % 2 == 0 else "black", Move(uci), 1 + ply)
        assert (game.status == "over") == script.ends_itself


def test_scripts_are_the_same_for_the_same_seed() -> None:
    """The same seed gives the same games, so every target plays the same moves."""
    assert game_pool(3, 4, 60) == game_pool(3, 4, 60)
    assert game_pool(3, 4, 60) != game_pool(4, 4, 60)


def test_tiny_closed_loop_run_against_its_own_cluster(tmp_path: Path) -> None:
    """A 3-game run starts its own 2-edge cluster, holds idle sockets, and reports sane numbers."""
    report = run_bench(
        tmp_path,
        "--games",
        "3",
        "--duration",
        "3",
        "--warmup",
        "1",
        # The edges allow 20 messages/s per socket: thinking keeps 3 games under it.
        "--think-ms",
        "60",
        "--idle-connections",
        "10",
        "--idle-seconds",
        "1",
        "--workdir",
        str(tmp_path / "cluster"),
    )
    assert_sane(report)
    assert report["ack_latency_ms"]["count"] > 0
    roles = sorted(p["role"] for p in report["processes"])
    assert roles == ["broker", "discovery", "edge", "edge", "loadgen"]
    for proc in report["processes"]:
        assert proc["pid"] > 0 and proc["rss_mib"] > 0 and proc["cpu_s"] >= 0
    idle = report["idle"]
    assert idle["connections"] == 10
    assert sorted(m["connections"] for m in idle["memory"]) == [5, 5]
    assert {p["role"] for p in idle["processes"]} >= {"broker", "edge"}


@pytest.fixture
def relay(tmp_path: Path) -> Any:
    """``benchmarks/relay_single.py`` on a free port, stopped after the test."""
    port = free_port()
    with open(tmp_path / "relay.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "relay_single.py"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def listening() -> bool:
        assert proc.poll() is None, (tmp_path / "relay.log").read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 15, "the relay to listen")
        yield proc, f"ws://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)


def test_tiny_run_against_a_plain_relay(tmp_path: Path, relay: Any) -> None:
    """--target-url drives a relay the same way; a move lands when the opponent has it."""
    proc, url = relay
    report = run_bench(
        tmp_path,
        "--target-url",
        url,
        "--games",
        "3",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--watch",
        f"relay={proc.pid}@{url}",
    )
    assert_sane(report)
    assert report["ack_latency_ms"] is None  # relays do not ack
    assert [p["role"] for p in report["processes"]] == ["loadgen", "relay"]


def test_without_the_bench_extra_xlmate_bench_says_what_to_install(tmp_path: Path) -> None:
    """With psutil (the bench extra) not importable, ``xlmate bench`` fails with one clear line."""
    # sys.modules[name] = None is how Python blocks an import: `import psutil` raises
    # ModuleNotFoundError, exactly as when the extra is not installed.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['psutil'] = None\n")
    done = subprocess.run(
        [XLMATE, "bench", "--games", "1", "--quiet"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "Error: xlmate bench needs the bench extra (psutil is missing): pip install -e '.[bench]'"
    ]
    assert done.stdout == ""
