"""A game as PGN text, for ``GET /v1/games/{gameId}/pgn`` (PROTOCOL.md section 4).

Headers follow lichess: the seven-tag roster, then ``TimeControl`` ("300+3"),
``Termination`` ("Normal", "Time forfeit", "Abandoned", "Unterminated"),
``GameId`` and ``UTCDate``/``UTCTime`` of the game's creation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import chess.pgn

from broker.game import Game

EVENT: Final = "XLMate realtime game"

_TERMINATION: Final[dict[str | None, str]] = {
    None: "Unterminated",
    "timeout": "Time forfeit",
    "aborted": "Abandoned",
}


def _tag(value: str) -> str:
    """A header value made safe for PGN: no control characters, quotes escaped."""
    clean = "".join(ch for ch in value if ch >= " " and ch != "\x7f")
    return clean.replace("\\", "\\\\").replace('"', '\\"')


def termination(reason: str | None) -> str:
    """The lichess-style ``Termination`` tag for a ``game_over`` reason (None: live)."""
    return _TERMINATION.get(reason, "Normal")


def game_pgn(game: Game, *, site: str = "XLMate realtime") -> str:
    """The game so far as PGN (result ``*`` and ``Termination "Unterminated"`` while live)."""
    pgn = chess.pgn.Game.from_board(game.board)
    try:
        created = datetime.fromtimestamp(game.created_ms / 1000, tz=UTC)
        date, clock = created.strftime("%Y.%m.%d"), created.strftime("%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        date, clock = "????.??.??", "??:??:??"
    headers = pgn.headers
    headers["Event"] = EVENT
    headers["Site"] = _tag(site)
    headers["Date"] = date
    headers["Round"] = "-"
    headers["White"] = _tag(game.player("white") or "?")
    headers["Black"] = _tag(game.player("black") or "?")
    headers["Result"] = game.result or "*"
    headers["GameId"] = _tag(game.game_id)
    headers["UTCDate"] = date
    headers["UTCTime"] = clock
    headers["TimeControl"] = game.time_control.label()
    headers["Termination"] = termination(game.reason)
    exporter = chess.pgn.StringExporter(headers=True, variations=False, comments=False)
    return pgn.accept(exporter) + "\n"
