"""The chess game state machine: commands and time in, protocol events out.

This module is pure: it imports python-chess, the standard library and
``xlmate.*`` only, and never reads a clock.  Every method that needs the time
takes ``now_ms`` (wall-clock milliseconds chosen by the caller), so the same
inputs in the same order always give the same events and versions.  The
broker relies on that: it journals each input (a command with its ``now_ms``,
or a tick with its ``now_ms``) and after a crash rebuilds a game by replaying
them.

Feeding a game::

    game = Game("g1", TimeControl(300_000, 3_000), created_ms=now)
    applied = game.apply("white", Move("e2e4"), now, command_key="white:c1")
    publish(applied.events)          # each one has the next "v"; ack with applied.v
    publish(game.tick(now))          # flag fall / abort, whenever deadline_ms() is due

``apply`` raises ``CommandRejected`` (a docs/protocol.md error code) when it
refuses a command, and a refused command changes nothing.  Time comes first:
a command that arrives when ``tick(now_ms)`` would end the game (the mover's
flag fell, or the abort deadline passed) is refused with ``TimeExpired``
(code ``game_over``) and leaves the game untouched; the caller then runs
``tick(now_ms)``, which produces (and versions) the ending.  So the ending
is always a tick input in the journal, never hidden inside a command.

The rules (clocks, aborts, offers, takebacks) are written out in
docs/game-rules.md; they follow lichess where docs/protocol.md is silent.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final, Literal

import chess

from xlmate.constants import (
    BAD_MESSAGE,
    DEFAULT_INCREMENT_S,
    DEFAULT_INITIAL_S,
    GAME_OVER,
    ILLEGAL_MOVE,
    NO_OFFER,
    NOT_YOUR_TURN,
    Color,
    other,
)
from xlmate.errors import CommandRejected, ConfigError
from xlmate.messages import Draw, GameCommand, Move, Resign, Takeback

Event = dict[str, Any]
Status = Literal["waiting", "started", "over"]

MAX_INITIAL_MS: Final = 6 * 60 * 60 * 1000
MAX_INCREMENT_MS: Final = 180 * 1000
DEFAULT_ABORT_AFTER_MS: Final = 30_000
DEFAULT_MAX_COMMAND_IDS: Final = 1024

WHITE_WINS: Final = "1-0"
BLACK_WINS: Final = "0-1"
DRAWN: Final = "1/2-1/2"
NO_RESULT: Final = "*"

_WIN: Final[dict[Color, str]] = {"white": WHITE_WINS, "black": BLACK_WINS}
_CHESS_COLOR: Final[dict[str, chess.Color]] = {"white": chess.WHITE, "black": chess.BLACK}


# --------------------------------------------------------------------------- time control


def _claim_ms(value: object, name: str) -> int:
    """Seconds from a JWT ``clock`` claim (int or float) as whole milliseconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"clock {name} must be a number of seconds")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"clock {name} must be a finite number of seconds")
    return round(value * 1000)


def _seconds(ms: int) -> str:
    """Milliseconds as seconds without a trailing fraction: 300000 -> "300", 500 -> "0.5"."""
    whole, frac = divmod(ms, 1000)
    return str(whole) if frac == 0 else f"{whole}.{frac:03d}".rstrip("0")


