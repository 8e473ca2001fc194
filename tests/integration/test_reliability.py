"""Nothing acked is ever lost: real processes killed with real signals (issue: reliability)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import connect

from tests.integration.cluster import Cluster, eventually, http_get_async, http_json_async
from tests.integration.games import (
    Played,
    assert_clean_history,
    play,
    seat_players,
)
from tests.support.chess_games import random_game
from xlmate.broker.journal import pack_record, read_records
from xlmate.broker.records import CommandApplied
from xlmate.client import GameClient


@pytest.fixture
def eu_cluster(cluster: Cluster) -> Cluster:
    """discovery, broker, two eu-west edges and one us-east edge, registered."""
    cluster.start_discovery()
    cluster.start_broker()
    for region in ("eu-west", "eu-west", "us-east"):
        cluster.start_edge(region)
    cluster.wait_registered(*cluster.edges)
    return cluster


async def seat_pair(
    c: Cluster, white_region: str = "eu-west", black_region: str = "us-east"
) -> AsyncIterator[tuple[str, GameClient, GameClient]]:
    """A new game with both players connected through discovery."""
    game = c.new_game("10+0")
    gid = game["gameId"]
    white = GameClient(
        gid, token=game["white"]["token"], discovery_url=c.discovery_url, region=white_region
    )
    black = GameClient(
        gid, token=game["black"]["token"], discovery_url=c.discovery_url, region=black_region
    )
    await white.connect()
    await black.connect()
    try:
        yield gid, white, black
    finally:
        await white.close()
        await black.close()


async def server_moves(c: Cluster, gid: str) -> list[str]:
    """The authoritative move list, read over HTTP from any live edge."""
    for edge in c.edges:
        if edge.proc.alive():
            status, sync = await http_json_async(f"{edge.http}/v1/games/{gid}")
            if status == 200:
                return list(sync["moves"])
    raise AssertionError("no edge answered")


@dataclass
class Background:
    """Games played continuously by tasks while a test injects faults."""

    seats: list[tuple[str, GameClient, GameClient]]
    scripts: list[list[str]]
    progress: list[Played]
    tasks: list[asyncio.Task[None]]

    def acked(self) -> int:
        """Moves acked so far, all games together."""
        return sum(len(p.acked) for p in self.progress)

    def all_done(self) -> bool:
        """Every game played its whole script."""
        return all(t.done() for t in self.tasks)

    async def finish_and_check(self, c: Cluster) -> None:
        """Let every game finish, then check the server and every client saw each move once."""
        await asyncio.wait_for(asyncio.gather(*self.tasks), 60)
        for (gid, white, black), moves in zip(self.seats, self.scripts, strict=True):
            assert await server_moves(c, gid) == moves
            for client in (white, black):
                await client.wait_for_v(len(moves))
                assert_clean_history(client, moves)


@contextlib.asynccontextmanager
async def background_games(c: Cluster, seeds: list[int], plies: int) -> AsyncIterator[Background]:
    """One game per seed (white in eu-west, black in us-east), played by background tasks."""
    scripts = [random_game(seed=seed, plies=plies) for seed in seeds]
    pairs = [seat_pair(c) for _ in scripts]
    seats = [await anext(p) for p in pairs]
    progress = [Played() for _ in scripts]
    tasks = [
        asyncio.create_task(play(white, black, moves, done))
        for (_, white, black), moves, done in zip(seats, scripts, progress, strict=True)
    ]
    try:
        yield Background(seats, scripts, progress, tasks)
    finally:
        for task in tasks:
            task.cancel()
        for pair in pairs:
            await pair.aclose()


async def test_edge_sigkill_mid_game_players_reconnect_and_lose_nothing(
    eu_cluster: Cluster,
) -> None:
    """SIGKILL of the players' edge: they re-ask discovery, resume with v, finish the game."""
    c = eu_cluster
    moves = random_game(seed=1, plies=30)
    async for gid, white, black in seat_pair(c, "eu-west", "eu-west"):
        assert white.connected_to == black.connected_to
        victim = next(e for e in c.edges if e.url == white.connected_to)
        await play(white, black, moves[:10], Played())
        victim.proc.kill()
        played = Played()
        await asyncio.wait_for(play(white, black, moves[10:], played), 30)
        for client in (white, black):
            await client.wait_for_v(len(moves))
            assert client.connected_to != victim.url
            assert_clean_history(client, moves)
        assert await server_moves(c, gid) == moves


