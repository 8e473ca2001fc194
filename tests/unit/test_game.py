"""Unit tests of the pure game state machine (broker/game.py) and its PGN (broker/pgn.py).

No sockets and no sleeping: time is an argument.
"""

from __future__ import annotations

import io
import json
from typing import Any

import chess
import chess.pgn
import pytest

from xlmate.broker.game import Applied, Game, TimeControl, TimeExpired
from xlmate.broker.pgn import game_pgn
from xlmate.constants import Color
from xlmate.errors import CommandRejected, ConfigError
from xlmate.messages import Draw, GameCommand, Move, Resign, Takeback

T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
TC = TimeControl(300_000, 2_000)
FOOLS_MATE = ["f2f3", "e7e5", "g2g4", "d8h4"]
# Sam Loyd's ten-move stalemate.
STALEMATE = [
    "e2e3", "a7a5", "d1h5", "a8a6", "h5a5", "h7h5", "h2h4", "a6h6", "a5c7", "f7f6",
    "c7d7", "e8f7", "d7b7", "d8d3", "b7b8", "d3h7", "b8c8", "f7g6", "c8e6",
]  # fmt: skip
KNIGHT_SHUFFLE = ["g1f3", "g8f6", "f3g1", "f6g8", "g1f3", "g8f6", "f3g1", "f6g8"]
MOVE_KEYS = {"type", "gameId", "v", "uci", "san", "from", "to", "promotion", "fen", "by", "clock"}
CLOCK_KEYS = {"white", "black", "increment", "running"}


def unclocked(event: dict[str, Any]) -> dict[str, Any]:
    """An event without its ``clock`` (game_over carries the final clocks)."""
    return {k: v for k, v in event.items() if k != "clock"}


def new_game(**kwargs: Any) -> Game:
    kwargs.setdefault("time_control", TC)
    return Game("g1", created_ms=T0, **kwargs)


def play(game: Game, ucis: list[str], now: int = T0, step: int = 1_000) -> list[dict[str, Any]]:
    """Play ``ucis`` for whoever is to move, one every ``step`` ms after ``now``."""
    events: list[dict[str, Any]] = []
    for uci in ucis:
        now += step
        events += game.apply(game.turn, Move(uci), now).events
    return events


def rejected(game: Game, color: Color, command: GameCommand, now: int = T0) -> str:
    """Apply a command that must be refused without changing anything; return the code."""
    before = game.sync(now)
    with pytest.raises(CommandRejected) as info:
        game.apply(color, command, now)
    assert game.sync(now) == before
    return info.value.code


def assert_versions(events: list[dict[str, Any]], first: int = 1) -> None:
    assert [e["v"] for e in events] == list(range(first, first + len(events)))


# ------------------------------------------------------------------ moves and turns


def test_legal_move_produces_a_move_event() -> None:
    """A legal first move gives one versioned move event with the contract's keys."""
    game = new_game()
    applied = game.apply("white", Move("e2e4"), T0 + 500)
    assert applied == Applied(applied.events, 1)
    (event,) = applied.events
    assert set(event) == MOVE_KEYS
    assert event["type"] == "move"
    assert event["gameId"] == "g1"
    assert (event["uci"], event["san"], event["from"], event["to"]) == ("e2e4", "e4", "e2", "e4")
    assert event["promotion"] is None
    assert event["by"] == "white"
    # python-chess omits the e3 square: no black pawn can capture there.
    assert event["fen"] == "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"
    assert set(event["clock"]) == CLOCK_KEYS
    assert game.v == 1
    assert game.status == "started"
    assert game.turn == "black"


def test_illegal_move_is_refused_and_changes_nothing() -> None:
    """An illegal move raises illegal_move and leaves state and v untouched."""
    game = new_game()
    assert rejected(game, "white", Move("e2e5")) == "illegal_move"
    assert rejected(game, "white", Move("a1a1")) == "illegal_move"
    assert game.v == 0
    assert game.status == "waiting"


def test_move_out_of_turn_is_not_your_turn() -> None:
    """Moving for the side not to move gives not_your_turn, even when the move would be legal."""
    game = new_game()
    assert rejected(game, "black", Move("e7e5")) == "not_your_turn"
    play(game, ["e2e4"])
    assert rejected(game, "white", Move("d2d4"), T0 + 2_000) == "not_your_turn"


