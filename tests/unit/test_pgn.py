"""PGN export: the fast SAN-list writer gives exactly what chess.pgn would."""

from __future__ import annotations

import random

import chess
from hypothesis import given, settings
from hypothesis import strategies as st

from xlmate.broker.game import Game, TimeControl
from xlmate.broker.pgn import _headers, _replayed_pgn, game_pgn
from xlmate.errors import CommandRejected
from xlmate.messages import Move, Resign

T0 = 1_700_000_000_000


def random_game(seed: int, plies: int) -> Game:
    rng = random.Random(seed)
    game = Game("g1", TimeControl(300_000, 2_000), T0)
    game.seat("white", 'ann "the rook"')
    board = chess.Board()
    now = T0
    for _ in range(plies):
        moves = list(board.legal_moves)
        if not moves or game.status == "over":
            break
        move = rng.choice(moves)
        now += 50
        try:
            game.apply(game.turn, Move(move.uci()), now)
        except CommandRejected:
            break
        board.push(move)
    return game


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 220))
def test_fast_pgn_equals_chess_pgn(seed: int, plies: int) -> None:
    """For any game from the start position, the SAN-list writer matches chess.pgn byte for byte."""
    game = random_game(seed, plies)
    assert game_pgn(game) == _replayed_pgn(game, _headers(game, "XLMate realtime"))


def test_finished_game_pgn_has_result_and_termination() -> None:
    """A resigned game's PGN ends with its result and says how it ended."""
    game = random_game(1, 10)
    game.apply(game.turn, Resign(), T0 + 10_000)
    text = game_pgn(game)
    assert text.rstrip().endswith(game.result or "?")
    assert '[Termination "Normal"]' in text and '[White "ann \\"the rook\\""]' in text


def test_game_from_another_position_goes_through_chess_pgn() -> None:
    """A game from a composed position gets SetUp/FEN headers (the chess.pgn path)."""
    fen = "4k3/8/8/8/8/8/4P3/4K3 w - - 0 1"
    game = Game("g2", TimeControl(60_000, 0), T0, starting_fen=fen)
    game.apply("white", Move("e2e4"), T0 + 10)
    text = game_pgn(game)
    assert f'[FEN "{fen}"]' in text and "1. e4" in text
