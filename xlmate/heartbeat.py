"""The edge -> discovery heartbeat format (REQ/REP, one msgpack map a frame).

Encoded by ``xlmate.codec`` like every internal format (docs/protocol.md,
"Internal formats"): ``k`` names the kind, keys a reader does not know are
ignored, a field with a default may be left out.  Field names here are the
full words (a heartbeat is sent once a second, so its size does not matter).

Requests (edge -> discovery), one frame each:

* ``{"k": "heartbeat", "id", "region", "url", "load", "connections",
  "capacity", "draining", "interval_ms"}``: the edge is alive; see ``Heartbeat``.
* ``{"k": "goodbye", "id"}``: the edge is leaving; forget it now.

Reply (discovery -> edge), exactly one per request:
``{"k": "reply", "ok": true, "error": nil}`` or ``{"k": "reply", "ok": false,
"error": "<code>"}`` (``bad_frame``, ``registry_full``, ``internal``).

Compatibility with edges and discovery from before this format had ``k``:
requests that name their kind under ``type`` and replies without a kind are
still read, so discovery can be upgraded before the edges.

A bad field raises ``WireError`` when a message is built, and so does any
frame that does not decode to one of them (not msgpack, not a map, unknown
kind, a missing required field, bigger than ``MAX_FRAME``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar, Final

from xlmate.codec import Codec, Message
from xlmate.errors import WireError

MAX_FRAME: Final = 4096  # a heartbeat is ~200 bytes
ID_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
REGION_RE: Final = re.compile(r"[a-z0-9-]{1,32}")
MAX_URL: Final = 256
MIN_INTERVAL_MS: Final = 100
MAX_INTERVAL_MS: Final = 60_000

HEARTBEAT: Final = "heartbeat"
GOODBYE: Final = "goodbye"
REPLY: Final = "reply"

# Reply error codes.
BAD_FRAME: Final = "bad_frame"
REGISTRY_FULL: Final = "registry_full"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(value: object) -> None:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise WireError("id must be 1-64 characters of [A-Za-z0-9_.:-]")


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """One edge's status: who it is, where clients connect, and how busy it is.

    ``load`` is 0..1 as the edge reports it (shown to clients); an edge has room
    while ``connections < capacity`` and ``load < 1``.  ``interval_ms`` is how
    often this edge heartbeats: discovery evicts it after 3 of them in silence.
    """

    KIND: ClassVar[str] = HEARTBEAT
    id: str
    region: str
    url: str
    load: float = 0.0
    connections: int = 0
    capacity: int = 1
    draining: bool = False
    interval_ms: int = 1000

    def __post_init__(self) -> None:
        _check_id(self.id)
        if not isinstance(self.region, str) or not REGION_RE.fullmatch(self.region):
            raise WireError("region must be 1-32 characters of [a-z0-9-]")
        if (
            not isinstance(self.url, str)
            or not self.url.startswith(("ws://", "wss://"))
            or len(self.url) > MAX_URL
        ):
            raise WireError(f"url must start with ws:// or wss:// and be at most {MAX_URL} chars")
        load = self.load
        if isinstance(load, bool) or not isinstance(load, int | float) or not math.isfinite(load):
            raise WireError("load must be a number from 0 to 1")
        if not 0.0 <= load <= 1.0:
            raise WireError("load must be a number from 0 to 1")
        object.__setattr__(self, "load", float(load))
        if not _is_int(self.connections) or self.connections < 0:
            raise WireError("connections must be an integer >= 0")
        if not _is_int(self.capacity) or self.capacity < 1:
            raise WireError("capacity must be an integer >= 1")
        if not isinstance(self.draining, bool):
            raise WireError("draining must be a boolean")
        if not _is_int(self.interval_ms) or not (
            MIN_INTERVAL_MS <= self.interval_ms <= MAX_INTERVAL_MS
        ):
            raise WireError(
                f"interval_ms must be an integer from {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}"
            )


@dataclass(frozen=True, slots=True)
class Goodbye(Message):
    """An edge leaving on purpose: discovery forgets it at once."""

    KIND: ClassVar[str] = GOODBYE
    id: str

    def __post_init__(self) -> None:
        _check_id(self.id)


@dataclass(frozen=True, slots=True)
class Reply(Message):
    """Discovery's answer to one request."""

    KIND: ClassVar[str] = REPLY
    ok: bool
    error: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ok, bool):
            raise WireError("ok must be a boolean")
        if self.error is not None and (not isinstance(self.error, str) or len(self.error) > 64):
            raise WireError("error must be a short string")


Request = Heartbeat | Goodbye

REQUESTS: Final = Codec((Heartbeat, Goodbye), max_frame=MAX_FRAME, legacy_kind_key="type")
REPLIES: Final = Codec((Reply,), max_frame=MAX_FRAME)


def encode_heartbeat(hb: Heartbeat) -> bytes:
    """A heartbeat request frame."""
    return REQUESTS.encode(hb)


def encode_goodbye(bye: Goodbye) -> bytes:
    """A goodbye request frame."""
    return REQUESTS.encode(bye)


def decode_request(data: bytes) -> Request:
    """A request frame -> ``Heartbeat`` or ``Goodbye``; anything else raises ``WireError``."""
    request: Request = REQUESTS.decode(data)
    return request


def decode_heartbeat(data: bytes) -> Heartbeat:
    """A heartbeat frame -> ``Heartbeat``; anything else (a goodbye too) raises ``WireError``."""
    return REQUESTS.decode_as(data, Heartbeat)


def encode_reply(reply: Reply) -> bytes:
    """A reply frame."""
    return REPLIES.encode(reply)


def decode_reply(data: bytes) -> Reply:
    """A reply frame -> ``Reply``; anything else raises ``WireError``."""
    reply: Reply = REPLIES.decode(data, default_kind=REPLY)
    return reply


OK_REPLY: Final = encode_reply(Reply(True))