def test_bad_color_is_bad_message() -> None:
    """A seat that is neither white nor black is refused with bad_message."""
    game = new_game()
    assert rejected(game, "red", Move("e2e4")) == "bad_message"  # type: ignore[arg-type]


def test_castling_only_in_standard_uci() -> None:
    """e1g1 castles; the king-takes-rook form e1h1 is refused as illegal."""
    game = new_game()
    play(game, ["e2e4", "e7e5", "g1f3", "b8c6", "f1c4", "g8f6"])
    assert rejected(game, "white", Move("e1h1"), T0 + 10_000) == "illegal_move"
    (event,) = game.apply("white", Move("e1g1"), T0 + 10_000).events
    assert event["san"] == "O-O"
    assert game.moves[-1] == "e1g1"


def test_promotion_needs_its_piece_and_is_reported() -> None:
    """A promotion needs the piece letter; the event carries it and SAN shows it."""
    game = new_game()
    play(game, ["a2a4", "b7b5", "a4b5", "a7a6", "b5a6", "c8b7", "a6b7", "b8c6"])
    assert rejected(game, "white", Move("b7a8"), T0 + 9_000) == "illegal_move"
    (event,) = game.apply("white", Move("b7a8q"), T0 + 9_000).events
    assert event["promotion"] == "q"
    assert event["san"] == "bxa8=Q"
    assert event["to"] == "a8"


def test_moves_and_san_lists_are_the_whole_game() -> None:
    """sync's moves and san are the full game so far, in order."""
    game = new_game()
    play(game, ["e2e4", "e7e5", "g1f3"])
    sync = game.sync(T0 + 5_000)
    assert sync["moves"] == ["e2e4", "e7e5", "g1f3"]
    assert sync["san"] == ["e4", "e5", "Nf3"]


# ------------------------------------------------------------------ endings


def test_fools_mate_is_checkmate() -> None:
    """Fool's mate gives the mating move event then game_over 0-1 checkmate."""
    game = new_game()
    events = play(game, FOOLS_MATE)
    assert_versions(events)
    assert [e["type"] for e in events[-2:]] == ["move", "game_over"]
    assert events[-2]["san"] == "Qh4#"
    assert events[-2]["clock"]["running"] is None
    assert unclocked(events[-1]) == {
        "type": "game_over",
        "gameId": "g1",
        "v": 5,
        "result": "0-1",
        "reason": "checkmate",
    }
    assert (game.status, game.result, game.reason) == ("over", "0-1", "checkmate")
    assert game.deadline_ms() is None


def test_a_released_game_answers_sync_as_before() -> None:
    """``release`` (the broker's finished-game diet) does not change the state clients get."""
    game = new_game()
    with pytest.raises(ValueError):
        game.release()  # only for finished games
    play(game, ["e2e4", "e7e5", "f1c4", "b8c6", "d1h5", "g8f6", "h5f7"])
    sync = game.sync(T0 + 60_000)
    game.release()
    assert game.sync(T0 + 60_000) == sync
    assert not game.board.move_stack


def test_stalemate_is_a_draw() -> None:
    """Sam Loyd's ten-move stalemate ends the game 1/2-1/2 stalemate."""
    game = new_game()
    events = play(game, STALEMATE)
    assert events[-1]["reason"] == "stalemate"
    assert events[-1]["result"] == "1/2-1/2"
    assert_versions(events)


def test_insufficient_material_after_capture() -> None:
    """Capturing the last piece so only kings remain draws by insufficient material."""
    game = new_game(starting_fen="4k3/8/8/8/8/8/3r4/4K3 w - - 0 1")
    events = play(game, ["e1d2"])
    assert [e["type"] for e in events] == ["move", "game_over"]
    assert (events[-1]["result"], events[-1]["reason"]) == ("1/2-1/2", "insufficient_material")


def test_knight_shuffle_is_threefold_repetition() -> None:
    """The start position reached a third time by knight moves draws by repetition."""
    game = new_game()
    events = play(game, KNIGHT_SHUFFLE[:-1])
    assert game.status == "started"
    events += play(game, KNIGHT_SHUFFLE[-1:], now=T0 + 10_000)
    assert (events[-1]["result"], events[-1]["reason"]) == ("1/2-1/2", "threefold_repetition")
    assert_versions(events)


