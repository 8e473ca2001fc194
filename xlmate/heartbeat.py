"""The edge -> discovery heartbeat format (REQ/REP, one msgpack map a frame).

Encoded by ``xlmate.codec`` like every internal format (docs/protocol.md,
"Internal formats"): ``k`` names the kind, keys a reader does not know are
ignored, a field with a default may be left out.  Field names here are the
full words (a heartbeat is sent once a second, so its size does not matter).

Requests (edge or broker -> discovery), one frame each:

* ``{"k": "heartbeat", "id", "region", "url", "load", "connections",
  "capacity", "draining", "interval_ms", "shards", "unready"}``: the edge is
  alive, and the shards whose active broker it cannot reach now; see
  ``Heartbeat``.
* ``{"k": "broker_heartbeat", "id", "shard", "shards", "role", "epoch", "xsub",
  "xpub", "catchup", "http", "interval_ms", "term", "claim", "in_sync", "peer",
  "repl", "lag", "ready"}``: a broker shard is alive and where edges reach it;
  a broker of a pair also reports its term and asks for (or renews) the
  shard's lease; see ``BrokerHeartbeat``.
* ``{"k": "goodbye", "id"}``: the edge (or broker) is leaving; forget it now.

Reply (discovery -> edge or broker), exactly one per request:
``{"k": "reply", "ok": true, "error": nil}`` or ``{"k": "reply", "ok": false,
"error": "<code>", "message": "<why>"}`` (``bad_frame``, ``registry_full``,
``internal``; to brokers also ``shard_count`` and ``shard_taken``).  A reply to
an edge's heartbeat also carries the cluster's shard map (``shards``, a
``ShardMap``) once discovery knows the shard count: each shard's active
broker and, for a pair, its standby, with their roles and terms; a reply to
a paired broker's heartbeat carries the shard's lease (``lease``, a ``Lease``).

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
from typing import Any, ClassVar, Final

from xlmate.codec import Codec, Message
from xlmate.errors import WireError

MAX_FRAME: Final = 4096  # a heartbeat is ~200 bytes
MAX_REPLY_FRAME: Final = 256 * 1024  # a shard map: ~110 bytes a broker, 2 a shard in pairs
ID_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
REGION_RE: Final = re.compile(r"[a-z0-9-]{1,32}")
MAX_URL: Final = 256
MIN_INTERVAL_MS: Final = 100
MAX_INTERVAL_MS: Final = 60_000

HEARTBEAT: Final = "heartbeat"
GOODBYE: Final = "goodbye"
REPLY: Final = "reply"

BROKER_HEARTBEAT: Final = "broker_heartbeat"
ROLES: Final = ("active", "standby")
ENDPOINT_RE: Final = re.compile(r"tcp://[A-Za-z0-9_.:\[\]-]{1,200}:[0-9]{1,5}")
HTTP_RE: Final = re.compile(r"https?://[A-Za-z0-9_.:\[\]-]{1,200}:[0-9]{1,5}")
MAX_SHARDS: Final = 256  # (xlmate.shards.MAX_SHARDS: kept equal by a unit test)
MAX_TERM: Final = 2**63 - 1  # (as BrokerHeartbeat checks a term)

# Reply error codes.
BAD_FRAME: Final = "bad_frame"
REGISTRY_FULL: Final = "registry_full"
SHARD_COUNT: Final = "shard_count"  # a broker whose N is not the cluster's: it must exit
SHARD_TAKEN: Final = "shard_taken"  # another broker is live for that shard and role


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
    ``shards`` is the shard count N the edge routes by, and ``unready`` lists
    the shards (1..N) whose active broker the edge cannot reach now (not yet
    heard, silent, or in a failover): discovery places no client of those
    shards' games on it, nor any client on an edge whose N is not the
    cluster's (it has not had discovery's map yet).  Edges older than readiness
    leave both out (``shards`` 0): ready for every shard, as before.
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
    shards: int = 0
    unready: tuple[int, ...] = ()

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
        if not _is_int(self.shards) or not 0 <= self.shards <= MAX_SHARDS:
            raise WireError(f"shards must be an integer from 0 to {MAX_SHARDS}")
        unready = self.unready
        if (
            not isinstance(unready, list | tuple)
            or len(unready) > MAX_SHARDS
            or not all(_is_int(k) and 1 <= k <= MAX_SHARDS for k in unready)
        ):
            raise WireError(f"unready must be a list of at most {MAX_SHARDS} shard numbers")
        object.__setattr__(self, "unready", tuple(sorted(set(unready))))


def _check_endpoint(value: object, what: str, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise WireError(f"{what} must look like {pattern.pattern[:8]}HOST:PORT")


def _check_term(term: object) -> None:
    if not (isinstance(term, int) and _is_int(term) and 0 <= term <= MAX_TERM):
        raise WireError("term must be an integer >= 0")


def _check_shard(shard: object, shards: object) -> None:
    if not (isinstance(shards, int) and _is_int(shards) and 1 <= shards <= MAX_SHARDS):
        raise WireError(f"shards must be an integer from 1 to {MAX_SHARDS}")
    if not (isinstance(shard, int) and _is_int(shard) and 1 <= shard <= shards):
        raise WireError("shard must be an integer from 1 to shards")


@dataclass(frozen=True, slots=True)
class BrokerHeartbeat(Message):
    """One broker shard's status: which shard of how many, its epoch and addresses.

    ``epoch`` changes on every start of the broker (it is also on the broker's
    ``ctl`` beat), so discovery tells a restart from a second broker.  ``xsub``,
    ``xpub`` and ``catchup`` are the ZeroMQ endpoints edges connect to,
    ``http`` its ``/healthz`` and ``/metrics`` base (for operators).  ``role``
    is ``active`` or ``standby``.

    The fields after ``interval_ms`` exist for broker pairs (docs/architecture.md,
    "Broker pairs"); their defaults describe a lone broker, so heartbeats from
    brokers older than pairs still parse.  ``term`` is the highest term the
    broker holds; ``claim`` asks discovery for the shard's lease (or renews
    it); ``in_sync`` means, from an active broker, that its standby is in sync
    (it is protected), and from a standby, that it is in sync with the active
    one named by ``peer``; ``repl`` is its replication endpoint; ``lag`` is how
    many batches a standby is behind; ``ready`` is false while it recovers.
    ``boot`` (how many times this broker started on its journal) and ``beat``
    (this heartbeat's number since that start) order a paired broker's
    heartbeats: discovery ignores one older than a heartbeat it already applied
    from the same broker (a request given up on that arrives late).
    """

    KIND: ClassVar[str] = BROKER_HEARTBEAT
    id: str
    shard: int
    shards: int
    epoch: str
    xsub: str
    xpub: str
    catchup: str
    http: str | None = None
    role: str = "active"
    interval_ms: int = 500
    term: int = 0
    claim: bool = False
    in_sync: bool = False
    peer: str | None = None
    repl: str | None = None
    lag: int = 0
    ready: bool = True
    boot: int = 0
    beat: int = 0

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_id(self.epoch)
        for name in ("term", "lag", "boot", "beat"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value < 2**63:
                raise WireError(f"{name} must be an integer >= 0")
        for name in ("claim", "in_sync", "ready"):
            if not isinstance(getattr(self, name), bool):
                raise WireError(f"{name} must be a boolean")
        if self.peer is not None:
            _check_id(self.peer)
        if self.repl is not None:
            _check_endpoint(self.repl, "repl", ENDPOINT_RE)
        _check_shard(self.shard, self.shards)
        for name in ("xsub", "xpub", "catchup"):
            _check_endpoint(getattr(self, name), name, ENDPOINT_RE)
        if self.http is not None:
            _check_endpoint(self.http, "http", HTTP_RE)
        if self.role not in ROLES:
            raise WireError(f"role must be one of {', '.join(ROLES)}")
        if not _is_int(self.interval_ms) or not (
            MIN_INTERVAL_MS <= self.interval_ms <= MAX_INTERVAL_MS
        ):
            raise WireError(
                f"interval_ms must be an integer from {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}"
            )


@dataclass(frozen=True, slots=True)
class ShardAddress:
    """Where edges reach one broker of a shard (an entry of ``ShardMap``).

    ``role`` and ``term`` are the broker's place in its pair, as its last
    heartbeat said; a broker outside a pair is ``active`` in term 0.
    """

    shard: int
    epoch: str
    xsub: str
    xpub: str
    catchup: str
    role: str = "active"
    term: int = 0

    def to_wire(self) -> list[Any]:
        """``[shard, epoch, xsub, xpub, catchup]``, plus ``role, term`` unless they are
        ``active, 0``: a cluster without pairs sends the bytes edges older than pairs read."""
        head = [self.shard, self.epoch, self.xsub, self.xpub, self.catchup]
        if self.role == "active" and self.term == 0:
            return head
        return [*head, self.role, self.term]

    @classmethod
    def from_wire(cls, item: Any) -> ShardAddress:
        """An entry of 5 items (active, term 0) or 7; ``WireError`` for anything else."""
        if not isinstance(item, list) or len(item) not in (5, 7):
            raise WireError("bad shard map entry")
        shard, epoch, xsub, xpub, catchup = item[:5]
        role, term = (item[5], item[6]) if len(item) == 7 else ("active", 0)
        _check_id(epoch)
        for name, value in (("xsub", xsub), ("xpub", xpub), ("catchup", catchup)):
            _check_endpoint(value, name, ENDPOINT_RE)
        if not _is_int(shard):
            raise WireError("bad shard map entry")
        if role not in ROLES:
            raise WireError(f"a shard map entry's role must be one of {', '.join(ROLES)}")
        _check_term(term)
        return cls(shard, epoch, xsub, xpub, catchup, role, term)


@dataclass(frozen=True, slots=True)
class ShardMap:
    """The cluster's shard count and the live brokers of each shard that has one.

    On the wire ``{"n": count, "b": [entry, ...]}``, each entry
    ``[shard, epoch, xsub, xpub, catchup]`` for a broker outside a pair (active,
    term 0) or ``[shard, epoch, xsub, xpub, catchup, role, term]``.  A shard
    appears at most once per role: its active broker and, for a pair, its
    standby.  A shard missing from ``brokers`` has no live broker right now.
    """

    count: int
    brokers: tuple[ShardAddress, ...] = ()

    def __post_init__(self) -> None:
        _check_shard(1, self.count)
        places = [(b.shard, b.role) for b in self.brokers]
        if len(set(places)) != len(places) or not all(1 <= s <= self.count for s, _ in places):
            raise WireError("a shard map lists each shard of 1..count at most once per role")

    def get(self, shard: int, role: str = "active") -> ShardAddress | None:
        """The broker of ``shard`` in ``role``, or None when it has none."""
        for entry in self.brokers:
            if entry.shard == shard and entry.role == role:
                return entry
        return None

    def of(self, shard: int) -> list[ShardAddress]:
        """Every broker the map lists for ``shard`` (none, one, or a pair)."""
        return [entry for entry in self.brokers if entry.shard == shard]

    def to_wire(self) -> dict[str, Any]:
        """``{"n": count, "b": [entry, ...]}`` (class docstring)."""
        return {"n": self.count, "b": [b.to_wire() for b in self.brokers]}

    @classmethod
    def from_wire(cls, raw: Any) -> ShardMap:
        """Rebuild one from its map; ``WireError`` for anything else."""
        if not isinstance(raw, dict) or not isinstance(raw.get("b", []), list):
            raise WireError("bad shard map")
        entries = tuple(ShardAddress.from_wire(item) for item in raw.get("b", []))
        count = raw.get("n")
        if not isinstance(count, int):
            raise WireError("bad shard map count")
        return cls(count, entries)


@dataclass(frozen=True, slots=True)
class Lease:
    """A shard's lease as discovery sees it (in its reply to a paired broker).

    On the wire ``{"holder": id | None, "term": int, "ms": int}``: the broker
    holding the lease (None: nobody), the shard's current term, and how long
    the lease has left in milliseconds (0 once it has expired).
    """

    holder: str | None
    term: int
    ms: int

    def __post_init__(self) -> None:
        if self.holder is not None:
            _check_id(self.holder)
        if not _is_int(self.term) or not 0 <= self.term < 2**63:
            raise WireError("lease term must be an integer >= 0")
        if not _is_int(self.ms) or not 0 <= self.ms < 2**31:
            raise WireError("lease ms must be an integer >= 0")

    def to_wire(self) -> dict[str, Any]:
        """``{"holder", "term", "ms"}``."""
        return {"holder": self.holder, "term": self.term, "ms": self.ms}

    @classmethod
    def from_wire(cls, raw: Any) -> Lease:
        """Rebuild one from its map; ``WireError`` for anything else."""
        if not isinstance(raw, dict):
            raise WireError("bad lease")
        try:
            return cls(raw.get("holder"), raw["term"], raw["ms"])
        except KeyError as exc:
            raise WireError(f"lease without {exc.args[0]}") from exc


@dataclass(frozen=True, slots=True)
class Goodbye(Message):
    """An edge (or a broker) leaving on purpose: discovery forgets it at once."""

    KIND: ClassVar[str] = GOODBYE
    id: str

    def __post_init__(self) -> None:
        _check_id(self.id)


@dataclass(frozen=True, slots=True)
class Reply(Message):
    """Discovery's answer to one request."""

    KIND: ClassVar[str] = REPLY
    NESTED: ClassVar = {"shards": ShardMap, "lease": Lease}
    ok: bool
    error: str | None = None
    message: str | None = None  # a sentence for the log, with a refusal
    shards: ShardMap | None = None  # to edges: the shard map, once the count is known
    lease: Lease | None = None  # to a paired broker: its shard's lease

    def __post_init__(self) -> None:
        if not isinstance(self.ok, bool):
            raise WireError("ok must be a boolean")
        if self.error is not None and (not isinstance(self.error, str) or len(self.error) > 64):
            raise WireError("error must be a short string")
        if self.message is not None and (
            not isinstance(self.message, str) or len(self.message) > 512
        ):
            raise WireError("message must be a string of at most 512 characters")
        if self.shards is not None and not isinstance(self.shards, ShardMap):
            raise WireError("shards must be a shard map")
        if self.lease is not None and not isinstance(self.lease, Lease):
            raise WireError("lease must be a lease")


Request = Heartbeat | BrokerHeartbeat | Goodbye

REQUESTS: Final = Codec(
    (Heartbeat, BrokerHeartbeat, Goodbye), max_frame=MAX_FRAME, legacy_kind_key="type"
)
REPLIES: Final = Codec((Reply,), max_frame=MAX_REPLY_FRAME)


def encode_heartbeat(hb: Heartbeat) -> bytes:
    """A heartbeat request frame."""
    return REQUESTS.encode(hb)


def encode_broker_heartbeat(hb: BrokerHeartbeat) -> bytes:
    """A broker heartbeat request frame."""
    return REQUESTS.encode(hb)


def encode_goodbye(bye: Goodbye) -> bytes:
    """A goodbye request frame."""
    return REQUESTS.encode(bye)


def decode_request(data: bytes) -> Request:
    """A request frame -> ``Heartbeat``, ``BrokerHeartbeat`` or ``Goodbye``; else ``WireError``."""
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
