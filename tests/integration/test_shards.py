"""Broker shards with real processes: discovery's broker registry, refusals, and each
shard refusing the games of another (docs/architecture.md, "Broker shards").

Every test starts the real ``xlmate discovery`` and ``xlmate broker --shard K/N``
processes on free ports; the hand-made bus messages are ZeroMQ sockets of the
test talking to a broker's real ports.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.cluster import (
    Cluster,
    http_get_async,
    http_json,
    http_json_async,
    wait_until,
)
from xlmate.shards import shard_of
from xlmate.wire import (
    CMD_TOPIC,
    CommandMsg,
    FetchRequest,
    MissingReply,
    OpenRequest,
    RejectMsg,
    decode,
    edge_topic,
    encode,
)


def game_on(shard: int, count: int, prefix: str = "g") -> str:
    """A game id that shard ``shard`` of ``count`` owns."""
    return next(f"{prefix}{i}" for i in range(10_000) if shard_of(f"{prefix}{i}", count) == shard)


async def metric(base: str, name: str, **labels: str) -> float:
    """One sample of a process's /metrics (0 when absent)."""
    status, body = await http_get_async(f"{base}/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def two_shards(cluster: Cluster) -> None:
    """Discovery fixed at 2 shards and both brokers, registered."""
    cluster.start_discovery("--shards", "2")
    for index in (1, 2):
        cluster.start_shard(index, 2, "--discovery-heartbeat-ms", "200")

    def both_up() -> bool:
        status, body = http_json(f"{cluster.discovery_url}/v1/brokers")
        return status == 200 and all(s["up"] for s in body["shards"])

    wait_until(both_up, 10, "both shards to register")


@asynccontextmanager
async def rogue_edge(cluster: Cluster, shard: int) -> AsyncIterator[tuple[Any, Any, Any]]:
    """A hand-made edge on one shard's ports: PUB (commands), SUB (its edge topic), DEALER."""
    target = cluster.shards[shard]
    ctx = zmq.asyncio.Context()
    pub, sub, dealer = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB), ctx.socket(zmq.DEALER)
    try:
        for sock in (pub, sub, dealer):
            sock.setsockopt(zmq.LINGER, 0)
        pub.connect(f"tcp://127.0.0.1:{target.xsub_port}")
        sub.connect(f"tcp://127.0.0.1:{target.xpub_port}")
        sub.setsockopt(zmq.SUBSCRIBE, edge_topic("rogue"))
        dealer.connect(f"tcp://127.0.0.1:{target.catchup_port}")
        yield pub, sub, dealer
    finally:
        for sock in (pub, sub, dealer):
            sock.close(linger=0)
        ctx.term()


async def command_answer(pub: Any, sub: Any, game_id: str, command_id: str) -> RejectMsg:
    """Publish a move for ``game_id`` until the broker answers on ``edge:rogue``."""
    body = encode(
        CommandMsg(
            game_id=game_id,
            edge_id="rogue",
            seat="white",
            command_id=command_id,
            command={"t": "move", "u": "e2e4"},
        )
    )
    for _ in range(50):  # PUB drops until the connection is up: re-send, as edges do
        await pub.send_multipart([CMD_TOPIC, body])
        try:
            _topic, frame = await asyncio.wait_for(sub.recv_multipart(), 0.2)
        except TimeoutError:
            continue
        answer = decode(frame)
        assert isinstance(answer, RejectMsg), answer
        if answer.command_id == command_id:
            return answer
    raise AssertionError("the broker never answered the hand-made command")


async def test_discovery_lists_the_shards_and_every_brokers_metrics_carry_its_shard(
    cluster: Cluster,
) -> None:
    """GET /v1/brokers lists both shards with their broker's addresses and epoch; each
    broker's /metrics samples carry shard and shards labels."""
    two_shards(cluster)
    status, body = await http_json_async(f"{cluster.discovery_url}/v1/brokers")
    assert status == 200 and body["count"] == 2 and body["fixed_by"] == "--shards"
    for entry in body["shards"]:
        shard = cluster.shards[entry["shard"]]
        (broker,) = entry["brokers"]
        assert broker["xsub"] == f"tcp://127.0.0.1:{shard.xsub_port}"
        assert broker["xpub"] == f"tcp://127.0.0.1:{shard.xpub_port}"
        assert broker["catchup"] == f"tcp://127.0.0.1:{shard.catchup_port}"
        health = (await http_json_async(f"{shard.http}/healthz"))[1]
        assert broker["epoch"] == health["epoch"] and health["shard"] == shard.spec
        assert health["registered"] is True
        status, text = await http_get_async(f"{shard.http}/metrics")
        samples = [s for f in text_string_to_metric_families(text.decode()) for s in f.samples]
        assert samples and all(
            s.labels.get("shard") == str(shard.index) and s.labels.get("shards") == "2"
            for s in samples
        )


