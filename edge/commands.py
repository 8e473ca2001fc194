"""Players' commands on their way to the broker, until each is acked or refused.

A command is put on the bus (``CMD_TOPIC``) and tracked in ``PendingCommands``
(``edge.pending``): the broker's ``ack`` (or the ack riding on the event it
caused) answers the sender ``{"type":"ack","id","v"}``, a ``reject`` answers
an ``error``, and what stays unanswered is re-sent every ``resend_ms`` and
answered ``unavailable`` after ``command_timeout_ms``.  The broker's
idempotency keys make re-sending safe.  Commands without an ``id`` get a key
unique to this edge.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from typing import Any, Final

from xlmate.constants import NOT_A_PLAYER, RATE_LIMITED, UNAVAILABLE
from xlmate.edge.pending import PendingCommands
from xlmate.edge.session import Session
from xlmate.edge.shardbus import ShardedBus
from xlmate.messages import Command, command_to_wire
from xlmate.wire import CommandMsg, encode

ErrorReply = Callable[[Session, str, str, Any], None]  # (session, code, message, reply id)

TIMED_OUT: Final = "the broker did not confirm the command in time; re-send it with the same id"


class Commands:
    """The edge's commands in flight: submit, resolve, re-send; time is an input."""

    def __init__(self, edge_id: str, bus: ShardedBus, pending: PendingCommands, error: ErrorReply):
        self.edge_id = edge_id
        self.bus = bus
        self.pending = pending
        self._error = error
        # Keys of commands sent without an id: a random boot id per process, so that a
        # restarted edge (same edge id) never reuses a key the broker still remembers.
        self._boot = secrets.token_hex(8)
        self._keys = itertools.count(1)

    def submit(self, session: Session, command: Command, now_ms: int) -> None:
        """Check a socket's command against its seat and its quota, publish and track it."""
        if session.seat is None:
            self._error(session, NOT_A_PLAYER, "spectators cannot play", command.id)
            return
        if self.pending.full_for(session):
            self._error(
                session, RATE_LIMITED, "too many commands awaiting confirmation", command.id
            )
            return
        key = str(command.id) if command.id is not None else f"~{self._boot}:{next(self._keys)}"
        body = encode(
            CommandMsg(
                game_id=session.game_id,
                edge_id=self.edge_id,
                seat=session.seat,
                command_id=key,
                command=command_to_wire(command.body),
            )
        )
        self.pending.add((session.game_id, session.seat, key), session, command.id, body, now_ms)
        self.bus.publish_game(session.game_id, body)

    def acked(self, game_id: str, seat: str, command_id: str, v: int) -> None:
        """A command of ours was committed at ``v``: stop re-sending it, tell its sender."""
        item = self.pending.resolve((game_id, seat, command_id))
        if item is not None and item.reply_id is not None:
            item.session.send_json({"type": "ack", "id": item.reply_id, "v": v})

    def rejected(self, game_id: str, seat: str, command_id: str, code: str, message: str) -> None:
        """The broker refused a command of ours: tell its sender why."""
        item = self.pending.resolve((game_id, seat, command_id))
        if item is not None:
            self._error(item.session, code, message, item.reply_id)

    def resend_due(self, now_ms: int) -> None:
        """Re-send what is due, answer ``unavailable`` for what timed out."""
        resend, expired = self.pending.due(now_ms)
        for game_id, body in resend:
            self.bus.publish_game(game_id, body)
        for item in expired:
            self._error(item.session, UNAVAILABLE, TIMED_OUT, item.reply_id)

    def resend_everything(self, shard: int) -> None:
        """Re-send every command in flight for ``shard``'s games at once (its broker
        restarted or came back)."""
        bus = self.bus
        for game_id, body in self.pending.everything():
            if bus.shard_of(game_id) == shard:
                bus.publish_game(game_id, body)
