"""Discovery end to end: the real ``xlmate discovery`` process, fed by real ``DiscoveryClient``s.

Fake edges here are only their heartbeat: the real client code in this process,
with 100 ms intervals.  The last tests run the client against sockets of the
test's own to check its Lazy-Pirate behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgpack
import pytest
import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.discovery_helpers import (
    XLMATE,
    DiscoveryProcess,
    FakeEdges,
    eventually,
    free_port,
    http_get_async,
    http_json_async,
)
from xlmate.config import DiscoveryConfig
from xlmate.discovery.placement import rendezvous_score
from xlmate.discovery.server import DiscoveryServer
from xlmate.edge.discovery_client import DiscoveryClient
from xlmate.heartbeat import (
    Heartbeat,
    Reply,
    decode_heartbeat,
    decode_reply,
    encode_reply,
)

INTERVAL_S = 0.1  # the fake edges' heartbeat interval


@pytest.fixture
def discovery(tmp_path: Path) -> Iterator[DiscoveryProcess]:
    """``xlmate discovery`` on free ports; killed afterwards; its log shown if the test fails."""
    proc = DiscoveryProcess(tmp_path).start()
    try:
        yield proc
    finally:
        proc.kill()
        print(proc.log())


@pytest.fixture
async def zctx() -> AsyncIterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


@pytest.fixture
async def edges(zctx: zmq.asyncio.Context, discovery: DiscoveryProcess) -> AsyncIterator[FakeEdges]:
    fakes = FakeEdges(zctx, discovery.endpoint)
    try:
        yield fakes
    finally:
        await fakes.aclose()


async def ask(discovery: DiscoveryProcess, **params: str) -> tuple[int, Any]:
    return await http_json_async(f"{discovery.url}/v1/nodes/discovery?{urlencode(params)}")


def order(body: dict[str, Any]) -> list[str]:
    """The ids of an answer, node first then the fallbacks."""
    return [body["node"]["id"], *(n["id"] for n in body["nodes"])]


async def listed(discovery: DiscoveryProcess) -> dict[str, dict[str, Any]]:
    status, body = await http_json_async(f"{discovery.url}/v1/nodes")
    return {n["id"]: n for n in body["nodes"]} if status == 200 else {}


async def wait_listed(discovery: DiscoveryProcess, *ids: str, timeout: float = 5.0) -> None:
    async def all_there() -> bool:
        return set(ids) <= set(await listed(discovery))

    await eventually(all_there, timeout, f"{ids} to register")


async def metric(discovery: DiscoveryProcess, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` with ``labels`` on /metrics."""
    status, body = await http_get_async(f"{discovery.url}/metrics")
    assert status == 200
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# --- placement over HTTP --------------------------------------------------------------------


async def test_no_edges_is_503(discovery: DiscoveryProcess) -> None:
    """With no edge registered, discovery answers 503 no_nodes, and /healthz still says ok."""
    assert await ask(discovery, region="eu-west") == (503, {"error": "no_nodes"})
    assert await ask(discovery) == (503, {"error": "no_nodes"})
    assert await http_json_async(f"{discovery.url}/healthz") == (200, {"status": "ok", "nodes": 0})


async def test_region_first_least_loaded_then_nearest(
    discovery: DiscoveryProcess, edges: FakeEdges
) -> None:
    """Answers put the asked region first (least loaded first), then the nearest regions."""
    edges.start("eu-a", "eu-west", load=0.5)
    edges.start("eu-b", "eu-west", load=0.1)
    edges.start("us-c", "us-east", load=0.0)
    await wait_listed(discovery, "eu-a", "eu-b", "us-c")

    status, body = await ask(discovery, region="eu-west")
    assert status == 200
    assert order(body) == ["eu-b", "eu-a", "us-c"]
    assert set(body["node"]) == {"id", "url", "region", "load"}
    assert body["node"]["region"] == "eu-west" and body["node"]["load"] == 0.1
    assert body["node"]["url"].startswith("ws://127.0.0.1:")

    assert order((await ask(discovery, region="us-east"))[1]) == ["us-c", "eu-b", "eu-a"]
    # ap-south has no edge: eu-west (120 ms) is nearer than us-east (190 ms)
    assert order((await ask(discovery, region="ap-south"))[1]) == ["eu-b", "eu-a", "us-c"]
    # unknown or missing region: least loaded anywhere
    assert order((await ask(discovery, region="mars"))[1]) == ["us-c", "eu-b", "eu-a"]
    assert order((await ask(discovery))[1]) == ["us-c", "eu-b", "eu-a"]


