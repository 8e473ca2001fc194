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
from xlmate_bench import nodeapp
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
    # the relay's loop-lag probe, read from its /metrics, and the load generator's own
    lags = {lag["name"]: lag for lag in report["loop_lag"]}
    assert set(lags) == {"loadgen", "relay"}
    assert all(lag["samples"] > 0 for lag in lags.values())


def start_process(args: list[str], log: Path, port: int) -> subprocess.Popen[bytes]:
    """Start ``args`` and wait until it listens on loopback ``port``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def listening() -> bool:
        assert proc.poll() is None, log.read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, 20, f"{args[0]} to listen on {port}")
    return proc


def test_tiny_run_against_the_socketio_baseline(tmp_path: Path) -> None:
    """--relay-protocol socketio drives two Socket.IO 4 + Redis adapter processes."""
    app = nodeapp.install(tmp_path / "socketio")  # npm ci of the pinned baseline
    procs: list[subprocess.Popen[bytes]] = []
    try:
        redis_port = free_port()
        procs.append(
            start_process(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
                tmp_path / "redis.log",
                redis_port,
            )
        )
        args = []
        for side in ("a", "b"):
            port = free_port()
            node = start_process(
                [
                    *("node", str(app / "server.js"), "--port", str(port)),
                    *("--redis-url", f"redis://127.0.0.1:{redis_port}"),
                ],
                tmp_path / f"sio-{side}.log",
                port,
            )
            procs.append(node)
            url = f"ws://127.0.0.1:{port}"
            args += ["--target-url", url, "--watch", f"sio-{side}={node.pid}@{url}"]
        report = run_bench(
            tmp_path,
            *args,
            *("--relay-protocol", "socketio", "--games", "3", "--think-ms", "20"),
            *("--duration", "2", "--warmup", "0.5"),
        )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
    assert_sane(report)  # white on one process, black on the other: moves crossed Redis
    assert [p["name"] for p in report["processes"]] == ["loadgen", "sio-a", "sio-b"]
    assert all(p["cpu_s"] > 0 for p in report["processes"])
    lags = {lag["name"]: lag for lag in report["loop_lag"]}
    assert set(lags) == {"loadgen", "sio-a", "sio-b"}  # Node's probe answers /metrics too
    assert all(lag["samples"] > 0 for lag in lags.values())


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


def test_tiny_scaling_run_splits_idle_and_move_cost(tmp_path: Path) -> None:
    """--scaling with --level-idle measures each level idle first: idle and move cost per level."""
    report = run_bench(
        tmp_path,
        "--scaling",
        "2,4",
        "--rate",
        "10",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--level-idle",
        "1",
    )
    levels = report["scaling"]
    assert [level["games"] for level in levels] == [2, 4]
    for level in levels:
        assert level["moves"] > 0 and level["errors"] == 0
        assert level["sockets"] == 2 * level["games"]
        assert level["idle_window_s"] > 0 and level["idle_cpu_s"] >= 0
        assert level["idle_us_per_socket_s"] >= 0
        rate = level["idle_cpu_s"] / level["idle_window_s"]
        expected = (level["system_cpu_s"] - rate * level["window_s"]) / level["moves"]
        assert level["move_ms"] == pytest.approx(1000 * expected, rel=0.01, abs=0.01)  # rounding
        assert {p["role"] for p in level["idle_processes"]} >= {"broker", "edge"}
    assert set(report["move_cost_ratios"]) <= {"4/2"}
