"""python-chess, faster: the answers ``broker.game`` needs on every move.

``broker.game`` holds the rules; this module holds the speed.  Each function
here returns exactly what a plain python-chess call returns (named in its
docstring) for standard chess, with less work, and
tests/unit/test_game_fast_paths.py compares every one of them with
python-chess on random games.  They lean on python-chess internals
(``_slider_blockers``, ``_generate_evasions``, ``_is_safe``, ``_stack``,
``_algebraic_without_suffix``), which those tests also pin: a python-chess
upgrade that changes them fails there first.

How ``Game._move`` uses them, per move:

- ``king_safety`` once per position serves the check suffix, the
  mate/stalemate test (``has_legal_move``) and the next move's legality test
  (``is_legal``), where ``is_legal``, ``san_and_push`` and the ending checks
  would each recompute it;
- ``san_without_suffix`` builds SAN directly unless a piece move needs
  disambiguating;
- the FEN placement is kept rank by rank (``board_ranks``, ``rank_fen``,
  ``fen_from_ranks``) so a move rebuilds only the ranks it touched;
- ``is_threefold`` replays moves only when a repetition is plausible.

Module-level caches (parsed moves, rank texts) are bounded and shared by
every game of the process; they are pure memoisation and change no answer.
"""

from __future__ import annotations

import itertools
from typing import Final

import chess

_RUNS: Final = tuple(("1" * n, str(n)) for n in range(8, 1, -1))
_SQUARE_NAMES: Final = chess.SQUARE_NAMES
_FILE_NAMES: Final = chess.FILE_NAMES
_BB_SQUARES: Final = chess.BB_SQUARES
_LETTERS: Final = ("", "", "N", "B", "R", "Q", "K")  # SAN piece letter by piece type

# Parsed moves by UCI string.  Only moves that were legal somewhere go in, so
# it holds a bounded set of strings (garbage is parsed and refused each time).
_MOVES: dict[str, chess.Move] = {}
_MAX_MOVES: Final = 8192


def parse_uci(uci: str) -> chess.Move:
    """``chess.Move.from_uci(uci)``, from a cache of moves once legal; ValueError if not UCI."""
    move = _MOVES.get(uci)
    if move is None:
        move = chess.Move.from_uci(uci)
    return move


def remember_legal(uci: str, move: chess.Move) -> None:
    """Cache a move that was just found legal (so the cache holds real moves only)."""
    if len(_MOVES) < _MAX_MOVES:
        _MOVES[uci] = move


# FEN text of one rank by its contents (see rank_fen); cleared when full.
_RANK_TEXT: dict[int, str] = {}
_MAX_RANK_TEXT: Final = 1 << 15

# The FEN castling field of a standard board by its (clean) castling rights,
# which in standard chess are a subset of the four corners; python-chess's
# castling_xfen() writes them in this order.
_CORNERS: Final = ((chess.BB_H1, "K"), (chess.BB_A1, "Q"), (chess.BB_H8, "k"), (chess.BB_A8, "q"))
_CASTLING_TEXT: Final[dict[int, str]] = {
    sum(corner for corner, _ in chosen): "".join(letter for _, letter in chosen) or "-"
    for count in range(len(_CORNERS) + 1)
    for chosen in itertools.combinations(_CORNERS, count)
}


def rank_fen(board: chess.Board, rank: int) -> str:
    """The FEN placement text of one rank (0 is rank 1): ``"rnbqkbnr"``, ``"4P3"``, ``"8"``.

    Memoised by the rank's contents (its byte of each piece bitboard and of
    the white pieces, packed into one int), since few distinct ranks occur
    in play; building the text costs twice as much as the lookup.
    """
    shift = rank * 8
    if not (board.occupied >> shift) & 0xFF:
        return "8"
    white = (board.occupied_co[chess.WHITE] >> shift) & 0xFF
    pawns = (board.pawns >> shift) & 0xFF
    knights = (board.knights >> shift) & 0xFF
    bishops = (board.bishops >> shift) & 0xFF
    rooks = (board.rooks >> shift) & 0xFF
    queens = (board.queens >> shift) & 0xFF
    kings = (board.kings >> shift) & 0xFF
    key = (
        pawns
        | knights << 8
        | bishops << 16
        | rooks << 24
        | queens << 32
        | kings << 40
        | white << 48
    )
    text = _RANK_TEXT.get(key)
    if text is not None:
        return text
    cells = ["1"] * 8
    for bits, upper, lower in (
        (pawns, "P", "p"),
        (knights, "N", "n"),
        (bishops, "B", "b"),
        (rooks, "R", "r"),
        (queens, "Q", "q"),
        (kings, "K", "k"),
    ):
        while bits:
            low = bits & -bits
            cells[low.bit_length() - 1] = upper if white & low else lower
            bits ^= low
    text = "".join(cells)
    for run, count in _RUNS:
        if run in text:
            text = text.replace(run, count)
    if len(_RANK_TEXT) >= _MAX_RANK_TEXT:
        _RANK_TEXT.clear()
    _RANK_TEXT[key] = text
    return text


def board_ranks(board: chess.Board) -> list[str]:
    """The eight FEN rank texts of ``board``, in FEN order (rank 8 first)."""
    return [rank_fen(board, rank) for rank in range(7, -1, -1)]