async def test_broker_sigkill_and_restart_with_moves_in_flight(eu_cluster: Cluster) -> None:
    """SIGKILL the broker while three games play; after restart every acked move is there once."""
    c = eu_cluster
    assert c.broker is not None
    async with background_games(c, seeds=[10, 11, 12], plies=24) as games:
        await eventually(
            lambda: all(len(p.acked) >= 4 for p in games.progress), 20, "games to start"
        )
        c.broker.kill()
        acked_before = [len(p.acked) for p in games.progress]
        c.restart(c.broker)
        restarted = time.monotonic()
        # Games resume: each one gets a new move acked soon after the broker is back.
        await eventually(
            lambda: all(
                len(p.acked) > before
                for p, before in zip(games.progress, acked_before, strict=True)
            ),
            3.0 + 2.0,
            "games to resume after the broker restart",
        )
        resumed_after = time.monotonic() - restarted
        print(f"games resumed {resumed_after:.2f}s after the broker was healthy again")
        await games.finish_and_check(c)


async def test_sigterm_drains_and_a_rolling_restart_loses_nothing(eu_cluster: Cluster) -> None:
    """SIGTERM every edge in turn (replacing it) while games play: all moves land, edges exit 0."""
    c = eu_cluster
    async with background_games(c, seeds=[20, 21, 22], plies=60) as games:
        for old in list(c.edges):
            replacement = c.start_edge(old.region)
            c.wait_registered(replacement)
            before = games.acked()
            started = time.monotonic()
            old.proc.signal(signal.SIGTERM)
            assert await asyncio.to_thread(old.proc.wait_exit, 15) == 0
            print(f"edge {old.edge_id} drained in {time.monotonic() - started:.2f}s")
            c.edges.remove(old)
            try:
                await eventually(
                    lambda before=before: games.acked() > before + 2 or games.all_done(),
                    20,
                    "games to go on after the drain",
                )
            except AssertionError:
                states = [
                    (len(p.acked), w.connected_to, b.connected_to, w.model.v, b.model.v)
                    for p, (_, w, b) in zip(games.progress, games.seats, strict=True)
                ]
                raise AssertionError(f"stalled after draining {old.edge_id}: {states}") from None
        await games.finish_and_check(c)
        for _, white, black in games.seats:
            for client in (white, black):
                assert client.connections >= 2, "the drain moved every client"


async def test_draining_edge_leaves_discovery_at_once(eu_cluster: Cluster) -> None:
    """An edge that got SIGTERM is no longer offered by discovery, before it is even gone."""
    c = eu_cluster
    us = next(e for e in c.edges if e.region == "us-east")
    game = c.new_game()
    # a connected player: the drain must close it with 1012
    async with connect(
        f"{us.url}/v1/games/{game['gameId']}/ws?token={game['white']['token']}"
    ) as ws:
        await ws.recv()
        us.proc.signal(signal.SIGTERM)
        await ws.wait_closed()
        assert ws.close_code == 1012

    async def not_offered() -> bool:
        status, body = await http_json_async(f"{c.discovery_url}/v1/nodes/discovery?region=us-east")
        ids = [body["node"]["id"], *(n["id"] for n in body["nodes"])] if status == 200 else []
        return us.edge_id not in ids

    await eventually(not_offered, 2.0, "discovery to stop offering the draining edge")
    assert await asyncio.to_thread(us.proc.wait_exit, 15) == 0


async def test_forced_pubsub_gaps_are_filled_before_anything_newer(cluster: Cluster) -> None:
    """An edge that drops every 3rd bus event still delivers every event, in order, to everyone."""
    cluster.start_broker()
    clean = cluster.start_edge("eu-west")
    lossy = cluster.start_edge("us-east", "--drop-events-every", "3")
    game = cluster.new_game()
    gid = game["gameId"]
    white = await GameClient(gid, token=game["white"]["token"], edge_url=clean.url).connect()
    black = await GameClient(gid, token=game["black"]["token"], edge_url=lossy.url).connect()
    watcher = await GameClient(gid, edge_url=lossy.url).connect()
    moves = random_game(seed=3, plies=24)
    try:
        await asyncio.wait_for(play(white, black, moves, Played()), 30)
        for client in (white, black, watcher):
            await client.wait_for_v(len(moves))
            assert_clean_history(client, moves)
        assert white.events == black.events == watcher.events
        status, health = await http_json_async(f"{lossy.http}/healthz")
        assert status == 200 and health["status"] == "ok"
    finally:
        for client in (white, black, watcher):
            await client.close()


