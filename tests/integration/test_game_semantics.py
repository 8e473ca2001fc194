"""Real chess over real processes: clocks, flag fall, aborts, resignation, draws, takebacks,
automatic draws and PGN, with the two players always on different edges.

Most tests share one module-scoped cluster (a broker and three edges); each plays its own
game, which is all the isolation they need.  The two tests that need another broker option
(``--abort-after-ms``) or kill the broker get a cluster of their own.

Timings (flag lateness, broker restart) are printed for the report (``pytest -s``); they are
asserted only against generous bounds, never as tight timed checks.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import chess
import chess.pgn
import pytest

from tests.integration.cluster import Cluster, Edge, http_get, http_json
from tests.integration.games import mint_game
from xlmate.client import CommandFailed, GameClient
from xlmate.tokens import Clock

LONG = Clock(600, 0)
KNIGHT_SHUFFLE = ["g1f3", "g8f6", "f3g1", "f6g8"] * 2


# --------------------------------------------------------------------------- fixtures and helpers


def stamper(arrivals: dict[int, float]) -> Callable[[dict[str, Any]], None]:
    """An ``on_event`` hook that records when each version arrived (monotonic seconds)."""

    def stamp(event: dict[str, Any]) -> None:
        arrivals.setdefault(int(event["v"]), time.monotonic())

    return stamp


async def game_state(edge: Edge, gid: str) -> dict[str, Any]:
    """GET /v1/games/{id} on ``edge`` (off the event loop, so clients keep reading)."""
    status, body = await asyncio.to_thread(http_json, f"{edge.http}/v1/games/{gid}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def game_pgn(edge: Edge, gid: str) -> tuple[str, chess.pgn.Game]:
    """GET /v1/games/{id}/pgn on ``edge``: the text and the game python-chess reads from it."""
    status, body = await asyncio.to_thread(http_get, f"{edge.http}/v1/games/{gid}/pgn")
    assert status == 200, body
    text = body.decode()
    game = chess.pgn.read_game(io.StringIO(text))
    assert game is not None and not game.errors, text
    return text, game


async def play(white: GameClient, black: GameClient, moves: list[str]) -> int:
    """Play ``moves`` alternately from the side to move; return the last acked v."""
    v = 0
    for uci in moves:
        mover = white if chess.Board(white.model.fen).turn == chess.WHITE else black
        v = await mover.move(uci)
        await white.wait_for_v(v)
        await black.wait_for_v(v)
    return v


async def refused(command: Coroutine[Any, Any, int], code: str) -> None:
    """The command is answered with ``error`` ``code``."""
    with pytest.raises(CommandFailed) as failure:
        await command
    assert failure.value.code == code, failure.value


def of_type(client: GameClient, kind: str) -> list[dict[str, Any]]:
    return [e for e in client.events if e["type"] == kind]


def fen_after(moves: list[str]) -> str:
    board = chess.Board()
    for uci in moves:
        board.push_uci(uci)
    return board.fen()


# --------------------------------------------------------------------------- clocks


async def test_flag_falls_on_its_own_by_the_brokers_timer(shared_cluster: Cluster) -> None:
    """With 2+0 and nobody moving, the broker alone flags white: 0-1 timeout, clocks frozen."""
    c = shared_cluster
    eu, us, ap = c.edges
    gid, white_token, black_token = mint_game(Clock(2, 0))
    arrivals: dict[int, float] = {}
    async with (
        GameClient(gid, token=white_token, edge_url=eu.url, on_event=stamper(arrivals)) as white,
        GameClient(gid, token=black_token, edge_url=us.url) as black,
    ):
        await play(white, black, ["e2e4", "e7e5"])
        started = white.events[-1]
        assert started["clock"] == {
            "white": 2000,
            "black": 2000,
            "increment": 0,
            "running": "white",
        }
        deadline = arrivals[2] + started["clock"]["white"] / 1000

        await white.wait_for_v(3, timeout=6)
        await black.wait_for_v(3, timeout=6)
        over = white.events[-1]
        assert over == black.events[-1]
        assert (over["type"], over["result"], over["reason"]) == ("game_over", "0-1", "timeout")
        lateness = arrivals[3] - deadline
        print(f"\nflag fall observed {lateness * 1000:+.0f} ms after the deadline")
        assert -0.25 < lateness < 1.0, "generous bound only; the target is ~100 ms"

        final_clock = {"white": 0, "black": 2000, "increment": 0, "running": None}
        state = await game_state(ap, gid)
        assert (state["status"], state["result"], state["reason"]) == ("over", "0-1", "timeout")
        assert state["clock"] == final_clock
        await black.send_raw({"type": "sync"})
        await black.wait_for(lambda: black.model.clock == final_clock, 5)
        assert black.model.status == "over" and black.model.v == 3
        _, pgn = await game_pgn(ap, gid)
        assert pgn.headers["Result"] == "0-1" and pgn.headers["Termination"] == "Time forfeit"


async def test_flag_timer_survives_a_broker_sigkill_and_restart(cluster: Cluster) -> None:
    """SIGKILL the broker while black's clock runs: after a restart black still flags on time."""
    c = cluster
    c.start_broker()
    eu, us = c.start_edge("eu-west"), c.start_edge("us-east")
    gid, white_token, black_token = mint_game(Clock(3, 0))
    arrivals: dict[int, float] = {}
    async with (
        GameClient(gid, token=white_token, edge_url=eu.url, on_event=stamper(arrivals)) as white,
        GameClient(gid, token=black_token, edge_url=us.url) as black,
    ):
        await play(white, black, ["e2e4", "e7e5", "g1f3"])
        running = white.events[-1]["clock"]
        assert running["running"] == "black" and running["black"] == 3000
        deadline = arrivals[3] + running["black"] / 1000

        assert c.broker is not None
        killed = time.monotonic()
        c.broker.kill()
        c.restart(c.broker)
        recovered = time.monotonic()
        print(
            f"\nbroker down and back in {(recovered - killed) * 1000:.0f} ms, "
            f"{(deadline - recovered) * 1000:.0f} ms before black's flag"
        )

        await white.wait_for_v(4, timeout=10)
        await black.wait_for_v(4, timeout=10)
        lateness = arrivals[4] - deadline
        print(
            f"flag fall after the restart observed {lateness * 1000:+.0f} ms after the deadline; "
            f"client connections: white {white.connections}, black {black.connections}"
        )
        assert white.events == black.events
        assert [e["v"] for e in white.events] == [1, 2, 3, 4]
        over = white.events[-1]
        assert (over["type"], over["result"], over["reason"]) == ("game_over", "1-0", "timeout")
        if recovered < deadline:
            assert -0.25 < lateness < 1.5, "the restarted broker kept the original deadline"
        state = await game_state(eu, gid)
        assert state["clock"]["black"] == 0 and state["clock"]["running"] is None
        assert 0 < state["clock"]["white"] <= 3000
        await refused(white.move("f1c4"), "game_over")


