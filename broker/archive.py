"""Finished games, kept out of the live journal: one JSON file per game.

Compaction moves a game here when it ends, so its ``sync`` and PGN stay
available (``GET /v1/games/{id}`` and ``/pgn`` on any edge) while the live
journal holds only games in play.  Game ids are ``[A-Za-z0-9_-]{1,64}``, so
they are safe file names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from xlmate.constants import GAME_ID_RE


class Archive:
    """A directory of ``<gameId>.json`` files holding ``{"sync": ..., "pgn": ...}``."""

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        self.directory = directory
        self.durable = durable

    def _path(self, game_id: str) -> Path:
        if not GAME_ID_RE.match(game_id):
            raise ValueError("bad game id")
        return self.directory / f"{game_id}.json"

    def store(self, game_id: str, sync: dict[str, Any], pgn: str) -> None:
        """Write a finished game (atomically: temp file, fsync, rename)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(game_id)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"sync": sync, "pgn": pgn}, f, separators=(",", ":"))
            f.flush()
            if self.durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)

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
