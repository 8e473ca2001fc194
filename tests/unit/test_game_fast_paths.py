"""Property tests pinning the move hot path (broker/fastchess.py, used by broker/game.py)
to plain python-chess.

``Game._move`` does not call ``san_and_push``, ``is_legal``, ``is_repetition``
or ``fen`` the straightforward way: it shares one king-safety computation
between the legality test, the check suffix and the mate/stalemate test,
builds SAN itself unless disambiguation is needed, keeps the FEN placement
rank by rank, and pre-filters threefold repetition.  These tests compare
every one of those shortcuts with python-chess on random games, from the
standard start and from positions rich in castling, promotion, en passant,
disambiguation, repetition and fifty-move endings, with takebacks in between.
"""

from __future__ import annotations

import random

import chess
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.support.chess_games import expected_ending
from xlmate.broker.fastchess import (
    fast_fen,
    has_legal_move,
    is_legal,
    is_threefold,
    king_safety,
    san_without_suffix,
)
from xlmate.broker.game import Game, TimeControl
from xlmate.constants import Color, other
from xlmate.messages import Move, Takeback

T0 = 1_700_000_000_000

START_FENS = [
    chess.STARTING_FEN,
    # Castling on both wings soon, pieces that block and attack the king's path.
    "r3k2r/pppq1ppp/2n2n2/1B1pp3/1b1PP3/2N2N2/PPPQ1PPP/R3K2R w KQkq - 0 1",
    # Promotions, with and without capturing a rook that still has castling rights.
    "r3k2r/1P4P1/8/8/8/8/1p4p1/R3K2R w KQkq - 0 1",
    # A legal en passant capture, and one a pin forbids (the FEN must omit it).
    "4k3/8/8/2pP4/8/8/8/4K3 w - c6 0 1",
    "8/8/8/KPp4r/8/8/8/6k1 w - c6 0 1",
    # Knights everywhere: disambiguation and reversible shuffling.
    "n1n1k1n1/pp5p/8/8/8/8/PP5P/N1N1K1N1 w - - 0 1",
    # Queens and rooks sharing files and ranks: SAN by file, rank or both.
    "1k6/8/3q1q2/8/3Q1Q2/8/3R1R2/1K6 w - - 0 1",
    # Twelve reversible plies from the fifty-move rule.
    "4k3/1r5r/8/8/8/8/1R5R/4K3 b - - 88 70",
    # Partial castling rights.
    "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w Kq - 0 1",
    "r3k3/8/8/8/8/8/8/4K2R w Kq - 0 1",
    # Mate (back rank) and stalemate (queen too close) are a random move away.
    "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1",
    "k7/8/1K6/8/8/8/8/7R w - - 0 1",
    "7k/5Q2/6K1/8/8/8/8/8 w - - 0 1",
]
# Seeds for random.Random: a game draws hundreds of numbers, more than
# st.randoms() can draw without overrunning Hypothesis's data buffer.
seeds = st.integers(0, 2**32 - 1)


def pick_move(board: chess.Board, rng: random.Random, shuffle: float) -> chess.Move:
    """A random legal move; with probability ``shuffle`` one that undoes the mover's last move.

    Undoing moves (Nf3 ... Ng1) makes repetitions, which pure random play rarely does.
    """
    legal = sorted(board.legal_moves, key=chess.Move.uci)
    if len(board.move_stack) >= 2 and rng.random() < shuffle:
        last = board.move_stack[-2]
        back = chess.Move(last.to_square, last.from_square)
        if back in legal and not board.is_castling(back):
            return back
    return rng.choice(legal)


def candidate_moves(board: chess.Board, rng: random.Random) -> list[chess.Move]:
    """Mostly illegal moves to test legality on: random ones from the mover's pieces,
    king-takes-rook castling forms, promotions with and without a piece, a null move."""
    ours = list(chess.SquareSet(board.occupied_co[board.turn]))
    moves = [chess.Move.null()]
    for _ in range(24):
        moves.append(chess.Move(rng.choice(ours), rng.randrange(64)))
    for king, rook in ((chess.E1, chess.H1), (chess.E1, chess.A1)):
        moves.append(chess.Move(king, rook))
        moves.append(chess.Move(king ^ 0x38, rook ^ 0x38))
    for pawn in chess.SquareSet(board.pawns & board.occupied_co[board.turn]):
        for to_square in chess.SquareSet(chess.BB_PAWN_ATTACKS[board.turn][pawn]):
            for promotion in (None, chess.QUEEN, chess.KNIGHT, chess.KING):
                moves.append(chess.Move(pawn, to_square, promotion))
        step = pawn + (8 if board.turn else -8)
        if 0 <= step < 64:
            moves.append(chess.Move(pawn, step, chess.ROOK))
            moves.append(chess.Move(pawn, step))
    return [move for move in moves if move.from_square != move.to_square or not move]