async def test_abort_when_a_side_never_makes_its_first_move(cluster: Cluster) -> None:
    """With --abort-after-ms, a game whose white (or black) never moves ends `*` aborted."""
    c = cluster
    c.start_broker("--abort-after-ms", "1500")
    eu, us = c.start_edge("eu-west"), c.start_edge("us-east")
    idle_gid, idle_white, idle_black = mint_game(Clock(60, 0))
    half_gid, half_white, half_black = mint_game(Clock(60, 0))
    async with (
        GameClient(idle_gid, token=idle_white, edge_url=eu.url) as white,
        GameClient(idle_gid, token=idle_black, edge_url=us.url) as black,
        GameClient(half_gid, token=half_white, edge_url=us.url) as white2,
        GameClient(half_gid, token=half_black, edge_url=eu.url) as black2,
    ):
        connected = time.monotonic()
        await white2.move("d2d4")  # then black never replies
        moved = time.monotonic()
        await black.wait_for_v(1, timeout=6)
        idle_over = time.monotonic()
        await black2.wait_for_v(2, timeout=6)
        half_over = time.monotonic()
        print(
            f"\naborted {(idle_over - connected) * 1000:.0f} ms after the seats were taken, "
            f"{(half_over - moved) * 1000:.0f} ms after white's first move (window 1500 ms)"
        )
        assert half_over - moved >= 1.0, "black's abort window starts at white's first move"
        await white.wait_for_v(1)
        await white2.wait_for_v(2)
        for client in (white, black, white2, black2):
            over = client.events[-1]
            assert (over["type"], over["result"], over["reason"]) == ("game_over", "*", "aborted")
        for gid, moves in ((idle_gid, []), (half_gid, ["d2d4"])):
            state = await game_state(eu, gid)
            assert (state["status"], state["result"], state["reason"]) == ("over", "*", "aborted")
            assert state["moves"] == moves
            assert state["clock"] == {
                "white": 60000,
                "black": 60000,
                "increment": 0,
                "running": None,
            }
            _, pgn = await game_pgn(us, gid)
            assert pgn.headers["Result"] == "*" and pgn.headers["Termination"] == "Abandoned"
        await refused(white.move("e2e4"), "game_over")
        await refused(black2.move("d7d5"), "game_over")


