"""Edge readiness with real processes: edges tell discovery which shards' active brokers
they cannot reach, and discovery places a client only on an edge ready for its game's
shard, else answers 503 with Retry-After (docs/protocol.md section 3).

Every test starts the real ``xlmate discovery``, ``xlmate broker --shard K/N`` and
``xlmate edge`` processes on free ports.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from tests.integration.cluster import Cluster, Edge, eventually, free_port, http_json_async
from tests.integration.test_shards import game_on, two_shards


def _get(url: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


async def placement(cluster: Cluster, game_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """GET /v1/nodes/discovery for ``game_id`` in eu-west: status, body and headers."""
    url = f"{cluster.discovery_url}/v1/nodes/discovery?region=eu-west&gameId={game_id}"
    return await asyncio.to_thread(_get, url)


async def unready(cluster: Cluster) -> dict[str, list[int]]:
    """Each edge discovery lists, with the shards it reports unready."""
    _, body = await http_json_async(f"{cluster.discovery_url}/v1/nodes")
    return {node["id"]: node["unready"] for node in body["nodes"]}


def offered(body: dict[str, Any]) -> list[str]:
    """The edge ids of a 200 answer: node, then the fallbacks."""
    return [body["node"]["id"], *(node["id"] for node in body["nodes"])]


async def test_placement_skips_an_edge_that_cannot_reach_the_games_shard_and_503s_when_none_can(
    cluster: Cluster,
) -> None:
    """An edge whose shard-2 broker is unreachable is never offered for shard-2 games (still
    for shard-1 ones); with shard 2's broker SIGKILLed no edge is ready for its games: 503
    not_ready with Retry-After, until the broker is back."""
    two_shards(cluster)
    ready = cluster.start_edge("eu-west")
    one, _two = cluster.shards[1], cluster.shards[2]
    dead = ",".join(f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    # Static routing: shard 1 is the real broker, shard 2 an address where nothing listens.
    blind = cluster.start_edge("eu-west", "--broker", one.broker_option, "--broker", f"2/2={dead}")
    await eventually(
        lambda: _reports(cluster, {ready.edge_id: [], blind.edge_id: [2]}),
        10,
        "both edges to report their readiness",
    )
    for i in range(24):
        shard2, shard1 = game_on(2, 2, f"r{i}-"), game_on(1, 2, f"r{i}-")
        status, body, _ = await placement(cluster, shard2)
        assert status == 200 and offered(body) == [ready.edge_id], body
        status, body, _ = await placement(cluster, shard1)
        assert status == 200 and set(offered(body)) == {ready.edge_id, blind.edge_id}

    cluster.shards[2].proc.kill()
    await eventually(
        lambda: _reports(cluster, {ready.edge_id: [2], blind.edge_id: [2]}),
        10,
        "the edges to report shard 2 unready",
    )
    status, body, headers = await placement(cluster, game_on(2, 2, "x-"))
    assert (status, body) == (503, {"error": "no_nodes", "reason": "not_ready"})
    assert headers.get("Retry-After") == "1"
    status, body, _ = await placement(cluster, game_on(1, 2, "x-"))
    assert status == 200 and ready.edge_id in offered(body)

    cluster.restart(cluster.shards[2].proc)
    await eventually(
        lambda: _reports(cluster, {ready.edge_id: [], blind.edge_id: [2]}),
        10,
        "the edge to hear shard 2's broker again",
    )
    status, body, _ = await placement(cluster, game_on(2, 2, "x-"))
    assert status == 200 and offered(body) == [ready.edge_id]


async def test_an_edge_that_has_not_heard_its_broker_yet_is_not_placed(cluster: Cluster) -> None:
    """An edge started before any broker is listed but unready, and placement answers 503
    with Retry-After; once the broker beats, the same question places the client on it."""
    cluster.start_discovery("--shards", "1")
    edge: Edge = cluster.start_edge("eu-west", wait=False)
    await eventually(lambda: _reports(cluster, {edge.edge_id: [1]}), 10, "the edge to register")
    status, body, headers = await placement(cluster, "g1")
    assert (status, body) == (503, {"error": "no_nodes", "reason": "not_ready"})
    assert headers.get("Retry-After") == "1"
    cluster.start_shard(1, 1, "--discovery-heartbeat-ms", "200")
    edge.proc.wait_healthy()
    await eventually(lambda: _reports(cluster, {edge.edge_id: []}), 10, "the edge to be ready")
    status, body, _ = await placement(cluster, "g1")
    assert status == 200 and body["node"]["id"] == edge.edge_id


async def _reports(cluster: Cluster, expected: dict[str, list[int]]) -> bool:
    """Whether discovery lists exactly these edges with exactly these unready shards."""
    return await unready(cluster) == expected
