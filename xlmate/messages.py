"""Client commands: the WebSocket JSON of docs/protocol.md section 4, parsed and validated.

``parse_client_message`` is the one boundary: any text either becomes one of
the frozen dataclasses below or raises ``ProtocolError`` with the protocol's
error code (``bad_json``, ``bad_message``, ``unknown_type``).  The game
commands (``Move``, ``Resign``, ``Draw``, ``Takeback``) are what the edge puts
on the bus and what the broker's game state machine applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from xlmate.constants import BAD_JSON, BAD_MESSAGE, UNKNOWN_TYPE
from xlmate.errors import ProtocolError

CommandId = str | int
OfferAction = Literal["offer", "accept", "decline"]

UCI_RE: Final = re.compile(r"^[a-h][1-8][a-h][1-8][qrbn]?\Z")  # \Z: "$" allows a final "\n"
SQUARE_RE: Final = re.compile(r"^[a-h][1-8]\Z")
MAX_ID_LEN: Final = 64
OFFER_ACTIONS: Final = ("offer", "accept", "decline")


@dataclass(frozen=True, slots=True)
class Move:
    """A move in UCI (``e7e8q``); legality is the broker's to judge."""

    uci: str

    def __post_init__(self) -> None:
        if not isinstance(self.uci, str) or not UCI_RE.match(self.uci):
            raise ProtocolError(BAD_MESSAGE, "a move needs a UCI string like e2e4 or e7e8q")


@dataclass(frozen=True, slots=True)
class Resign:
    """The sender resigns."""


@dataclass(frozen=True, slots=True)
class Draw:
    """A draw offer, or the answer to one."""

    action: OfferAction

    def __post_init__(self) -> None:
        if self.action not in OFFER_ACTIONS:
            raise ProtocolError(BAD_MESSAGE, "action must be offer, accept or decline")


@dataclass(frozen=True, slots=True)
class Takeback:
    """A takeback offer, or the answer to one."""

    action: OfferAction

    def __post_init__(self) -> None:
        if self.action not in OFFER_ACTIONS:
            raise ProtocolError(BAD_MESSAGE, "action must be offer, accept or decline")


GameCommand = Move | Resign | Draw | Takeback


@dataclass(frozen=True, slots=True)
class Command:
    """A game command as a client sent it, with its optional ``id``."""

    body: GameCommand
    id: CommandId | None = None


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """``{"type":"sync"}``: send me the full state."""


@dataclass(frozen=True, slots=True)
class Ping:
    """``{"type":"ping"}``: answered with ``pong``."""


ClientMessage = Command | SyncRequest | Ping


def _command_id(raw: dict[str, Any]) -> CommandId | None:
    value = raw.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ProtocolError(BAD_MESSAGE, "id must be a string or an integer")
    if isinstance(value, str) and not 0 < len(value) <= MAX_ID_LEN:
        raise ProtocolError(BAD_MESSAGE, f"id must be 1-{MAX_ID_LEN} characters")
    if isinstance(value, int) and not -(2**53) < value < 2**53:
        raise ProtocolError(BAD_MESSAGE, "id is out of range")
    return value


def _move(raw: dict[str, Any]) -> Move:
    if "uci" in raw:
        return Move(raw["uci"])
    src, dst, promotion = raw.get("from"), raw.get("to"), raw.get("promotion")
    if not (isinstance(src, str) and SQUARE_RE.match(src)):
        raise ProtocolError(BAD_MESSAGE, "from must be a square like e2")
    if not (isinstance(dst, str) and SQUARE_RE.match(dst)):
        raise ProtocolError(BAD_MESSAGE, "to must be a square like e4")
    if promotion is not None and promotion not in ("q", "r", "b", "n"):
        raise ProtocolError(BAD_MESSAGE, "promotion must be one of q, r, b, n")
    return Move(src + dst + (promotion or ""))


def _offer_action(raw: dict[str, Any]) -> OfferAction:
    action = raw.get("action")
    if action not in OFFER_ACTIONS:
        raise ProtocolError(BAD_MESSAGE, "action must be offer, accept or decline")
    return action  # type: ignore[no-any-return]


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse one client frame; raise ``ProtocolError`` with the protocol's code."""
    try:
        raw = orjson.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(BAD_JSON, "the frame is not valid JSON") from exc
    if not isinstance(raw, dict):
        raise ProtocolError(BAD_MESSAGE, "a message must be a JSON object")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(BAD_MESSAGE, "a message needs a string type")
    if kind == "ping":
        return Ping()
    if kind == "sync":
        return SyncRequest()
    command_id = _command_id(raw)
    body: GameCommand
    if kind == "move":
        body = _move(raw)
    elif kind == "resign":
        body = Resign()
    elif kind == "draw":
        body = Draw(_offer_action(raw))
    elif kind == "takeback":
        body = Takeback(_offer_action(raw))
    else:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind[:32]!r}")
    return Command(body, command_id)


def command_to_wire(body: GameCommand) -> dict[str, str]:
    """The compact bus form of a game command (see docs/protocol.md)."""
    if isinstance(body, Move):
        return {"t": "move", "u": body.uci}
    if isinstance(body, Resign):
        return {"t": "resign"}
    if isinstance(body, Draw):
        return {"t": "draw", "a": body.action}
    return {"t": "takeback", "a": body.action}


# ``Move`` by UCI text, for ``command_from_wire``: a ``Move`` is immutable, so one
# instance serves every command naming that move.  Only valid UCI goes in
# (``Move`` checks it first), so it holds at most 64 x 64 x 5 entries.
_MOVES: dict[str, Move] = {}


def command_from_wire(raw: Any) -> GameCommand:
    """Rebuild a game command from its bus form; raise ``ProtocolError`` if malformed.

    A move's ``Move`` comes from a cache of the UCI texts seen before: the
    broker rebuilds one per move, and checking the text with the regular
    expression and building the frozen dataclass cost more than the lookup.
    """
    if not isinstance(raw, dict):
        raise ProtocolError(BAD_MESSAGE, "a command must be a map")
    kind = raw.get("t")
    if kind == "move":
        uci = raw.get("u")
        move = _MOVES.get(uci) if type(uci) is str else None
        if move is None:
            move = Move(uci)  # type: ignore[arg-type]  # (checks it: ProtocolError)
            _MOVES[move.uci] = move
        return move
    if kind == "resign":
        return Resign()
    if kind == "draw":
        return Draw(raw.get("a"))  # type: ignore[arg-type]
    if kind == "takeback":
        return Takeback(raw.get("a"))  # type: ignore[arg-type]
    raise ProtocolError(UNKNOWN_TYPE, "unknown command kind")
