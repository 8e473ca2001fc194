"""Who may open a game socket on this edge: a pure decision on the request.

``admit`` takes the request target and what the edge knows (draining, full,
this address's count) and returns either an ``Admission`` (game, seat claims,
the ``v`` the client has) or a ``Refusal`` (close code and reason), checked in
this order: path, draining, capacity, per-address limit, game id, seat token.
New checks (an ``Origin`` allow list, say) go here, each one a line in
``admit`` and a keyword argument.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from xlmate.constants import (
    CLOSE_BAD_TOKEN,
    CLOSE_DRAINING,
    CLOSE_FULL,
    CLOSE_NO_SUCH_GAME,
    CLOSE_POLICY,
    CLOSE_WRONG_GAME,
    GAME_ID_RE,
)
from xlmate.errors import TokenError, WrongGame
from xlmate.tokens import SeatClaims, verify_seat_token

WS_PATH: Final = re.compile(r"^/v1/games/([^/]+)/(ws|spectate)$")
ROUTES: Final = ("/v1/games/{gameId}/ws", "/v1/games/{gameId}/spectate")


@dataclass(frozen=True, slots=True)
class Admission:
    """A socket let in: its game, its seat claims (None for a spectator), its ``?v=``."""

    game_id: str
    claims: SeatClaims | None
    since: int | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A socket turned away with a close code; ``token_game`` names the game when the
    seat token was the reason (the operator's log says so, never showing the token)."""

    code: int
    reason: str
    token_game: str | None = None


def admit(
    target: str, *, secret: str, draining: bool, full: bool, crowded: bool
) -> Admission | Refusal:
    """Decide on a WebSocket request for ``target`` (path and query)."""
    parts = urlsplit(target)
    match = WS_PATH.match(parts.path)
    if match is None:
        return Refusal(CLOSE_NO_SUCH_GAME, "unknown path")
    game_id, kind = match.groups()
    if draining:
        return Refusal(CLOSE_DRAINING, "edge draining: ask discovery again")
    if full:
        return Refusal(CLOSE_FULL, "edge full")
    if crowded:
        return Refusal(CLOSE_POLICY, "too many connections from this address")
    if not GAME_ID_RE.match(game_id):
        return Refusal(CLOSE_NO_SUCH_GAME, "bad game id")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    claims: SeatClaims | None = None
    if kind == "ws":
        try:
            claims = verify_seat_token(query.get("token", ""), secret, game_id)
        except WrongGame as exc:
            return Refusal(CLOSE_WRONG_GAME, str(exc), game_id)
        except TokenError as exc:
            return Refusal(CLOSE_BAD_TOKEN, str(exc)[:120], game_id)
    return Admission(game_id, claims, version(query.get("v")))


def version(raw: str | None) -> int | None:
    """The ``v`` query parameter, or None when absent or not a sane integer."""
    if raw is None or not raw.isdigit() or len(raw) > 15:
        return None
    return int(raw)


def salvage_id(frame: str) -> Any:
    """The ``id`` of a message that failed validation, so its error can carry it."""
    try:
        raw = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(value, (str, int)) and not isinstance(value, bool) and len(str(value)) <= 64:
        return value
    return None