async def test_game_id_is_sticky_in_a_region(discovery: DiscoveryProcess, edges: FakeEdges) -> None:
    """Both players of a game get the same edge of a 3-edge region; games spread over the edges."""
    for i, load in enumerate((0.3, 0.1, 0.2)):
        edges.start(f"e{i}", "eu-west", load=load)
    await wait_listed(discovery, "e0", "e1", "e2")
    chosen = set()
    for n in range(12):
        game = f"game-{n}"
        white = await ask(discovery, region="eu-west", gameId=game)
        black = await ask(discovery, region="eu-west", gameId=game)
        assert white[0] == black[0] == 200
        assert white[1]["node"] == black[1]["node"]
        expected = max(("e0", "e1", "e2"), key=lambda e: (rendezvous_score(game, e), e))
        assert white[1]["node"]["id"] == expected
        chosen.add(expected)
    assert len(chosen) > 1


async def test_bad_game_id_is_400(discovery: DiscoveryProcess, edges: FakeEdges) -> None:
    """A gameId outside 1-64 of [A-Za-z0-9_-] is a 400 bad_request with a message."""
    edges.start("e1", "eu-west")
    await wait_listed(discovery, "e1")
    for bad in ("has space", "x" * 65, "semi;colon", "é"):
        status, body = await ask(discovery, region="eu-west", gameId=bad)
        assert status == 400
        assert body["error"] == "bad_request" and "gameId" in body["message"]
    assert (await ask(discovery, region="eu-west", gameId="x" * 64))[0] == 200


async def test_unknown_path_is_404(discovery: DiscoveryProcess) -> None:
    """Paths discovery does not serve are a JSON 404."""
    assert await http_json_async(f"{discovery.url}/v1/nope") == (404, {"error": "not_found"})


# --- edges coming and going -----------------------------------------------------------------


async def test_stopped_edge_is_evicted_within_three_intervals(
    discovery: DiscoveryProcess, edges: FakeEdges
) -> None:
    """An edge that stops heartbeating leaves the answers within 3 intervals (plus slack)."""
    keep = edges.start("keep", "eu-west", load=0.5)
    gone = edges.start("gone", "eu-west", load=0.0)
    await wait_listed(discovery, keep.id, gone.id)
    assert order((await ask(discovery, region="eu-west"))[1]) == ["gone", "keep"]

    await gone.stop()
    stopped = time.monotonic()

    async def out_of_answer() -> bool:
        status, body = await ask(discovery, region="eu-west")
        return status == 200 and order(body) == ["keep"]

    await eventually(out_of_answer, 3.0, "the stopped edge to leave the answer")
    elapsed = time.monotonic() - stopped
    assert elapsed < 3 * INTERVAL_S + 0.7, elapsed  # 0.3 s of silence, plus HTTP and polling

    async def swept() -> bool:
        return "gone" not in await listed(discovery)

    await eventually(swept, 3.0, "the sweep to forget the edge")
    assert await metric(discovery, "xlmate_discovery_evictions_total") >= 1