async def recv_json(ws: object, timeout: float = 5.0) -> dict[str, object]:
    import json

    raw = await asyncio.wait_for(ws.recv(), timeout)  # type: ignore[attr-defined]
    message: dict[str, object] = json.loads(raw)
    return message


async def test_resume_with_v_gets_exactly_the_missed_events(cluster: Cluster) -> None:
    """Reconnecting with ?v=N (to another edge) gives the events after N, in order, no sync."""
    cluster.start_broker()
    a = cluster.start_edge("eu-west")
    b = cluster.start_edge("us-east")
    game = cluster.new_game()
    gid = game["gameId"]
    white, black = await seat_players(game, a.url)
    moves = random_game(seed=4, plies=7)
    moves, next_move = moves[:6], moves[6]
    try:
        await play(white, black, moves, Played())
        url = f"{b.url}/v1/games/{gid}/ws?token={game['black']['token']}&v=2"
        async with connect(url) as ws:
            got = [await recv_json(ws) for _ in range(4)]
        assert [m["type"] for m in got] == ["move"] * 4
        assert [m["v"] for m in got] == [3, 4, 5, 6]
        assert [m["uci"] for m in got] == moves[2:]
        async with connect(f"{b.url}/v1/games/{gid}/spectate?v=6") as ws:
            # nothing missed: the first message is not a sync but the next live event
            await white.move(next_move)
            first = await recv_json(ws)
            while first["type"] == "presence":
                first = await recv_json(ws)
            assert first["type"] == "move" and first["v"] == 7
    finally:
        await white.close()
        await black.close()


async def test_resume_older_than_history_gets_a_sync(cluster: Cluster) -> None:
    """When the broker's history no longer holds v, a resuming client gets a full sync."""
    cluster.start_broker("--history", "3")
    a = cluster.start_edge("eu-west")
    game = cluster.new_game()
    gid = game["gameId"]
    white, black = await seat_players(game, a.url)
    moves = random_game(seed=5, plies=8)
    try:
        await play(white, black, moves, Played())
        async with connect(f"{a.url}/v1/games/{gid}/spectate?v=1") as ws:
            first = await recv_json(ws)
        assert first["type"] == "sync" and first["v"] == 8 and first["moves"] == moves
    finally:
        await white.close()
        await black.close()


async def test_corrupt_journal_tail_is_dropped_and_the_game_goes_on(cluster: Cluster) -> None:
    """A torn record at the journal's end (power loss) is cut with a log line, never a crash."""
    broker = cluster.start_broker()
    edge = cluster.start_edge("eu-west")
    game = cluster.new_game()
    white, black = await seat_players(game, edge.url)
    moves = random_game(seed=6, plies=10)
    try:
        await play(white, black, moves[:6], Played())
        broker.kill()
        journal = cluster.root / "journal" / "journal.log"
        with open(journal, "ab") as f:
            f.write(b"\x00\x00\x01\x00\xde\xad\xbe\xefhalf a record")
        cluster.restart(broker)
        assert "dropping the" in broker.log()
        await asyncio.wait_for(play(white, black, moves[6:], Played()), 20)
        for client in (white, black):
            await client.wait_for_v(len(moves))
            assert_clean_history(client, moves)
    finally:
        await white.close()
        await black.close()