# --------------------------------------------------------------------------- endings by players


async def test_resignation_ends_the_game_for_everyone(shared_cluster: Cluster) -> None:
    """Black resigns after 1.e4: both sides and a spectator see 1-0 resign with the same v."""
    c = shared_cluster
    eu, us, ap = c.edges
    gid, white_token, black_token = mint_game()
    async with (
        GameClient(gid, token=white_token, edge_url=eu.url) as white,
        GameClient(gid, token=black_token, edge_url=us.url) as black,
        GameClient(gid, edge_url=ap.url) as spectator,
    ):
        await play(white, black, ["e2e4"])
        assert await black.resign() == 2
        for client in (white, black, spectator):
            await client.wait_for_v(2)
        assert white.events == black.events == spectator.events
        over = spectator.events[-1]
        assert (over["type"], over["result"], over["reason"]) == ("game_over", "1-0", "resign")
        state = await game_state(ap, gid)
        assert (state["status"], state["result"], state["reason"]) == ("over", "1-0", "resign")
        assert state["clock"]["running"] is None


async def test_every_command_on_a_finished_game_is_refused_with_game_over(
    shared_cluster: Cluster,
) -> None:
    """After a resignation every move, resign, draw and takeback command gets error game_over."""
    c = shared_cluster
    eu, us, _ = c.edges
    gid, white_token, black_token = mint_game()
    async with (
        GameClient(gid, token=white_token, edge_url=eu.url) as white,
        GameClient(gid, token=black_token, edge_url=us.url) as black,
    ):
        await play(white, black, ["e2e4", "e7e5"])
        assert await white.resign() == 3
        await black.wait_for_v(3)
        for client, move in ((white, "g1f3"), (black, "g8f6")):
            await refused(client.move(move), "game_over")
            await refused(client.resign(), "game_over")
            for kind in ("draw", "takeback"):
                for action in ("offer", "accept", "decline"):
                    await refused(client.command({"type": kind, "action": action}), "game_over")
    # A player who comes back later is refused too, and nothing moved.
    async with GameClient(gid, token=black_token, edge_url=eu.url) as late:
        assert late.model.status == "over" and late.model.v == 3
        await refused(late.move("g8f6"), "game_over")
        state = await game_state(us, gid)
        assert state["v"] == 3 and state["moves"] == ["e2e4", "e7e5"]


