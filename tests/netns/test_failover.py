"""Broker pairs fail over on real hosts and real partitions, with games under load.

Every scenario runs discovery, the pair (broker1 active, broker2 standby in
sync) and two edges, each on its own network-namespace host
(tests/netns/pair.py), while ``GAMES`` games play through discovery and the
edges (tests/netns/load.py records every acked move).  After the fault, each
scenario proves the issue's guarantees from the players' side: every game
moves again, and at the end 0 acked moves were lost or doubled and every game
has exactly one history (acked v 1..N, the served moves are the acked ones,
both players saw each v once, in order).  The pair's state (who is active,
in which term, in sync or not) is read from discovery and the brokers.

Stalls (from the fault to each game's next ack) are printed, never asserted
on: there are no timed assertions in the tests (BENCHMARKS.md has figures).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Final

import chess

from tests.integration.cluster import eventually, wait_until
from tests.integration.test_readiness import offered, placement, unready
from tests.netns.harness import NetCluster
from tests.netns.load import Load, playing, summary
from tests.netns.pair import (
    PAIR_TIMEOUT_S,
    health,
    pair_is,
    pair_view,
    refused_claims,
    start_pair,
    wait_pair,
)
from xlmate.broker.journal import pack_record, read_records
from xlmate.broker.records import CommandApplied

GAMES: Final = 24
PACE_S: Final = 0.25  # a move per game every 250 ms at most: ~100 moves/s in all
MOVE_TIMEOUT_S: Final = 30.0


async def moving(load: Load, by: int = 3, what: str = "every game to move") -> None:
    """Wait until every game has acked ``by`` more moves than now."""
    counts = load.counts()
    await eventually(lambda: load.moved_since(counts, by), MOVE_TIMEOUT_S, what)


def report(what: str, load: Load, since: float) -> None:
    """Print the stall of every game after a fault (a measurement, not an assertion)."""
    print(f"\n[netns] {what}: stall to next ack {summary(load.stalls(since))}; "
          f"longest gap {summary(load.max_gaps(since))}")  # fmt: skip


async def test_sigkill_of_the_active_broker_fails_over_and_loses_nothing(
    netcluster: NetCluster,
) -> None:
    """SIGKILL the active broker under load: the standby takes over in a higher term, every
    game moves again, the old broker restarted rejoins as standby, nothing acked is lost."""
    c = netcluster
    term = start_pair(c)
    async with playing(c, GAMES, pace_s=PACE_S, seed=1) as load:
        await moving(load)
        c.pair["broker1"].proc.kill()
        killed = time.monotonic()
        new_term = wait_pair(c, "broker2", None, term + 1, "broker2 to take over")
        await moving(load, what="every game to move after the failover")
        report("SIGKILL active", load, killed)
        c.pair["broker1"].proc.start()
        assert wait_pair(c, "broker2", "broker1", new_term) == new_term
        await moving(load)
        await load.stop()
        await load.check(c)


async def test_sigkill_of_the_standby_never_stops_a_game(netcluster: NetCluster) -> None:
    """SIGKILL the standby under load: the active goes on alone in the same term and every
    game keeps moving; restarted, the standby catches up and the pair is whole again."""
    c = netcluster
    term = start_pair(c)
    async with playing(c, GAMES, pace_s=PACE_S, seed=2) as load:
        await moving(load)
        c.pair["broker2"].proc.kill()
        killed = time.monotonic()
        await moving(load, 5, "every game to keep moving without its standby")
        report("SIGKILL standby", load, killed)
        assert pair_is(c, "broker1", None, term) == term, pair_view(c)
        assert not load.errors()
        c.pair["broker2"].proc.start()
        assert wait_pair(c, "broker1", "broker2", term) == term
        await moving(load)
        await load.stop()
        await load.check(c)


async def test_cutting_only_the_link_between_the_brokers_does_not_fail_over(
    netcluster: NetCluster,
) -> None:
    """nftables drops broker1<->broker2 only: discovery still hears the active, so the
    standby's claims are refused; the active goes on unprotected in the same term, and
    after healing the standby catches up, still in that term."""
    c, net = netcluster, netcluster.network
    term = start_pair(c)
    async with playing(c, GAMES, pace_s=PACE_S, seed=3) as load:
        await moving(load)
        refused = refused_claims(c)
        net.cut("broker1", "broker2")
        cut = time.monotonic()
        wait_until(
            lambda: not pair_view(c)["broker1"].in_sync,
            PAIR_TIMEOUT_S,
            "the active broker to go on alone (unprotected)",
        )
        wait_until(
            lambda: refused_claims(c) > refused,
            PAIR_TIMEOUT_S,
            "the standby, cut from the active, to claim the lease and be refused",
        )
        await moving(load, 5, "every game to move with the active unprotected")
        report("brokers' link cut", load, cut)
        view = pair_view(c)
        assert (view["broker1"].role, view["broker1"].term) == ("active", term), view
        assert view.get("broker2") is None or view["broker2"].role == "standby", view
        net.heal("broker1", "broker2")
        assert wait_pair(c, "broker1", "broker2", term) == term
        await moving(load)
        await load.stop()
        await load.check(c)


async def test_an_isolated_active_broker_is_replaced_and_rejoins_as_standby(
    netcluster: NetCluster,
) -> None:
    """Isolate the active broker from every other host: the standby takes over in a higher
    term, the old broker stops accepting once its lease ends, and after healing it rejoins
    as standby of the new term; every game has one history."""
    c, net = netcluster, netcluster.network
    term = start_pair(c)
    async with playing(c, GAMES, pace_s=PACE_S, seed=4) as load:
        await moving(load)
        net.isolate("broker1")
        isolated = time.monotonic()
        new_term = wait_pair(c, "broker2", None, term + 1, "broker2 to take over")
        wait_until(lambda: not accepting(c, "broker1"), PAIR_TIMEOUT_S, "broker1 to stop accepting")
        await moving(load, what="every game to move after the failover")
        report("active isolated", load, isolated)
        net.rejoin("broker1")
        assert wait_pair(c, "broker2", "broker1", new_term) == new_term
        assert health(c, "broker1").get("term") == new_term
        await moving(load)
        await load.stop()
        await load.check(c)


async def test_five_failovers_in_a_row_keep_every_guarantee(netcluster: NetCluster) -> None:
    """The active broker fails five times in a row (SIGKILL, isolation, in turn), each time
    rejoining as standby before the next: five terms, every game moves after each, and
    at the end nothing acked is lost or doubled."""
    c, net = netcluster, netcluster.network
    first = term = start_pair(c)
    active, standby = "broker1", "broker2"
    stalls: list[float] = []
    async with playing(c, GAMES, pace_s=PACE_S, seed=5) as load:
        await moving(load)
        for round_ in range(5):
            kill = round_ % 2 == 0
            counts, started = load.counts(), time.monotonic()
            if kill:
                c.pair[active].proc.kill()
            else:
                net.isolate(active)
            term = wait_pair(c, standby, None, term + 1, f"round {round_ + 1}: the failover")
            await eventually(
                functools.partial(load.moved_since, counts, 2),
                MOVE_TIMEOUT_S,
                f"round {round_ + 1}: every game to move",
            )
            stalls += load.stalls(started)
            if kill:
                c.pair[active].proc.start()
            else:
                net.rejoin(active)
            assert wait_pair(c, standby, active, term) == term
            active, standby = standby, active
        print(f"\n[netns] 5 failovers: stall to next ack {summary(stalls)}")
        assert term == first + 5
        await moving(load)
        await load.stop()
        await load.check(c)


async def test_an_old_broker_with_a_divergent_journal_tail_drops_it_and_rejoins(
    netcluster: NetCluster,
) -> None:
    """The killed active broker's journal gets a tail the new active never had (another
    move at the next v); restarted, the old broker drops it and rejoins as standby, and
    when it is active again it serves exactly the acked moves."""
    c = netcluster
    term = start_pair(c)
    async with playing(c, 8, pace_s=PACE_S, seed=6) as load:
        await moving(load)
        c.pair["broker1"].proc.kill()
        term = wait_pair(c, "broker2", None, term + 1, "broker2 to take over")
        await moving(load, 4, "every game to move on broker2")
        await load.stop()
        game = load.games[0]
        old = c.pair["broker1"]
        divergent = append_divergent_move(old.journal, game.gid, game.script)
        assert divergent in journal_keys(old.journal_dir), "the tail is readable"
        c.pair["broker1"].proc.start()
        assert wait_pair(c, "broker2", "broker1", term) == term
        assert divergent not in journal_keys(old.journal_dir)
        c.pair["broker2"].proc.kill()
        wait_pair(c, "broker1", None, term + 1, "broker1 to be active again")
        await load.check(c)


async def test_an_edge_cut_from_the_active_broker_is_not_placed_until_the_cut_heals(
    netcluster: NetCluster,
) -> None:
    """nftables cuts edge1 from the active broker only: edge1 reports the shard unready and
    discovery places eu-west players on edge2; with both edges cut, 503 not_ready with
    Retry-After; no failover (the brokers and discovery hear each other); healed, edge1
    is placed again."""
    c, net = netcluster, netcluster.network
    term = start_pair(c)
    edge1, edge2 = c.edges
    gid = "readiness-across-a-cut"

    async def placed() -> tuple[int, list[str], str | None]:
        status, body, headers = await placement(c, gid)
        return status, offered(body) if status == 200 else [], headers.get("Retry-After")

    assert (await placed())[:2] == (200, [edge1.edge_id, edge2.edge_id])
    net.cut("edge1", "broker1")
    await eventually(
        lambda: reports(c, {edge1.edge_id: [1], edge2.edge_id: []}), 20, "edge1 unready"
    )
    assert (await placed())[:2] == (200, [edge2.edge_id])
    net.cut("edge2", "broker1")
    await eventually(
        lambda: reports(c, {edge1.edge_id: [1], edge2.edge_id: [1]}), 20, "both unready"
    )
    assert await placed() == (503, [], "1")
    assert pair_is(c, "broker1", "broker2", term) == term, pair_view(c)
    net.heal("edge1", "broker1")
    net.heal("edge2", "broker1")
    await eventually(lambda: reports(c, {edge1.edge_id: [], edge2.edge_id: []}), 20, "ready")
    assert (await placed())[:2] == (200, [edge1.edge_id, edge2.edge_id])


async def reports(c: NetCluster, expected: dict[str, list[int]]) -> bool:
    """Whether discovery lists these edges with exactly these unready shards."""
    return await unready(c) == expected


# --- helpers -----------------------------------------------------------------------------


def accepting(c: NetCluster, name: str) -> bool:
    """Whether broker ``name`` says it accepts commands (its own /healthz, read through the
    test process's path, which partitions between hosts leave open)."""
    return bool(health(c, name).get("accepting"))


def journal_keys(directory: Path) -> set[str]:
    """Idempotency keys of the commands in every journal file of ``directory``."""
    keys: set[str] = set()
    for path in directory.glob("*.log"):
        records, _, _ = read_records(path)
        keys |= {r.command_id for r in records if isinstance(r, CommandApplied)}
    return keys


def append_divergent_move(journal: Path, gid: str, script: list[str]) -> str:
    """Append to ``journal`` a move of ``gid`` at the next v that is not the script's (what
    the other broker applied there): a tail no other broker has.  Its idempotency key."""
    records, _, _ = read_records(journal)
    last = [r for r in records if isinstance(r, CommandApplied) and r.game_id == gid][-1]
    board = chess.Board()
    for uci in script[: last.v]:
        board.push_uci(uci)
    other = next(m.uci() for m in board.legal_moves if m.uci() != script[last.v])
    key = "divergent-tail"
    record = CommandApplied(
        game_id=gid,
        seat="white" if board.turn == chess.WHITE else "black",
        command_id=key,
        command={**last.command, "u": other},
        ms=last.ms + 1,
        v=last.v + 1,
    )
    with open(journal, "ab") as f:
        f.write(pack_record(record))
    return key
