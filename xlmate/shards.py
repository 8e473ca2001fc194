"""Which broker shard owns a game: one pure function every process computes alike.

A cluster has ``N`` broker shards, numbered 1..N, and ``N`` is fixed for the
cluster's life.  A game belongs to exactly one of them:

    key   = blake2b(game id as UTF-8, digest_size=8, person=b"xlmate-shard"),
            read as a big-endian unsigned 64-bit integer
    shard = jump_hash(key, N) + 1

``jump_hash`` is Lamping and Veach's jump consistent hash ("A Fast, Minimal
Memory, Consistent Hash Algorithm", 2014): no table, a few multiplications,
uniform over the buckets, and it would move only 1/N of the games if N ever
grew (it does not today).  blake2b comes with Python's ``hashlib`` and never
depends on the process (unlike ``hash()``), so edges, brokers and tools agree.
The test vectors in docs/architecture.md ("Broker shards") and
tests/unit/test_shards.py pin both steps.

``ShardSpec`` is one broker's place in that scheme (``--shard 1/2``): its
index, the count, and ``owns(game_id)``.  Callers on a hot path cache the
answer per game (the broker keeps it implicitly: every game it holds was
checked when it was created).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from xlmate.errors import ConfigError

MAX_SHARDS: Final = 256  # (the shard map must fit a discovery reply)
_MASK64: Final = (1 << 64) - 1
_SPEC_RE: Final = re.compile(r"\s*(\d{1,4})\s*/\s*(\d{1,4})\s*")


def shard_key(game_id: str) -> int:
    """The 64-bit key of a game id: blake2b-64 with the ``xlmate-shard`` personalisation."""
    digest = hashlib.blake2b(game_id.encode(), digest_size=8, person=b"xlmate-shard").digest()
    return int.from_bytes(digest, "big")


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit ``key`` into ``0..buckets-1``."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_of(game_id: str, count: int) -> int:
    """The shard (1..count) that owns ``game_id`` in a cluster of ``count`` shards."""
    if count == 1:
        return 1
    return jump_hash(shard_key(game_id), count) + 1


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """One broker's shard: ``index`` of ``count`` (1-based, as written: ``1/2``)."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or not 1 <= self.count <= MAX_SHARDS:
            raise ConfigError(f"the shard count must be 1 to {MAX_SHARDS}, not {self.count}")
        if not isinstance(self.index, int) or not 1 <= self.index <= self.count:
            raise ConfigError(f"the shard must be 1 to {self.count} (the count), not {self.index}")

    @classmethod
    def parse(cls, text: str) -> ShardSpec:
        """``"K/N"`` -> ``ShardSpec(K, N)``; ``ConfigError`` with the rule otherwise."""
        match = _SPEC_RE.fullmatch(text)
        if match is None:
            raise ConfigError(
                f"a shard is written K/N (this broker's shard K of N, e.g. 1/2), not {text!r}"
            )
        return cls(int(match.group(1)), int(match.group(2)))

    def owns(self, game_id: str) -> bool:
        """Whether this shard owns ``game_id``."""
        return self.count == 1 or shard_of(game_id, self.count) == self.index

    @property
    def sharded(self) -> bool:
        """More than one shard in the cluster."""
        return self.count > 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