@dataclass(frozen=True, slots=True)
class TimeControl:
    """Initial time and Fischer increment per move, in milliseconds, validated when built."""

    initial_ms: int
    increment_ms: int

    def __post_init__(self) -> None:
        for name, value in (("initial_ms", self.initial_ms), ("increment_ms", self.increment_ms)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer number of milliseconds")
        if not 0 < self.initial_ms <= MAX_INITIAL_MS:
            raise ConfigError("initial time must be more than 0 and at most 6 hours")
        if not 0 <= self.increment_ms <= MAX_INCREMENT_MS:
            raise ConfigError("increment must be between 0 and 180 seconds")

    @classmethod
    def from_claim(cls, claim: object) -> TimeControl:
        """Build from a seat token's ``clock`` claim ``{"initial": s, "increment": s}``.

        ``None`` (no claim) gives the default 600+0; a missing ``increment`` is 0.
        Anything else that does not fit raises ``ConfigError``.
        """
        if claim is None:
            return cls(DEFAULT_INITIAL_S * 1000, DEFAULT_INCREMENT_S * 1000)
        if not isinstance(claim, dict):
            raise ConfigError('the clock claim must be {"initial": seconds, "increment": seconds}')
        if "initial" not in claim:
            raise ConfigError("the clock claim needs an initial time")
        return cls(
            _claim_ms(claim["initial"], "initial"),
            _claim_ms(claim.get("increment", 0), "increment"),
        )

    def label(self) -> str:
        """The PGN ``TimeControl`` form, initial seconds + increment seconds: ``"300+3"``."""
        return f"{_seconds(self.initial_ms)}+{_seconds(self.increment_ms)}"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Applied:
    """What one accepted command produced.

    ``events`` are protocol messages, each with ``type``, ``gameId`` and the
    next ``v``.  ``v`` is the version to ack the command with: the ``v`` of its
    last event, or the current version when it produced none (a no-op or a
    duplicate).  ``duplicate`` is true when the command key was seen before.
    """

    events: list[Event]
    v: int
    duplicate: bool = False


class TimeExpired(CommandRejected):
    """A command came when time had already ended the game (flag fall or abort).

    Code ``game_over``.  Nothing changed: the caller should now run
    ``tick(now_ms)`` with the same ``now_ms`` to produce the ``game_over``.
    """

    def __init__(self) -> None:
        super().__init__(GAME_OVER, "the game is over: time ran out")


# --------------------------------------------------------------------------- the game


class Game:
    """One game of chess under the protocol's rules: legality, endings, clocks, offers.

    ``v`` is the version of the last event produced (0 before any); every
    event takes the next one, with no gaps.  ``status`` is ``"waiting"``
    until the first move, ``"started"`` after it and ``"over"`` at the end.

    ``starting_fen`` (keyword-only, for tests and composed positions) starts
    the game from another position; ``ConfigError`` if that position is
    invalid or already finished.
    """

    __slots__ = (
        "_board",
        "_clocks_running",
        "_draw_offer",
        "_first_mover",
        "_increment_ms",
        "_keys",
        "_left",
        "_players",
        "_ranks",
        "_reason",
        "_result",
        "_safety",
        "_san",
        "_takeback_offer",
        "_turn_started_ms",
        "_uci",
        "abort_after_ms",
        "created_ms",
        "game_id",
        "max_command_ids",
        "status",
        "time_control",
        "v",
    )

    def __init__(
        self,
        game_id: str,
        time_control: TimeControl,
        created_ms: int,
        *,
        abort_after_ms: int = DEFAULT_ABORT_AFTER_MS,
        max_command_ids: int = DEFAULT_MAX_COMMAND_IDS,
        starting_fen: str | None = None,
    ) -> None:
        if abort_after_ms <= 0:
            raise ConfigError("abort_after_ms must be positive")
        if max_command_ids < 0:
            raise ConfigError("max_command_ids cannot be negative")
        self.game_id = game_id
        self.time_control = time_control
        self.created_ms = created_ms
        self.abort_after_ms = abort_after_ms
        self.max_command_ids = max_command_ids
        self._board = _starting_board(starting_fen)
        # The FEN placement of the board, rank by rank (rank 8 first): a move
        # rebuilds only the ranks it changed.
        self._ranks = _board_ranks(self._board)
        # King safety of the side to move (see _king_safety), None until needed.
        self._safety: _Safety | None = None
        self._first_mover: Color = "white" if self._board.turn else "black"
        self.v = 0
        self.status: Status = "waiting"
        self._result: str | None = None
        self._reason: str | None = None
        self._players: dict[Color, str | None] = {"white": None, "black": None}
        self._uci: list[str] = []
        self._san: list[str] = []
        self._increment_ms = time_control.increment_ms
        self._left: dict[Color, int] = {
            "white": time_control.initial_ms,
            "black": time_control.initial_ms,
        }
        # When the side to move's turn began: its clock runs from here (once
        # clocks run), or its abort window does (before that).
        self._turn_started_ms = created_ms
        # Sticky: true once both sides have made a move, even if a takeback
        # later removes those moves.
        self._clocks_running = False
        self._draw_offer: Color | None = None
        self._takeback_offer: Color | None = None
        self._keys: OrderedDict[str, int] = OrderedDict()

    # ----------------------------------------------------------------- read-only views

    @property
    def board(self) -> chess.Board:
        """The current position with its move stack; callers must not modify it."""
        return self._board

    @property
    def result(self) -> str | None:
        """``"1-0"``, ``"0-1"``, ``"1/2-1/2"``, ``"*"`` (aborted) once over, else None."""
        return self._result

    @property
    def reason(self) -> str | None:
        """The protocol's ``game_over`` reason once over, else None."""
        return self._reason

    @property
    def turn(self) -> Color:
        """The side to move."""
        return "white" if self._board.turn else "black"

    @property
    def moves(self) -> tuple[str, ...]:
        """The moves of the game so far, in UCI."""
        return tuple(self._uci)

    @property
    def san_moves(self) -> tuple[str, ...]:
        """The moves of the game so far, in SAN."""
        return tuple(self._san)

    @property
    def offers(self) -> dict[str, Color | None]:
        """The standing offers: ``{"draw": color | None, "takeback": color | None}``."""
        return {"draw": self._draw_offer, "takeback": self._takeback_offer}

    def player(self, color: Color) -> str | None:
        """The platform id recorded for a seat, or None (also for an unknown color)."""
        return self._players.get(color)

    def release(self) -> None:
        """Drop what only play needs, once the game is over (the broker keeps
        recently finished games in memory for late catch-ups and PGN requests).

        The board's move stack and the remembered command ids go; the move
        lists, the position and everything ``sync`` reads stay.  Write the PGN
        first: ``game_pgn`` needs the move stack to see where the game started.
        """
        if self.status != "over":
            raise ValueError("release() is for finished games")
        self._board.clear_stack()
        self._keys.clear()
        self._safety = None

    def players_id(self, color: Color) -> str | None:
        """Same as ``player``; the name broker/authority.py calls."""
        return self._players.get(color)

    def seat(self, color: Color, player_id: str | None) -> None:
        """Record the platform id (``sub``) of a seat; the first non-None id sticks.

        Not versioned: it changes no event and no ``v``.
        """
        if color not in _CHESS_COLOR:
            raise CommandRejected(BAD_MESSAGE, "color must be white or black")
        if self._players[color] is None and player_id is not None:
            self._players[color] = player_id

    def clock(self, now_ms: int) -> dict[str, Any]:
        """Milliseconds left for each side at ``now_ms`` and which clock is running."""
        white, black = self._left["white"], self._left["black"]
        running: Color | None = None
        if self._clocks_running and self.status != "over":
            running = self.turn
            elapsed = now_ms - self._turn_started_ms
            if elapsed > 0:
                if running == "white":
                    white = max(0, white - elapsed)
                else:
                    black = max(0, black - elapsed)
        return {"white": white, "black": black, "increment": self._increment_ms, "running": running}

    def deadline_ms(self) -> int | None:
        """When ``tick`` next has something to do (flag fall or abort); None once over."""
        if self.status == "over":
            return None
        if self._clocks_running:
            return self._turn_started_ms + self._left[self.turn]
        return self._turn_started_ms + self.abort_after_ms

    def sync(self, now_ms: int) -> dict[str, Any]:
        """The protocol's ``sync`` message without ``you`` (the edge adds it)."""
        return {
            "type": "sync",
            "gameId": self.game_id,
            "v": self.v,
            "status": self.status,
            "fen": _fen_from_ranks(self._board, self._ranks),
            "moves": list(self._uci),
            "san": list(self._san),
            "turn": self.turn,
            "clock": self.clock(now_ms),
            "result": self._result,
            "reason": self._reason,
            "players": {
                "white": {"id": self._players["white"], "online": False},
                "black": {"id": self._players["black"], "online": False},
            },
            "offers": {"draw": self._draw_offer, "takeback": self._takeback_offer},
        }

    # ----------------------------------------------------------------- inputs

    def tick(self, now_ms: int) -> list[Event]:
        """End the game if time alone ends it at ``now_ms``: flag fall or abort.

        Returns the events produced (empty if nothing is due, so calling it
        early or repeatedly is harmless).
        """
        deadline = self.deadline_ms()
        if deadline is None or now_ms < deadline:
            return []
        if not self._clocks_running:
            return [self._end(NO_RESULT, "aborted")]
        loser = self.turn
        winner = other(loser)
        self._left[loser] = 0
        self._turn_started_ms = now_ms
        if self._board.has_insufficient_material(_CHESS_COLOR[winner]):
            return [self._end(DRAWN, "timeout")]
        return [self._end(_WIN[winner], "timeout")]

    def apply(
        self,
        color: Color,
        command: GameCommand,
        now_ms: int,
        command_key: str | None = None,
    ) -> Applied:
        """Apply one player's command at ``now_ms``; raise ``CommandRejected`` if refused.

        ``command_key`` is the idempotency key, already scoped to the seat by
        the caller (``"white:c17"``): a key applied before returns an empty
        ``Applied`` with the ``v`` it got then and ``duplicate=True``.  The
        last ``max_command_ids`` accepted keys are remembered; rejected
        commands are not.  When time has already ended the game at ``now_ms``
        it raises ``TimeExpired`` and the caller should ``tick(now_ms)``.
        """
        if command_key is not None:
            seen = self._keys.get(command_key)
            if seen is not None:
                return Applied([], seen, duplicate=True)
        if color not in _CHESS_COLOR:
            raise CommandRejected(BAD_MESSAGE, "color must be white or black")
        deadline = self.deadline_ms()
        if deadline is None:
            raise CommandRejected(GAME_OVER, "the game is over")
        if now_ms >= deadline:
            raise TimeExpired()

        events: list[Event]
        if isinstance(command, Move):
            events = self._move(color, command.uci, now_ms)
        elif isinstance(command, Resign):
            self._stop_clock(now_ms)
            events = [self._end(_WIN[other(color)], "resign")]
        elif isinstance(command, Draw):
            events = self._draw(color, command.action, now_ms)
        elif isinstance(command, Takeback):
            events = self._takeback(color, command.action, now_ms)
        else:
            raise CommandRejected(BAD_MESSAGE, "not a game command")

        if command_key is not None and self.max_command_ids:
            keys = self._keys
            keys[command_key] = self.v
            if len(keys) > self.max_command_ids:
                keys.popitem(last=False)
        return Applied(events, self.v)

    # ----------------------------------------------------------------- moves

    def _move(self, color: Color, uci: str, now_ms: int) -> list[Event]:
        """Play ``uci`` for ``color``: the hot path, so it keeps state incrementally.

        The results are python-chess's (``is_legal``, ``san``, ``fen``,
        ``is_repetition(3)``...) but it does less work for them, which the
        property tests in tests/unit/test_game_fast_paths.py pin down:

        - one king-safety computation per position (``_king_safety``) serves
          the check suffix, the mate/stalemate test and the next move's
          legality test, and one legal-move search serves both the ``#``
          suffix and the ending, where ``is_legal``, ``san_and_push`` and the
          ending check used to redo them;
        - SAN is built directly unless a piece move needs disambiguating;
        - the FEN placement is kept rank by rank and a move rebuilds only the
          ranks it touched (``_ranks``);
        - threefold repetition replays moves only when plausible.
        """
        board = self._board
        if board.turn != _CHESS_COLOR[color]:
            raise CommandRejected(NOT_YOUR_TURN, "it is not your turn")
        move = _MOVES.get(uci)
        if move is None:
            try:
                move = chess.Move.from_uci(uci)
            except ValueError:
                raise CommandRejected(ILLEGAL_MOVE, f"{uci} is not a legal move") from None
        safety = self._safety
        if safety is None:
            safety = self._safety = _king_safety(board)
        castling = board.is_castling(move)
        if not _is_legal(board, move, safety) or (
            # python-chess also takes king-takes-rook (e1h1) as castling; the
            # contract is standard UCI only (e1g1, e1c1).
            castling and abs((move.from_square & 7) - (move.to_square & 7)) != 2
        ):
            raise CommandRejected(ILLEGAL_MOVE, f"{uci} is not a legal move")
        if len(_MOVES) < _MAX_MOVES:
            _MOVES[uci] = move  # only legal moves: a bounded set of UCI strings

        if self._clocks_running:
            elapsed = now_ms - self._turn_started_ms
            left = self._left[color] + self._increment_ms
            if elapsed > 0:
                left -= elapsed
            self._left[color] = left
        san = _san_without_suffix(board, move, castling)
        board.push(move)
        safety = self._safety = _king_safety(board)
        in_check = bool(safety[2])
        stuck = not _has_legal_move(board, safety)
        if in_check:
            san += "#" if stuck else "+"
        self._update_ranks(move)
        self._uci.append(uci)
        self._san.append(san)
        self._turn_started_ms = now_ms
        if not self._clocks_running and len(self._uci) >= 2:
            self._clocks_running = True
        if self.status == "waiting":
            self.status = "started"
        # A draw offer lapses when the offerer's opponent moves; a takeback
        # offer lapses when the offerer moves on.
        if self._draw_offer is not None and self._draw_offer != color:
            self._draw_offer = None
        if self._takeback_offer == color:
            self._takeback_offer = None

        ending = self._automatic_ending(color, in_check, stuck)
        if ending is not None:
            self._finish(*ending)
        self.v += 1
        events: list[Event] = [
            {
                "type": "move",
                "gameId": self.game_id,
                "v": self.v,
                "uci": uci,
                "san": san,
                "from": uci[0:2],
                "to": uci[2:4],
                "promotion": uci[4] if len(uci) == 5 else None,
                "fen": _fen_from_ranks(board, self._ranks),
                "by": color,
                "clock": self.clock(now_ms),
            }
        ]
        if ending is not None:
            events.append(self._game_over_event())
        return events

    def _update_ranks(self, move: chess.Move) -> None:
        """Refresh the FEN ranks a just-pushed ``move`` changed.

        Every square a move changes is on its from- or its to-rank: castling
        moves king and rook along the back rank, and an en passant capture
        removes a pawn beside the from-square.  So two ranks at most.
        """
        ranks = self._ranks
        board = self._board
        from_rank = move.from_square >> 3
        to_rank = move.to_square >> 3
        ranks[7 - from_rank] = _rank_fen(board, from_rank)
        if to_rank != from_rank:
            ranks[7 - to_rank] = _rank_fen(board, to_rank)

    def _automatic_ending(
        self, mover: Color, in_check: bool, stuck: bool
    ) -> tuple[str, str] | None:
        """The result and reason if the position after ``mover``'s move ends the game.

        ``in_check`` and ``stuck`` (no legal move) describe that position;
        ``_move`` has them already from building the SAN suffix.
        """
        board = self._board
        if stuck:
            if in_check:
                return _WIN[mover], "checkmate"
            return DRAWN, "stalemate"
        # With a pawn, rook or queen on the board someone can still mate.
        if not (board.pawns | board.rooks | board.queens) and board.is_insufficient_material():
            return DRAWN, "insufficient_material"
        # A third occurrence needs at least 8 plies without a pawn move or capture.
        if board.halfmove_clock >= 8 and _is_threefold(board):
            return DRAWN, "threefold_repetition"
        if board.halfmove_clock >= 100:
            return DRAWN, "fifty_moves"
        return None

    # ----------------------------------------------------------------- offers

    def _draw(self, color: Color, action: str, now_ms: int) -> list[Event]:
        """Draw offer / accept / decline (offering against a standing offer accepts it)."""
        offer = self._draw_offer
        if action == "offer":
            if offer == color:
                return []
            if offer is None:
                self._draw_offer = color
                return [self._offer_event("draw", "offer", color)]
            action = "accept"
        if offer != other(color):
            raise CommandRejected(NO_OFFER, "your opponent has not offered a draw")
        if action == "decline":
            self._draw_offer = None
            return [self._offer_event("draw", "decline", color)]
        self._stop_clock(now_ms)
        self._finish(DRAWN, "draw_agreed")
        return [self._offer_event("draw", "accept", color), self._game_over_event()]

    def _has_move(self, color: Color) -> bool:
        """Whether ``color`` has a move on the board that a takeback could undo."""
        count = len(self._uci)
        return count >= 2 or (count == 1 and self._first_mover == color)

    def _takeback(self, color: Color, action: str, now_ms: int) -> list[Event]:
        """Takeback offer / accept / decline (offering against a standing offer accepts it)."""
        offer = self._takeback_offer
        if action == "offer":
            if offer == color:
                return []
            if offer is None:
                if not self._has_move(color):
                    raise CommandRejected(ILLEGAL_MOVE, "you have no move to take back")
                self._takeback_offer = color
                return [self._offer_event("takeback", "offer", color)]
            action = "accept"
        if offer != other(color):
            raise CommandRejected(NO_OFFER, "your opponent has not offered a takeback")
        if action == "decline":
            self._takeback_offer = None
            return [self._offer_event("takeback", "decline", color)]

        # Accept: undo the offerer's last move, and the accepter's reply if any.
        # Time already spent stays spent: the side to move is charged up to now.
        self._stop_clock(now_ms)
        plies = 1 if self.turn == color else 2
        board = self._board
        for _ in range(plies):
            board.pop()
            self._uci.pop()
            self._san.pop()
        self._ranks = _board_ranks(board)
        self._safety = None
        self._turn_started_ms = now_ms
        self._draw_offer = None
        self._takeback_offer = None
        self.v += 1
        return [
            {
                "type": "takeback",
                "gameId": self.game_id,
                "v": self.v,
                "action": "accept",
                "by": color,
                "fen": _fen_from_ranks(board, self._ranks),
                "moves": list(self._uci),
                "clock": self.clock(now_ms),
            }
        ]

    # ----------------------------------------------------------------- helpers

    def _offer_event(self, kind: str, action: str, by: Color) -> Event:
        self.v += 1
        return {"type": kind, "gameId": self.game_id, "v": self.v, "action": action, "by": by}

    def _stop_clock(self, now_ms: int) -> None:
        """Charge the running clock up to ``now_ms`` and restart the turn from there."""
        if self._clocks_running:
            elapsed = now_ms - self._turn_started_ms
            if elapsed > 0:
                turn = self.turn
                self._left[turn] = max(0, self._left[turn] - elapsed)
        self._turn_started_ms = now_ms

    def _finish(self, result: str, reason: str) -> None:
        """Mark the game over; offers die with it."""
        self.status = "over"
        self._result = result
        self._reason = reason
        self._draw_offer = None
        self._takeback_offer = None

    def _game_over_event(self) -> Event:
        self.v += 1
        return {
            "type": "game_over",
            "gameId": self.game_id,
            "v": self.v,
            "result": self._result,
            "reason": self._reason,
            "clock": self.clock(self._turn_started_ms),  # stopped: the final times
        }

    def _end(self, result: str, reason: str) -> Event:
        self._finish(result, reason)
        return self._game_over_event()


# --------------------------------------------------------------------------- FEN and SAN

_RUNS: Final = tuple(("1" * n, str(n)) for n in range(8, 1, -1))
_SQUARE_NAMES: Final = chess.SQUARE_NAMES
_FILE_NAMES: Final = chess.FILE_NAMES
_BB_SQUARES: Final = chess.BB_SQUARES
_LETTERS: Final = ("", "", "N", "B", "R", "Q", "K")  # SAN piece letter by piece type

# Parsed moves by UCI string.  Only moves that were legal somewhere go in, so
# it holds a bounded set of strings (garbage is parsed and refused each time).
_MOVES: dict[str, chess.Move] = {}
_MAX_MOVES: Final = 8192

# FEN text of one rank by its contents (see _rank_fen); cleared when full.
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


def _rank_fen(board: chess.Board, rank: int) -> str:
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


def _board_ranks(board: chess.Board) -> list[str]:
    """The eight FEN rank texts of ``board``, in FEN order (rank 8 first)."""
    return [_rank_fen(board, rank) for rank in range(7, -1, -1)]


def _fen_from_ranks(board: chess.Board, ranks: list[str]) -> str:
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
    from the piece bitboards (memoised, ``_rank_fen``) and looks the castling
    field up.  ``Game`` goes further on moves and rebuilds only the one or two
    ranks a move changed.  Tests compare it with ``board.fen()`` on random
    games.
    """
    return _fen_from_ranks(board, _board_ranks(board))


def _san_without_suffix(board: chess.Board, move: chess.Move, castling: bool) -> str:
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
_Safety = tuple[int, int, int]


def _king_safety(board: chess.Board) -> _Safety:
    """The king square, pinned-piece mask and checkers of the side to move.

    python-chess computes these three afresh for every ``is_legal``, every
    ``is_check`` and every legal-move search.  ``Game`` computes them once
    per position, right after the move that reached it, and uses them for
    the check suffix, the mate/stalemate test and the legality test of the
    next move.  (A valid board always has both kings.)
    """
    king = chess.msb(board.kings & board.occupied_co[board.turn])
    return king, board._slider_blockers(king), board.attackers_mask(not board.turn, king)


def _has_legal_move(board: chess.Board, safety: _Safety) -> bool:
    """``any(board.generate_legal_moves())`` given ``_king_safety(board)``.

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


def _is_legal(board: chess.Board, move: chess.Move, safety: _Safety) -> bool:
    """``board.is_legal(move)`` given ``_king_safety(board)``.

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


def _is_threefold(board: chess.Board) -> bool:
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


def _starting_board(fen: str | None) -> chess.Board:
    """The standard start, or a validated position that still has a game in it."""
    if fen is None:
        return chess.Board()
    try:
        board = chess.Board(fen)
    except ValueError as exc:
        raise ConfigError(f"bad starting FEN: {exc}") from None
    if not board.is_valid():
        raise ConfigError("the starting position is not a legal chess position")
    if not any(board.generate_legal_moves()) or board.is_insufficient_material():
        raise ConfigError("the starting position is already finished")
    return board
