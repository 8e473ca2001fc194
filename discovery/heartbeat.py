"""The edge -> discovery heartbeat wire format (REQ/REP, one msgpack map a frame).

Requests (edge -> discovery), one frame each:

* ``{"type": "heartbeat", "id", "region", "url", "load", "connections",
  "capacity", "draining", "interval_ms"}``: the edge is alive; see ``Heartbeat``.
* ``{"type": "goodbye", "id"}``: the edge is leaving; forget it now.

Reply (discovery -> edge), exactly one per request: ``{"ok": true}`` or
``{"ok": false, "error": "<code>"}`` (``bad_frame``, ``registry_full``).

Messages are frozen dataclasses validated when built: a bad field raises
``WireError``, and so does any frame that does not decode to one of them (not
msgpack, not a map, wrong or missing fields, bigger than ``MAX_FRAME``).  Keys
this version does not know are ignored, so fields can be added later.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from xlmate.errors import WireError

MAX_FRAME: Final = 4096  # a heartbeat is ~200 bytes
ID_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
REGION_RE: Final = re.compile(r"[a-z0-9-]{1,32}")
MAX_URL: Final = 256
MIN_INTERVAL_MS: Final = 100
MAX_INTERVAL_MS: Final = 60_000

HEARTBEAT: Final = "heartbeat"
GOODBYE: Final = "goodbye"

# Reply error codes.
BAD_FRAME: Final = "bad_frame"
REGISTRY_FULL: Final = "registry_full"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(value: object) -> None:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise WireError("id must be 1-64 characters of [A-Za-z0-9_.:-]")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One edge's status: who it is, where clients connect, and how busy it is.

    ``load`` is 0..1 as the edge reports it (shown to clients); an edge has room
    while ``connections < capacity`` and ``load < 1``.  ``interval_ms`` is how
    often this edge heartbeats: discovery evicts it after 3 of them in silence.
    """

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
class Goodbye:
    """An edge leaving on purpose: discovery forgets it at once."""

    id: str

    def __post_init__(self) -> None:
        _check_id(self.id)


@dataclass(frozen=True, slots=True)
class Reply:
    """Discovery's answer to one request."""

    ok: bool
    error: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ok, bool):
            raise WireError("ok must be a boolean")
        if self.error is not None and (not isinstance(self.error, str) or len(self.error) > 64):
            raise WireError("error must be a short string")


Request = Heartbeat | Goodbye

_HEARTBEAT_FIELDS: Final = (
    "id",
    "region",
    "url",
    "load",
    "connections",
    "capacity",
    "draining",
    "interval_ms",
)


def _pack(obj: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _unpack_map(data: bytes) -> dict[str, Any]:
    """Bytes -> a msgpack map with string keys, or ``WireError``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("a frame must be bytes")
    if len(data) > MAX_FRAME:
        raise WireError(f"frame of {len(data)} bytes is over {MAX_FRAME}")
    try:
        obj = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types: convert them all here
        raise WireError(f"not msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise WireError("a frame must be a msgpack map")
    return obj


def encode_heartbeat(hb: Heartbeat) -> bytes:
    """A heartbeat request frame."""
    out: dict[str, Any] = {"type": HEARTBEAT}
    for name in _HEARTBEAT_FIELDS:
        out[name] = getattr(hb, name)
    return _pack(out)


def encode_goodbye(bye: Goodbye) -> bytes:
    """A goodbye request frame."""
    return _pack({"type": GOODBYE, "id": bye.id})


def decode_request(data: bytes) -> Request:
    """A request frame -> ``Heartbeat`` or ``Goodbye``; anything else raises ``WireError``."""
    obj = _unpack_map(data)
    kind = obj.get("type")
    if kind == HEARTBEAT:
        missing = [name for name in _HEARTBEAT_FIELDS if name not in obj]
        if missing:
            raise WireError(f"heartbeat without {', '.join(missing)}")
        return Heartbeat(**{name: obj[name] for name in _HEARTBEAT_FIELDS})
    if kind == GOODBYE:
        if "id" not in obj:
            raise WireError("goodbye without id")
        return Goodbye(obj["id"])
    raise WireError(f"unknown request type {kind!r:.40}")


def decode_heartbeat(data: bytes) -> Heartbeat:
    """A heartbeat frame -> ``Heartbeat``; anything else (a goodbye too) raises ``WireError``."""
    request = decode_request(data)
    if not isinstance(request, Heartbeat):
        raise WireError("not a heartbeat")
    return request


def encode_reply(reply: Reply) -> bytes:
    """A reply frame."""
    if reply.ok:
        return _pack({"ok": True})
    return _pack({"ok": False, "error": reply.error or "error"})


def decode_reply(data: bytes) -> Reply:
    """A reply frame -> ``Reply``; anything else raises ``WireError``."""
    obj = _unpack_map(data)
    if "ok" not in obj:
        raise WireError("reply without ok")
    return Reply(obj["ok"], obj.get("error"))


OK_REPLY: Final = encode_reply(Reply(True))
