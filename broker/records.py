"""The broker journal's records: typed, and encoded like every internal format.

Each record is a frozen dataclass encoded by ``xlmate.codec`` (``KEYS`` maps
attributes to the short keys on disk, keys this version does not know are
ignored).  ``broker.journal`` frames them (length, CRC); ``broker.authority``
writes them and replays them.  Unlike the bus, ``t`` names the kind: the
bytes on disk are exactly those brokers wrote before records were typed, so
a journal written by this version replays on an older broker (a rolled-back
deploy) and the other way round.

    create  GameCreated   g game, tc [initial_ms, increment_ms], ms creation time
    seat    SeatTaken     g, s seat, p player id
    cmd     CommandApplied g, s, i idempotency key, c the command's bus map,
                          ms the broker time it was applied at, v the version it produced
    tick    TimePassed    g, ms: a time-only input that produced events (flag fall, abort)
    end     GameEnded     g: the game is over and archived; compaction drops its records
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from xlmate.codec import Codec, Message
from xlmate.constants import COLORS, Color
from xlmate.errors import WireError

MAX_RECORD: Final = 1 << 20


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise WireError(what)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 128


def _is_ms(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


@dataclass(frozen=True, slots=True)
class GameCreated(Message):
    """A game was created (``clock`` [0, 0]: the default time control)."""

    KIND: ClassVar[str] = "create"
    KEYS: ClassVar = {"game_id": "g", "clock": "tc"}
    game_id: str
    clock: list[int]
    ms: int

    def __post_init__(self) -> None:
        clock = self.clock
        _check(_is_id(self.game_id) and _is_ms(self.ms), "bad create record")
        _check(
            isinstance(clock, list) and len(clock) == 2 and all(_is_ms(n) for n in clock),
            "bad create clock",
        )


@dataclass(frozen=True, slots=True)
class SeatTaken(Message):
    """A seat was first used by a player (the token's ``sub``)."""

    KIND: ClassVar[str] = "seat"
    KEYS: ClassVar = {"game_id": "g", "seat": "s", "player_id": "p"}
    game_id: str
    seat: Color
    player_id: str

    def __post_init__(self) -> None:
        _check(_is_id(self.game_id) and self.seat in COLORS, "bad seat record")
        _check(_is_id(self.player_id), "bad seat record")


@dataclass(frozen=True, slots=True)
class CommandApplied(Message):
    """A player's command was applied at ``ms`` and produced version ``v``."""

    KIND: ClassVar[str] = "cmd"
    KEYS: ClassVar = {"game_id": "g", "seat": "s", "command_id": "i", "command": "c"}
    game_id: str
    seat: Color
    command_id: str
    command: dict[str, Any]  # the bus map of ``messages.command_to_wire``
    ms: int
    v: int

    def __post_init__(self) -> None:
        # Written out (no helper calls): the broker journals one per move.
        game_id, command_id, ms, v = self.game_id, self.command_id, self.ms, self.v
        if not (
            type(game_id) is str
            and 0 < len(game_id) <= 128
            and type(command_id) is str
            and 0 < len(command_id) <= 128
            and self.seat in COLORS
            and type(self.command) is dict
            and type(ms) is int
            and 0 <= ms < 2**63
            and type(v) is int
            and 0 <= v < 2**63
        ):
            raise WireError("bad cmd record")


@dataclass(frozen=True, slots=True)
class TimePassed(Message):
    """Time alone produced events at ``ms`` (a flag fell, a game was aborted)."""

    KIND: ClassVar[str] = "tick"
    KEYS: ClassVar = {"game_id": "g"}
    game_id: str
    ms: int

    def __post_init__(self) -> None:
        _check(_is_id(self.game_id) and _is_ms(self.ms), "bad tick record")


@dataclass(frozen=True, slots=True)
class GameEnded(Message):
    """The game is over and archived: compaction drops its records."""

    KIND: ClassVar[str] = "end"
    KEYS: ClassVar = {"game_id": "g"}
    game_id: str

    def __post_init__(self) -> None:
        _check(_is_id(self.game_id), "bad end record")


Record = GameCreated | SeatTaken | CommandApplied | TimePassed | GameEnded

RECORDS: Final = Codec(
    (GameCreated, SeatTaken, CommandApplied, TimePassed, GameEnded),
    max_frame=MAX_RECORD,
    kind_key="t",
)


def encode_record(record: Record) -> bytes:
    """The msgpack body of one record (``broker.journal`` frames it)."""
    return RECORDS.encode(record)


def record_from_map(raw: Any) -> Record:
    """The record in an unpacked map; ``WireError`` if it is none."""
    record: Record = RECORDS.from_map(raw)
    return record