def test_fifty_move_rule() -> None:
    """The hundredth reversible half-move draws by fifty_moves."""
    game = new_game(starting_fen="4k3/8/8/8/8/8/8/R3K3 w - - 99 80")
    events = play(game, ["a1a2"])
    assert (events[-1]["result"], events[-1]["reason"]) == ("1/2-1/2", "fifty_moves")


def test_checkmate_beats_fifty_moves() -> None:
    """A mate on the hundredth reversible half-move is checkmate, not a draw."""
    game = new_game(starting_fen="k7/8/1K6/8/8/8/8/7R w - - 99 80")
    events = play(game, ["h1h8"])
    assert (events[-1]["result"], events[-1]["reason"]) == ("1-0", "checkmate")


def test_resign_gives_the_opponent_the_win() -> None:
    """Resigning ends the game at once for the opponent, even before any move."""
    game = new_game()
    applied = game.apply("white", Resign(), T0 + 1_000)
    assert [unclocked(e) for e in applied.events] == [
        {"type": "game_over", "gameId": "g1", "v": 1, "result": "0-1", "reason": "resign"}
    ]
    game = new_game()
    play(game, ["e2e4", "e7e5"])
    assert game.apply("black", Resign(), T0 + 5_000).events[0]["result"] == "1-0"


def test_commands_after_the_end_are_game_over() -> None:
    """Every command after the game ended is refused with game_over."""
    game = new_game()
    play(game, FOOLS_MATE)
    after_the_end: list[tuple[Color, GameCommand]] = [
        ("white", Move("e2e4")),
        ("white", Resign()),
        ("black", Draw("offer")),
        ("white", Takeback("offer")),
        ("black", Takeback("accept")),
    ]
    for color, command in after_the_end:
        assert rejected(game, color, command, T0 + 10_000) == "game_over"
    assert game.tick(T0 + 10**9) == []


# ------------------------------------------------------------------ draw offers


def test_draw_offer_then_decline() -> None:
    """An offer is recorded and announced; the opponent's decline clears it."""
    game = new_game()
    play(game, ["e2e4"])
    offer = game.apply("white", Draw("offer"), T0 + 2_000).events
    assert offer == [{"type": "draw", "gameId": "g1", "v": 2, "action": "offer", "by": "white"}]
    assert game.sync(T0 + 2_000)["offers"] == {"draw": "white", "takeback": None}
    decline = game.apply("black", Draw("decline"), T0 + 3_000).events
    assert decline == [{"type": "draw", "gameId": "g1", "v": 3, "action": "decline", "by": "black"}]
    assert game.offers["draw"] is None
    assert rejected(game, "black", Draw("decline"), T0 + 4_000) == "no_offer"


def test_draw_accept_ends_the_game() -> None:
    """Accepting gives draw(accept) then game_over 1/2-1/2 draw_agreed, two versions."""
    game = new_game()
    play(game, ["e2e4", "e7e5"])
    game.apply("black", Draw("offer"), T0 + 3_000)
    applied = game.apply("white", Draw("accept"), T0 + 4_000)
    assert [unclocked(e) for e in applied.events] == [
        {"type": "draw", "gameId": "g1", "v": 4, "action": "accept", "by": "white"},
        {"type": "game_over", "gameId": "g1", "v": 5, "result": "1/2-1/2", "reason": "draw_agreed"},
    ]
    assert applied.v == 5
    assert game.clock(T0 + 9_000)["running"] is None


def test_draw_answers_need_an_offer_from_the_opponent() -> None:
    """accept/decline without an offer, or of one's own offer, is no_offer."""
    game = new_game()
    assert rejected(game, "white", Draw("accept")) == "no_offer"
    assert rejected(game, "black", Draw("decline")) == "no_offer"
    game.apply("white", Draw("offer"), T0)
    assert rejected(game, "white", Draw("accept")) == "no_offer"
    assert rejected(game, "white", Draw("decline")) == "no_offer"