async def test_draw_offer_declined_then_accepted(shared_cluster: Cluster) -> None:
    """A draw offer is seen by both sides (same v) and in sync; declined, then agreed 1/2-1/2."""
    c = shared_cluster
    eu, us, ap = c.edges
    gid, white_token, black_token = mint_game()
    async with (
        GameClient(gid, token=white_token, edge_url=eu.url) as white,
        GameClient(gid, token=black_token, edge_url=us.url) as black,
    ):
        assert await white.draw("offer") == 1  # allowed before the first move
        await black.wait_for_v(1)
        assert (await game_state(ap, gid))["offers"] == {"draw": "white", "takeback": None}
        assert await white.draw("offer") == 1, "repeating a standing offer is a no-op"
        assert await black.draw("decline") == 2
        await white.wait_for_v(2)
        assert (await game_state(ap, gid))["offers"] == {"draw": None, "takeback": None}

        await play(white, black, ["e2e4"])
        assert await black.draw("offer") == 4
        await white.wait_for_v(4)
        assert (await game_state(eu, gid))["offers"]["draw"] == "black"
        assert await white.draw("accept") == 6  # the draw event and game_over
        await black.wait_for_v(6)

        draws = of_type(white, "draw")
        assert draws == of_type(black, "draw")
        assert [(d["v"], d["action"], d["by"]) for d in draws] == [
            (1, "offer", "white"),
            (2, "decline", "black"),
            (4, "offer", "black"),
            (5, "accept", "white"),
        ]
        over = black.events[-1]
        assert (over["type"], over["v"], over["result"], over["reason"]) == (
            "game_over",
            6,
            "1/2-1/2",
            "draw_agreed",
        )
        state = await game_state(ap, gid)
        assert state["status"] == "over" and state["offers"] == {"draw": None, "takeback": None}
        assert (await game_pgn(ap, gid))[1].headers["Result"] == "1/2-1/2"


async def test_takeback_declined_then_accepted_shrinks_everyones_moves(
    shared_cluster: Cluster,
) -> None:
    """A takeback is declined, then accepted (one ply, then two): every move list shrinks."""
    c = shared_cluster
    eu, us, ap = c.edges
    gid, white_token, black_token = mint_game()
    async with (
        GameClient(gid, token=white_token, edge_url=eu.url) as white,
        GameClient(gid, token=black_token, edge_url=us.url) as black,
        GameClient(gid, edge_url=ap.url) as spectator,
    ):
        clients = (white, black, spectator)
        await play(white, black, ["e2e4", "e7e5", "g1f3"])
        assert await white.takeback("offer") == 4
        await black.wait_for_v(4)
        assert (await game_state(ap, gid))["offers"]["takeback"] == "white"
        assert await black.takeback("decline") == 5
        await white.wait_for_v(5)
        assert (await game_state(ap, gid))["offers"]["takeback"] is None

        # White took back its own last move: one ply.
        await white.takeback("offer")
        v = await black.takeback("accept")
        for client in clients:
            await client.wait_for_v(v)
            assert client.model.moves == ["e2e4", "e7e5"]
        undo = spectator.events[-1]
        assert (undo["type"], undo["action"], undo["by"]) == ("takeback", "accept", "black")
        assert undo["moves"] == ["e2e4", "e7e5"] and undo["fen"] == fen_after(["e2e4", "e7e5"])

        # Black already replied to white's move: accepting undoes the reply and the move.
        await play(white, black, ["f1c4", "b8c6"])
        await white.takeback("offer")
        v = await black.takeback("accept")
        for client in clients:
            await client.wait_for_v(v)
            assert client.model.moves == ["e2e4", "e7e5"]
            assert client.model.fen == fen_after(["e2e4", "e7e5"])
        assert white.events == black.events == spectator.events
        state = await game_state(eu, gid)
        assert state["moves"] == ["e2e4", "e7e5"] and state["turn"] == "white"
        assert state["offers"] == {"draw": None, "takeback": None}
        await play(white, black, ["d2d4"])  # the game goes on from the restored position
        assert white.model.moves == ["e2e4", "e7e5", "d2d4"]


