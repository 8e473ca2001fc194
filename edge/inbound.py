"""What a client sends: rate-limited, parsed, and handed to the edge.

Each socket has a token bucket (``--rate-per-s``, ``--rate-burst``).  A frame over
the rate is answered ``rate_limited`` (with its ``id`` when one can be
salvaged) and earns a strike; good frames earn strikes back, and a socket
with more than ``MAX_STRIKES`` is closed 4008.  Binary frames and frames that
break the protocol get an ``error`` and change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from xlmate.constants import BAD_MESSAGE, CLOSE_POLICY, RATE_LIMITED
from xlmate.edge.handshake import salvage_id
from xlmate.edge.session import Session
from xlmate.errors import ProtocolError
from xlmate.messages import Command, Ping, SyncRequest, parse_client_message

MAX_STRIKES: Final = 50  # rate-limited messages before a socket is closed 4008
PONG: Final = b'{"type":"pong"}'


class Handlers:
    """Where a socket's messages go: the edge's side of ``read_client``."""

    __slots__ = ("ask_sync", "error", "frame_seen", "submit")

    def __init__(
        self,
        *,
        submit: Callable[[Session, Command], None],
        ask_sync: Callable[[Session], None],
        error: Callable[[Session, str, str, Any], None],
        frame_seen: Callable[[], None],
    ) -> None:
        self.submit = submit
        self.ask_sync = ask_sync
        self.error = error
        self.frame_seen = frame_seen


async def read_client(session: Session, handlers: Handlers) -> None:
    """Read ``session``'s frames until it closes (or floods and is closed 4008)."""
    error = handlers.error
    async for frame in session.ws:
        handlers.frame_seen()
        if session.rate.take(time.monotonic()):
            session.strikes = max(0, session.strikes - 1)  # good behaviour earns strikes back
        else:
            session.strikes += 1
            if session.strikes > MAX_STRIKES:
                session.kill_for_policy("flooding", "flooding")
                await session.ws.close(CLOSE_POLICY, "flooding")  # before the handler's 1000
                return
            reply_id = salvage_id(frame) if isinstance(frame, str) else None
            error(session, RATE_LIMITED, "slow down", reply_id)
            continue
        if isinstance(frame, bytes):
            error(session, BAD_MESSAGE, "binary frames are not accepted", None)
            continue
        try:
            message = parse_client_message(frame)
        except ProtocolError as exc:
            error(session, exc.code, exc.message, salvage_id(frame))
            continue
        if isinstance(message, Command):
            handlers.submit(session, message)
        elif isinstance(message, Ping):
            session.send(PONG)
        elif isinstance(message, SyncRequest):
            handlers.ask_sync(session)
