"""Logs an operator can use (issue 12): JSON events from real processes, no secrets, clean stops."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.integration.cluster import XLMATE, Cluster, eventually, free_port, http_json, wait_until
from xlmate.client import GameClient
from xlmate.tokens import mint_seat_token

SCHOLARS_MATE = ["e2e4", "e7e5", "f1c4", "b8c6", "d1h5", "g8f6", "h5f7"]
REPO = Path(__file__).resolve().parents[2]


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a process's log, each of which must be one JSON object."""
    records = []
    for line in text.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        for key in ("time", "level", "component", "node", "event", "msg"):
            assert key in record, (key, line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), line
        records.append(record)
    return records


def events(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    found = []
    for proc in cluster.procs:
        found += [r for r in json_lines(proc.log()) if r["event"] == name]
    return found


async def test_json_logs_carry_one_event_per_operator_fact(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSON logs: each operator fact is one event with its fields, no token anywhere, exit 0."""
    monkeypatch.setenv("XLMATE_LOG_FORMAT", "json")
    c = cluster
    c.start_discovery()
    c.start_broker()
    edge = c.start_edge("eu-west")
    c.wait_registered(edge)
    game = c.new_game("5+3")
    gid = game["gameId"]
    tokens = [game["white"]["token"], game["black"]["token"]]

    white = await GameClient(gid, token=tokens[0], edge_url=edge.url).connect()
    black = await GameClient(gid, token=tokens[1], edge_url=edge.url).connect()
    players = [white, black]
    for ply, uci in enumerate(SCHOLARS_MATE):
        await players[ply % 2].move(uci)
    await white.wait_for_v(len(SCHOLARS_MATE) + 1)
    await white.close()
    await black.close()

    forged = mint_seat_token("another-secret-entirely-0123456789abcdef", gid, "white")
    async with connect(f"{edge.url}/v1/games/{gid}/ws?token={forged}") as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 4001

    async with connect(f"{edge.url}/v1/games/{gid}/spectate") as flooder:
        with pytest.raises(ConnectionClosed):
            for _ in range(1000):
                await flooder.send('{"type":"ping"}')
            await flooder.recv()
            while True:
                await flooder.recv()
    assert flooder.close_code == 4008

    await eventually(lambda: events(c, "client_closed"), 10, "the flood to be logged")
    await eventually(lambda: len(events(c, "conn_closed")) >= 3, 10, "closes to be logged")
    assert edge.proc.alive()
    edge.proc.signal(signal.SIGTERM)
    assert edge.proc.wait_exit(15) == 0, "a clean stop is exit code 0"
    await eventually(lambda: events(c, "edge_left"), 10, "discovery to log the edge leaving")

    opened = [e for e in events(c, "conn_opened") if e["game"] == gid]
    assert {e["seat"] for e in opened} >= {"white", "black", "spectator"}
    closed = [e for e in events(c, "conn_closed") if e["game"] == gid]
    assert all({"code", "reason", "by", "duration_s", "seat"} <= e.keys() for e in closed)
    assert {e["code"] for e in closed} >= {1000, 4008}
    (rejected,) = events(c, "token_rejected")
    assert rejected["code"] == 4001 and rejected["reason"] and rejected["component"] == "edge"
    assert rejected["node"] == edge.edge_id and rejected["level"] == "warning"
    (flood,) = events(c, "client_closed")
    assert (flood["why"], flood["code"], flood["game"]) == ("flooding", 4008, gid)
    (ended,) = events(c, "game_ended")
    assert (ended["result"], ended["reason"], ended["moves"]) == ("1-0", "checkmate", 7)
    assert ended["component"] == "broker"
    (joined,) = events(c, "edge_joined")
    assert (joined["edge"], joined["url"], joined["component"]) == (
        edge.edge_id,
        edge.url,
        "discovery",
    )
    (left,) = events(c, "edge_left")
    assert left["edge"] == edge.edge_id and left["why"] in ("goodbye", "evicted")
    (recovered,) = events(c, "broker_recovered")
    assert recovered["live_games"] == 0 and "records" in recovered
    assert {e["component"] for e in events(c, "curve")} == {"broker", "discovery", "edge"}
    assert all(e["curve"] is False for e in events(c, "curve"))

    for proc in (c.broker, c.discovery):
        assert proc is not None
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(15) == 0
    everything = "\n".join(p.log() for p in c.procs)
    for token in [*tokens, forged]:
        for part in token.split("."):
            assert part not in everything, "a seat token reached a log line"


async def test_broker_recovery_is_one_event_with_its_counts(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker restarted over a journal with a live game logs broker_recovered live_games=1."""
    monkeypatch.setenv("XLMATE_LOG_FORMAT", "json")
    c = cluster
    c.start_broker()
    edge = c.start_edge("eu-west")
    game = c.new_game("5+3")
    white = GameClient(game["gameId"], token=game["white"]["token"], edge_url=edge.url)
    await white.connect()
    await white.move("e2e4")
    await white.close()
    assert c.broker is not None
    c.broker.kill()
    c.restart(c.broker)
    records = [r for r in json_lines(c.broker.log()) if r["event"] == "broker_recovered"]
    assert records and records[-1]["live_games"] == 1 and records[-1]["records"] >= 2


def test_debug_level_dumps_no_headers_and_no_tokens(tmp_path: Path) -> None:
    """At debug level neither discovery nor an edge logs request headers or a query's token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLMATE_")}
    dport, eport = free_port(), free_port()
    log_path = tmp_path / "debug.log"
    with open(log_path, "w") as log:
        procs = [
            subprocess.Popen(
                [XLMATE, "--log-level", "debug", *args],
                env=env,
                stdout=log,
                stderr=log,
            )
            for args in (
                ["discovery", "--port", str(dport), "--rep-port", "0"],
                ["edge", "--region", "eu", "--port", str(eport), "--discovery", ""],
            )
        ]
    try:
        for port in (dport, eport):
            wait_until(
                lambda port=port: http_json(f"http://127.0.0.1:{port}/healthz")[0] in (200, 503),
                15,
                "both processes to answer",
            )
        request = urllib.request.Request(
            f"http://127.0.0.1:{dport}/v1/nodes", headers={"X-Probe": "header-value-0xfeed"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        with pytest.raises(OSError):
            urllib.request.urlopen(  # a plain GET on a socket path: 426, after a full parse
                f"http://127.0.0.1:{eport}/v1/games/g1/ws?token=tok-in-query-0xbeef", timeout=5
            )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=15) for proc in procs]
    text = log_path.read_text()
    assert codes == [0, 0], text
    assert "DEBUG" in text, "the processes did log at debug level"
    assert "0xfeed" not in text and "X-Probe" not in text, text
    assert "0xbeef" not in text, text


def test_honcho_lines_have_one_timestamp_and_a_clean_stop_is_rc_0(tmp_path: Path) -> None:
    """The repo's Procfile under honcho: one timestamp a line; Ctrl-C stops each with rc=0."""
    procfile = (REPO / "Procfile").read_text()
    ports = {p: str(free_port()) for p in set(re.findall(r"--[a-z-]*port (\d+)", procfile))}
    procfile = re.sub(r"\b(\d{4,5})\b", lambda m: ports.get(m.group(1), m.group(1)), procfile)
    (tmp_path / "Procfile").write_text(procfile)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLMATE_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    # The edges' lines use the default broker and discovery ports: point them at the new ones.
    for option, default in (("XSUB", "5555"), ("XPUB", "5556"), ("CATCHUP", "5557")):
        env[f"XLMATE_EDGE_BROKER_{option}_PORT"] = ports[default]
    env["XLMATE_EDGE_DISCOVERY"] = f"tcp://127.0.0.1:{ports['5570']}"
    out_path = tmp_path / "honcho.out"
    with open(out_path, "w") as out:
        honcho = subprocess.Popen(
            [str(Path(sys.executable).parent / "honcho"), "start", "-f", "Procfile"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: len(re.findall(r"edge \S+ up: ", out_path.read_text())) == 4, 30, "edges"
        )
        wait_until(lambda: "broker up" in out_path.read_text(), 30, "the broker up")
        # (a process stopped while still importing dies by the signal: wait for each)
        wait_until(lambda: "discovery: HTTP on" in out_path.read_text(), 30, "discovery up")
    finally:
        honcho.send_signal(signal.SIGINT)
        honcho.wait(timeout=30)
    text = out_path.read_text()
    lines = [line for line in text.splitlines() if " | " in line]
    assert lines
    for line in lines:
        _, message = line.split(" | ", 1)
        assert not re.match(r"\d{4}-\d\d-\d\d", message), f"two timestamps: {line}"
    stopped = re.findall(r"(\S+) stopped \(rc=(-?\d+)\)", text)
    processes = re.findall(r"^\w+:", procfile, re.MULTILINE)  # one per Procfile line
    assert len(stopped) == len(processes) == 9, text
    assert all(rc == "0" for _, rc in stopped), text


def test_curve_on_is_said_at_start(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker and an edge started with CURVE keys each log curve=true with the key folder."""
    monkeypatch.setenv("XLMATE_LOG_FORMAT", "json")
    keys = cluster.root / "keys"
    subprocess.run([XLMATE, "keys", str(keys)], check=True, capture_output=True)
    cluster.curve_dir = keys
    cluster.start_broker()
    edge = cluster.start_edge("eu-west")
    for proc in (cluster.broker, edge.proc):
        assert proc is not None
        (said,) = [r for r in json_lines(proc.log()) if r["event"] == "curve"]
        assert said["curve"] is True and str(keys) in said["msg"] and said["level"] == "info"