def test_draw_reoffer_is_a_noop_and_cross_offer_accepts() -> None:
    """Re-offering one's own offer changes nothing; offering against an offer accepts it."""
    game = new_game()
    game.apply("white", Draw("offer"), T0)
    again = game.apply("white", Draw("offer"), T0 + 1)
    assert again == Applied([], 1)
    events = game.apply("black", Draw("offer"), T0 + 2).events
    assert [(e["type"], e.get("action"), e.get("reason")) for e in events] == [
        ("draw", "accept", None),
        ("game_over", None, "draw_agreed"),
    ]


def test_draw_offer_lapses_when_the_opponent_moves() -> None:
    """The offerer moving keeps the offer; the opponent moving clears it silently."""
    game = new_game()
    game.apply("white", Draw("offer"), T0)
    play(game, ["e2e4"])
    assert game.offers["draw"] == "white"
    events = play(game, ["e7e5"], now=T0 + 5_000)
    assert [e["type"] for e in events] == ["move"]
    assert game.offers["draw"] is None
    assert rejected(game, "black", Draw("accept"), T0 + 7_000) == "no_offer"


# ------------------------------------------------------------------ takebacks


def test_takeback_of_one_ply() -> None:
    """Accepting right after the offerer's move undoes just that move."""
    game = new_game()
    play(game, ["e2e4", "e7e5", "g1f3"])
    game.apply("white", Takeback("offer"), T0 + 3_500)
    (event,) = game.apply("black", Takeback("accept"), T0 + 4_000).events
    expected = chess.Board()
    for uci in ["e2e4", "e7e5"]:
        expected.push_uci(uci)
    assert event["type"] == "takeback"
    assert (event["action"], event["by"], event["v"]) == ("accept", "black", 5)
    assert event["moves"] == ["e2e4", "e7e5"]
    assert event["fen"] == expected.fen()
    assert event["clock"]["running"] == "white"
    assert game.turn == "white"
    assert game.san_moves == ("e4", "e5")
    assert game.offers == {"draw": None, "takeback": None}


def test_takeback_of_two_plies_after_the_reply() -> None:
    """When the opponent has replied, accepting undoes the reply and the offerer's move."""
    game = new_game()
    play(game, ["e2e4", "e7e5", "g1f3"])
    game.apply("white", Takeback("offer"), T0 + 3_500)
    play(game, ["b8c6"], now=T0 + 3_500)
    assert game.offers["takeback"] == "white"
    (event,) = game.apply("black", Takeback("accept"), T0 + 5_000).events
    assert event["moves"] == ["e2e4", "e7e5"]
    assert game.turn == "white"
    assert game.sync(T0 + 5_000)["san"] == ["e4", "e5"]


def test_takeback_needs_an_offer_and_a_move() -> None:
    """Answering without an offer is no_offer; offering with no own move is refused."""
    game = new_game()
    assert rejected(game, "white", Takeback("offer")) == "illegal_move"
    play(game, ["e2e4"])
    assert rejected(game, "black", Takeback("offer"), T0 + 2_000) == "illegal_move"
    assert rejected(game, "black", Takeback("accept"), T0 + 2_000) == "no_offer"
    game.apply("white", Takeback("offer"), T0 + 2_000)
    assert rejected(game, "white", Takeback("accept"), T0 + 2_000) == "no_offer"
    decline = game.apply("black", Takeback("decline"), T0 + 3_000).events
    assert decline == [
        {"type": "takeback", "gameId": "g1", "v": 3, "action": "decline", "by": "black"}
    ]
    assert rejected(game, "black", Takeback("decline"), T0 + 3_000) == "no_offer"


def test_takeback_offer_lapses_when_the_offerer_moves_on() -> None:
    """An offerer who plays another move withdraws the takeback offer."""
    game = new_game()
    play(game, ["e2e4", "e7e5"])
    game.apply("white", Takeback("offer"), T0 + 2_500)
    play(game, ["g1f3"], now=T0 + 2_500)
    assert game.offers["takeback"] is None
    assert game.apply("black", Takeback("offer"), T0 + 4_000).events[0]["action"] == "offer"
    assert game.apply("white", Takeback("offer"), T0 + 4_000).events[0]["action"] == "accept"
    assert game.moves == ("e2e4",)


