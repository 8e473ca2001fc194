"""Pure chess helpers shared by unit and integration tests (python-chess only, no sockets).

Unit tests import nothing from ``tests.integration``; what both kinds need lives here.
"""

from __future__ import annotations

import random

import chess


def random_game(seed: int, plies: int) -> list[str]:
    """A seeded sequence of legal UCI moves that does not end the game early."""
    rng = random.Random(seed)
    board = chess.Board()
    moves: list[str] = []
    while len(moves) < plies:
        candidates = list(board.legal_moves)
        rng.shuffle(candidates)
        for move in candidates:
            board.push(move)
            ends = (
                board.is_game_over()
                or board.is_repetition(3)
                or board.is_fifty_moves()
                or board.is_insufficient_material()
            )
            if not ends:
                moves.append(move.uci())
                break
            board.pop()
        else:
            break
    return moves


def expected_ending(board: chess.Board) -> str | None:
    """The automatic ending python-chess sees in a position, in the game's priority order."""
    if board.is_checkmate():
        return "checkmate"
    if board.is_stalemate():
        return "stalemate"
    if board.is_insufficient_material():
        return "insufficient_material"
    if board.is_repetition(3):
        return "threefold_repetition"
    if board.is_fifty_moves():
        return "fifty_moves"
    return None
