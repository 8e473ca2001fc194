"""The replication frames between the two brokers of a pair (docs/protocol.md, "Internal formats").

Each broker binds a ROUTER on ``--repl-port`` and connects a DEALER to its
peer's (``--peer``).  What a broker starts (a hello, an ack, its beat) goes out
on its DEALER; what it answers (snapshot, batches, its beats to its standby, a
refusal) goes back through its ROUTER to the identity that asked.  In practice
the standby's DEALER talks to the active broker's ROUTER: the standby says
hello, the active answers with a snapshot and then streams every journal
batch, and the standby acks each batch once it is written (and fsynced under
``--fsync always``).  Each frame is one msgpack map, encoded by
``xlmate.codec`` like every internal format (``k`` names the kind, unknown keys
are ignored):

    hello  Hello     i id, tm term, ro role, sh "K/N": a standby asks for a snapshot
    beat   PeerBeat  i, tm, ro, sy in sync (standby) / protected (active), sq last seq
    snap   Snapshot  i, tm, sq the stream seq it covers, n part, z last part?, d bytes
    batch  BatchFrame i, tm, sq, d: the packed journal records of one batch
    ack    AckFrame  i, tm, sq: written (and fsynced) up to and including seq sq
    refuse Refusal   i, tm, why: a peer from another shard, or a stale term

``d`` holds journal records exactly as the journal frames them (length, CRC,
msgpack body: ``broker.journal``), so the standby checks every record's CRC
and appends the bytes to its own journal unchanged.  A snapshot is the active
broker's journal file in parts (the records of every game it still holds,
compacted as compaction leaves them); the batches after it continue at
``sq + 1``.  A gap in ``sq`` or in the parts means frames were dropped: the
standby says hello again and gets a fresh snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from xlmate.codec import Codec, Message
from xlmate.errors import WireError

CHUNK: Final = 256 * 1024  # snapshot bytes per frame
MAX_REPL_FRAME: Final = CHUNK + 64 * 1024  # a batch of up to 512 moves fits easily
ROLES: Final = ("active", "standby")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _check_common(frame: object, broker_id: object, term: object) -> None:
    if not (isinstance(broker_id, str) and 0 < len(broker_id) <= 64 and _is_int(term)):
        raise WireError(f"bad {type(frame).__name__} header")


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """A standby asks the active broker for a snapshot and the stream after it."""

    KIND: ClassVar[str] = "hello"
    KEYS: ClassVar = {"id": "i", "term": "tm", "role": "ro", "shard": "sh"}
    id: str
    term: int
    role: str
    shard: str

    def __post_init__(self) -> None:
        _check_common(self, self.id, self.term)
        if self.role not in ROLES or not isinstance(self.shard, str) or len(self.shard) > 16:
            raise WireError("bad hello")


@dataclass(frozen=True, slots=True)
class PeerBeat(Message):
    """A broker's beat to its peer: who it is, its role and term, how far it is."""

    KIND: ClassVar[str] = "beat"
    KEYS: ClassVar = {"id": "i", "term": "tm", "role": "ro", "synced": "sy", "seq": "sq"}
    id: str
    term: int
    role: str
    synced: bool
    seq: int

    def __post_init__(self) -> None:
        _check_common(self, self.id, self.term)
        if self.role not in ROLES or not isinstance(self.synced, bool) or not _is_int(self.seq):
            raise WireError("bad beat")


@dataclass(frozen=True, slots=True)
class Snapshot(Message):
    """Part ``part`` of the active broker's journal; the stream continues at ``seq + 1``."""

    KIND: ClassVar[str] = "snap"
    KEYS: ClassVar = {
        "id": "i",
        "term": "tm",
        "seq": "sq",
        "part": "n",
        "last": "z",
        "data": "d",
    }
    id: str
    term: int
    seq: int
    part: int
    last: bool
    data: bytes

    def __post_init__(self) -> None:
        _check_common(self, self.id, self.term)
        if not (_is_int(self.seq) and _is_int(self.part) and isinstance(self.last, bool)):
            raise WireError("bad snapshot")
        if not isinstance(self.data, bytes):
            raise WireError("bad snapshot data")


@dataclass(frozen=True, slots=True)
class BatchFrame(Message):
    """One journal batch of the active broker, number ``seq`` of its stream."""

    KIND: ClassVar[str] = "batch"
    KEYS: ClassVar = {"id": "i", "term": "tm", "seq": "sq", "data": "d"}
    id: str
    term: int
    seq: int
    data: bytes

    def __post_init__(self) -> None:
        _check_common(self, self.id, self.term)
        if not _is_int(self.seq) or not isinstance(self.data, bytes):
            raise WireError("bad batch")


@dataclass(frozen=True, slots=True)
class AckFrame(Message):
    """The standby has written (and, under ``--fsync always``, fsynced) up to ``seq``."""

    KIND: ClassVar[str] = "ack"
    KEYS: ClassVar = {"id": "i", "term": "tm", "seq": "sq"}
    id: str
    term: int
    seq: int

    def __post_init__(self) -> None:
        _check_common(self, self.id, self.term)
        if not _is_int(self.seq):
            raise WireError("bad ack")


@dataclass(frozen=True, slots=True)
class Refusal(Message):
    """A frame was refused: the peer belongs to another shard, or its term is stale."""

    KIND: ClassVar[str] = "refuse"
    KEYS: ClassVar = {"id": "i", "term": "tm"}
    id: str
    term: int
    why: str

    def __post_init__(self) -> None:
        _check_common(self, self.id, self.term)
        if not isinstance(self.why, str) or len(self.why) > 512:
            raise WireError("bad refusal")


Frame = Hello | PeerBeat | Snapshot | BatchFrame | AckFrame | Refusal

FRAMES: Final = Codec(
    (Hello, PeerBeat, Snapshot, BatchFrame, AckFrame, Refusal), max_frame=MAX_REPL_FRAME
)


def encode_frame(frame: Frame) -> bytes:
    """One replication frame."""
    return FRAMES.encode(frame)


def decode_frame(data: bytes) -> Frame:
    """A replication frame; ``WireError`` for anything else."""
    frame: Frame = FRAMES.decode(data)
    return frame
