"""Commands sent to the broker and not yet acked.

PUB drops silently (before the subscription handshake, at the high-water
mark, across a broker restart), so every command stays here until the broker
acks or rejects it, and is re-sent every ``resend_ms``.  The broker's
idempotency keys make re-sending safe.  After ``timeout_ms`` the sender gets
``error unavailable``: the command may still be applied later if the broker
got it, and a client that re-sends it with the same ``id`` gets one ack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from xlmate.messages import CommandId

if TYPE_CHECKING:
    from xlmate.edge.session import Session

MAX_PER_SESSION: Final = 16
MAX_TOTAL: Final = 100_000

Key = tuple[str, str, str]  # (game id, seat, idempotency key)


@dataclass(slots=True)
class Pending:
    """One command in flight."""

    session: Session
    reply_id: CommandId | None
    body: bytes
    next_send_ms: int
    deadline_ms: int


class PendingCommands:
    """The in-flight table; time is an input."""

    def __init__(self, *, resend_ms: int, timeout_ms: int) -> None:
        self.resend_ms = resend_ms
        self.timeout_ms = timeout_ms
        self._items: dict[Key, Pending] = {}
        self._per_session: dict[Session, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def full_for(self, session: Session) -> bool:
        """True when this session may not have another command in flight."""
        return self._per_session.get(session, 0) >= MAX_PER_SESSION or len(self._items) >= MAX_TOTAL

    def add(
        self, key: Key, session: Session, reply_id: CommandId | None, body: bytes, now_ms: int
    ) -> None:
        """Track a command; a re-sent key moves to the newest session that sent it."""
        old = self._items.get(key)
        if old is not None:
            self._forget_session(old.session)
        self._items[key] = Pending(
            session, reply_id, body, now_ms + self.resend_ms, now_ms + self.timeout_ms
        )
        self._per_session[session] = self._per_session.get(session, 0) + 1

    def resolve(self, key: Key) -> Pending | None:
        """The broker answered: stop tracking and return the entry (None if unknown)."""
        item = self._items.pop(key, None)
        if item is not None:
            self._forget_session(item.session)
        return item

    def _forget_session(self, session: Session) -> None:
        count = self._per_session.get(session, 0) - 1
        if count > 0:
            self._per_session[session] = count
        else:
            self._per_session.pop(session, None)

    def due(self, now_ms: int) -> tuple[list[tuple[str, bytes]], list[Pending]]:
        """(game id, body) of what to re-send now, and entries that timed out (removed)."""
        resend: list[tuple[str, bytes]] = []
        expired: list[tuple[Key, Pending]] = []
        for key, item in self._items.items():
            if item.deadline_ms <= now_ms:
                expired.append((key, item))
            elif item.next_send_ms <= now_ms:
                item.next_send_ms = now_ms + self.resend_ms
                resend.append((key[0], item.body))
        for key, _ in expired:
            self.resolve(key)
        return resend, [item for _, item in expired]

    def everything(self) -> list[tuple[str, bytes]]:
        """(game id, body) of every command (re-send at once after a broker came back)."""
        return [(key[0], item.body) for key, item in self._items.items()]
