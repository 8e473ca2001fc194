"""Presence over real processes: who is connected, seen from the other edges.

Edges report per-game socket counts to the broker, which aggregates them and
publishes ``presence`` (not versioned) to every edge of the game; an edge that
stops beating has its presence dropped after ~3 s.  The players sit on
different edges in every test; one module-scoped cluster is shared (each test
plays its own game), except the edge killed on purpose, which is started for
that test alone.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.integration.cluster import Cluster, Edge, http_json
from tests.integration.games import mint_game
from xlmate.client import GameClient

Seen = tuple[bool, bool, int]


def seen(client: GameClient) -> Seen | None:
    """The last ``presence`` the client got: (white online, black online, spectators)."""
    p = client.model.presence
    return None if p is None else (p["white"], p["black"], p["spectators"])


async def sees(client: GameClient, expected: Seen, timeout: float = 5.0) -> None:
    """Wait until the client's last ``presence`` message says ``expected``."""
    try:
        await client.wait_for(lambda: seen(client) == expected, timeout)
    except TimeoutError:
        raise AssertionError(f"presence {seen(client)}, expected {expected}") from None


async def players_online(edge: Edge, gid: str) -> dict[str, Any]:
    """``players`` of GET /v1/games/{id} on ``edge``."""
    status, body = await asyncio.to_thread(http_json, f"{edge.http}/v1/games/{gid}")
    assert status == 200, body
    return body["players"]  # type: ignore[no-any-return]


async def test_players_see_each_other_leave_and_come_back(shared_cluster: Cluster) -> None:
    """Both players see white/black online; a player leaving flips it off, returning flips it on."""
    c = shared_cluster
    eu, us, ap = c.edges
    gid, white_token, black_token = mint_game(white_id="alice", black_id="bob")
    async with GameClient(gid, token=black_token, edge_url=us.url) as black:
        async with GameClient(gid, token=white_token, edge_url=eu.url) as white:
            await sees(white, (True, True, 0))
            await sees(black, (True, True, 0))
            assert await players_online(ap, gid) == {
                "white": {"id": "alice", "online": True},
                "black": {"id": "bob", "online": True},
            }
        await sees(black, (False, True, 0))
        assert (await players_online(ap, gid))["white"] == {"id": "alice", "online": False}

        async with GameClient(gid, token=white_token, edge_url=ap.url) as back:
            await sees(black, (True, True, 0))
            await sees(back, (True, True, 0))
        await sees(black, (False, True, 0))


async def test_two_connections_of_one_seat_keep_it_online_until_both_leave(
    shared_cluster: Cluster,
) -> None:
    """A seat open on two edges stays online when one socket closes, and goes off with the last."""
    c = shared_cluster
    eu, us, ap = c.edges
    gid, white_token, black_token = mint_game()
    async with GameClient(gid, token=black_token, edge_url=us.url) as black:
        async with GameClient(gid, token=white_token, edge_url=eu.url) as phone:
            async with GameClient(gid, token=white_token, edge_url=ap.url) as laptop:
                await sees(black, (True, True, 0))
                await sees(laptop, (True, True, 0))
            # ap-south reports the laptop's leaving before this spectator's arrival (one PUB
            # socket, in order), so seeing the spectator proves the broker took both.
            async with GameClient(gid, edge_url=ap.url):
                await sees(black, (True, True, 1))
            await phone.move("e2e4")
            await sees(black, (True, True, 0))
        await sees(black, (False, True, 0))


async def test_spectators_on_two_edges_are_counted(shared_cluster: Cluster) -> None:
    """Two spectators on two edges show as spectators 2 to everyone; one leaving makes it 1."""
    c = shared_cluster
    eu, us, ap = c.edges
    gid, white_token, black_token = mint_game()
    async with (
        GameClient(gid, token=white_token, edge_url=eu.url) as white,
        GameClient(gid, token=black_token, edge_url=us.url) as black,
        GameClient(gid, edge_url=us.url) as first,
    ):
        async with GameClient(gid, edge_url=ap.url) as second:
            for client in (white, black, first, second):
                await sees(client, (True, True, 2))
            assert second.model.you == "spectator"
        for client in (white, black, first):
            await sees(client, (True, True, 1))


async def test_a_sigkilled_edge_takes_its_players_presence_with_it(
    shared_cluster: Cluster,
) -> None:
    """White's edge is SIGKILLed: black sees white go offline once the broker drops that edge."""
    c = shared_cluster
    eu, us, _ = c.edges
    doomed = c.start_edge("eu-west")
    try:
        await _white_on_a_doomed_edge(eu, us, doomed)
    finally:  # the module's cluster goes back to its three edges for the other tests
        doomed.proc.kill()
        c.edges.remove(doomed)


async def _white_on_a_doomed_edge(eu: Edge, us: Edge, doomed: Edge) -> None:
    """The test's body: white on ``doomed`` (killed here), black on ``us``, watched from ``eu``."""
    gid, white_token, black_token = mint_game()
    async with (
        GameClient(gid, token=white_token, edge_url=doomed.url) as white,
        GameClient(gid, token=black_token, edge_url=us.url) as black,
    ):
        await sees(black, (True, True, 0))
        await white.move("e2e4")
        await black.wait_for_v(1)
        killed = time.monotonic()
        doomed.proc.kill()
        await sees(black, (False, True, 0), timeout=10)
        print(f"\nwhite shown offline {(time.monotonic() - killed) * 1000:.0f} ms after SIGKILL")
        assert (await players_online(eu, gid))["white"]["online"] is False

        async with GameClient(gid, token=white_token, edge_url=eu.url) as back:
            assert back.model.moves == ["e2e4"]
            await sees(black, (True, True, 0))
