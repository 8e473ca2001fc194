"""The operator's log lines about client sockets: opened, closed, refused.

One line per event (``xlmate.logs``: text or JSON), with the fields an operator
greps for: game, seat, remote address, close code and reason, who closed, and
how long the socket lived.  A refused seat token is logged by its reason and
never with the token itself; a refused path is logged without its query string,
which is where the token travels.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection

from xlmate import logs
from xlmate.edge.handshake import Refusal
from xlmate.edge.session import Session

log = logging.getLogger("xlmate.edge")


def refused(ws: ServerConnection, refusal: Refusal, remote: str) -> None:
    """One line per refused socket; a refused seat token by its reason, never the token."""
    if refusal.token_game is not None:
        logs.event(
            log,
            "token_rejected",
            f"seat token rejected for game {refusal.token_game}",
            logging.WARNING,
            game=refusal.token_game,
            remote=remote,
            code=refusal.code,
            reason=refusal.reason,
        )
        return
    logs.event(
        log,
        "conn_refused",
        f"socket refused: {refusal.reason}",
        code=refusal.code,
        reason=refusal.reason,
        path=urlsplit(ws.request.path).path if ws.request else None,  # no query: token
    )


def opened(session: Session) -> float:
    """Log a socket that was admitted; returns when, for ``closed``'s duration."""
    logs.event(
        log,
        "conn_opened",
        f"socket opened: game {session.game_id} as {session.you}",
        game=session.game_id,
        seat=session.you,
        remote=session.remote,
    )
    return time.monotonic()


def closed(session: Session, ws: ServerConnection, opened_at: float) -> None:
    """Log a socket's end: who closed it, with which code and reason, after how long."""
    logs.event(
        log,
        "conn_closed",
        f"socket closed: game {session.game_id} as {session.you}",
        game=session.game_id,
        seat=session.you,
        remote=session.remote,
        **close_info(ws),
        duration_s=round(time.monotonic() - opened_at, 3),
    )


def close_info(ws: ServerConnection) -> dict[str, Any]:
    """Who closed a socket, with which code and reason (what the closer sent)."""
    protocol = ws.protocol
    sent, received = protocol.close_sent, protocol.close_rcvd
    if sent is not None and not protocol.close_rcvd_then_sent:
        return {"code": sent.code, "reason": sent.reason, "by": "edge"}
    if received is not None:
        return {"code": received.code, "reason": received.reason, "by": "client"}
    return {"code": 1006, "reason": "connection lost", "by": "network"}
