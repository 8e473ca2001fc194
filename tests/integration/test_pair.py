"""Broker pairs with real processes on loopback (docs/architecture.md, "Broker pairs").

Every test starts the real ``xlmate discovery``, two ``xlmate broker --peer``
processes of one shard and (most) an edge, and plays real games through the
client library; brokers are killed with SIGKILL.  Partitions between hosts are
tested in tests/netns; these tests cover what loopback can: catch-up, the loss
of either broker, a returning broker with a divergent journal, and refused
peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
import zmq.auth

from tests.integration.cluster import SECRET, XLMATE, Cluster, eventually, http_json_async
from tests.integration.games import (
    TEN_MINUTES,
    Played,
    assert_clean_history,
    mint_game,
    play,
    seat_players,
)
from tests.integration.pairs import PairBroker, start_pair
from tests.integration.test_curve import connect_rogue
from tests.integration.test_shards import metric
from tests.support.chess_games import random_game
from xlmate.broker.journal import pack_record, read_records
from xlmate.broker.records import GameCreated
from xlmate.broker.replication import (
    Hello,
    PeerBeat,
    Refusal,
    Snapshot,
    decode_frame,
    encode_frame,
)
from xlmate.client import GameClient
from xlmate.heartbeat import BrokerHeartbeat, Lease, Reply, decode_request, encode_reply
from xlmate.shards import shard_of
from xlmate.tokens import mint_seat_token


async def roles(*brokers: PairBroker) -> list[tuple[str, int, bool]]:
    """(role, term, in_sync) of each broker (("", -1, False) for one that does not answer)."""
    out = []
    for broker in brokers:
        pair = await broker.pair()
        out.append((pair.get("role", ""), pair.get("term", -1), bool(pair.get("in_sync"))))
    return out


async def settled(a: PairBroker, b: PairBroker) -> tuple[PairBroker, PairBroker]:
    """Wait until one broker is active and the other in sync with it: (active, standby)."""

    async def pair_formed() -> tuple[PairBroker, PairBroker] | None:
        (ra, ta, sa), (rb, tb, sb) = await roles(a, b)
        if ra == "active" and rb == "standby" and sa and sb and ta == tb:
            return a, b
        if rb == "active" and ra == "standby" and sa and sb and ta == tb:
            return b, a
        return None

    result: tuple[PairBroker, PairBroker] = await eventually(
        pair_formed, 20, "one active broker and an in-sync standby"
    )
    return result


async def ready(c: Cluster, a: PairBroker, b: PairBroker) -> tuple[PairBroker, PairBroker]:
    """``settled``, and every edge routes the shard to the active broker."""
    active, standby = await settled(a, b)
    await edges_follow(c, active)
    return active, standby


async def edges_follow(c: Cluster, broker: PairBroker, shard: int = 1) -> None:
    """Wait until every edge routes ``shard`` to ``broker`` and hears it (discovery's map)."""
    epoch = (await broker.health_async())["epoch"]

    async def following() -> bool:
        for edge in c.edges:
            status, body = await http_json_async(f"{edge.http}/healthz")
            view = body.get("shards", {}).get("brokers", {}).get(str(shard), {})
            if status != 200 or view.get("epoch") != epoch or not view.get("up"):
                return False
        return True

    await eventually(following, 20, f"edges to follow broker {broker.name}")


async def journals_equal(a: PairBroker, b: PairBroker) -> bool:
    """Both journals hold the same records (the standby applied every batch)."""
    if not (a.journal.exists() and b.journal.exists()):
        return False
    return a.journal.read_bytes() == b.journal.read_bytes()


@pytest.fixture
def paired(cluster: Cluster) -> tuple[Cluster, PairBroker, PairBroker]:
    """Discovery, a pair for the one shard, and one edge, registered."""
    cluster.start_discovery()
    a, b = start_pair(cluster)
    cluster.start_edge("eu-west")
    cluster.wait_registered(*cluster.edges)
    return cluster, a, b


async def test_a_pair_elects_one_active_broker_and_the_standby_mirrors_its_journal(
    paired: tuple[Cluster, PairBroker, PairBroker],
) -> None:
    """Two paired brokers elect one active (term 1); after a game both journals are identical."""
    c, a, b = paired
    active, standby = await ready(c, a, b)
    assert (await active.pair())["term"] == 1
    game = c.new_game("10+0")
    white, black = await seat_players(game, c.edges[0].url)
    moves = random_game(seed=3, plies=20)
    try:
        await asyncio.wait_for(play(white, black, moves, Played()), 60)
        await white.wait_for_v(len(moves))
        assert_clean_history(white, moves)
    finally:
        await white.close()
        await black.close()
    await eventually(lambda: journals_equal(active, standby), 10, "the standby's journal")
    records, _, problem = read_records(standby.journal)
    assert problem is None
    assert sum(1 for r in records if getattr(r, "game_id", None) == game["gameId"]) >= len(moves)
    assert (await standby.health_async())["games"] == (await active.health_async())["games"]


async def test_a_standby_that_starts_empty_catches_up_and_takes_over_with_the_same_games(
    cluster: Cluster,
) -> None:
    """A standby started after play catches up by snapshot; when the active dies it has it all."""
    c = cluster
    c.start_discovery()
    a, b = start_pair(c, start=(True, False))
    c.start_edge("eu-west")
    c.wait_registered(*c.edges)
    await eventually(
        lambda: _role_is(a, "active"), 20, "the lone broker to become active (unprotected)"
    )
    assert (await a.pair())["unprotected"] is True
    game = c.new_game("10+0")
    white, black = await seat_players(game, c.edges[0].url)
    moves = random_game(seed=4, plies=30)
    try:
        await asyncio.wait_for(play(white, black, moves[:10], Played()), 60)
        b.proc.start()
        await settled(a, b)
        assert (await a.pair())["unprotected"] is False
        await asyncio.wait_for(play(white, black, moves[10:20], Played()), 60)
        await eventually(lambda: journals_equal(a, b), 10, "the standby's journal")
        a.proc.kill()
        await eventually(lambda: _role_is(b, "active"), 20, "the standby to take over")
        assert (await b.pair())["term"] == 2
        await asyncio.wait_for(play(white, black, moves[20:], Played()), 60)
        for client in (white, black):
            await client.wait_for_v(len(moves))
            assert_clean_history(client, moves)
    finally:
        await white.close()
        await black.close()


async def _role_is(broker: PairBroker, role: str) -> bool:
    pair = await broker.pair()
    return pair.get("role") == role and bool(pair.get("accepting", role != "active"))


class Games:
    """Games played continuously by background tasks, all through the cluster's one edge."""

    def __init__(
        self, c: Cluster, seeds: list[int], plies: int, shards: list[int] | None = None
    ) -> None:
        self.c = c
        self.shards = shards  # the shard each game must be on (None: any)
        self.scripts = [random_game(seed=seed, plies=plies) for seed in seeds]
        self.progress = [Played() for _ in seeds]
        self.seats: list[tuple[str, GameClient, GameClient]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.ack_times: list[float] = []  # monotonic time of every ack, all games together

    async def start(self, count: int = 1) -> Games:
        for n, (moves, done) in enumerate(zip(self.scripts, self.progress, strict=True)):
            gid, white_token, black_token = mint_game(TEN_MINUTES)
            if self.shards is not None:  # a fresh id owned by the wanted shard
                ids = (f"{gid[:6]}{i}" for i in range(10_000))
                gid = next(i for i in ids if shard_of(i, count) == self.shards[n])
                white_token = mint_seat_token(SECRET, gid, "white", clock=TEN_MINUTES)
                black_token = mint_seat_token(SECRET, gid, "black", clock=TEN_MINUTES)
            url = self.c.edges[0].url
            white = await GameClient(gid, token=white_token, edge_url=url).connect()
            black = await GameClient(gid, token=black_token, edge_url=url).connect()
            self.seats.append((gid, white, black))
            self.tasks.append(asyncio.create_task(self._play(white, black, moves, done)))
        return self

    async def _play(
        self, white: GameClient, black: GameClient, moves: list[str], done: Played
    ) -> None:
        for ply, uci in enumerate(moves):
            await (white if ply % 2 == 0 else black).move(uci)
            done.acked.append(uci)
            self.ack_times.append(time.monotonic())

    def acked(self) -> int:
        """Moves acked so far, all games together."""
        return sum(len(p.acked) for p in self.progress)

    def longest_stall_after(self, moment: float) -> float:
        """The longest gap between two acks (or ``moment`` and the next ack) after ``moment``."""
        times = [moment, *sorted(t for t in self.ack_times if t > moment)]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    async def finish_and_check(self) -> None:
        """Every game plays its whole script; every client saw each move once, in order."""
        await asyncio.wait_for(asyncio.gather(*self.tasks), 90)
        for (_, white, black), moves in zip(self.seats, self.scripts, strict=True):
            for client in (white, black):
                await client.wait_for_v(len(moves))
                assert_clean_history(client, moves)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for _, white, black in self.seats:
            await white.close()
            await black.close()


async def test_sigkill_of_the_active_broker_fails_over_losing_and_doubling_nothing(
    paired: tuple[Cluster, PairBroker, PairBroker],
) -> None:
    """SIGKILL the active broker mid-game: the standby takes over in a higher term, games
    finish with every acked move exactly once."""
    c, a, b = paired
    active, standby = await ready(c, a, b)
    games = await Games(c, seeds=[30, 31, 32], plies=40).start()
    try:
        await eventually(lambda: all(len(p.acked) >= 6 for p in games.progress), 30, "play")
        active.proc.kill()
        killed = time.monotonic()
        await eventually(lambda: _role_is(standby, "active"), 20, "the standby to take over")
        assert (await standby.pair())["term"] == 2
        await games.finish_and_check()
        print(f"longest stall after the SIGKILL: {games.longest_stall_after(killed):.2f} s")
        assert (await standby.health_async())["status"] == "ok"
    finally:
        await games.close()


async def test_sigkill_of_the_standby_does_not_interrupt_play_and_it_catches_up_again(
    paired: tuple[Cluster, PairBroker, PairBroker],
) -> None:
    """SIGKILL the standby mid-game: no client reconnects or fails a command; restarted, the
    standby resyncs and mirrors the journal again."""
    c, a, b = paired
    active, standby = await ready(c, a, b)
    games = await Games(c, seeds=[40, 41], plies=40).start()
    try:
        await eventually(lambda: games.acked() >= 10, 30, "play")
        standby.proc.kill()
        killed = time.monotonic()
        before = games.acked()
        await eventually(lambda: games.acked() >= before + 10, 30, "play without the standby")
        print(
            f"longest gap between acks after the SIGKILL: {games.longest_stall_after(killed):.3f} s"
        )
        assert (await active.pair())["role"] == "active"
        standby.proc.start()
        await settled(active, standby)
        await games.finish_and_check()
        for _, white, black in games.seats:
            assert white.connections == black.connections == 1, "a client had to reconnect"
        await eventually(lambda: journals_equal(active, standby), 10, "the standby's journal")
    finally:
        await games.close()


async def test_an_old_active_broker_with_a_divergent_tail_rejoins_as_standby(
    paired: tuple[Cluster, PairBroker, PairBroker],
) -> None:
    """After a failover, the old active broker restarts with a record the new one never had:
    it adopts the higher term, drops that tail and rejoins as an in-sync standby."""
    c, a, b = paired
    active, standby = await ready(c, a, b)
    game = c.new_game("10+0")
    white, black = await seat_players(game, c.edges[0].url)
    moves = random_game(seed=5, plies=12)
    try:
        await asyncio.wait_for(play(white, black, moves[:6], Played()), 60)
        active.proc.kill()
        stray = GameCreated(game_id="never-acked-" + secrets.token_hex(4), clock=[0, 0], ms=1)
        with open(active.journal, "ab") as f:
            f.write(pack_record(stray))  # as if written but never replicated (so never acked)
        await eventually(lambda: _role_is(standby, "active"), 20, "the standby to take over")
        await asyncio.wait_for(play(white, black, moves[6:], Played()), 60)
        active.proc.start()
        new_active, new_standby = await settled(a, b)
        assert (new_active, new_standby) == (standby, active)
        assert (await active.pair())["term"] == 2
        await eventually(lambda: journals_equal(active, standby), 10, "the journals to match")
        records, _, _ = read_records(active.journal)
        assert all(r.game_id != stray.game_id for r in records)
        assert (active.journal_dir / "term").read_text().strip() == "2"
        await white.wait_for_v(len(moves))
        assert_clean_history(white, moves)
    finally:
        await white.close()
        await black.close()


async def test_a_peer_with_a_stale_term_or_another_shard_is_refused_and_counted(
    paired: tuple[Cluster, PairBroker, PairBroker],
) -> None:
    """A hand-made peer claiming to be active in a stale term, or from another shard, gets a
    refusal and a metric; the pair goes on untouched."""
    _c, a, b = paired
    active, standby = await settled(a, b)
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{active.repl_port}")
    try:
        stale = PeerBeat(id="intruder", term=0, role="active", synced=False, seq=0)
        await sock.send(encode_frame(stale))
        refusal = decode_frame(await asyncio.wait_for(sock.recv(), 10))
        assert isinstance(refusal, Refusal) and refusal.term == 1
        assert await metric(active.http, "xlmate_broker_pair_refused_total", why="stale_term") == 1
        await sock.send(encode_frame(Hello(id="stranger", term=5, role="standby", shard="2/2")))
        refusal = decode_frame(await asyncio.wait_for(sock.recv(), 10))
        assert isinstance(refusal, Refusal) and "shard" in refusal.why
        assert await metric(active.http, "xlmate_broker_pair_refused_total", why="wrong_shard") == 1
        assert await roles(active, standby) == [("active", 1, True), ("standby", 1, True)]
    finally:
        sock.close()
        ctx.term()


async def test_a_burst_of_repeated_hellos_gets_one_snapshot(
    paired: tuple[Cluster, PairBroker, PairBroker],
) -> None:
    """Five copies of one hello (as a healed cut delivers them) get one snapshot, not five;
    a hello a lease later is answered again (a standby whose snapshot was lost)."""
    _c, a, b = paired
    active, standby = await settled(a, b)
    term = (await active.pair())["term"]
    standby.proc.kill()

    async def standby_lost() -> bool:
        return (await active.pair()).get("standby") is None

    await eventually(standby_lost, 20, "the active broker to give up on its standby")
    sent = "xlmate_broker_pair_snapshots_total"
    before = await metric(active.http, sent, dir="sent")
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{active.repl_port}")
    hello = encode_frame(Hello(id="shard-1-of-1.copycat", term=term, role="standby", shard="1/1"))
    try:
        for _ in range(5):
            await sock.send(hello)
        # A hello of another shard last: its refusal comes after all five were handled.
        await sock.send(encode_frame(Hello(id="marker", term=term, role="standby", shard="2/2")))
        first_parts = 0
        while True:
            frame = decode_frame(await asyncio.wait_for(sock.recv(), 10))
            if isinstance(frame, Refusal):
                break
            first_parts += isinstance(frame, Snapshot) and frame.part == 0
        assert first_parts == 1, f"{first_parts} snapshots for one hello sent five times"
        assert await metric(active.http, sent, dir="sent") == before + 1

        async def answered_again() -> bool:
            await sock.send(hello)  # then read what comes for a moment (beats come too)
            deadline = time.monotonic() + 0.3
            while (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    frame = decode_frame(await asyncio.wait_for(sock.recv(), left))
                    if isinstance(frame, Snapshot) and frame.part == 0:
                        return True
            return False

        await eventually(answered_again, 10, "a hello a lease later to get a snapshot again")
        assert await metric(active.http, sent, dir="sent") == before + 2
        assert (await active.pair())["role"] == "active"
    finally:
        sock.close()
        ctx.term()


async def test_two_shards_of_pairs_fail_over_one_shard_while_the_other_plays_on(
    cluster: Cluster,
) -> None:
    """The Procfile's layout (2 shards, each a pair): SIGKILL shard 1's active broker while a
    game plays on each shard; both games finish, each move acked once."""
    c = cluster
    c.start_discovery("--shards", "2")
    pairs = [start_pair(c, 1, 2), start_pair(c, 2, 2)]
    c.start_edge("eu-west")
    c.wait_registered(*c.edges)
    (active1, standby1), (active2, _) = [await settled(a, b) for a, b in pairs]
    await edges_follow(c, active1, 1)
    await edges_follow(c, active2, 2)
    games = Games(c, seeds=[50, 51, 52, 53], plies=30, shards=[1, 2, 1, 2])
    await games.start(count=2)
    try:
        assert [shard_of(gid, 2) for gid, _, _ in games.seats] == [1, 2, 1, 2]
        await eventually(lambda: games.acked() >= 16, 30, "play")
        active1.proc.kill()
        await eventually(lambda: _role_is(standby1, "active"), 20, "shard 1's standby")
        await games.finish_and_check()
    finally:
        await games.close()


async def test_both_brokers_of_a_pair_sigkilled_and_restarted_resume_with_nothing_lost(
    paired: tuple[Cluster, PairBroker, PairBroker],
) -> None:
    """SIGKILL both brokers while discovery stays up, restart both: the old active broker
    gets its lease back (its journal is its identity), the other resyncs, play goes on."""
    c, a, b = paired
    active, standby = await ready(c, a, b)
    game = c.new_game("10+0")
    white, black = await seat_players(game, c.edges[0].url)
    moves = random_game(seed=6, plies=16)
    try:
        await asyncio.wait_for(play(white, black, moves[:8], Played()), 60)
        standby.proc.kill()
        active.proc.kill()
        standby.proc.start()
        active.proc.start()
        new_active, _ = await settled(a, b)
        assert new_active is active
        assert (await active.pair())["term"] == 1
        await asyncio.wait_for(play(white, black, moves[8:], Played()), 60)
        await white.wait_for_v(len(moves))
        assert_clean_history(white, moves)
        await eventually(lambda: journals_equal(active, standby), 10, "the journals to match")
    finally:
        await white.close()
        await black.close()


async def test_a_pair_replicates_over_curve_and_shuts_out_peers_without_the_key(
    cluster: Cluster, tmp_path: Path
) -> None:
    """With CURVE the pair forms and mirrors its journal; a replication peer with no key or
    an unauthorized one fails the handshake (a peer from another cluster)."""
    c = cluster
    keys = tmp_path / "keys"
    subprocess.run([XLMATE, "keys", str(keys)], capture_output=True, check=True)
    c.curve_dir = keys
    c.start_discovery()
    a, b = start_pair(c)
    c.start_edge("eu-west")
    c.wait_registered(*c.edges)
    active, standby = await ready(c, a, b)
    broker_public, _ = zmq.auth.load_certificate(keys / "broker.key")
    ctx = zmq.asyncio.Context()
    sockets = []
    game = c.new_game("10+0")
    white, black = await seat_players(game, c.edges[0].url)
    try:
        for key in (None, broker_public):
            sock, event = await connect_rogue(
                ctx, zmq.DEALER, f"tcp://127.0.0.1:{active.repl_port}", key
            )
            sockets.append(sock)
            assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED, "a rogue replication peer got in"
        moves = random_game(seed=8, plies=10)
        await asyncio.wait_for(play(white, black, moves, Played()), 60)
        await eventually(lambda: journals_equal(active, standby), 10, "the standby's journal")
    finally:
        for sock in sockets:
            sock.close(linger=0)
        ctx.term()
        await white.close()
        await black.close()


async def test_a_promoted_broker_acks_alone_only_once_discovery_heard_it_unprotected(
    cluster: Cluster,
) -> None:
    """Granted the lease (by discovery played by hand), a broker heartbeats as active with
    in_sync=false and does not ack alone until discovery has answered that heartbeat."""
    c = cluster
    ctx = zmq.asyncio.Context()
    rep = ctx.socket(zmq.REP)  # discovery's REP port, answered by this test
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind(f"tcp://127.0.0.1:{c.rep_port}")
    answering: asyncio.Task[None] | None = None

    async def next_heartbeat() -> BrokerHeartbeat:
        hb = decode_request(await asyncio.wait_for(rep.recv(), 20))
        assert isinstance(hb, BrokerHeartbeat), hb
        return hb

    try:
        a, _ = start_pair(c, start=(True, False), discovery=f"tcp://127.0.0.1:{c.rep_port}")
        while True:  # grant the lease (again, if a reply went to a socket given up on)
            second = await next_heartbeat()
            if second.role == "active":
                break  # held: discovery has not heard it yet
            assert second.term == 0
            lease = Lease(second.id, 1, 60_000)
            await rep.send(encode_reply(Reply(ok=True, lease=lease)))
        assert (second.role, second.term, second.claim, second.in_sync) == (
            "active",
            1,
            True,
            False,
        )
        pair = await a.pair()
        assert pair["role"] == "active" and pair["accepting"] and pair["unprotected"]
        assert pair["acking_alone"] is False, "acks alone before discovery heard it unprotected"
        await rep.send(encode_reply(Reply(ok=True, lease=lease)))

        async def answer_all() -> None:  # (a retry of the held heartbeat, and later ones)
            while True:
                await next_heartbeat()
                await rep.send(encode_reply(Reply(ok=True, lease=lease)))

        answering = asyncio.create_task(answer_all())

        async def acking_alone() -> bool:
            return (await a.pair()).get("acking_alone") is True

        await eventually(acking_alone, 20, "the broker to ack alone once discovery answered")
    finally:
        if answering is not None:
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await answering
        rep.close(linger=0)
        ctx.term()
