"""The broker's append-only journal (docs/reliability.md).

A record is ``length (4 bytes, big endian) | crc32 (4 bytes) | msgpack map``,
the map being one typed record of ``broker.records`` (game created, seat
taken, command applied, time passed, game ended), each with its game id.

The broker replays the inputs through the deterministic game state machine
to rebuild every live game.  ``append`` writes with one ``os.write`` per batch
(so a SIGKILL after it loses nothing: the bytes are in the kernel), and
``sync`` runs ``fsync`` according to the configured policy.  A torn or corrupt
tail (power loss mid-write) is detected by length and CRC, logged, and cut
off; it never stops the broker.  An intact record that does not decode to a
record of this version (say, a kind a newer broker added) is logged and
skipped, without cutting what follows.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import msgpack

from xlmate.broker.records import MAX_RECORD, Record, encode_record, record_from_map
from xlmate.errors import WireError

log = logging.getLogger("xlmate.broker.journal")

HEADER: Final = struct.Struct(">II")
JOURNAL_NAME: Final = "journal.log"


def pack_record(record: Record) -> bytes:
    """One framed record."""
    body = encode_record(record)
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def read_records(path: Path) -> tuple[list[Record], int, str | None]:
    """Every intact record of ``path``, the offset after the last one, and what was wrong.

    The problem is ``None`` when the file ended cleanly.
    """
    data = path.read_bytes() if path.exists() else b""
    records: list[Record] = []
    good_end, problem = 0, None
    for end, record, trouble in _scan(data):
        if record is not None:
            records.append(record)
        good_end, problem = end, trouble
    return records, good_end, problem


def scan_records(data: bytes) -> Iterator[tuple[int, Record]]:
    """Each intact record of ``data`` with the offset after it; stops at a torn or bad one."""
    for end, record, _ in _scan(data):
        if record is None:
            return
        yield end, record


def _scan(data: bytes) -> Iterator[tuple[int, Record | None, str | None]]:
    """Yield (offset after record, record, None) and finally (good offset, None, problem)."""
    offset = 0
    end = len(data)
    while offset < end:
        if end - offset < HEADER.size:
            yield offset, None, f"torn header at byte {offset}"
            return
        length, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        if length > MAX_RECORD or start + length > end:
            yield offset, None, f"torn record at byte {offset}"
            return
        body = data[start : start + length]
        if zlib.crc32(body) != crc:
            yield offset, None, f"checksum mismatch at byte {offset}"
            return
        try:
            record = msgpack.unpackb(body, raw=False)
        except Exception:
            yield offset, None, f"undecodable record at byte {offset}"
            return
        offset = start + length
        try:
            typed = record_from_map(record)
        except WireError as exc:  # intact but not ours to read: keep what follows
            log.error("journal record at byte %d skipped: %s", start - HEADER.size, exc)
            continue
        yield offset, typed, None
    yield offset, None, None


class Journal:
    """The live journal file of one broker."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / JOURNAL_NAME
        self._fd: int | None = None
        self.bytes_written = 0  # appended since open
        self.bytes_synced = 0  # of those, known to be on disk

    @property
    def dirty(self) -> bool:
        """Something was appended since the last completed fsync."""
        return self.bytes_written != self.bytes_synced

    def load(self) -> list[Record]:
        """Read every intact record; cut a torn or corrupt tail off the file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        records, good_end, problem = read_records(self.path)
        if problem is not None:
            size = self.path.stat().st_size
            log.warning(
                "journal %s: %s; dropping the %d bytes after byte %d",
                self.path,
                problem,
                size - good_end,
                good_end,
            )
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
        return records

    def open(self) -> None:
        """Open for appending (after ``load`` / ``rewrite``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.bytes_written = self.bytes_synced = 0

    def append(self, records: Iterable[Record]) -> bytes:
        """Write a batch of records with one system call; the bytes written."""
        data = b"".join(pack_record(r) for r in records)
        if data:
            self.append_data(data)
        return data

    def append_data(self, data: bytes) -> None:
        """Write already framed records (a paired standby's copy of a batch) as they are."""
        assert self._fd is not None, "journal not open"
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.bytes_written += len(data)

    def sync(self) -> None:
        """fsync what was appended before this call.

        Safe to run in a worker thread while the event loop appends more: only
        the bytes written before the fsync started are counted as synced.
        """
        target = self.bytes_written
        fd = self._fd
        if fd is not None and target != self.bytes_synced:
            os.fsync(fd)
            self.bytes_synced = max(self.bytes_synced, target)

    def read_from(self, offset: int) -> list[Record]:
        """The records appended after byte ``offset`` (which ends a record)."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read()
        return [record for _, record in scan_records(data)]

    def replace_with(self, source: Path) -> None:
        """Atomically make the (fsynced) file ``source`` the journal: a standby's snapshot."""
        self.close()
        os.replace(source, self.path)
        _sync_directory(self.directory)
        self.open()

    def rewrite(self, records: Iterable[Record]) -> None:
        """Atomically replace the journal with ``records`` (compaction)."""
        self.close()
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for record in records:
                f.write(pack_record(record))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _sync_directory(self.directory)
        self.open()

    def close(self) -> None:
        """Sync and close; idempotent."""
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None


def _sync_directory(directory: Path) -> None:
    """fsync a directory, so a rename in it is durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def split_batch(data: bytes, limit: int) -> list[bytes]:
    """Framed records cut into pieces of at most ``limit`` bytes, at record boundaries.

    A single record larger than ``limit`` makes a piece of its own.
    """
    if len(data) <= limit:
        return [data]
    pieces: list[bytes] = []
    start = offset = 0
    while offset < len(data):
        length, _ = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if end - start > limit and offset > start:
            pieces.append(data[start:offset])
            start = offset
        offset = end
    pieces.append(data[start:])
    return pieces


def check_batch(data: bytes) -> list[Record]:
    """The records of framed ``data``; ``WireError`` unless every byte is an intact record."""
    records: list[Record] = []
    end = 0
    for offset, record in scan_records(data):
        records.append(record)
        end = offset
    if end != len(data):
        raise WireError(f"a torn or corrupt record at byte {end} of {len(data)}")
    return records