def test_takeback_of_every_move_keeps_clocks_running() -> None:
    """Undoing all moves after both moved keeps status started and white's clock running."""
    game = new_game()
    play(game, ["e2e4", "e7e5"])
    game.apply("white", Takeback("offer"), T0 + 3_000)
    (event,) = game.apply("black", Takeback("accept"), T0 + 4_000).events
    assert event["moves"] == []
    assert event["fen"] == chess.STARTING_FEN
    assert game.status == "started"
    assert event["clock"] == {
        "white": 298_000,
        "black": 300_000,
        "increment": 2_000,
        "running": "white",
    }
    assert game.deadline_ms() == T0 + 4_000 + 298_000


def test_takeback_before_clocks_start_reopens_the_abort_window() -> None:
    """Taking back white's only move leaves clocks stopped and gives white a new abort window."""
    game = new_game()
    play(game, ["e2e4"])
    game.apply("white", Takeback("offer"), T0 + 2_000)
    (event,) = game.apply("black", Takeback("accept"), T0 + 5_000).events
    assert event["moves"] == []
    assert event["clock"]["running"] is None
    assert game.deadline_ms() == T0 + 5_000 + 30_000


# ------------------------------------------------------------------ clocks


def test_clocks_start_after_each_side_moved_then_charge_and_add_increment() -> None:
    """No charge or increment on first moves; afterwards elapsed is charged and increment added."""
    game = new_game()
    e1 = game.apply("white", Move("e2e4"), T0 + 5_000).events[0]
    assert e1["clock"] == {"white": 300_000, "black": 300_000, "increment": 2_000, "running": None}
    e2 = game.apply("black", Move("e7e5"), T0 + 15_000).events[0]
    assert e2["clock"] == {
        "white": 300_000,
        "black": 300_000,
        "increment": 2_000,
        "running": "white",
    }
    assert game.clock(T0 + 16_000)["white"] == 299_000
    e3 = game.apply("white", Move("g1f3"), T0 + 18_000).events[0]
    assert e3["clock"] == {
        "white": 299_000,
        "black": 300_000,
        "increment": 2_000,
        "running": "black",
    }
    e4 = game.apply("black", Move("b8c6"), T0 + 25_000).events[0]
    assert e4["clock"]["black"] == 295_000
    assert e4["clock"]["running"] == "white"
    assert game.sync(T0 + 26_000)["clock"]["white"] == 298_000


def test_clock_never_reports_negative_time() -> None:
    """Past the deadline the running side shows 0 ms, not a negative number."""
    game = new_game()
    play(game, ["e2e4", "e7e5"])
    assert game.clock(T0 + 10**7)["white"] == 0


def test_flag_falls_exactly_at_the_deadline() -> None:
    """tick before the deadline does nothing; at it, the running side loses on time, once."""
    game = new_game()
    play(game, ["e2e4", "e7e5"])  # white's clock runs from T0 + 2000
    deadline = game.deadline_ms()
    assert deadline == T0 + 2_000 + 300_000
    assert game.tick(deadline - 1) == []
    assert game.tick(deadline - 1) == []
    assert game.v == 2
    flagged = game.tick(deadline)
    assert [unclocked(e) for e in flagged] == [
        {"type": "game_over", "gameId": "g1", "v": 3, "result": "0-1", "reason": "timeout"}
    ]
    assert flagged[0]["clock"]["white"] == 0 and flagged[0]["clock"]["running"] is None
    assert game.tick(deadline + 1) == []
    assert game.clock(deadline + 5)["white"] == 0
    assert game.deadline_ms() is None


def test_flag_against_bare_king_is_a_draw() -> None:
    """Losing on time to a side that cannot mate is a draw; the other way round is a win."""
    game = new_game(starting_fen="4k3/8/8/8/8/8/8/R3K3 w - - 0 1")
    play(game, ["a1a2", "e8d8"])
    events = game.tick(game.deadline_ms() or 0)
    assert (events[0]["result"], events[0]["reason"]) == ("1/2-1/2", "timeout")

    game = new_game(starting_fen="4k3/8/8/8/8/8/8/R3K3 w - - 0 1")
    play(game, ["a1a2", "e8d8", "a2a3"])
    events = game.tick(game.deadline_ms() or 0)
    assert (events[0]["result"], events[0]["reason"]) == ("1-0", "timeout")


