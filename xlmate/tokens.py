"""Seat tokens (docs/protocol.md section 2): HS256 JWTs signed with the cluster secret.

``verify_seat_token`` is the boundary: PyJWT's errors become ``TokenError``
(close 4001) or ``WrongGame`` (close 4003).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import jwt

from xlmate.constants import COLORS, GAME_ID_RE, Color
from xlmate.errors import TokenError, WrongGame

ALGORITHM = "HS256"
MAX_CLOCK_S = 6 * 3600
MAX_INCREMENT_S = 180


@dataclass(frozen=True, slots=True)
class Clock:
    """A time control in seconds, as the ``clock`` claim carries it."""

    initial: float
    increment: float

    def __post_init__(self) -> None:
        if not 0 < self.initial <= MAX_CLOCK_S:
            raise TokenError(f"clock.initial must be in (0, {MAX_CLOCK_S}] seconds")
        if not 0 <= self.increment <= MAX_INCREMENT_S:
            raise TokenError(f"clock.increment must be in [0, {MAX_INCREMENT_S}] seconds")

    @classmethod
    def parse(cls, text: str) -> Clock:
        """``"5+3"`` -> 5 minutes + 3 seconds (the ``--clock`` option's format)."""
        minutes, _, increment = text.partition("+")
        try:
            return cls(float(minutes) * 60, float(increment or 0))
        except ValueError as exc:
            raise TokenError(f"clock must look like 5+3 (minutes+seconds), not {text!r}") from exc

    def claim(self) -> dict[str, float]:
        """The JWT claim form, integers where exact."""
        return {"initial": _compact(self.initial), "increment": _compact(self.increment)}


def _compact(value: float) -> float:
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True, slots=True)
class SeatClaims:
    """The verified content of a seat token."""

    game_id: str
    color: Color
    player_id: str | None
    clock: Clock | None


def new_game_id() -> str:
    """A fresh random game id (URL-safe, 12 characters)."""
    return secrets.token_urlsafe(9)


def mint_seat_token(
    secret: str,
    game_id: str,
    color: Color,
    *,
    player_id: str | None = None,
    clock: Clock | None = None,
    expires_at: int | None = None,
) -> str:
    """Sign a seat token for ``color`` in ``game_id``."""
    if not GAME_ID_RE.match(game_id):
        raise TokenError("gid must be 1-64 characters of [A-Za-z0-9_-]")
    if color not in COLORS:
        raise TokenError("color must be white or black")
    payload: dict[str, Any] = {"gid": game_id, "color": color}
    if player_id is not None:
        payload["sub"] = player_id
    if clock is not None:
        payload["clock"] = clock.claim()
    if expires_at is not None:
        payload["exp"] = expires_at
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def _clock_claim(raw: Any) -> Clock | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TokenError("clock must be an object")
    initial, increment = raw.get("initial", 600), raw.get("increment", 0)
    for value in (initial, increment):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TokenError("clock values must be numbers of seconds")
    try:
        return Clock(float(initial), float(increment))
    except OverflowError as exc:  # an integer too big for a float
        raise TokenError("clock values are out of range") from exc


def verify_seat_token(token: str, secret: str, game_id: str | None = None) -> SeatClaims:
    """Check signature, expiry and claims; with ``game_id``, that it is for that game."""
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["gid", "color"]}
        )
    except jwt.PyJWTError as exc:
        raise TokenError(f"bad seat token: {exc}") from exc
    gid, color, sub = payload.get("gid"), payload.get("color"), payload.get("sub")
    if not isinstance(gid, str) or not GAME_ID_RE.match(gid):
        raise TokenError("gid must be 1-64 characters of [A-Za-z0-9_-]")
    if color not in COLORS:
        raise TokenError("color must be white or black")
    if sub is not None and (not isinstance(sub, str) or not 0 < len(sub) <= 128):
        raise TokenError("sub must be a string of 1-128 characters")  # the bus refuses ""
    if game_id is not None and gid != game_id:
        raise WrongGame("this seat token is for another game")
    return SeatClaims(gid, color, sub, _clock_claim(payload.get("clock")))
