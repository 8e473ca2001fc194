"""Edges and a real broker pair: the edge connects to both brokers of the shard, follows
the active one, and switches on the first beat of a higher term (docs/architecture.md,
"Edges and broker pairs").

Every process is real: ``xlmate discovery``, two ``xlmate broker --shard 1/1 --peer``
processes with their own ports and journals (``tests.integration.pairs``), and an
``xlmate edge`` that learns the pair from discovery or from its options.  The players
are ``GameClient``s on real WebSockets.
"""

from __future__ import annotations

import secrets
from typing import Any

from tests.integration.cluster import Cluster, eventually, http_json_async
from tests.integration.games import Played, assert_clean_history, play
from tests.integration.pairs import PairBroker, start_pair
from tests.integration.test_shards import metric, seats
from tests.support.chess_games import random_game
from xlmate.client import GameClient


def endpoint(broker: PairBroker) -> str:
    """A broker's XSUB endpoint, as edges and discovery name it."""
    return f"tcp://127.0.0.1:{broker.xsub_port}"


async def brokers(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """Discovery's view of shard 1's live brokers, by XSUB endpoint."""
    _, body = await http_json_async(f"{cluster.discovery_url}/v1/brokers")
    return {b["xsub"]: b for b in body["shards"][0]["brokers"]} if body.get("shards") else {}


async def edge_shard(edge_http: str) -> dict[str, Any]:
    """The edge's view of shard 1 (its /healthz): active address, term, members."""
    _, body = await http_json_async(f"{edge_http}/healthz")
    return body.get("shards", {}).get("brokers", {}).get("1", {}) if isinstance(body, dict) else {}


async def test_an_edge_follows_the_active_broker_of_a_pair_and_switches_on_a_higher_term(
    cluster: Cluster,
) -> None:
    """The edge connects to both brokers, routes to the active one; after a SIGKILL of the
    active broker it switches to the standby on its first beat of a higher term, the game
    goes on with every acked move kept once, and the old broker, back, stays fenced."""
    cluster.start_discovery("--shards", "1")
    a, b = start_pair(cluster, start=(True, False))

    async def role_of(broker: PairBroker, role: str, in_sync: bool | None = None) -> bool:
        entry = (await brokers(cluster)).get(endpoint(broker))
        return (
            entry is not None
            and entry["role"] == role
            and (in_sync is None or entry["in_sync"] is in_sync)
        )

    await eventually(lambda: role_of(a, "active"), 20, "broker a to become active")
    b.proc.start()
    await eventually(lambda: role_of(b, "standby", True), 20, "broker b to be an in-sync standby")
    first_term = (await brokers(cluster))[endpoint(a)]["term"]

    edge = cluster.start_edge("eu-west", wait=False)

    async def follows(broker: PairBroker, *others: PairBroker) -> bool:
        """The edge routes to ``broker``, hears it, and is connected to it and ``others``."""
        view = await edge_shard(edge.http)
        members = {m["xsub"] for m in view.get("members", [])}
        return (
            view.get("xsub") == endpoint(broker)
            and bool(view.get("up"))
            and members == {endpoint(broker), *(endpoint(o) for o in others)}
        )

    await eventually(lambda: follows(a, b), 20, "the edge to connect to both and follow a")

    gid = f"pair-{secrets.token_hex(4)}"
    white_token, black_token = seats(gid)
    white = await GameClient(gid, token=white_token, edge_url=edge.url).connect()
    black = await GameClient(gid, token=black_token, edge_url=edge.url).connect()
    moves = random_game(seed=41, plies=18)
    played = Played()
    try:
        await play(white, black, moves[:6], played)
        switches = await metric(edge.http, "xlmate_edge_broker_switches_total")
        a.proc.kill()
        # (discovery evicts the dead broker: the edge then drops it too)
        await eventually(lambda: follows(b), 20, "the edge to switch to b")
        assert (await edge_shard(edge.http))["term"] > first_term
        assert await metric(edge.http, "xlmate_edge_broker_switches_total") > switches
        await play(white, black, moves[6:16], played)

        # The old active broker comes back: it rejoins as standby; the edge stays on b.
        a.proc.start()
        await eventually(lambda: role_of(a, "standby"), 20, "broker a to rejoin as standby")
        await eventually(lambda: follows(b, a), 20, "the edge to connect to a again, on b")
        await play(white, black, moves[16:], played)
        for client in (white, black):
            await client.wait_for_v(len(moves))
            assert_clean_history(client, moves)
        status, state = await http_json_async(f"{edge.http}/v1/games/{gid}")
        assert status == 200 and state["moves"] == moves
    finally:
        await white.close()
        await black.close()


async def test_an_edge_given_the_pair_by_hand_switches_on_the_beat_alone(cluster: Cluster) -> None:
    """An edge with both brokers in --broker options and no discovery of its own learns who
    is active only from their beats: it routes to the active one and, after a SIGKILL,
    switches to the new active one and the game goes on."""
    cluster.start_discovery("--shards", "1")
    a, b = start_pair(cluster)

    async def in_sync_pair() -> dict[str, Any] | None:
        live = await brokers(cluster)
        roles = sorted((entry["role"], entry["in_sync"]) for entry in live.values())
        return live if roles == [("active", True), ("standby", True)] else None

    live = await eventually(in_sync_pair, 20, "the pair to elect and sync")
    first, second = (a, b) if live[endpoint(a)]["role"] == "active" else (b, a)
    option = "1/1=tcp://127.0.0.1:{},tcp://127.0.0.1:{},tcp://127.0.0.1:{}"
    edge = cluster.start_edge(
        "eu-west",
        *("--discovery", ""),
        *("--broker", option.format(second.xsub_port, second.xpub_port, second.catchup_port)),
        *("--broker", option.format(first.xsub_port, first.xpub_port, first.catchup_port)),
        wait=False,
    )

    async def routes_to(broker: PairBroker) -> bool:
        view = await edge_shard(edge.http)
        return view.get("xsub") == endpoint(broker) and bool(view.get("up"))

    await eventually(lambda: routes_to(first), 20, "the edge to pick the active broker")
    gid = f"hand-{secrets.token_hex(4)}"
    white_token, black_token = seats(gid)
    white = await GameClient(gid, token=white_token, edge_url=edge.url).connect()
    black = await GameClient(gid, token=black_token, edge_url=edge.url).connect()
    moves = random_game(seed=42, plies=10)
    played = Played()
    try:
        await play(white, black, moves[:4], played)
        first.proc.kill()
        await eventually(lambda: routes_to(second), 20, "the edge to switch on the beat")
        await play(white, black, moves[4:], played)
        for client in (white, black):
            await client.wait_for_v(len(moves))
            assert_clean_history(client, moves)
    finally:
        await white.close()
        await black.close()
