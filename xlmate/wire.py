"""The internal bus format: msgpack maps on ZeroMQ frames (docs/protocol.md).

Every message is a frozen dataclass validated when built, encoded and decoded
by ``xlmate.codec`` (one rule set for every internal format: ``k`` names the
kind, each class's ``KEYS`` maps its attributes to the one-letter wire keys,
keys a reader does not know are ignored).  ``encode`` turns a message into
bytes and ``decode`` turns bytes back into one or raises ``WireError`` (a peer
on the bus is trusted only after this check).  Game events travel as the exact
JSON text clients receive (``json`` fields), encoded once at the broker and
forwarded untouched by every edge.

Topics (first frame of broker -> edge messages):
``game:<id>`` events, heads and presence of one game; ``edge:<id>`` acks and
rejections for one edge; ``ctl`` the broker's heartbeat.

Two fast paths serve the broker, which handles both messages of every move
(``decode_inbound`` and ``CommandFields`` for the ``cmd`` it reads,
``encode_event`` for the ``ev`` it publishes): the same bytes and the same
checks as ``decode`` and ``encode``, without a frozen dataclass per message
(tests/unit/test_wire_fast_paths.py holds them equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, NamedTuple, TypeVar

import msgpack

from xlmate.codec import KIND_KEY, Codec, Message
from xlmate.constants import COLORS, Color
from xlmate.errors import WireError

MAX_FRAME: Final = 1 << 20  # no bus message of ours is anywhere near 1 MiB
CTL_TOPIC: Final = b"ctl"
CMD_TOPIC: Final = b"cmd"

M = TypeVar("M", bound=Message)


def game_topic(game_id: str) -> bytes:
    """The topic of one game's events on the broker's XPUB socket."""
    return b"game:" + game_id.encode()


def edge_topic(edge_id: str) -> bytes:
    """The topic of one edge's acks and rejections."""
    return b"edge:" + edge_id.encode()


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise WireError(what)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 128


def _is_seat(value: Any) -> bool:
    return value in COLORS