def test_move_after_the_flag_is_refused_then_tick_ends_the_game() -> None:
    """A move that arrives after the mover's flag fell is game_over; tick then records the loss."""
    game = new_game()
    play(game, ["e2e4", "e7e5"])
    late = (game.deadline_ms() or 0) + 10
    with pytest.raises(TimeExpired) as info:
        game.apply("white", Move("g1f3"), late)
    assert info.value.code == "game_over"
    assert game.v == 2
    assert game.moves == ("e2e4", "e7e5")
    events = game.tick(late)
    assert (events[0]["reason"], events[0]["v"]) == ("timeout", 3)


def test_white_aborts_without_a_first_move() -> None:
    """If white does not move within abort_after_ms of creation, tick aborts with result *."""
    game = new_game()
    assert game.deadline_ms() == T0 + 30_000
    assert game.tick(T0 + 29_999) == []
    assert [unclocked(e) for e in game.tick(T0 + 30_000)] == [
        {"type": "game_over", "gameId": "g1", "v": 1, "result": "*", "reason": "aborted"}
    ]
    assert game.status == "over"


def test_first_move_after_the_abort_deadline_is_refused() -> None:
    """White's first move at the abort deadline is game_over; the tick then aborts the game."""
    game = new_game()
    with pytest.raises(TimeExpired):
        game.apply("white", Move("e2e4"), T0 + 30_000)
    assert (game.v, game.status) == (0, "waiting")
    assert game.tick(T0 + 30_000)[0]["reason"] == "aborted"


def test_black_aborts_without_a_first_move() -> None:
    """If black does not answer within abort_after_ms of white's first move, tick aborts."""
    game = new_game(abort_after_ms=10_000)
    play(game, ["e2e4"], now=T0 + 4_000)  # white moves at T0 + 5000
    assert game.deadline_ms() == T0 + 15_000
    assert game.tick(T0 + 14_999) == []
    events = game.tick(T0 + 15_000)
    assert (events[0]["result"], events[0]["reason"], events[0]["v"]) == ("*", "aborted", 2)


def test_black_first_move_replaces_abort_with_clock() -> None:
    """Once both sides moved, the deadline is the running clock, not the abort window."""
    game = new_game()
    play(game, ["e2e4", "e7e5"], step=20_000)
    assert game.deadline_ms() == T0 + 40_000 + 300_000
    assert game.tick(T0 + 200_000) == []


# ------------------------------------------------------------------ idempotency, determinism


def test_duplicate_command_key_is_acked_not_applied() -> None:
    """A key seen before returns the v it got then, duplicate=True, and changes nothing."""
    game = new_game()
    first = game.apply("white", Move("e2e4"), T0 + 1_000, "white:c1")
    play(game, ["e7e5"], now=T0 + 1_000)
    before = game.sync(T0 + 3_000)
    again = game.apply("white", Move("d2d4"), T0 + 3_000, "white:c1")
    assert again == Applied([], first.v, duplicate=True)
    assert game.sync(T0 + 3_000) == before


def test_duplicate_of_a_no_op_and_after_game_over() -> None:
    """Duplicates are answered even after the end; a no-op's key remembers the v it acked."""
    game = new_game()
    game.apply("white", Draw("offer"), T0, "white:a")
    noop = game.apply("white", Draw("offer"), T0, "white:b")
    assert noop == Applied([], 1)
    game.apply("black", Resign(), T0, "black:r")
    assert game.apply("white", Draw("offer"), T0, "white:b") == Applied([], 1, duplicate=True)
    assert game.apply("black", Resign(), T0, "black:r") == Applied([], 2, duplicate=True)


def test_rejected_command_keys_are_not_remembered() -> None:
    """A key whose command was refused can be used again for an accepted command."""
    game = new_game()
    with pytest.raises(CommandRejected):
        game.apply("white", Move("e2e5"), T0, "white:c1")
    applied = game.apply("white", Move("e2e4"), T0, "white:c1")
    assert not applied.duplicate
    assert applied.v == 1