async def test_draining_edge_leaves_the_answer_at_once(
    discovery: DiscoveryProcess, edges: FakeEdges
) -> None:
    """beat_now() with draining=True removes an edge from answers at once; it stays listed."""
    first = edges.start("first", "eu-west", load=0.0)
    edges.start("second", "eu-west", load=0.5)
    await wait_listed(discovery, "first", "second")
    assert (await ask(discovery, region="eu-west"))[1]["node"]["id"] == "first"

    first.update(draining=True)
    assert await first.client.beat_now() is True
    status, body = await ask(discovery, region="eu-west", gameId="any-game")
    assert status == 200 and order(body) == ["second"]
    assert (await listed(discovery))["first"]["draining"] is True


async def test_full_edge_is_not_offered(discovery: DiscoveryProcess, edges: FakeEdges) -> None:
    """An edge at capacity is not offered; the next region's edge is."""
    edges.start("full", "eu-west", load=1.0, connections=100, capacity=100)
    edges.start("near", "eu-central", load=0.5)
    await wait_listed(discovery, "full", "near")
    assert order((await ask(discovery, region="eu-west"))[1]) == ["near"]


async def test_goodbye_forgets_an_edge_at_once(
    discovery: DiscoveryProcess, edges: FakeEdges
) -> None:
    """An edge's goodbye() removes it from the registry without waiting for expiry."""
    edge = edges.start("leaving", "eu-west")
    await wait_listed(discovery, "leaving")
    assert await edge.client.goodbye() is True
    assert "leaving" not in await listed(discovery)


async def test_operator_list_shows_every_field(
    discovery: DiscoveryProcess, edges: FakeEdges
) -> None:
    """GET /v1/nodes lists region, load, connections, capacity, draining and heartbeat age."""
    edges.start("e1", "us-west", load=0.25, connections=25, capacity=100)
    await wait_listed(discovery, "e1")
    entry = (await listed(discovery))["e1"]
    assert entry["region"] == "us-west" and entry["load"] == 0.25
    assert entry["connections"] == 25 and entry["capacity"] == 100
    assert entry["draining"] is False
    assert 0 <= entry["last_heartbeat_s"] < 1.0


async def test_healthz_and_metrics(discovery: DiscoveryProcess, edges: FakeEdges) -> None:
    """/healthz counts healthy edges; /metrics has node gauges and heartbeat/placement counters."""
    edges.start("e1", "eu-west")
    edges.start("e2", "us-east")
    await wait_listed(discovery, "e1", "e2")
    assert await http_json_async(f"{discovery.url}/healthz") == (200, {"status": "ok", "nodes": 2})

    await ask(discovery, region="eu-west")
    await ask(discovery, region="sa-east")
    status, body = await http_get_async(f"{discovery.url}/metrics")
    assert status == 200 and b"# TYPE xlmate_discovery_nodes gauge" in body
    assert await metric(discovery, "xlmate_discovery_nodes") == 2
    assert await metric(discovery, "xlmate_discovery_nodes_available") == 2
    assert await metric(discovery, "xlmate_discovery_heartbeats_total", result="ok") >= 2
    assert await metric(discovery, "xlmate_discovery_placements_total", outcome="region") >= 1
    assert await metric(discovery, "xlmate_discovery_placements_total", outcome="fallback") >= 1


# --- robustness -----------------------------------------------------------------------------