def _is_v(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


class AckRef(NamedTuple):
    """The command an event acknowledges: on the wire ``[edge id, seat, command id]``.

    A named tuple rather than a dataclass: every move's last event carries
    one, and building a tuple costs a third of a frozen dataclass.  It is
    checked where it can come from outside (``from_wire``); the broker builds
    it from a ``CommandMsg`` that was checked already.
    """

    edge_id: str
    seat: Color
    command_id: str

    def to_wire(self) -> list[str]:
        """``[edge id, seat, command id]``."""
        return list(self)

    @classmethod
    def from_wire(cls, raw: Any) -> AckRef:
        """Rebuild one from its list; ``WireError`` for anything else."""
        if type(raw) is not list or len(raw) != 3:
            raise WireError("bad ack reference")
        edge_id, seat, command_id = raw  # (checks written out: one per move)
        if not (
            type(edge_id) is str
            and 0 < len(edge_id) <= 128
            and type(command_id) is str
            and 0 < len(command_id) <= 128
            and seat in COLORS
        ):
            raise WireError("bad ack reference")
        return cls(edge_id, seat, command_id)


# --- edge -> broker (PUB -> XSUB, topic "cmd") --------------------------------


@dataclass(frozen=True, slots=True)
class CommandMsg(Message):
    """A player's game command: ``command`` is ``messages.command_to_wire``'s map."""

    KIND: ClassVar[str] = "cmd"
    KEYS: ClassVar = {
        "game_id": "g",
        "edge_id": "e",
        "seat": "s",
        "command_id": "i",
        "command": "c",
    }
    game_id: str
    edge_id: str  # the edge to answer on
    seat: Color
    command_id: str  # idempotency key, unique per seat
    command: dict[str, Any]

    def __post_init__(self) -> None:
        _check(_is_id(self.game_id) and _is_id(self.edge_id), "bad cmd header")
        _check(_is_seat(self.seat), "bad cmd header")
        _check(_is_id(self.command_id) and isinstance(self.command, dict), "bad cmd body")


@dataclass(frozen=True, slots=True)
class PresenceReport(Message):
    """How many sockets an edge holds for one game, per seat and spectators."""

    KIND: ClassVar[str] = "presence_report"
    KEYS: ClassVar = {
        "game_id": "g",
        "edge_id": "e",
        "white": "w",
        "black": "b",
        "spectators": "x",
    }
    game_id: str
    edge_id: str
    white: int
    black: int
    spectators: int

    def __post_init__(self) -> None:
        _check(_is_id(self.game_id) and _is_id(self.edge_id), "bad presence header")
        counts = (self.white, self.black, self.spectators)
        _check(all(_is_v(n) for n in counts), "bad presence counts")


@dataclass(frozen=True, slots=True)
class EdgeBeat(Message):
    """An edge is alive; its presence reports stay valid while these come."""

    KIND: ClassVar[str] = "edge_beat"
    KEYS: ClassVar = {"edge_id": "e"}
    edge_id: str

    def __post_init__(self) -> None:
        _check(_is_id(self.edge_id), "bad edge id")


# --- broker -> edges (XPUB -> SUB) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventMsg(Message):
    """A versioned game event, ``json`` being the client JSON text.

    ``ack`` names the command that caused it (on its last event), so the
    mover's edge needs no separate ``ack`` message; None on every other event.
    """

    KIND: ClassVar[str] = "ev"
    KEYS: ClassVar = {"game_id": "g", "json": "j", "ack": "a"}
    NESTED: ClassVar = {"ack": AckRef}
    game_id: str
    v: int
    json: bytes
    ack: AckRef | None = None

    def __post_init__(self) -> None:
        _check(_is_id(self.game_id) and _is_v(self.v), "bad event")
        _check(isinstance(self.json, bytes), "bad event")
        _check(self.ack is None or isinstance(self.ack, AckRef), "bad event ack")


@dataclass(frozen=True, slots=True)
class HeadMsg(Message):
    """The game's current version, published when an edge subscribes to it."""

    KIND: ClassVar[str] = "head"
    KEYS: ClassVar = {"game_id": "g"}
    game_id: str
    v: int

    def __post_init__(self) -> None:
        _check(_is_id(self.game_id) and _is_v(self.v), "bad head")


@dataclass(frozen=True, slots=True)
class PresenceMsg(Message):
    """The cluster-wide ``presence`` message of a game (client JSON in ``json``)."""

    KIND: ClassVar[str] = "presence"
    KEYS: ClassVar = {"game_id": "g", "json": "j"}
    game_id: str
    json: bytes

    def __post_init__(self) -> None:
        _check(_is_id(self.game_id) and isinstance(self.json, bytes), "bad presence")


@dataclass(frozen=True, slots=True)
class AckMsg(Message):
    """A command was committed (journaled) at version ``v``."""

    KIND: ClassVar[str] = "ack"
    KEYS: ClassVar = {"game_id": "g", "seat": "s", "command_id": "i"}
    game_id: str
    seat: Color
    command_id: str
    v: int

    def __post_init__(self) -> None:
        _check(_is_id(self.game_id) and _is_seat(self.seat), "bad ack")
        _check(_is_id(self.command_id) and _is_v(self.v), "bad ack")


@dataclass(frozen=True, slots=True)
class RejectMsg(Message):
    """A command was refused with a docs/protocol.md error code."""

    KIND: ClassVar[str] = "rej"
    KEYS: ClassVar = {"game_id": "g", "seat": "s", "command_id": "i", "message": "msg"}
    game_id: str
    seat: Color
    command_id: str
    code: str
    message: str

    def __post_init__(self) -> None:
        _check(_is_id(self.game_id) and _is_seat(self.seat), "bad reject header")
        _check(_is_id(self.command_id), "bad reject header")
        _check(isinstance(self.code, str) and isinstance(self.message, str), "bad reject body")


@dataclass(frozen=True, slots=True)
class BrokerBeat(Message):
    """The broker's heartbeat on ``ctl``: ``epoch`` changes on every broker start.

    ``role`` and ``term`` matter for broker pairs: edges send to the broker that
    is ``active`` in the highest term they have seen.  A lone broker beats
    ``active`` in term 0 (the defaults: beats from older brokers parse alike).
    """

    KIND: ClassVar[str] = "hb"
    KEYS: ClassVar = {"epoch": "ep", "time_ms": "t", "role": "ro", "term": "tm"}
    epoch: str
    time_ms: int
    role: str = "active"
    term: int = 0

    def __post_init__(self) -> None:
        _check(_is_id(self.epoch) and _is_v(self.time_ms), "bad broker beat")
        _check(self.role in ("active", "standby") and _is_v(self.term), "bad broker beat role")


# --- catch-up service (DEALER -> ROUTER and back) --------------------------------


@dataclass(frozen=True, slots=True)
class OpenRequest(Message):
    """A seat is being used: create the game if new, answer its state."""

    KIND: ClassVar[str] = "open"
    KEYS: ClassVar = {
        "request_id": "q",
        "game_id": "g",
        "seat": "s",
        "player_id": "p",
        "clock": "tc",
    }
    request_id: int  # echoed in the reply
    game_id: str
    seat: Color
    player_id: str | None  # the token's sub
    clock: list[int] | None  # [initial_ms, increment_ms] from the token's clock claim
    since: int | None = None  # the client's last v: answer with the events after it if possible

    def __post_init__(self) -> None:
        _check(_is_v(self.request_id) and _is_id(self.game_id), "bad open")
        _check(_is_seat(self.seat), "bad open")
        _check(self.since is None or _is_v(self.since), "bad open since")
        _check(self.player_id is None or _is_id(self.player_id), "bad open player")
        clock = self.clock
        _check(
            clock is None
            or (isinstance(clock, list) and len(clock) == 2 and all(_is_v(n) for n in clock)),
            "bad open clock",
        )


@dataclass(frozen=True, slots=True)
class FetchRequest(Message):
    """Events after ``since`` (or the full state when ``since`` is None or too old)."""

    KIND: ClassVar[str] = "fetch"
    KEYS: ClassVar = {"request_id": "q", "game_id": "g"}
    request_id: int
    game_id: str
    since: int | None

    def __post_init__(self) -> None:
        _check(_is_v(self.request_id) and _is_id(self.game_id), "bad fetch")
        _check(self.since is None or _is_v(self.since), "bad fetch since")


@dataclass(frozen=True, slots=True)
class PgnRequest(Message):
    """The game's PGN text (live or archived)."""

    KIND: ClassVar[str] = "pgn"
    KEYS: ClassVar = {"request_id": "q", "game_id": "g"}
    request_id: int
    game_id: str

    def __post_init__(self) -> None:
        _check(_is_v(self.request_id) and _is_id(self.game_id), "bad pgn request")


@dataclass(frozen=True, slots=True)
class StateReply(Message):
    """The full state: ``sync`` is the protocol's sync object without ``you``."""

    KIND: ClassVar[str] = "state"
    KEYS: ClassVar = {"request_id": "q", "game_id": "g"}
    request_id: int
    game_id: str
    v: int
    sync: dict[str, Any]

    def __post_init__(self) -> None:
        _check(_is_v(self.request_id) and _is_id(self.game_id), "bad state header")
        _check(_is_v(self.v) and isinstance(self.sync, dict), "bad state")


@dataclass(frozen=True, slots=True)
class EventsReply(Message):
    """Events (client JSON texts) after the requested version, in order, up to head ``v``."""

    KIND: ClassVar[str] = "events"
    KEYS: ClassVar = {"request_id": "q", "game_id": "g", "events": "evs"}
    request_id: int
    game_id: str
    v: int
    events: list[bytes]

    def __post_init__(self) -> None:
        _check(_is_v(self.request_id) and _is_id(self.game_id), "bad events header")
        _check(_is_v(self.v) and isinstance(self.events, list), "bad events header")
        _check(all(isinstance(e, bytes) for e in self.events), "bad evs")


@dataclass(frozen=True, slots=True)
class MissingReply(Message):
    """No such game."""

    KIND: ClassVar[str] = "missing"
    KEYS: ClassVar = {"request_id": "q", "game_id": "g"}
    request_id: int
    game_id: str

    def __post_init__(self) -> None:
        _check(_is_v(self.request_id) and _is_id(self.game_id), "bad missing")


@dataclass(frozen=True, slots=True)
class PgnReply(Message):
    """PGN text of a game."""

    KIND: ClassVar[str] = "pgn_text"
    KEYS: ClassVar = {"request_id": "q", "game_id": "g"}
    request_id: int
    game_id: str
    text: str

    def __post_init__(self) -> None:
        _check(_is_v(self.request_id) and _is_id(self.game_id), "bad pgn text")
        _check(isinstance(self.text, str), "bad pgn text")


BusMessage = (
    CommandMsg
    | PresenceReport
    | EdgeBeat
    | EventMsg
    | HeadMsg
    | PresenceMsg
    | AckMsg
    | RejectMsg
    | BrokerBeat
    | OpenRequest
    | FetchRequest
    | PgnRequest
    | StateReply
    | EventsReply
    | MissingReply
    | PgnReply
)

BUS: Final = Codec(
    (
        CommandMsg,
        PresenceReport,
        EdgeBeat,
        EventMsg,
        HeadMsg,
        PresenceMsg,
        AckMsg,
        RejectMsg,
        BrokerBeat,
        OpenRequest,
        FetchRequest,
        PgnRequest,
        StateReply,
        EventsReply,
        MissingReply,
        PgnReply,
    ),
    max_frame=MAX_FRAME,
)


def encode(message: BusMessage) -> bytes:
    """msgpack bytes of one bus message."""
    return BUS.encode(message)


def decode(data: bytes) -> BusMessage:
    """The bus message in ``data``; ``WireError`` for anything that is not one."""
    message: BusMessage = BUS.decode(data)
    return message


def decode_as(data: bytes, expected: type[M]) -> M:
    """Decode and insist on one message class."""
    return BUS.decode_as(data, expected)


# --- the broker's fast paths (one of each per move) --------------------------------


class CommandFields(NamedTuple):
    """A ``cmd`` as ``decode_inbound`` returns it: ``CommandMsg``'s fields, checked alike.

    The same attribute names as ``CommandMsg``, so code that reads a command
    takes either.  A tuple because the broker decodes one per move and a
    frozen dataclass costs several times more to build (one
    ``object.__setattr__`` per field, then ``__post_init__``).
    """

    game_id: str
    edge_id: str
    seat: Color
    command_id: str
    command: dict[str, Any]


def decode_inbound(data: bytes) -> BusMessage | CommandFields:
    """``decode``, except that a ``cmd`` comes back as ``CommandFields``.

    Every frame ``decode`` refuses, this refuses (``WireError``), and every
    other frame gives what ``decode`` gives; a ``cmd`` gives the fields of
    the ``CommandMsg`` that ``decode`` would build, after the same checks.
    """
    raw = BUS.unpack(data)
    if type(raw) is dict and raw.get(KIND_KEY) == "cmd":
        return _command_fields(raw)
    message: BusMessage = BUS.from_map(raw)
    return message


def _command_fields(raw: dict[str, Any]) -> CommandFields:
    """The fields of a ``cmd`` map: ``CommandMsg.__post_init__``'s checks, written inline."""
    try:
        game_id, edge_id, seat = raw["g"], raw["e"], raw["s"]
        command_id, command = raw["i"], raw["c"]
    except KeyError as exc:
        raise WireError(f"cmd without {exc.args[0]}") from None
    if not (
        isinstance(game_id, str)
        and 0 < len(game_id) <= 128
        and isinstance(edge_id, str)
        and 0 < len(edge_id) <= 128
        and seat in COLORS
        and isinstance(command_id, str)
        and 0 < len(command_id) <= 128
        and isinstance(command, dict)
    ):
        raise WireError("bad cmd")
    return CommandFields(game_id, edge_id, seat, command_id, command)


def encode_event(game_id: str, v: int, json: bytes, ack: AckRef | None) -> bytes:
    """``encode(EventMsg(game_id=..., v=..., json=..., ack=...))``, without the message.

    For the broker, whose values are checked already: the id of a game it
    holds, the ``v`` it assigned, JSON it wrote, the ack reference of a
    checked command.  The map is ``EventMsg``'s, key for key in the codec's
    order, so the bytes are the same.
    """
    data: bytes = msgpack.packb(
        {"k": "ev", "g": game_id, "v": v, "j": json, "a": None if ack is None else list(ack)},
        use_bin_type=True,
    )
    return data