async def test_answering_an_offer_that_does_not_stand_is_no_offer(shared_cluster: Cluster) -> None:
    """accept/decline without the opponent's offer (none, your own, a lapsed one) is no_offer."""
    c = shared_cluster
    eu, us, _ = c.edges
    gid, white_token, black_token = mint_game()
    async with (
        GameClient(gid, token=white_token, edge_url=eu.url) as white,
        GameClient(gid, token=black_token, edge_url=us.url) as black,
    ):
        for kind in ("draw", "takeback"):
            for action in ("accept", "decline"):
                await refused(black.command({"type": kind, "action": action}), "no_offer")
        await refused(white.takeback("offer"), "illegal_move")  # nothing to take back yet
        await play(white, black, ["e2e4"])
        await white.draw("offer")
        await white.takeback("offer")
        await refused(white.draw("accept"), "no_offer")  # your own offer
        await refused(white.takeback("decline"), "no_offer")
        v = await play(white, black, ["e7e5"])  # black moving on lets white's draw offer lapse
        state = await game_state(us, gid)
        assert state["offers"] == {"draw": None, "takeback": "white"}
        await refused(black.draw("accept"), "no_offer")
        assert state["v"] == v and white.model.v == v and black.model.status == "started"


async def test_threefold_repetition_ends_the_game_automatically(shared_cluster: Cluster) -> None:
    """Knights out and back twice: the third start position draws 1/2-1/2 without a claim."""
    c = shared_cluster
    eu, us, ap = c.edges
    gid, white_token, black_token = mint_game()
    async with (
        GameClient(gid, token=white_token, edge_url=eu.url) as white,
        GameClient(gid, token=black_token, edge_url=us.url) as black,
    ):
        v = await play(white, black, KNIGHT_SHUFFLE)
        assert v == len(KNIGHT_SHUFFLE) + 1  # the last move and game_over
        assert white.events == black.events
        over = white.events[-1]
        assert (over["type"], over["result"], over["reason"]) == (
            "game_over",
            "1/2-1/2",
            "threefold_repetition",
        )
        assert white.events[-2]["clock"]["running"] is None
        state = await game_state(ap, gid)
        assert state["moves"] == KNIGHT_SHUFFLE and state["reason"] == "threefold_repetition"
        await refused(white.move("g1f3"), "game_over")


# --------------------------------------------------------------------------- PGN


async def test_pgn_headers_for_a_live_and_a_finished_game(shared_cluster: Cluster) -> None:
    """PGN has White/Black from `sub`, TimeControl, Date, Result and Termination, live and over."""
    c = shared_cluster
    eu, us, ap = c.edges
    day_before = datetime.now(UTC).strftime("%Y.%m.%d")
    gid, white_token, black_token = mint_game(
        Clock(180, 2), white_id="alice-01", black_id='bob "the rook"'
    )
    async with (
        GameClient(gid, token=white_token, edge_url=eu.url) as white,
        GameClient(gid, token=black_token, edge_url=us.url) as black,
    ):
        await play(white, black, ["e2e4", "c7c5", "g1f3"])
        day_after = datetime.now(UTC).strftime("%Y.%m.%d")
        text, live = await game_pgn(ap, gid)
        headers = live.headers
        # python-chess reads tag values without unescaping, so check the escaped quote raw.
        assert headers["White"] == "alice-01" and '[Black "bob \\"the rook\\""]' in text
        assert headers["TimeControl"] == "180+2"
        assert headers["Result"] == "*" and headers["Termination"] == "Unterminated"
        assert day_before <= headers["Date"] <= day_after
        assert headers["GameId"] == gid
        assert [m.uci() for m in live.mainline_moves()] == ["e2e4", "c7c5", "g1f3"]
        state = await game_state(ap, gid)
        assert state["players"]["white"]["id"] == "alice-01"
        assert state["players"]["black"]["id"] == 'bob "the rook"'

        await black.resign()
        await white.wait_for_v(4)
        for edge in (eu, us, ap):
            done = (await game_pgn(edge, gid))[1].headers
            assert (done["Result"], done["Termination"]) == ("1-0", "Normal")
            assert (done["White"], done["TimeControl"]) == ("alice-01", "180+2")
            assert day_before <= done["Date"] <= day_after
