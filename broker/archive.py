"""Finished games, kept out of the live journal: one JSON file per game.

Compaction moves a game here when it ends, so its ``sync`` and PGN stay
available (``GET /v1/games/{id}`` and ``/pgn`` on any edge) while the live
journal holds only games in play.  Game ids are ``[A-Za-z0-9_-]{1,64}``, so
they are safe file names.

A file is written (temp file, rename) without an fsync of its own: an fsync
costs milliseconds, and games end dozens of times a second.  Until ``flush``
the journal still holds the game's records, and the broker calls ``flush``
(one ``sync`` for every file written since) before a compaction drops them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson

from xlmate.constants import GAME_ID_RE


class Archive:
    """A directory of ``<gameId>.json`` files holding ``{"sync": ..., "pgn": ...}``."""

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        self.directory = directory
        self.durable = durable
        self.unflushed = 0  # files written since the last flush

    def _path(self, game_id: str) -> Path:
        if not GAME_ID_RE.match(game_id):
            raise ValueError("bad game id")
        return self.directory / f"{game_id}.json"

    def store(self, game_id: str, sync: dict[str, Any], pgn: str) -> None:
        """Write a finished game (atomically: temp file, rename; durable after ``flush``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(game_id)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(orjson.dumps({"sync": sync, "pgn": pgn}))
        os.replace(tmp, path)
        self.unflushed += 1

    def flush(self) -> None:
        """Make every file written so far durable (one ``sync`` for all of them)."""
        if self.durable and self.unflushed:
            os.sync()
        self.unflushed = 0

    def load(self, game_id: str) -> tuple[dict[str, Any], str] | None:
        """The archived ``(sync, pgn)`` of a game, or ``None``."""
        try:
            path = self._path(game_id)
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("sync"), dict):
            return None
        return data["sync"], str(data.get("pgn", ""))

    def __contains__(self, game_id: str) -> bool:
        try:
            return self._path(game_id).exists()
        except ValueError:
            return False