def test_oldest_command_keys_are_forgotten() -> None:
    """Only the last max_command_ids keys are remembered, oldest forgotten first."""
    game = new_game(max_command_ids=2)
    game.apply("white", Draw("offer"), T0, "k1")
    game.apply("black", Draw("decline"), T0, "k2")
    game.apply("white", Draw("offer"), T0, "k3")
    assert game.apply("black", Draw("decline"), T0, "k2").duplicate
    assert game.apply("white", Draw("offer"), T0, "k3").duplicate
    fresh = game.apply("black", Draw("decline"), T0, "k1")
    assert not fresh.duplicate
    assert fresh.v == 4


def test_replaying_the_same_inputs_gives_identical_events() -> None:
    """A game rebuilt from its journaled inputs yields the same events, versions and state."""
    inputs: list[tuple[str, Any, int, str | None]] = [
        ("cmd", ("white", Move("e2e4")), T0 + 1_000, "white:1"),
        ("cmd", ("black", Move("e7e5")), T0 + 3_000, "black:1"),
        ("cmd", ("white", Draw("offer")), T0 + 4_000, "white:2"),
        ("cmd", ("white", Move("g1f3")), T0 + 5_500, "white:3"),
        ("cmd", ("black", Draw("decline")), T0 + 6_000, "black:2"),
        ("cmd", ("black", Move("b8c6")), T0 + 9_000, "black:3"),
        ("cmd", ("black", Takeback("offer")), T0 + 9_100, "black:4"),
        ("cmd", ("white", Takeback("accept")), T0 + 9_700, "white:4"),
        ("cmd", ("white", Move("g1f3")), T0 + 9_800, "white:3"),
        ("tick", None, T0 + 20_000, None),
        ("cmd", ("black", Move("g8f6")), T0 + 21_000, "black:5"),
        ("tick", None, T0 + 10**6, None),
    ]

    def run() -> tuple[list[Any], dict[str, Any]]:
        game = new_game()
        out: list[Any] = []
        for kind, body, now, key in inputs:
            if kind == "tick":
                out.append(game.tick(now))
            else:
                applied = game.apply(body[0], body[1], now, key)
                out.append((applied.events, applied.v, applied.duplicate))
        return out, game.sync(T0 + 2 * 10**6)

    first, second = run(), run()
    assert first == second
    assert first[1]["reason"] == "timeout"
    assert first[0][8] == ([], 4, True)  # the re-sent "white:3" was a duplicate


def test_versions_have_no_gaps() -> None:
    """Across moves, offers, takebacks and the ending, v goes 1, 2, 3, ... without gaps."""
    game = new_game()
    events: list[dict[str, Any]] = []
    events += play(game, ["e2e4", "e7e5"])
    events += game.apply("white", Draw("offer"), T0 + 3_000).events
    events += game.apply("black", Draw("decline"), T0 + 3_000).events
    events += game.apply("white", Takeback("offer"), T0 + 3_000).events
    events += game.apply("black", Takeback("accept"), T0 + 3_000).events
    events += play(game, FOOLS_MATE, now=T0 + 3_000)
    assert_versions(events)
    assert game.v == len(events) == 11


# ------------------------------------------------------------------ sync, seats, config


def test_sync_shape_and_json() -> None:
    """sync has exactly the contract's fields (without you) and is JSON-serialisable."""
    game = new_game()
    game.seat("white", "alice")
    game.seat("white", "mallory")  # later ids are ignored
    game.seat("black", None)
    game.seat("black", "bob")
    play(game, ["e2e4"])
    sync = game.sync(T0 + 1_500)
    assert set(sync) == {
        "type", "gameId", "v", "status", "fen", "moves", "san", "turn",
        "clock", "result", "reason", "players", "offers",
    }  # fmt: skip
    assert sync["players"] == {
        "white": {"id": "alice", "online": False},
        "black": {"id": "bob", "online": False},
    }
    assert (sync["status"], sync["turn"], sync["result"], sync["reason"]) == (
        "started",
        "black",
        None,
        None,
    )
    assert json.loads(json.dumps(sync)) == sync


def test_time_control_from_claim_and_label() -> None:
    """The JWT clock claim becomes milliseconds; the label is PGN's seconds+increment."""
    assert TimeControl.from_claim(None) == TimeControl(600_000, 0)
    assert TimeControl.from_claim({"initial": 300, "increment": 3}).label() == "300+3"
    assert TimeControl.from_claim({"initial": 90.5, "increment": 0.25}) == TimeControl(90_500, 250)
    assert TimeControl(90_500, 250).label() == "90.5+0.25"
    assert TimeControl.from_claim({"initial": 60}) == TimeControl(60_000, 0)


