"""Numbers from docs/protocol.md and the limits this project documents in docs/."""

from __future__ import annotations

import re
from typing import Final, Literal

Color = Literal["white", "black"]
COLORS: Final[tuple[Color, Color]] = ("white", "black")

GAME_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")

# Close codes (docs/protocol.md section 4.8).
CLOSE_BAD_TOKEN: Final = 4001
CLOSE_WRONG_GAME: Final = 4003
CLOSE_NO_SUCH_GAME: Final = 4004
CLOSE_POLICY: Final = 4008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011
CLOSE_DRAINING: Final = 1012
CLOSE_FULL: Final = 1013

# Error codes (docs/protocol.md section 4.6).
BAD_JSON: Final = "bad_json"
BAD_MESSAGE: Final = "bad_message"
UNKNOWN_TYPE: Final = "unknown_type"
ILLEGAL_MOVE: Final = "illegal_move"
NOT_YOUR_TURN: Final = "not_your_turn"
NOT_A_PLAYER: Final = "not_a_player"
GAME_OVER: Final = "game_over"
NO_OFFER: Final = "no_offer"
RATE_LIMITED: Final = "rate_limited"
UNAVAILABLE: Final = "unavailable"
INTERNAL: Final = "internal"

# Default time control when a seat token has no clock claim: 10+0.
DEFAULT_INITIAL_S: Final = 600
DEFAULT_INCREMENT_S: Final = 0

# Largest WebSocket frame a client may send (bytes); bigger ones close 1009.
MAX_CLIENT_FRAME: Final = 4096


def other(color: Color) -> Color:
    """The opponent's color."""
    return "black" if color == "white" else "white"
