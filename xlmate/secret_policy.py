"""When the seat-token secret is good enough for the address a process listens on.

Seat tokens are HS256: whoever knows the secret can mint a seat in any game.
The built-in development secret is public (it is in this repository), the
documented placeholder (``change-me-...``) is public too, and HS256 wants at
least 32 random bytes.  On loopback that is a developer's machine: a loud
warning is enough.  On any other address the process refuses to start and
says what to set.  ``check`` is pure so the rules are tested without processes.
"""

from __future__ import annotations

import ipaddress
from typing import Final

MIN_BYTES: Final = 32
PLACEHOLDER_PREFIX: Final = "change-me"
HOW: Final = (
    "set XLMATE_SECRET to 32 or more random bytes, the same on every edge and wherever "
    'tokens are minted, e.g. XLMATE_SECRET="$(openssl rand -base64 48)"'
)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; names and wildcards count as public."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def problem(secret: str, is_dev: bool) -> str | None:
    """What is wrong with ``secret`` (None if nothing)."""
    if is_dev:
        return "XLMATE_SECRET is not set (the public development secret would sign seat tokens)"
    if secret.lower().startswith(PLACEHOLDER_PREFIX):
        return "XLMATE_SECRET is still the documented placeholder (change-me-...)"
    if len(secret.encode()) < MIN_BYTES:
        return f"XLMATE_SECRET is {len(secret.encode())} bytes; it must be at least {MIN_BYTES}"
    return None


def check(host: str, secret: str, is_dev: bool) -> tuple[str | None, str | None]:
    """``(refusal, warning)`` for a process listening on ``host`` with ``secret``."""
    issue = problem(secret, is_dev)
    if issue is None:
        return None, None
    if is_loopback(host):
        return None, f"{issue}; fine on loopback ({host}), never in production: {HOW}"
    return f"refusing to listen on {host or '*'}: {issue}; {HOW}", None