async def test_a_broker_with_another_shard_count_is_refused_and_exits_non_zero(
    cluster: Cluster,
) -> None:
    """With discovery at 2 shards, a broker started --shard 1/3 exits non-zero and its
    last line says why; discovery still lists the 2 shards."""
    two_shards(cluster)
    wrong = cluster.start_shard(3, 3, wait=False)
    code = await asyncio.to_thread(wrong.proc.wait_exit, 15)
    assert code != 0
    log = wrong.proc.log()
    assert "this cluster has 2 shards" in log and "--shard 3/3 cannot join it" in log
    assert log.strip().splitlines()[-1].startswith("Error: discovery refused this broker")
    _, body = await http_json_async(f"{cluster.discovery_url}/v1/brokers")
    assert body["count"] == 2 and [s["up"] for s in body["shards"]] == [True, True]


async def test_a_second_broker_for_a_live_shard_is_refused_and_exits_non_zero(
    cluster: Cluster,
) -> None:
    """Another broker for shard 2/2 while the first lives: refused, exits non-zero; the
    first keeps its place."""
    two_shards(cluster)
    first_epoch = (await http_json_async(f"{cluster.shards[2].http}/healthz"))[1]["epoch"]
    second = cluster.start_shard(2, 2, "--discovery-heartbeat-ms", "200", wait=False)
    code = await asyncio.to_thread(second.proc.wait_exit, 20)
    assert code != 0
    assert "shard 2/2 already has a live active broker" in second.proc.log()
    _, body = await http_json_async(f"{cluster.discovery_url}/v1/brokers")
    assert body["shards"][1]["brokers"][0]["epoch"] == first_epoch


async def test_a_command_for_another_shards_game_is_refused_and_counted(cluster: Cluster) -> None:
    """A hand-made bus command and open for a game of shard 1 sent to shard 2 are refused
    (unavailable naming shard 1/2; open answered missing), counted, and create nothing."""
    two_shards(cluster)
    foreign, own = game_on(1, 2), game_on(2, 2)
    b2 = cluster.shards[2]
    async with rogue_edge(cluster, 2) as (pub, sub, dealer):
        await asyncio.sleep(0)  # (the SUB's subscription is sent on connect; re-sends cover it)
        refused = await command_answer(pub, sub, foreign, "c1")
        assert refused.code == "unavailable"
        assert f"game {foreign} belongs to shard 1/2" in refused.message
        assert await metric(b2.http, "xlmate_broker_wrong_shard_total", kind="cmd") >= 1
        # A game of its own that does not exist: the usual answer, not counted as foreign.
        before = await metric(b2.http, "xlmate_broker_wrong_shard_total", kind="cmd")
        unknown = await command_answer(pub, sub, own, "c2")
        assert unknown.code == "internal" and "does not know" in unknown.message
        assert await metric(b2.http, "xlmate_broker_wrong_shard_total", kind="cmd") == before
        # An open would create the game: shard 2 answers missing and creates nothing.
        await dealer.send(
            encode(
                OpenRequest(request_id=1, game_id=foreign, seat="white", player_id=None, clock=None)
            )
        )
        reply = decode(await asyncio.wait_for(dealer.recv(), 5))
        assert isinstance(reply, MissingReply) and reply.game_id == foreign
        assert await metric(b2.http, "xlmate_broker_wrong_shard_total", kind="open") == 1
        await dealer.send(encode(FetchRequest(request_id=2, game_id=foreign, since=None)))
        assert isinstance(decode(await asyncio.wait_for(dealer.recv(), 5)), MissingReply)
    health = (await http_json_async(f"{b2.http}/healthz"))[1]
    assert health["games"] == 0
