"""Seeded legal chess games for the load generator, made with python-chess.

Every benchmark target (the cluster and the baseline relays) plays the same
move sequences, so they do the same work.  Games are random playouts from a
seeded ``random.Random``; a playout stops exactly where the broker would end
the game on its own (``broker.game.Game._automatic_ending``: mate, stalemate,
insufficient material, threefold repetition after 8 quiet plies, 50 moves), or
at ``max_plies``, in which case the player to move resigns.  Capping keeps the
rotation to fresh games at a realistic pace (most real games last well under
200 plies; random playouts often run for 300+).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import chess


@dataclass(frozen=True, slots=True)
class Script:
    """One game to play: its moves in UCI and whether the last move ends it."""

    moves: tuple[str, ...]
    ends_itself: bool  # False: the side to move after the last move resigns

    def __post_init__(self) -> None:
        if not self.moves:
            raise ValueError("a script needs at least one move")


def ends_game(board: chess.Board) -> bool:
    """Whether the broker ends the game by itself in this position (after a move)."""
    if not any(board.generate_legal_moves()):
        return True
    if board.is_insufficient_material():
        return True
    if board.halfmove_clock >= 8 and board.is_repetition(3):
        return True
    return board.halfmove_clock >= 100


def random_game(rng: random.Random, max_plies: int) -> Script:
    """A random legal playout of at most ``max_plies`` plies."""
    board = chess.Board()
    moves: list[str] = []
    while len(moves) < max_plies:
        legal = list(board.generate_legal_moves())
        move = rng.choice(legal)
        moves.append(move.uci())
        board.push(move)
        if ends_game(board):
            return Script(tuple(moves), ends_itself=True)
    return Script(tuple(moves), ends_itself=False)


def game_pool(seed: int, count: int, max_plies: int) -> list[Script]:
    """``count`` games from ``seed``: the same list for the same arguments, always."""
    rng = random.Random(seed)
    return [random_game(rng, max_plies) for _ in range(count)]