def fen_from_ranks(board: chess.Board, ranks: list[str]) -> str:
    """``board.fen()`` given ``ranks``, the board's rank texts in FEN order."""
    ep_square = board.ep_square
    ep = _SQUARE_NAMES[ep_square] if ep_square is not None and board.has_legal_en_passant() else "-"
    if board.castling_rights:
        castling = _CASTLING_TEXT.get(board.clean_castling_rights())
        if castling is None:  # rights off the corners: not standard chess
            castling = board.castling_xfen()
    else:
        castling = "-"
    return (
        f"{'/'.join(ranks)} {'w' if board.turn else 'b'} {castling} {ep} "
        f"{board.halfmove_clock} {board.fullmove_number}"
    )


def fast_fen(board: chess.Board) -> str:
    """``board.fen()`` for standard chess, several times faster.

    python-chess builds the placement square by square through ``piece_at``
    and the castling field through a loop over rooks; this builds each rank
    from the piece bitboards (memoised, ``rank_fen``) and looks the castling
    field up.  ``broker.game.Game`` goes further on moves and rebuilds only the one or two
    ranks a move changed.  Tests compare it with ``board.fen()`` on random
    games.
    """
    return fen_from_ranks(board, board_ranks(board))


def san_without_suffix(board: chess.Board, move: chess.Move, castling: bool) -> str:
    """``board.san(move)`` without its ``+``/``#``, for a legal ``move`` not yet pushed.

    ``castling`` is ``board.is_castling(move)``.  python-chess searches the
    legal moves of the other pieces of the mover's kind for every piece move,
    to disambiguate (``Nbd2``); here that search (python-chess's own,
    ``_algebraic_without_suffix``) runs only when another such piece attacks
    the target square at all, which is rare.  Tests compare the result with
    ``board.san`` on random games.
    """
    from_square = move.from_square
    to_square = move.to_square
    if castling:
        return "O-O-O" if to_square & 7 < from_square & 7 else "O-O"
    piece_type = board.piece_type_at(from_square)
    capture = bool(board.occupied_co[not board.turn] & _BB_SQUARES[to_square]) or (
        board.is_en_passant(move)
    )
    if piece_type == chess.PAWN:
        san = _SQUARE_NAMES[to_square]
        if capture:
            san = _FILE_NAMES[from_square & 7] + "x" + san
        if move.promotion:
            san += "=" + _LETTERS[move.promotion]
        return san
    assert piece_type is not None  # a legal move starts on a piece
    others = board.pieces_mask(piece_type, board.turn) & ~_BB_SQUARES[from_square]
    if others and board.attackers_mask(board.turn, to_square) & others:
        return board._algebraic_without_suffix(move)
    return _LETTERS[piece_type] + ("x" if capture else "") + _SQUARE_NAMES[to_square]


# The side to move's king square, slider blockers (its pinned pieces) and checkers.
Safety = tuple[int, int, int]


def king_safety(board: chess.Board) -> Safety:
    """The king square, pinned-piece mask and checkers of the side to move.

    python-chess computes these three afresh for every ``is_legal``, every
    ``is_check`` and every legal-move search.  ``broker.game.Game`` computes them once
    per position, right after the move that reached it, and uses them for
    the check suffix, the mate/stalemate test and the legality test of the
    next move.  (A valid board always has both kings.)
    """
    king = chess.msb(board.kings & board.occupied_co[board.turn])
    return king, board._slider_blockers(king), board.attackers_mask(not board.turn, king)


def has_legal_move(board: chess.Board, safety: Safety) -> bool:
    """``any(board.generate_legal_moves())`` given ``king_safety(board)``.

    The same steps as python-chess's ``generate_legal_moves`` for standard
    chess: check evasions when in check, else the pseudo-legal moves, each
    kept if it leaves the king safe.
    """
    king, blockers, checkers = safety
    if checkers:
        moves = board._generate_evasions(king, checkers)
    else:
        moves = board.generate_pseudo_legal_moves()
    is_safe = board._is_safe
    return any(is_safe(king, blockers, move) for move in moves)


def is_legal(board: chess.Board, move: chess.Move, safety: Safety) -> bool:
    """``board.is_legal(move)`` given ``king_safety(board)``.

    The same steps as python-chess's ``is_legal`` (``is_pseudo_legal`` and
    not ``is_into_check``) for standard chess.
    """
    if not board.is_pseudo_legal(move):
        return False
    king, blockers, checkers = safety
    if checkers and move not in board._generate_evasions(
        king, checkers, _BB_SQUARES[move.from_square], _BB_SQUARES[move.to_square]
    ):
        return False
    return board._is_safe(king, blockers, move)


def is_threefold(board: chess.Board) -> bool:
    """``board.is_repetition(3)``, without its replay unless a repetition is plausible.

    python-chess first compares the occupancy of every earlier position in
    the game, then, if that allows three occurrences, pops and re-pushes
    moves back to the last irreversible one, counting positions equal to the
    current one.  Its replay never gets past the last pawn move or capture
    (an irreversible move), so only the last ``halfmove_clock`` positions
    can count, and only those with the same side to move (every second
    one).  This counts occupancy matches among just those, from the board's
    saved states, and asks python-chess only when two of them match: a
    necessary condition of its answer, so the answer is the same.  (An
    incremental count of position keys would cost a key per move, more than
    this on average.)
    """
    stack = board._stack
    length = len(stack)
    start = max(0, length - board.halfmove_clock)
    start += (length - start) & 1  # same side to move as now: length - 2, length - 4, ...
    occupied = board.occupied
    matches = 0
    for state in stack[start::2]:
        if state.occupied == occupied:
            matches += 1
    return matches >= 2 and board.is_repetition(3)