@pytest.mark.parametrize(
    "claim",
    [
        "5+3",
        [300, 3],
        {},
        {"initial": 0, "increment": 0},
        {"initial": -5, "increment": 0},
        {"initial": 6 * 3600 + 1, "increment": 0},
        {"initial": 60, "increment": 181},
        {"initial": 60, "increment": -1},
        {"initial": True, "increment": 0},
        {"initial": "300", "increment": 0},
        {"initial": float("nan"), "increment": 0},
        {"initial": float("inf"), "increment": 0},
    ],
)
def test_bad_clock_claims_are_config_errors(claim: object) -> None:
    """A clock claim outside 0 < initial <= 6 h, 0 <= increment <= 180 s is a ConfigError."""
    with pytest.raises(ConfigError):
        TimeControl.from_claim(claim)


def test_bad_game_settings_are_config_errors() -> None:
    """An invalid or finished starting position, or a bad setting, is a ConfigError."""
    for fen in ["not a fen", "8/8/8/8/8/8/8/8 w - - 0 1", "4k3/8/8/8/8/8/8/4K3 w - - 0 1"]:
        with pytest.raises(ConfigError):
            new_game(starting_fen=fen)
    with pytest.raises(ConfigError):
        new_game(abort_after_ms=0)
    with pytest.raises(ConfigError):
        TimeControl(1.5, 0)  # type: ignore[arg-type]


# ------------------------------------------------------------------ PGN


def test_pgn_of_a_finished_game() -> None:
    """The PGN carries the lichess-style headers, the moves and the result."""
    game = Game("g1", TimeControl(300_000, 3_000), T0)
    game.seat("white", 'al"ice\n')
    play(game, FOOLS_MATE)
    text = game_pgn(game)
    parsed = chess.pgn.read_game(io.StringIO(text))
    assert parsed is not None
    headers = parsed.headers
    assert headers["Event"] == "XLMate realtime game"
    assert headers["Site"] == "XLMate realtime"
    assert headers["Date"] == headers["UTCDate"] == "2023.11.14"
    assert headers["UTCTime"] == "22:13:20"
    assert headers["White"] == 'al\\"ice'
    assert headers["Black"] == "?"
    assert headers["Result"] == "0-1"
    assert headers["TimeControl"] == "300+3"
    assert headers["Termination"] == "Normal"
    assert headers["GameId"] == "g1"
    assert [m.uci() for m in parsed.mainline_moves()] == FOOLS_MATE
    assert text.rstrip().endswith("Qh4# 0-1")


def test_pgn_while_live_and_after_time_endings() -> None:
    """Live games are * / Unterminated; timeouts are Time forfeit; aborts are Abandoned."""
    game = new_game(starting_fen="4k3/8/8/8/8/8/8/R3K3 w - - 0 1")
    play(game, ["a1a2"])
    text = game_pgn(game, site="https://example.org")
    assert '[Result "*"]' in text
    assert '[Termination "Unterminated"]' in text
    assert '[Site "https://example.org"]' in text
    assert '[FEN "4k3/8/8/8/8/8/8/R3K3 w - - 0 1"]' in text
    play(game, ["e8d8"])
    game.tick(game.deadline_ms() or 0)
    assert '[Termination "Time forfeit"]' in game_pgn(game)

    aborted = new_game()
    aborted.tick(T0 + 30_000)
    text = game_pgn(aborted)
    assert '[Termination "Abandoned"]' in text
    assert '[Result "*"]' in text


def test_fen_writes_en_passant_only_when_capturable() -> None:
    """The event FEN matches python-chess: d6 after ...d5 only when exd6 is legal."""
    game = new_game()
    events = play(game, ["e2e4", "a7a6", "e4e5", "d7d5"])
    assert events[-1]["fen"] == game.board.fen()
    assert " d6 " in events[-1]["fen"]
    events = play(game, ["h2h3", "h7h5"], now=T0 + 10_000)
    assert " - " in events[-1]["fen"]
    assert game.sync(T0 + 20_000)["fen"] == game.board.fen()
