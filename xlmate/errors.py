"""One exception tree for the whole project.

::

    XLMateError
     +-- ProtocolError            a client message that breaks docs/protocol.md section 4
     |    +-- CommandRejected     a well-formed command the game refuses (illegal_move, ...)
     +-- TokenError               a seat token that cannot be used (close 4001)
     |    +-- WrongGame           a valid token for another game (close 4003)
     +-- WireError                an internal bus frame that is not ours (dropped, counted)
     +-- ConfigError              a setting that cannot work

Library errors (json, msgpack, jwt, chess) are converted to these at the
boundary where they happen, so callers catch one type per boundary.
"""

from __future__ import annotations


class XLMateError(Exception):
    """Root of every error this project raises on purpose."""


class ProtocolError(XLMateError):
    """A client message we cannot accept; ``code`` is a docs/protocol.md error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CommandRejected(ProtocolError):
    """A valid command that the game refuses in its current state."""


class TokenError(XLMateError):
    """A seat token that is malformed, expired or signed with another secret."""


class WrongGame(TokenError):
    """A valid seat token presented for a game other than its ``gid``."""


class WireError(XLMateError):
    """An internal bus frame that does not decode to one of our messages."""


class ConfigError(XLMateError):
    """A configuration value that cannot work, with a message for the operator."""
