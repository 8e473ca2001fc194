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

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

import chess

from xlmate.broker.fastchess import (
    Safety,
    board_ranks,
    fen_from_ranks,
    has_legal_move,
    is_legal,
    is_threefold,
    king_safety,
    parse_uci,
    rank_fen,
    remember_legal,
    san_without_suffix,
)
from xlmate.broker.offers import OfferKind, Offers, Outcome
from xlmate.broker.offers import answer as offer_answer
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
from xlmate.messages import Draw, GameCommand, Move, OfferAction, Resign, Takeback

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


class Applied(NamedTuple):
    """What one accepted command produced.

    ``events`` are protocol messages, each with ``type``, ``gameId`` and the
    next ``v``.  ``v`` is the version to ack the command with: the ``v`` of its
    last event, or the current version when it produced none (a no-op or a
    duplicate).  ``duplicate`` is true when the command key was seen before.
    (A named tuple: one per command, and a third of a frozen dataclass's cost.)
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
        "_first_mover",
        "_increment_ms",
        "_keys",
        "_left",
        "_offers",
        "_players",
        "_ranks",
        "_reason",
        "_result",
        "_safety",
        "_san",
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
        self._ranks = board_ranks(self._board)
        # King safety of the side to move (see king_safety), None until needed.
        self._safety: Safety | None = None
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
        self._offers = Offers()
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
        return self._offers.as_dict()

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
            "fen": fen_from_ranks(self._board, self._ranks),
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
            "offers": self._offers.as_dict(),
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

        - one king-safety computation per position (``king_safety``) serves
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
        try:
            move = parse_uci(uci)
        except ValueError:
            raise CommandRejected(ILLEGAL_MOVE, f"{uci} is not a legal move") from None
        safety = self._safety
        if safety is None:
            safety = self._safety = king_safety(board)
        castling = board.is_castling(move)
        if not is_legal(board, move, safety) or (
            # python-chess also takes king-takes-rook (e1h1) as castling; the
            # contract is standard UCI only (e1g1, e1c1).
            castling and abs((move.from_square & 7) - (move.to_square & 7)) != 2
        ):
            raise CommandRejected(ILLEGAL_MOVE, f"{uci} is not a legal move")
        remember_legal(uci, move)

        if self._clocks_running:
            elapsed = now_ms - self._turn_started_ms
            left = self._left[color] + self._increment_ms
            if elapsed > 0:
                left -= elapsed
            self._left[color] = left
        san = san_without_suffix(board, move, castling)
        board.push(move)
        safety = self._safety = king_safety(board)
        in_check = bool(safety[2])
        stuck = not has_legal_move(board, safety)
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
        offers = self._offers
        if offers.draw is not None or offers.takeback is not None:
            offers.after_move(color)  # offers lapse (broker.offers)

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
                "fen": fen_from_ranks(board, self._ranks),
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
        ranks[7 - from_rank] = rank_fen(board, from_rank)
        if to_rank != from_rank:
            ranks[7 - to_rank] = rank_fen(board, to_rank)

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
        if board.halfmove_clock >= 8 and is_threefold(board):
            return DRAWN, "threefold_repetition"
        if board.halfmove_clock >= 100:
            return DRAWN, "fifty_moves"
        return None

    # ----------------------------------------------------------------- offers

    def _offer(self, kind: OfferKind, color: Color, action: OfferAction) -> Outcome:
        """Run an offer command through the shared state machine (``broker.offers``).

        Refuses an answer to no offer; the caller acts on ``ACCEPTED``.
        """
        outcome, standing = offer_answer(self._offers.standing(kind), color, action)
        if outcome is Outcome.NO_OFFER:
            raise CommandRejected(NO_OFFER, f"your opponent has not offered a {kind}")
        if outcome is Outcome.OFFERED and kind == "takeback" and not self._has_move(color):
            raise CommandRejected(ILLEGAL_MOVE, "you have no move to take back")
        self._offers.set(kind, standing)
        return outcome

    def _draw(self, color: Color, action: OfferAction, now_ms: int) -> list[Event]:
        """Draw offer / accept / decline; accepting ends the game drawn."""
        outcome = self._offer("draw", color, action)
        if outcome is Outcome.REPEATED:
            return []
        if outcome is not Outcome.ACCEPTED:
            return [self._offer_event("draw", outcome.value, color)]
        self._stop_clock(now_ms)
        self._finish(DRAWN, "draw_agreed")
        return [self._offer_event("draw", "accept", color), self._game_over_event()]

    def _has_move(self, color: Color) -> bool:
        """Whether ``color`` has a move on the board that a takeback could undo."""
        count = len(self._uci)
        return count >= 2 or (count == 1 and self._first_mover == color)

    def _takeback(self, color: Color, action: OfferAction, now_ms: int) -> list[Event]:
        """Takeback offer / accept / decline; accepting undoes the offerer's last move."""
        outcome = self._offer("takeback", color, action)
        if outcome is Outcome.REPEATED:
            return []
        if outcome is not Outcome.ACCEPTED:
            return [self._offer_event("takeback", outcome.value, color)]

        # Accept: undo the offerer's last move, and the accepter's reply if any.
        # Time already spent stays spent: the side to move is charged up to now.
        self._stop_clock(now_ms)
        plies = 1 if self.turn == color else 2
        board = self._board
        for _ in range(plies):
            board.pop()
            self._uci.pop()
            self._san.pop()
        self._ranks = board_ranks(board)
        self._safety = None
        self._turn_started_ms = now_ms
        self._offers.clear()
        self.v += 1
        return [
            {
                "type": "takeback",
                "gameId": self.game_id,
                "v": self.v,
                "action": "accept",
                "by": color,
                "fen": fen_from_ranks(board, self._ranks),
                "moves": list(self._uci),
                "clock": self.clock(now_ms),
            }
        ]

    # ----------------------------------------------------------------- helpers

    def _offer_event(self, kind: OfferKind, action: str, by: Color) -> Event:
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
        self._offers.clear()

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


# --------------------------------------------------------------------------- helpers


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