async def test_garbage_on_the_rep_port_is_answered_or_dropped_and_counted(
    discovery: DiscoveryProcess, edges: FakeEdges, zctx: zmq.asyncio.Context
) -> None:
    """Garbage from a raw REQ socket and from raw TCP never kills discovery and is counted."""
    req = zctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(discovery.endpoint)
    for request in (
        [b"garbage"],
        [msgpack.packb({"type": "heartbeat", "id": "x"})],
        [msgpack.packb([1, 2, 3])],
        [b"\xc1" * 5000],
        [b"two", b"frames"],
    ):
        await req.send_multipart(request)
        reply = decode_reply(await asyncio.wait_for(req.recv(), 5.0))
        assert reply == Reply(False, "bad_frame")
    req.close(linger=0)

    # a frame over ZMQ_MAXMSGSIZE: libzmq drops the connection, we never see it
    big = zctx.socket(zmq.REQ)
    big.setsockopt(zmq.LINGER, 0)
    big.connect(discovery.endpoint)
    await big.send(b"x" * (256 * 1024))
    # raw TCP: an HTTP request and random bytes where a ZMTP greeting should be
    for payload in (b"GET /v1/nodes HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(255, 0, -1)) * 8):
        reader, writer = await asyncio.open_connection("127.0.0.1", discovery.rep_port)
        with contextlib.suppress(OSError):  # discovery may hang up on us at any point
            writer.write(payload)
            writer.write_eof()
            await asyncio.wait_for(reader.read(), 5.0)
        writer.close()
    big.close(linger=0)

    bad = "xlmate_discovery_bad_frames_total"

    async def counted() -> bool:
        return (
            await metric(discovery, bad, reason="decode") >= 4
            and await metric(discovery, bad, reason="multipart") >= 1
            and await metric(discovery, bad, reason="handshake") >= 1
        )

    await eventually(counted, 5.0, "the garbage to be counted")
    assert discovery.popen is not None and discovery.popen.poll() is None
    edges.start("after", "eu-west")
    await wait_listed(discovery, "after")
    assert (await ask(discovery, region="eu-west"))[1]["node"]["id"] == "after"


async def test_edges_reregister_after_discovery_restart(
    discovery: DiscoveryProcess, edges: FakeEdges
) -> None:
    """After discovery is SIGKILLed and restarted on the same ports, edges are back at once."""
    edges.start("eu", "eu-west")
    edges.start("us", "us-east")
    await wait_listed(discovery, "eu", "us")

    discovery.kill()
    status, _ = await http_get_async(f"{discovery.url}/healthz", 0.5)
    assert status == 0
    await eventually(
        lambda: not any(e.client.registered for e in edges.edges), 5.0, "clients to notice"
    )
    await asyncio.to_thread(discovery.start)  # returns once /healthz answers
    back = time.monotonic()
    await wait_listed(discovery, "eu", "us", timeout=5.0)
    elapsed = time.monotonic() - back
    # each client keeps a request queued and libzmq reconnects every 100 ms
    assert elapsed < 5 * INTERVAL_S, f"re-registration took {elapsed:.3f} s"  # ~0.1 s measured
    assert order((await ask(discovery, region="us-east"))[1]) == ["us", "eu"]


def test_bad_regions_file_fails_cleanly(tmp_path: Path) -> None:
    """A broken --regions file stops discovery at start with a message naming the problem."""
    path = tmp_path / "regions.json"
    path.write_text(json.dumps({"distances": {"eu-west": {"us-east": -5}}}))
    result = subprocess.run(
        [
            str(XLMATE),
            "discovery",
            "--port",
            str(free_port()),
            "--rep-port",
            str(free_port()),
            "--regions",
            str(path),
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert b"regions.json" in result.stderr and b">= 0" in result.stderr


async def test_regions_file_changes_the_fallback(tmp_path: Path, zctx: zmq.asyncio.Context) -> None:
    """With --regions, the nearest-region fallback follows the operator's table."""
    path = tmp_path / "regions.json"
    path.write_text(json.dumps({"distances": {"ap-south": {"us-east": 10, "eu-west": 500}}}))
    proc = DiscoveryProcess(tmp_path, extra=("--regions", str(path)))
    await asyncio.to_thread(proc.start)
    fakes = FakeEdges(zctx, proc.endpoint)
    try:
        fakes.start("eu", "eu-west")
        fakes.start("us", "us-east", load=0.9)
        await wait_listed(proc, "eu", "us")
        assert order((await ask(proc, region="ap-south"))[1]) == ["us", "eu"]
    finally:
        await fakes.aclose()
        proc.kill()


# --- the client's Lazy Pirate, against sockets of the test's own ----------------------------


def status_of(edge_id: str) -> Heartbeat:
    return Heartbeat(id=edge_id, region="eu-west", url="ws://127.0.0.1:1", capacity=10)


async def test_client_retries_on_new_sockets_until_answered(
    zctx: zmq.asyncio.Context, caplog: pytest.LogCaptureFixture
) -> None:
    """Without replies the client re-sends on new sockets, warns once, and logs when answered."""
    caplog.set_level(logging.INFO, logger="xlmate.edge.discovery")
    router = zctx.socket(zmq.ROUTER)  # sees each REQ socket's requests, answers when told
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = DiscoveryClient(
        f"tcp://127.0.0.1:{port}",
        lambda: status_of("e1"),
        context=zctx,
        interval_ms=100,
        timeout_ms=100,
        max_backoff_ms=100,
    )
    task = asyncio.create_task(client.run())
    try:
        peers = []
        for _ in range(3):
            peer, empty, payload = await asyncio.wait_for(router.recv_multipart(), 5.0)
            assert empty == b"" and decode_heartbeat(payload).id == "e1"
            peers.append(peer)
        assert len(set(peers)) == 3  # every retry came from a fresh REQ socket
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "did not answer" in warnings[0].getMessage()

        peer, _, _ = await asyncio.wait_for(router.recv_multipart(), 5.0)
        await router.send_multipart([peer, b"", encode_reply(Reply(True))])
        await eventually(lambda: client.registered, 5.0, "the client to be registered")
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        client.close()
        await asyncio.wait_for(client.wait_closed(), 5.0)
        await task
        router.close(linger=0)


async def test_beat_now_is_safe_alongside_run(zctx: zmq.asyncio.Context) -> None:
    """Many concurrent beat_now() calls while run() heartbeats all succeed, in order."""
    server = DiscoveryServer(DiscoveryConfig(port=0, rep_port=0))
    await server.start()
    client = DiscoveryClient(
        f"tcp://127.0.0.1:{server.rep_port}",
        lambda: status_of("e1"),
        context=zctx,
        interval_ms=100,
    )
    task = asyncio.create_task(client.run())
    try:
        results = await asyncio.gather(*(client.beat_now() for _ in range(20)))
        assert results == [True] * 20
        assert not task.done()
        assert server.registry.get("e1") is not None
    finally:
        client.close()
        await client.wait_closed()
        await task
        server.close()
        await server.wait_closed()


async def test_close_during_an_outage_is_prompt(zctx: zmq.asyncio.Context) -> None:
    """close() wakes a client that is waiting out a back-off against a dead endpoint."""
    client = DiscoveryClient(
        f"tcp://127.0.0.1:{free_port()}",
        lambda: status_of("e1"),
        context=zctx,
        interval_ms=100,
        timeout_ms=5000,
        max_backoff_ms=60_000,
    )
    task = asyncio.create_task(client.run())
    await eventually(lambda: client._sock is not None, 5.0, "the first request")
    client.close()
    await asyncio.wait_for(client.wait_closed(), 2.0)
    await asyncio.wait_for(task, 2.0)


async def test_cancelled_run_then_close(zctx: zmq.asyncio.Context) -> None:
    """Cancelling run() (as the edge does on shutdown) leaves close()/wait_closed() working."""
    client = DiscoveryClient(
        f"tcp://127.0.0.1:{free_port()}", lambda: status_of("e1"), context=zctx, interval_ms=100
    )
    task = asyncio.create_task(client.run())
    await eventually(lambda: client._sock is not None, 5.0, "the first request")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    client.close()
    await asyncio.wait_for(client.wait_closed(), 2.0)
    assert client._sock is None


async def test_sigterm_stops_discovery_cleanly(
    discovery: DiscoveryProcess, edges: FakeEdges
) -> None:
    """SIGTERM with edges heartbeating makes discovery close everything and exit 0."""
    edges.start("e1", "eu-west")
    await wait_listed(discovery, "e1")
    assert discovery.popen is not None
    discovery.popen.terminate()
    assert await asyncio.to_thread(discovery.popen.wait, 10) == 0
    assert "discovery closed" in discovery.log()
