"""The whole cluster, end to end, over real processes and sockets (issue: the cluster)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.cluster import SECRET, Cluster, eventually, http_get_async, http_json_async
from xlmate.client import CommandFailed, GameClient
from xlmate.tokens import mint_seat_token

SCHOLARS_MATE = ["e2e4", "e7e5", "f1c4", "b8c6", "d1h5", "g8f6", "h5f7"]


async def metric(base: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` on a component's /metrics."""
    status, body = await http_get_async(f"{base}/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} is not on {base}/metrics")


async def place(cluster: Cluster, region: str, game_id: str | None = None) -> dict[str, object]:
    query = f"region={region}" + (f"&gameId={game_id}" if game_id else "")
    status, body = await http_json_async(f"{cluster.discovery_url}/v1/nodes/discovery?{query}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


@pytest.fixture
def full_cluster(cluster: Cluster) -> Cluster:
    """discovery, broker and four edges (eu-west x2, us-east, ap-south), all registered."""
    cluster.start_discovery()
    cluster.start_broker()
    for region in ("eu-west", "eu-west", "us-east", "ap-south"):
        cluster.start_edge(region)
    cluster.wait_registered(*cluster.edges)
    return cluster


async def test_whole_game_across_three_regions(full_cluster: Cluster) -> None:
    """White (eu-west), black (us-east), a spectator (ap-south) see one identical game to mate."""
    c = full_cluster
    game = c.new_game("5+3")
    gid = game["gameId"]
    eu = (await place(c, "eu-west", gid))["node"]
    us = (await place(c, "us-east", gid))["node"]
    ap = (await place(c, "ap-south", gid))["node"]
    assert (eu["region"], us["region"], ap["region"]) == ("eu-west", "us-east", "ap-south")
    assert (await place(c, "eu-west", gid))["node"]["id"] == eu["id"], (
        "placement is sticky per game"
    )

    white = await GameClient(gid, token=game["white"]["token"], edge_url=eu["url"]).connect()
    black = await GameClient(gid, token=game["black"]["token"], edge_url=us["url"]).connect()
    spectator = await GameClient(gid, edge_url=ap["url"]).connect()
    try:
        assert white.model.you == "white" and black.model.you == "black"
        assert spectator.model.you == "spectator" and white.model.status == "waiting"
        players = [white, black]
        for ply, uci in enumerate(SCHOLARS_MATE):
            acked = await players[ply % 2].move(uci)
            assert acked >= ply + 1
        final_v = len(SCHOLARS_MATE) + 1  # seven moves and game_over
        for client in (white, black, spectator):
            await client.wait_for_v(final_v)
        assert white.events == black.events == spectator.events
        assert [e["v"] for e in spectator.events] == list(range(1, final_v + 1))
        moves = [e for e in spectator.events if e["type"] == "move"]
        assert [m["uci"] for m in moves] == SCHOLARS_MATE
        assert moves[-1]["san"] == "Qxf7#"
        over = spectator.events[-1]
        assert over["type"] == "game_over"
        assert (over["result"], over["reason"]) == ("1-0", "checkmate")

        with pytest.raises(CommandFailed) as failure:
            await black.move("a7a6")
        assert failure.value.code == "game_over"

        for edge in c.edges:
            status, sync = await http_json_async(f"{edge.http}/v1/games/{gid}")
            assert status == 200 and sync["moves"] == SCHOLARS_MATE and sync["status"] == "over"
            status, pgn = await http_get_async(f"{edge.http}/v1/games/{gid}/pgn")
            assert status == 200 and b"Qxf7#" in pgn and b'[Result "1-0"]' in pgn

        # The hot-path counters (plain ints behind /metrics) counted this game.
        assert await metric(c.broker_http, "xlmate_broker_events_total") == final_v
        assert await metric(c.broker_http, "xlmate_broker_commands_total") == len(SCHOLARS_MATE) + 1
        assert (
            await metric(c.broker_http, "xlmate_broker_rejected_total") == 1
        )  # the move after mate
        frames = sum([await metric(e.http, "xlmate_edge_client_messages_total") for e in c.edges])
        assert frames >= len(SCHOLARS_MATE) + 1
        assert (
            sum([await metric(e.http, "xlmate_edge_bus_events_total") for e in c.edges])
            >= 3 * final_v
        )
    finally:
        for client in (white, black, spectator):
            await client.close()


async def test_wrong_turn_illegal_and_spectator_moves_get_errors_with_their_ids(
    full_cluster: Cluster,
) -> None:
    """Out-of-turn, illegal, malformed and spectator commands get `error` with code and id."""
    c = full_cluster
    game = c.new_game()
    gid = game["gameId"]
    edge_a, edge_b = c.edges[0], c.edges[2]
    white = await GameClient(gid, token=game["white"]["token"], edge_url=edge_a.url).connect()
    black = await GameClient(gid, token=game["black"]["token"], edge_url=edge_b.url).connect()
    spectator = await GameClient(gid, edge_url=edge_b.url).connect()
    try:
        cases = [
            (black, {"type": "move", "uci": "e7e5"}, "not_your_turn"),
            (white, {"type": "move", "uci": "e2e5"}, "illegal_move"),
            (white, {"type": "move", "from": "z9", "to": "e4"}, "bad_message"),
            (spectator, {"type": "move", "uci": "e2e4"}, "not_a_player"),
            (white, {"type": "castle"}, "unknown_type"),
        ]
        for client, payload, code in cases:
            with pytest.raises(CommandFailed) as failure:
                await client.command(payload)
            assert failure.value.code == code, payload
        assert await white.move("e2e4") == 1
        await black.wait_for_v(1)
        assert [e["uci"] for e in black.events] == ["e2e4"]
    finally:
        for client in (white, black, spectator):
            await client.close()


async def test_a_command_id_is_applied_once_and_acked_each_time(full_cluster: Cluster) -> None:
    """Re-sending a command with the same id, even via another edge, acks the same v once."""
    c = full_cluster
    game = c.new_game()
    gid = game["gameId"]
    white1 = await GameClient(gid, token=game["white"]["token"], edge_url=c.edges[0].url).connect()
    white2 = await GameClient(gid, token=game["white"]["token"], edge_url=c.edges[3].url).connect()
    try:
        first = await white1.command({"type": "move", "uci": "d2d4"}, command_id="m1")
        again = await white2.command({"type": "move", "uci": "d2d4"}, command_id="m1")
        assert first == again == 1
        await white2.wait_for_v(1)
        status, sync = await http_json_async(f"{c.edges[1].http}/v1/games/{gid}")
        assert status == 200 and sync["moves"] == ["d2d4"] and sync["v"] == 1
    finally:
        await white1.close()
        await white2.close()


async def test_tokens_and_unknown_games_get_their_close_codes(full_cluster: Cluster) -> None:
    """Bad token -> 4001, token for another game -> 4003, spectating an unknown game -> 4004."""
    c = full_cluster
    url = c.edges[0].url
    game = c.new_game()
    other = c.new_game()
    forged = mint_seat_token("not-the-cluster-secret-but-as-long-as-one", game["gameId"], "white")
    expired = mint_seat_token(SECRET, game["gameId"], "white", expires_at=1)
    cases = [
        (f"{url}/v1/games/{game['gameId']}/ws?token=garbage", 4001),
        (f"{url}/v1/games/{game['gameId']}/ws", 4001),
        (f"{url}/v1/games/{game['gameId']}/ws?token={forged}", 4001),
        (f"{url}/v1/games/{game['gameId']}/ws?token={expired}", 4001),
        (f"{url}/v1/games/{game['gameId']}/ws?token={other['white']['token']}", 4003),
        (f"{url}/v1/games/nosuchgame/spectate", 4004),
    ]
    for target, code in cases:
        async with connect(target) as ws:
            await ws.wait_closed()
            assert ws.close_code == code, target
    status, body = await http_json_async(f"{c.broker_http}/healthz")
    assert status == 200 and body["games"] == 0, "spectating must not create games"


async def test_every_component_answers_health_and_metrics(full_cluster: Cluster) -> None:
    """/healthz and /metrics answer on discovery, the broker and every edge."""
    c = full_cluster
    bases = [c.discovery_url, c.broker_http, *(e.http for e in c.edges)]
    for base in bases:
        status, body = await http_json_async(f"{base}/healthz")
        assert status == 200 and body["status"] == "ok", base
        status, text = await http_get_async(f"{base}/metrics")
        assert status == 200 and b"# TYPE xlmate_" in text, base


LAG_METRICS = (
    "xlmate_loop_lag_seconds_count",
    "xlmate_loop_lag_seconds_sum",
    "xlmate_loop_lag_max_seconds",
    "xlmate_loop_stalls_total",
)


async def test_every_process_exposes_its_loop_lag(full_cluster: Cluster) -> None:
    """Discovery, the broker and every edge run the loop-lag probe: its samples are on /metrics."""
    c = full_cluster
    for base in [c.discovery_url, c.broker_http, *(e.http for e in c.edges)]:
        for name in LAG_METRICS:
            await metric(base, name)  # present (raises if not)
        status, text = await http_get_async(f"{base}/metrics")
        assert status == 200, base
        samples = [
            (sample.name, sample.labels)
            for family in text_string_to_metric_families(text.decode())
            for sample in family.samples
        ]
        assert any(
            name == "xlmate_loop_lag_seconds_bucket" and labels.get("le") == "0.05"
            for name, labels in samples
        ), base

        async def sampled(base: str = base) -> bool:
            return await metric(base, "xlmate_loop_lag_seconds_count") > 0

        await eventually(sampled, 10, f"loop-lag samples on {base}")
        generations = {
            labels.get("generation")
            for name, labels in samples
            if name == "xlmate_gc_collections_total"
        }
        assert generations == {"0", "1", "2"}, base
        await metric(base, "xlmate_gc_frozen_objects")


async def test_edges_freeze_their_objects_on_uvloop_only(cluster: Cluster) -> None:
    """An edge on uvloop (the default) runs the GC freezer; one on asyncio's loop does not."""
    cluster.start_broker()
    frozen_edge = cluster.start_edge("eu-west")
    plain_edge = cluster.start_edge("us-east", env={"XLMATE_LOOP": "asyncio"})

    async def frozen() -> bool:
        return await metric(frozen_edge.http, "xlmate_gc_frozen_objects") > 0

    await eventually(frozen, 10, "the uvloop edge to freeze its objects")

    async def ran_two_seconds() -> bool:  # 200 probe sleeps of 10 ms: two freezer rounds
        return await metric(plain_edge.http, "xlmate_loop_lag_seconds_count") >= 200

    await eventually(ran_two_seconds, 20, "the asyncio edge to run for two seconds")
    assert await metric(plain_edge.http, "xlmate_gc_frozen_objects") == 0


async def test_closed_sockets_leave_nothing_frozen_on_the_edge(cluster: Cluster) -> None:
    """Sockets frozen while open, then closed or aborted, are freed (edge/wsconn.py)."""
    cluster.start_broker()
    edge = cluster.start_edge("eu-west")
    count = 300  # without edge/wsconn.py each would leave ~11 frozen objects: 3,300

    async def frozen() -> float:
        return await metric(edge.http, "xlmate_gc_frozen_objects")

    async def none_open() -> bool:
        return await metric(edge.http, "xlmate_edge_connections") == 0

    async def open_all(n: int) -> list[ClientConnection]:
        async def seat(number: int) -> ClientConnection:
            game, color = f"frz-{number // 2}", ("white", "black")[number % 2]
            token = mint_seat_token(SECRET, game, color)
            ws = await connect(
                f"{edge.url}/v1/games/{game}/ws?token={token}",
                local_addr=("127.0.0.2", 0),
                compression=None,
            )
            await ws.recv()  # the sync: the edge's session exists
            return ws

        return list(await asyncio.gather(*(seat(n) for n in range(n))))

    for ws in await open_all(10):  # lazy imports and first-use caches, before the baseline
        await ws.close()
    await eventually(frozen, 10, "the edge to freeze its objects")
    await eventually(none_open, 10, "the warm-up sockets to go")
    base = await frozen()
    sockets = await open_all(count)

    async def all_frozen() -> bool:  # the freezer ran with every socket open
        return await frozen() > base + 5 * count

    await eventually(all_frozen, 15, "the open sockets to be frozen")
    for ws in sockets[: count // 2]:
        await ws.close()
    for ws in sockets[count // 2 :]:
        ws.transport.abort()  # no closing handshake: the TCP connection just ends
    await eventually(none_open, 15, "the edge to see every socket gone")

    async def freed() -> bool:
        return await frozen() < base + 3 * count

    await eventually(freed, 15, "the closed sockets' frozen objects to be freed")


async def test_discovery_placement_by_region_and_forgets_a_killed_edge(
    full_cluster: Cluster,
) -> None:
    """Region first, unknown regions still placed, and a SIGKILLed edge leaves the answer fast."""
    c = full_cluster
    us_edge = next(e for e in c.edges if e.region == "us-east")
    assert (await place(c, "us-east"))["node"]["id"] == us_edge.edge_id
    assert (await place(c, "eu-west"))["node"]["region"] == "eu-west"
    assert (await place(c, "mars-north"))["node"]["id"] in {e.edge_id for e in c.edges}
    us_edge.proc.kill()
    # Heartbeats every 200 ms: evicted within 3 intervals (+ scheduling slack).

    async def gone() -> bool:
        body = await place(c, "us-east")
        ids = {body["node"]["id"]} | {n["id"] for n in body["nodes"]}  # type: ignore[union-attr]
        return us_edge.edge_id not in ids

    await eventually(gone, 3.0, "discovery to forget the killed edge")
    assert (await place(c, "us-east"))["node"]["region"] != "us-east"


async def test_game_new_prints_a_game_and_two_tokens(cluster: Cluster) -> None:
    """`xlmate game new --clock 5+3` prints JSON with a game id, two seat tokens and page URLs."""
    game = cluster.new_game("5+3")
    assert set(game) == {"gameId", "white", "black", "watchUrl"}
    assert set(game["white"]) == set(game["black"]) == {"token", "url"}
    from xlmate.tokens import verify_seat_token

    claims = verify_seat_token(game["black"]["token"], SECRET, game["gameId"])
    assert claims.color == "black" and claims.clock is not None
    assert (claims.clock.initial, claims.clock.increment) == (300, 3)
