"""A game as PGN text, for ``GET /v1/games/{gameId}/pgn`` (docs/protocol.md section 6).

Headers follow lichess: the seven-tag roster, then ``TimeControl`` ("300+3"),
``Termination`` ("Normal", "Time forfeit", "Abandoned", "Unterminated"),
``GameId`` and ``UTCDate``/``UTCTime`` of the game's creation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import chess.pgn

from xlmate.broker.game import Game

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
    """The game so far as PGN (result ``*`` and ``Termination "Unterminated"`` while live).

    Games from the standard position are written from the SAN list the game
    already keeps (the broker writes a PGN for every game that ends, so
    replaying it through ``chess.pgn`` would cost a whole game of move
    generation); games from another position go through ``chess.pgn``.
    """
    headers = _headers(game, site)
    if game.board.move_stack and game.board.root().board_fen() != chess.STARTING_BOARD_FEN:
        return _replayed_pgn(game, headers)
    if not game.board.move_stack and game.board.board_fen() != chess.STARTING_BOARD_FEN:
        return _replayed_pgn(game, headers)
    lines = [f'[{key} "{value}"]' for key, value in headers.items()]
    return "\n".join([*lines, "", *_movetext(game.san_moves, headers["Result"])]) + "\n"


def _movetext(san_moves: tuple[str, ...], result: str) -> list[str]:
    """Numbered SAN tokens and the result, wrapped as ``chess.pgn`` does (79 + a space)."""
    tokens: list[str] = []
    for ply, san in enumerate(san_moves):
        if ply % 2 == 0:
            tokens.append(f"{ply // 2 + 1}.")
        tokens.append(san)
    tokens.append(result)
    lines: list[str] = []
    line = ""
    for token in tokens:
        if line and len(line) + 1 + len(token) > 79:
            lines.append(line)
            line = token
        else:
            line = f"{line} {token}" if line else token
    lines.append(line)
    return lines


def _replayed_pgn(game: Game, headers: dict[str, str]) -> str:
    pgn = chess.pgn.Game.from_board(game.board)
    for key, value in headers.items():
        pgn.headers[key] = value
    exporter = chess.pgn.StringExporter(headers=True, variations=False, comments=False)
    return pgn.accept(exporter) + "\n"


def _headers(game: Game, site: str) -> dict[str, str]:
    """The tags, in the order ``chess.pgn`` writes them (the seven-tag roster first)."""
    try:
        created = datetime.fromtimestamp(game.created_ms / 1000, tz=UTC)
        date, clock = created.strftime("%Y.%m.%d"), created.strftime("%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        date, clock = "????.??.??", "??:??:??"
    return {
        "Event": EVENT,
        "Site": _tag(site),
        "Date": date,
        "Round": "-",
        "White": _tag(game.player("white") or "?"),
        "Black": _tag(game.player("black") or "?"),
        "Result": game.result or "*",
        "GameId": _tag(game.game_id),
        "UTCDate": date,
        "UTCTime": clock,
        "TimeControl": game.time_control.label(),
        "Termination": termination(game.reason),
    }
