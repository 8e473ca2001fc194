"""The internal bus format: msgpack maps on ZeroMQ frames (docs/protocol.md).

Every message is a frozen dataclass validated when built; ``encode`` turns one
into bytes and ``decode`` turns bytes back into one or raises ``WireError`` (a
peer on the bus is trusted only after this check).  Game events travel as the
exact JSON text clients receive (``json`` fields), encoded once at the broker
and forwarded untouched by every edge.

Topics (first frame of broker -> edge messages):
``game:<id>`` events, heads and presence of one game; ``edge:<id>`` acks and
rejections for one edge; ``ctl`` the broker's heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Final

import msgpack

from xlmate.constants import COLORS
from xlmate.errors import WireError

MAX_FRAME: Final = 1 << 20  # no bus message of ours is anywhere near 1 MiB
CTL_TOPIC: Final = b"ctl"
CMD_TOPIC: Final = b"cmd"


def game_topic(game_id: str) -> bytes:
    """The topic of one game's events on the broker's XPUB socket."""
    return b"game:" + game_id.encode()


def edge_topic(edge_id: str) -> bytes:
    """The topic of one edge's acks and rejections."""
    return b"edge:" + edge_id.encode()


class _Message:
    """Base of every bus message: ``KIND`` names it on the wire."""

    __slots__ = ()
    KIND: ClassVar[str]

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.KIND}
        for name in _FIELDS[self.KIND]:
            out[name] = getattr(self, name)
        return out


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise WireError(what)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 128


def _is_seat(value: Any) -> bool:
    return value in COLORS