@settings(max_examples=40, deadline=None)
@given(seeds, st.sampled_from(START_FENS), st.sampled_from([0.0, 0.3, 0.7]))
def test_helpers_agree_with_python_chess_in_every_position(
    seed: int, fen: str, shuffle: float
) -> None:
    """Legality, SAN, has-a-move, FEN and threefold equal python-chess's in random games."""
    rng = random.Random(seed)
    board = chess.Board(fen)
    for _ in range(150):
        event(f"from {fen}")
        safety = king_safety(board)
        assert safety[2] == board.checkers_mask()
        legal = list(board.generate_legal_moves())
        assert has_legal_move(board, safety) == bool(legal)
        assert fast_fen(board) == board.fen()
        assert is_threefold(board) == board.is_repetition(3)
        for move in legal:
            assert is_legal(board, move, safety)
            san = san_without_suffix(board, move, board.is_castling(move))
            full = board.san(move)
            assert full in (san, san + "+", san + "#"), (board.fen(), move, san, full)
        for move in candidate_moves(board, rng):
            assert is_legal(board, move, safety) == board.is_legal(move), (board.fen(), move)
        if not legal or board.is_insufficient_material() or board.is_repetition(3):
            break
        board.push(pick_move(board, rng, shuffle))


def take_back(game: Game, oracle: chess.Board, sans: list[str], offerer: Color, now: int) -> None:
    """Offer a takeback for ``offerer`` and accept it; undo the same plies on the oracle."""
    accepter = other(offerer)
    plies = 1 if game.turn == accepter else 2
    game.apply(offerer, Takeback("offer"), now)
    (taken,) = game.apply(accepter, Takeback("accept"), now).events
    for _ in range(plies):
        oracle.pop()
        sans.pop()
    assert taken["fen"] == oracle.fen()
    assert taken["moves"] == [move.uci() for move in oracle.move_stack]
    assert game.san_moves == tuple(sans)


@settings(max_examples=120, deadline=None)
@given(
    seeds,
    st.sampled_from(START_FENS),
    st.sampled_from([0.0, 0.4, 0.8]),
    st.sampled_from([0.0, 0.05, 0.2]),
)
def test_games_with_takebacks_match_python_chess(
    seed: int, fen: str, shuffle: float, takebacks: float
) -> None:
    """Move events (SAN, FEN) and endings equal python-chess's, across takebacks.

    The SAN is ``board.san(move)`` computed before the push, the FEN
    ``board.fen()`` after it, and the ending the first of checkmate,
    stalemate, insufficient material, ``is_repetition(3)`` and the fifty-move
    rule that python-chess sees.
    """
    rng = random.Random(seed)
    game = Game("fast", TimeControl(600_000, 0), T0, starting_fen=fen)
    oracle = chess.Board(fen)
    sans: list[str] = []
    now = T0
    for _ in range(300):
        now += 1
        if oracle.move_stack and rng.random() < takebacks:
            offerer = rng.choice(["white", "black"])
            plies = 1 if offerer != game.turn else 2
            if len(oracle.move_stack) >= plies:
                take_back(game, oracle, sans, offerer, now)
                assert game.sync(now)["fen"] == oracle.fen()
                continue
        move = pick_move(oracle, rng, shuffle)
        san = oracle.san(move)
        events = game.apply(game.turn, Move(move.uci()), now).events
        oracle.push(move)
        sans.append(san)
        assert events[0]["san"] == san
        assert events[0]["fen"] == oracle.fen()
        assert game.san_moves == tuple(sans)
        reason = expected_ending(oracle)
        assert game.reason == reason
        if reason is not None:
            assert [e["type"] for e in events] == ["move", "game_over"]
            event(f"ended by {reason}")
            return
        assert len(events) == 1
    event("still going")


def test_threefold_counts_only_positions_still_on_the_board_after_a_takeback() -> None:
    """A repetition undone by a takeback no longer counts; replaying it counts again."""
    shuffle = ["g1f3", "g8f6", "f3g1", "f6g8"] * 2
    game = Game("tb", TimeControl(600_000, 0), T0)
    now = T0
    for uci in shuffle[:-1]:
        now += 1
        game.apply(game.turn, Move(uci), now)
    # Take back white's f3g1 and black's f6g8 is not played yet: undo two plies.
    now += 1
    game.apply("black", Takeback("offer"), now)
    game.apply("white", Takeback("accept"), now)
    assert game.moves == tuple(shuffle[:5])
    for uci in shuffle[5:-1]:
        now += 1
        assert game.apply(game.turn, Move(uci), now).events[-1]["type"] == "move"
    assert game.status == "started"
    now += 1
    events = game.apply(game.turn, Move(shuffle[-1]), now).events
    assert events[-1]["reason"] == "threefold_repetition"
    assert game.board.is_repetition(3)


def test_castling_field_follows_python_chess_as_rights_go() -> None:
    """The FEN castling field loses letters exactly as python-chess's does."""
    game = Game("cr", TimeControl(600_000, 0), T0, starting_fen=START_FENS[1])
    oracle = chess.Board(START_FENS[1])
    now = T0
    for uci in ["h1g1", "h8g8", "g1h1", "g8h8", "e1c1", "e8c8"]:
        now += 1
        (moved,) = game.apply(game.turn, Move(uci), now).events
        oracle.push_uci(uci)
        assert moved["fen"] == oracle.fen()
    assert oracle.fen().split()[2] == "-"
