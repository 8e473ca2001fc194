"""Broker shards with real processes: discovery's broker registry, refusals, and each
shard refusing the games of another (docs/architecture.md, "Broker shards").

Every test starts the real ``xlmate discovery`` and ``xlmate broker --shard K/N``
processes on free ports; the hand-made bus messages are ZeroMQ sockets of the
test talking to a broker's real ports.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.cluster import (
    SECRET,
    Cluster,
    Edge,
    eventually,
    http_get_async,
    http_json,
    http_json_async,
    wait_until,
)
from tests.integration.games import TEN_MINUTES, Played, assert_clean_history, play
from tests.support.chess_games import random_game
from xlmate.client import GameClient
from xlmate.shards import shard_of
from xlmate.tokens import mint_seat_token
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
    assert log.strip().splitlines()[-1].startswith("error: discovery refused this broker")
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


# --- edges across shards (real edges, players and spectators) -----------------------------


def seats(game_id: str) -> tuple[str, str]:
    """White and black seat tokens for a chosen game id."""
    white = mint_seat_token(SECRET, game_id, "white", clock=TEN_MINUTES)
    black = mint_seat_token(SECRET, game_id, "black", clock=TEN_MINUTES)
    return white, black


async def edge_knows_shards(edge: Edge, *up: int) -> bool:
    """Whether the edge routes by 2 shards and hears the brokers of ``up``."""
    _, body = await http_json_async(f"{edge.http}/healthz")
    if not isinstance(body, dict) or "shards" not in body:
        return False
    shards = body["shards"]
    return shards["count"] == 2 and all(shards["brokers"].get(str(k), {}).get("up") for k in up)


async def sharded_cluster(cluster: Cluster, *edge_args: str, regions: tuple[str, ...]) -> None:
    """Discovery at 2 shards, both brokers, and edges that learnt the map from discovery."""
    two_shards(cluster)
    edges = [cluster.start_edge(region, *edge_args) for region in regions]
    for edge in edges:
        await eventually(lambda e=edge: edge_knows_shards(e, 1, 2), 10, "edges to learn the map")


async def players(game_id: str, white_url: str, black_url: str) -> tuple[GameClient, GameClient]:
    white_token, black_token = seats(game_id)
    white = await GameClient(game_id, token=white_token, edge_url=white_url).connect()
    black = await GameClient(game_id, token=black_token, edge_url=black_url).connect()
    return white, black


async def test_games_on_both_shards_play_and_every_view_works_from_any_edge(
    cluster: Cluster,
) -> None:
    """A game on each shard plays with its players and a spectator on different edges; each
    broker holds only its game; state, PGN, resume and placement work from any edge."""
    await sharded_cluster(cluster, regions=("eu-west", "us-east"))
    a, b = cluster.edges
    moves = random_game(seed=31, plies=8)
    run = secrets.token_hex(3)
    for shard in (1, 2):
        gid = game_on(shard, 2, prefix=f"s{shard}-{run}-")
        white, black = await players(gid, a.url, b.url)
        spectator = await GameClient(gid, edge_url=b.url).connect()
        try:
            await play(white, black, moves, Played())
            await spectator.wait_for_v(len(moves))
            assert_clean_history(spectator, moves)
            for edge in (a, b):
                status, state = await http_json_async(f"{edge.http}/v1/games/{gid}")
                assert status == 200 and state["moves"] == moves
                status, pgn = await http_get_async(f"{edge.http}/v1/games/{gid}/pgn")
                assert status == 200 and b"[Result" in pgn
            assert (await http_json_async(f"{cluster.shards[shard].http}/healthz"))[1]["games"] == 1
            # Resume: a socket with ?v=5 on the other edge gets exactly the events after 5.
            async with websockets.connect(
                f"{a.url}/v1/games/{gid}/ws?token={seats(gid)[0]}&v=5"
            ) as ws:
                got: list[int] = []
                while len(got) < 3:  # (a presence message, unversioned, may come between)
                    message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if "v" in message:
                        got.append(message["v"])
                assert got == [6, 7, 8]
            status, placed = await http_json_async(
                f"{cluster.discovery_url}/v1/nodes/discovery?region=eu-west&gameId={gid}"
            )
            assert status == 200 and placed["node"]["url"] == a.url
        finally:
            for client in (white, black, spectator):
                await client.close()


async def test_xlmate_game_new_games_play_on_both_shards_through_discovery(
    cluster: Cluster,
) -> None:
    """Games from `xlmate game new` spread over both shards and play, clients placed by
    discovery."""
    await sharded_cluster(cluster, regions=("eu-west",))
    by_shard: dict[int, dict[str, Any]] = {}
    for _ in range(64):
        game = cluster.new_game()
        by_shard.setdefault(shard_of(game["gameId"], 2), game)
        if len(by_shard) == 2:
            break
    assert sorted(by_shard) == [1, 2]
    for shard, game in by_shard.items():
        gid = game["gameId"]
        white = await GameClient(
            gid, token=game["white"]["token"], discovery_url=cluster.discovery_url
        ).connect()
        black = await GameClient(
            gid, token=game["black"]["token"], discovery_url=cluster.discovery_url
        ).connect()
        try:
            await play(white, black, ["e2e4", "e7e5"], Played())
            health = (await http_json_async(f"{cluster.shards[shard].http}/healthz"))[1]
            assert health["games"] == 1
        finally:
            await white.close()
            await black.close()


async def test_a_sigkilled_shard_stops_only_its_games_and_they_resume_losing_nothing(
    cluster: Cluster,
) -> None:
    """SIGKILL shard 2: shard 1's game keeps moving; shard 2's game answers unavailable
    (and new sockets close 1011) until it is back, then the same command id is acked once
    and every acked move is there."""
    await sharded_cluster(cluster, "--command-timeout-ms", "1500", regions=("eu-west",))
    (edge,) = cluster.edges
    run = secrets.token_hex(3)
    alive_gid, dead_gid = game_on(1, 2, f"a-{run}-"), game_on(2, 2, f"d-{run}-")
    moves = random_game(seed=32, plies=12)
    white1, black1 = await players(alive_gid, edge.url, edge.url)
    white_token, black_token = seats(dead_gid)
    try:
        async with (
            websockets.connect(f"{edge.url}/v1/games/{dead_gid}/ws?token={white_token}") as w2,
            websockets.connect(f"{edge.url}/v1/games/{dead_gid}/ws?token={black_token}") as b2,
        ):
            await play(white1, black1, moves[:2], Played())
            assert await raw_command(w2, "e2e4", "w1") == ("ack", 1)
            assert await raw_command(b2, "e7e5", "b1") == ("ack", 2)
            cluster.shards[2].proc.kill()
            # The live shard's game goes on while the other shard is down.
            await asyncio.wait_for(play(white1, black1, moves[2:10], Played()), 30)
            # The dead shard's game: unavailable after the command timeout, never another shard.
            assert await raw_command(w2, "g1f3", "w2") == ("error", "unavailable")
            await play(white1, black1, moves[10:], Played())
            async with websockets.connect(f"{edge.url}/v1/games/{dead_gid}/spectate") as late:
                await asyncio.wait_for(late.wait_closed(), 10)
                assert late.close_code == 1011
            assert (await http_json_async(f"{edge.http}/v1/games/{dead_gid}"))[0] == 503
            cluster.restart(cluster.shards[2].proc)
            await eventually(lambda: edge_knows_shards(edge, 1, 2), 10, "shard 2 heard again")
            assert await raw_command(w2, "g1f3", "w2") == ("ack", 3)  # re-sent, same id
        status, state = await http_json_async(f"{edge.http}/v1/games/{dead_gid}")
        assert status == 200 and state["moves"] == ["e2e4", "e7e5", "g1f3"]
        status, state = await http_json_async(f"{edge.http}/v1/games/{alive_gid}")
        assert status == 200 and state["moves"] == moves
    finally:
        await white1.close()
        await black1.close()


async def raw_command(ws: Any, uci: str, command_id: str) -> tuple[str, Any]:
    """Send a move with ``command_id``; ("ack", v) or ("error", code) of the answer to it."""
    await ws.send(json.dumps({"type": "move", "uci": uci, "id": command_id}))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if message.get("id") == command_id and message["type"] in ("ack", "error"):
            return message["type"], message.get("v", message.get("code"))


async def test_a_game_whose_shard_has_no_broker_is_closed_1011_naming_the_shard(
    cluster: Cluster,
) -> None:
    """With only shard 1's broker ever registered, a socket for a game of shard 2 is closed
    1011 with a reason naming shard 2/2 at once; a game of shard 1 plays."""
    cluster.start_discovery("--shards", "2")
    cluster.start_shard(1, 2, "--discovery-heartbeat-ms", "200")
    edge = cluster.start_edge("eu-west")
    await eventually(lambda: edge_knows_shards(edge, 1), 10, "the edge to learn the map")
    gid = game_on(2, 2, f"n-{secrets.token_hex(3)}-")
    async with websockets.connect(f"{edge.url}/v1/games/{gid}/ws?token={seats(gid)[0]}") as ws:
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1011 and "shard 2/2" in (ws.close_reason or "")
    status, _ = await http_json_async(f"{edge.http}/v1/games/{gid}")
    assert status == 503
    ok = game_on(1, 2, f"o-{secrets.token_hex(3)}-")
    white, black = await players(ok, edge.url, edge.url)
    try:
        await play(white, black, ["d2d4", "d7d5"], Played())
    finally:
        await white.close()
        await black.close()


async def test_edges_with_static_broker_options_route_without_discovery(cluster: Cluster) -> None:
    """No discovery: edges given --broker K/N=... for each shard play games of both shards."""
    for index in (1, 2):
        cluster.start_shard(index, 2)
    options = [arg for s in cluster.shards.values() for arg in ("--broker", s.broker_option)]
    edge = cluster.start_edge("eu-west", *options)
    for shard in (1, 2):
        gid = game_on(shard, 2, f"st{shard}-{secrets.token_hex(3)}-")
        white, black = await players(gid, edge.url, edge.url)
        try:
            await play(white, black, ["c2c4", "c7c5"], Played())
            assert (await http_json_async(f"{cluster.shards[shard].http}/healthz"))[1]["games"] == 1
        finally:
            await white.close()
            await black.close()


async def test_finished_games_are_served_from_their_shards_archive_by_any_edge(
    cluster: Cluster,
) -> None:
    """A game ended on each shard: its state and PGN come from its own shard's archive
    through either edge, and a move after the end is refused game_over."""
    await sharded_cluster(cluster, regions=("eu-west", "us-east"))
    a, b = cluster.edges
    fools_mate = ["f2f3", "e7e5", "g2g4", "d8h4"]
    run = secrets.token_hex(3)
    for shard in (1, 2):
        gid = game_on(shard, 2, prefix=f"end{shard}-{run}-")
        white, black = await players(gid, a.url, b.url)
        try:
            await play(white, black, fools_mate, Played())
            await white.wait_for(lambda w=white: w.model.status == "over", 10)
        finally:
            await white.close()
            await black.close()
        for edge in (a, b):
            status, state = await http_json_async(f"{edge.http}/v1/games/{gid}")
            assert status == 200 and state["status"] == "over" and state["moves"] == fools_mate
            status, pgn = await http_get_async(f"{edge.http}/v1/games/{gid}/pgn")
            assert status == 200 and b'[Result "0-1"]' in pgn