async def test_a_broker_that_lost_acked_moves_takes_every_socket_back_with_it(
    cluster: Cluster,
) -> None:
    """The broker comes back with fewer moves than it acked (``--fsync never`` and a power
    loss, simulated by cutting its journal): each socket gets the older state once, and
    the game goes on from there; a late answer on a busy bus is never taken for this."""
    broker = cluster.start_broker()
    edge = cluster.start_edge("eu-west")
    game = cluster.new_game()
    white, black = await seat_players(game, edge.url)
    moves = random_game(seed=7, plies=8)
    try:
        await play(white, black, moves[:6], Played())
        broker.kill()
        journal = cluster.root / "journal" / "journal.log"
        records, _, _ = read_records(journal)
        last_two = [i for i, r in enumerate(records) if isinstance(r, CommandApplied)][-2]
        journal.write_bytes(b"".join(pack_record(r) for r in records[:last_two]))
        cluster.restart(broker)
        for client in (white, black):
            await eventually(lambda c=client: c.model.v == 4, 10.0, "the sockets to go back to v4")
            assert client.rewinds == 1 and client.model.moves == moves[:4]
        assert "went back from v6 to v4" in edge.proc.log()
        await asyncio.wait_for(play(white, black, moves[4:], Played()), 20)
        for client in (white, black):
            await client.wait_for_v(len(moves))
            assert client.model.moves == moves and client.rewinds == 1
    finally:
        await white.close()
        await black.close()


async def test_compaction_keeps_live_games_and_archives_finished_ones(cluster: Cluster) -> None:
    """--compact-after 1: games end and the journal is compacted while another is in
    play; after a SIGKILL the live game goes on and the ended ones are served from the
    archive.  (A game's records stay until its archive file is durable, which a
    background thread makes it: the first game leaves the journal at a later compaction.)"""
    broker = cluster.start_broker("--compact-after", "1")
    edge = cluster.start_edge("eu-west")
    journal = cluster.root / "journal" / "journal.log"
    live = cluster.new_game()
    white, black = await seat_players(live, edge.url)
    moves = random_game(seed=8, plies=10)
    ended: list[str] = []

    def games_in_journal() -> set[str]:
        return {record.game_id for record in read_records(journal)[0]}

    try:
        await play(white, black, moves[:4], Played())
        for _ in range(3):
            game = cluster.new_game()
            w, b = await seat_players(game, edge.url)
            await play(w, b, ["f2f3", "e7e5", "g2g4", "d8h4"], Played())  # fool's mate
            await w.close()
            await b.close()
            ended.append(game["gameId"])
        await eventually(
            lambda: ended[0] not in games_in_journal(), 10.0, "the first game compacted away"
        )
        kept = games_in_journal()
        assert live["gameId"] in kept and kept <= {live["gameId"], *ended}
        broker.kill()
        cluster.restart(broker)
        await asyncio.wait_for(play(white, black, moves[4:], Played()), 20)
        for client in (white, black):
            await client.wait_for_v(len(moves))
            assert_clean_history(client, moves)
        for gid in ended:
            status, pgn = await http_get_async(f"{edge.http}/v1/games/{gid}/pgn")
            assert status == 200 and b"Qh4#" in pgn and b'[Result "0-1"]' in pgn
    finally:
        await white.close()
        await black.close()


async def test_discovery_restart_loses_nothing(eu_cluster: Cluster) -> None:
    """Discovery killed and restarted: every edge is registered again within a few intervals."""
    c = eu_cluster
    assert c.discovery is not None
    c.discovery.kill()
    c.restart(c.discovery)
    restarted = time.monotonic()

    async def all_back() -> bool:
        status, body = await http_json_async(f"{c.discovery_url}/v1/nodes")
        return status == 200 and len(body["nodes"]) == len(c.edges)

    await eventually(all_back, 5.0, "edges to re-register")
    print(f"edges re-registered {time.monotonic() - restarted:.2f}s after discovery restarted")


async def test_many_games_starting_at_once_never_go_back_in_v(cluster: Cluster) -> None:
    """Thirty games whose players join and move at once on one edge: no sync older than seen."""
    cluster.start_broker()
    edge = cluster.start_edge("eu-west")
    games = [cluster.new_game() for _ in range(30)]
    clients: list[GameClient] = []
    for game in games:
        for color in ("white", "black"):
            clients.append(
                GameClient(game["gameId"], token=game[color]["token"], edge_url=edge.url)
            )
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        scripts = [random_game(seed=100 + i, plies=6) for i in range(len(games))]
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    play(clients[2 * i], clients[2 * i + 1], moves, Played())
                    for i, moves in enumerate(scripts)
                )
            ),
            60,
        )
        for i, moves in enumerate(scripts):
            for client in clients[2 * i : 2 * i + 2]:
                await client.wait_for_v(len(moves))
                assert_clean_history(client, moves)
    finally:
        await asyncio.gather(*(client.close() for client in clients))
