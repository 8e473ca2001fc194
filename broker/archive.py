"""Finished games, kept out of the live journal: one JSON file per game.

Compaction moves a game here when it ends, so its ``sync`` and PGN stay
available (``GET /v1/games/{id}`` and ``/pgn`` on any edge) while the live
journal holds only games in play.  Game ids are ``[A-Za-z0-9_-]{1,64}``, so
they are safe file names.

A file is written (temp file, rename) on the event loop, and made durable
(fsync of the file, then of the directory) by a background thread: an fsync
costs milliseconds and games end dozens of times a second.  Until then the
journal still holds the game's records: compaction keeps the records of the
games in ``pending()``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from xlmate.constants import GAME_ID_RE

log = logging.getLogger("xlmate.broker")


@dataclass(frozen=True, slots=True)
class ArchivedGame:
    """One archive file: the game's final ``sync`` object and its PGN text.

    Stored as JSON ``{"sync": ..., "pgn": ...}`` (readable with any tool);
    unknown keys are ignored when read, like every internal format.
    """

    sync: dict[str, Any]
    pgn: str

    def to_json(self) -> bytes:
        """The file's bytes."""
        return orjson.dumps({"sync": self.sync, "pgn": self.pgn})

    @classmethod
    def from_json(cls, data: Any) -> ArchivedGame | None:
        """The archived game in parsed JSON, or None if it is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("sync"), dict):
            return None
        return cls(data["sync"], str(data.get("pgn", "")))


class Archive:
    """A directory of ``<gameId>.json`` files holding ``{"sync": ..., "pgn": ...}``."""

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        self.directory = directory
        self.durable = durable
        self._lock = threading.Lock()
        self._pending: set[str] = set()  # written, not yet known durable
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()  # None: stop
        self._syncer: threading.Thread | None = None

    def _path(self, game_id: str) -> Path:
        if not GAME_ID_RE.match(game_id):
            raise ValueError("bad game id")
        return self.directory / f"{game_id}.json"

    def store(self, game_id: str, sync: dict[str, Any], pgn: str) -> None:
        """Write a finished game (atomically: temp file, rename); durable soon after."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(game_id)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(ArchivedGame(sync, pgn).to_json())
        os.replace(tmp, path)
        if not self.durable:
            return
        with self._lock:
            self._pending.add(game_id)
        if self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name="archive-fsync")
            self._syncer.daemon = True
            self._syncer.start()
        self._queue.put(game_id)

    def pending(self) -> set[str]:
        """Games whose file is written but not yet known to be durable."""
        with self._lock:
            return set(self._pending)

    def _sync_loop(self) -> None:
        """The background thread: fsync each file written, then the directory."""
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty() and len(batch) < 256:
                batch.append(self._queue.get())
            game_ids = [game_id for game_id in batch if game_id is not None]
            if len(game_ids) < len(batch):  # close() asked us to stop
                return
            try:
                self._sync_files(game_ids)
            except OSError:  # they stay pending, so their journal records stay too
                log.exception("archive fsync failed for %d games", len(game_ids))

    def _sync_files(self, game_ids: list[str]) -> None:
        for game_id in game_ids:
            with contextlib.suppress(OSError):  # (gone: a later compaction keeps its records)
                fd = os.open(self._path(game_id), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        with self._lock:
            self._pending.difference_update(game_ids)

    def flush(self) -> None:
        """Make every file written so far durable, now, on this thread (at start and stop)."""
        waiting = self.pending()
        if waiting:
            self._sync_files(sorted(waiting))

    def close(self) -> None:
        """Stop the background thread (what it has not synced, ``flush`` can)."""
        if self._syncer is not None:
            self._queue.put(None)
            self._syncer.join(timeout=5)
            self._syncer = None

    def load(self, game_id: str) -> ArchivedGame | None:
        """The archived game, or ``None``."""
        try:
            path = self._path(game_id)
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return ArchivedGame.from_json(data)

    def __contains__(self, game_id: str) -> bool:
        try:
            return self._path(game_id).exists()
        except ValueError:
            return False