def _is_v(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _is_ack_ref(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and _is_id(value[0])
        and _is_seat(value[1])
        and _is_id(value[2])
    )


# --- edge -> broker (PUB -> XSUB, topic "cmd") --------------------------------


@dataclass(frozen=True, slots=True)
class CommandMsg(_Message):
    """A player's game command: ``c`` is ``messages.command_to_wire``'s map."""

    KIND: ClassVar[str] = "cmd"
    g: str  # game id
    e: str  # edge id to answer on
    s: str  # seat color
    i: str  # idempotency key, unique per seat
    c: dict[str, Any]

    def __post_init__(self) -> None:
        _check(_is_id(self.g) and _is_id(self.e) and _is_seat(self.s), "bad cmd header")
        _check(_is_id(self.i) and isinstance(self.c, dict), "bad cmd body")


@dataclass(frozen=True, slots=True)
class PresenceReport(_Message):
    """How many sockets an edge holds for one game, per seat and spectators."""

    KIND: ClassVar[str] = "presence_report"
    g: str
    e: str
    w: int
    b: int
    x: int

    def __post_init__(self) -> None:
        _check(_is_id(self.g) and _is_id(self.e), "bad presence header")
        _check(all(_is_v(n) for n in (self.w, self.b, self.x)), "bad presence counts")


@dataclass(frozen=True, slots=True)
class EdgeBeat(_Message):
    """An edge is alive; its presence reports stay valid while these come."""

    KIND: ClassVar[str] = "edge_beat"
    e: str

    def __post_init__(self) -> None:
        _check(_is_id(self.e), "bad edge id")


# --- broker -> edges (XPUB -> SUB) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventMsg(_Message):
    """A versioned game event, ``j`` being the client JSON text."""

    KIND: ClassVar[str] = "ev"
    g: str
    v: int
    j: bytes
    # The ack this event carries: [edge id, seat, command id] of the command
    # that caused it (on its last event), so the mover's edge needs no
    # separate ``ack`` message; None on every other event.
    a: list[str] | None = None

    def __post_init__(self) -> None:
        _check(_is_id(self.g) and _is_v(self.v) and isinstance(self.j, bytes), "bad event")
        _check(self.a is None or _is_ack_ref(self.a), "bad event ack")


@dataclass(frozen=True, slots=True)
class HeadMsg(_Message):
    """The game's current version, published when an edge subscribes to it."""

    KIND: ClassVar[str] = "head"
    g: str
    v: int

    def __post_init__(self) -> None:
        _check(_is_id(self.g) and _is_v(self.v), "bad head")


@dataclass(frozen=True, slots=True)
class PresenceMsg(_Message):
    """The cluster-wide ``presence`` message of a game (client JSON in ``j``)."""

    KIND: ClassVar[str] = "presence"
    g: str
    j: bytes

    def __post_init__(self) -> None:
        _check(_is_id(self.g) and isinstance(self.j, bytes), "bad presence")


@dataclass(frozen=True, slots=True)
class AckMsg(_Message):
    """A command was committed (journaled) at version ``v``."""

    KIND: ClassVar[str] = "ack"
    g: str
    s: str
    i: str
    v: int

    def __post_init__(self) -> None:
        _check(_is_id(self.g) and _is_seat(self.s) and _is_id(self.i) and _is_v(self.v), "bad ack")


@dataclass(frozen=True, slots=True)
class RejectMsg(_Message):
    """A command was refused with a docs/protocol.md error code."""

    KIND: ClassVar[str] = "rej"
    g: str
    s: str
    i: str
    code: str
    msg: str

    def __post_init__(self) -> None:
        _check(_is_id(self.g) and _is_seat(self.s) and _is_id(self.i), "bad reject header")
        _check(isinstance(self.code, str) and isinstance(self.msg, str), "bad reject body")


@dataclass(frozen=True, slots=True)
class BrokerBeat(_Message):
    """The broker's heartbeat on ``ctl``: ``ep`` changes on every broker start."""

    KIND: ClassVar[str] = "hb"
    ep: str
    t: int

    def __post_init__(self) -> None:
        _check(_is_id(self.ep) and _is_v(self.t), "bad broker beat")


# --- catch-up service (DEALER -> ROUTER and back) --------------------------------


@dataclass(frozen=True, slots=True)
class OpenRequest(_Message):
    """A seat is being used: create the game if new, answer its state."""

    KIND: ClassVar[str] = "open"
    q: int  # request id, echoed
    g: str
    s: str
    p: str | None  # the player's id (token sub)
    tc: list[int] | None  # [initial_ms, increment_ms] from the token's clock claim
    since: int | None = None  # the client's last v: answer with the events after it if possible

    def __post_init__(self) -> None:
        _check(_is_v(self.q) and _is_id(self.g) and _is_seat(self.s), "bad open")
        _check(self.since is None or _is_v(self.since), "bad open since")
        _check(self.p is None or _is_id(self.p), "bad open player")
        _check(
            self.tc is None
            or (isinstance(self.tc, list) and len(self.tc) == 2 and all(_is_v(n) for n in self.tc)),
            "bad open clock",
        )


@dataclass(frozen=True, slots=True)
class FetchRequest(_Message):
    """Events after ``since`` (or the full state when ``since`` is None or too old)."""

    KIND: ClassVar[str] = "fetch"
    q: int
    g: str
    since: int | None

    def __post_init__(self) -> None:
        _check(_is_v(self.q) and _is_id(self.g), "bad fetch")
        _check(self.since is None or _is_v(self.since), "bad fetch since")


@dataclass(frozen=True, slots=True)
class PgnRequest(_Message):
    """The game's PGN text (live or archived)."""

    KIND: ClassVar[str] = "pgn"
    q: int
    g: str

    def __post_init__(self) -> None:
        _check(_is_v(self.q) and _is_id(self.g), "bad pgn request")


@dataclass(frozen=True, slots=True)
class StateReply(_Message):
    """The full state: ``sync`` is the protocol's sync object without ``you``."""

    KIND: ClassVar[str] = "state"
    q: int
    g: str
    v: int
    sync: dict[str, Any]

    def __post_init__(self) -> None:
        _check(_is_v(self.q) and _is_id(self.g) and _is_v(self.v), "bad state header")
        _check(isinstance(self.sync, dict), "bad state")


@dataclass(frozen=True, slots=True)
class EventsReply(_Message):
    """Events after the requested version, in order, up to head ``v``."""

    KIND: ClassVar[str] = "events"
    q: int
    g: str
    v: int
    evs: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(_is_v(self.q) and _is_id(self.g) and _is_v(self.v), "bad events header")
        _check(isinstance(self.evs, list), "bad evs")
        _check(all(isinstance(e, bytes) for e in self.evs), "bad evs")


@dataclass(frozen=True, slots=True)
class MissingReply(_Message):
    """No such game."""

    KIND: ClassVar[str] = "missing"
    q: int
    g: str

    def __post_init__(self) -> None:
        _check(_is_v(self.q) and _is_id(self.g), "bad missing")


@dataclass(frozen=True, slots=True)
class PgnReply(_Message):
    """PGN text of a game."""

    KIND: ClassVar[str] = "pgn_text"
    q: int
    g: str
    text: str

    def __post_init__(self) -> None:
        _check(_is_v(self.q) and _is_id(self.g) and isinstance(self.text, str), "bad pgn text")


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

_KINDS: dict[str, type[Any]] = {
    cls.KIND: cls
    for cls in (
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
    )
}
_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in fields(cls)) for kind, cls in _KINDS.items()
}


def encode(message: _Message) -> bytes:
    """msgpack bytes of one bus message."""
    return msgpack.packb(message.to_map(), use_bin_type=True)  # type: ignore[no-any-return]


def decode(data: bytes) -> BusMessage:
    """The bus message in ``data``; ``WireError`` for anything that is not one."""
    if len(data) > MAX_FRAME:
        raise WireError("frame too large")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise WireError(f"not msgpack: {type(exc).__name__}") from exc
    if not isinstance(raw, dict):
        raise WireError("a bus message must be a map")
    kind = raw.pop("k", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WireError(f"unknown bus message kind {str(kind)[:32]!r}")
    names = _FIELDS[kind]
    if set(raw) - set(names):
        raise WireError(f"unexpected fields in {kind}")
    try:
        message: BusMessage = cls(**raw)
    except TypeError as exc:
        raise WireError(f"missing fields in {kind}") from exc
    return message


def decode_as(data: bytes, expected: type[Any]) -> Any:
    """Decode and insist on one message class."""
    message = decode(data)
    if not isinstance(message, expected):
        raise WireError(f"expected {expected.KIND}, got {type(message).KIND}")
    return message
