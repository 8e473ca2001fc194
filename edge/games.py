"""The games this edge serves: one ``Feed`` each, and the I/O that carries out its actions.

``Games`` is the only code that talks to the delivery core (``edge.delivery``):
it turns what arrives for a game (a bus event, a head, a socket joining or
leaving, a ``sync`` asked for) into the feed's inputs, and carries out the
actions the feed returns, in order (``run``): frames to sessions, fetches
and per-socket requests to the broker (each an owned task whose answer goes
back to the feed), closes, errors.  It also keeps the game's bus
subscription (first socket subscribes, last one unsubscribes) and reports
the game's presence (sockets per seat) when it changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from xlmate.constants import UNAVAILABLE
from xlmate.edge.bus import BrokerUnavailable, Reply
from xlmate.edge.delivery import (
    Answer,
    Ask,
    Close,
    Deliver,
    Feed,
    Fetch,
    History,
    Missing,
    SendState,
    Snapshot,
    Unavailable,
    WentBack,
)
from xlmate.edge.session import Session, dumps
from xlmate.edge.shardbus import ShardedBus
from xlmate.supervision import Supervisor
from xlmate.wire import EventsReply, PresenceReport, StateReply, encode

log = logging.getLogger("xlmate.edge")

UNREACHABLE: Final = "the game's broker is not reachable"


def answer_of(reply: Reply) -> Answer:
    """A catch-up reply from the bus, as the delivery core's input."""
    if isinstance(reply, StateReply):
        return Snapshot(reply.v, reply.sync)
    if isinstance(reply, EventsReply):
        return History(reply.v, reply.events)
    return Missing()


class Games:
    """Every game with a local socket: see the module docstring."""

    def __init__(
        self,
        edge_id: str,
        bus: ShardedBus,
        tasks: Supervisor,
        *,
        error: Callable[[Session, str, str, Any], None],
        fetched: Callable[[], None],
    ) -> None:
        self.edge_id = edge_id
        self.bus = bus
        self.tasks = tasks
        self.feeds: dict[str, Feed[Session]] = {}
        self._error = error
        self._fetched = fetched  # counts room fetches (metrics)

    def __len__(self) -> int:
        return len(self.feeds)

    # --- sockets -----------------------------------------------------------------

    async def open(self, session: Session, since: int | None) -> bool:
        """Add a socket and carry out its opening request; True if it got its first state."""
        feed = self.feeds.get(session.game_id)
        if feed is None:
            feed = self.feeds[session.game_id] = Feed()
            self.bus.subscribe(session.game_id)
        ask = feed.join(session, since, player=session.claims is not None)
        await self._ask(session.game_id, feed, ask)
        if not feed.synced(session):
            return False
        self.report_presence(session.game_id, feed)
        return True

    def close(self, session: Session) -> None:
        """Remove a socket (it is gone); the last one of a game unsubscribes."""
        feed = self.feeds.get(session.game_id)
        if feed is None:
            return
        synced = feed.synced(session)
        feed.leave(session)
        if synced:
            self.report_presence(session.game_id, feed)
        if not feed:
            del self.feeds[session.game_id]
            self.bus.unsubscribe(session.game_id)

    def ask_sync(self, session: Session) -> None:
        """The client asked for ``{"type": "sync"}``."""
        feed = self.feeds.get(session.game_id)
        if feed is not None:
            self.run(session.game_id, feed, feed.ask_sync(session))

    # --- the bus ----------------------------------------------------------------------

    def on_event(self, game_id: str, v: int, data: bytes) -> None:
        """A game event (the hot path: no allocation unless the feed acts)."""
        feed = self.feeds.get(game_id)
        if feed is not None:
            actions = feed.on_event(v, data)
            if actions:
                self.run(game_id, feed, actions)

    def on_head(self, game_id: str, v: int) -> None:
        """The broker says ``game_id`` is at ``v`` (a head, or an ack)."""
        feed = self.feeds.get(game_id)
        if feed is not None:
            self.run(game_id, feed, feed.on_head(v))

    def on_presence(self, game_id: str, frame: bytes) -> None:
        """A presence frame from the broker goes to the sockets that have their state."""
        feed = self.feeds.get(game_id)
        if feed is not None:
            for session in feed.synced_handles():
                session.send(frame)

    def refresh(self, shard: int) -> None:
        """After a shard's broker restarted or came back: fetch each of its games, report
        presence again."""
        for game_id, feed in list(self.feeds.items()):
            if self.bus.shard_of(game_id) != shard:
                continue
            self.run(game_id, feed, feed.refresh())
            self.report_presence(game_id, feed)

    def report_presence(self, game_id: str, feed: Feed[Session]) -> None:
        white = black = spectators = 0
        for session in feed.handles():
            if session.seat == "white":
                white += 1
            elif session.seat == "black":
                black += 1
            else:
                spectators += 1
        report = PresenceReport(
            game_id=game_id,
            edge_id=self.edge_id,
            white=white,
            black=black,
            spectators=spectators,
        )
        self.bus.publish_game(game_id, encode(report))

    # --- the feeds' actions -------------------------------------------------------------

    def run(self, game_id: str, feed: Feed[Session], actions: Sequence[Any]) -> None:
        """Carry out what a game's feed decided, in order."""
        for action in actions:
            kind = type(action)
            if kind is Deliver:
                data = action.data
                for session in action.targets:
                    session.send(data)
            elif kind is SendState:
                session = action.target
                session.send(dumps({**action.state, "you": session.you}))
            elif kind is Fetch:
                self.tasks.spawn(self._fetch(game_id, feed, action), f"edge.fetch {game_id}")
            elif kind is Ask:
                self.tasks.spawn(self._ask(game_id, feed, action), f"edge.ask {game_id}")
            elif kind is Close:
                action.target.kill(action.code, action.reason)
            elif kind is Unavailable:
                self._error(action.target, UNAVAILABLE, UNREACHABLE, None)
            elif kind is WentBack:
                log.error(
                    "broker for game %s went back from v%d to v%d", game_id, action.since, action.v
                )

    async def _fetch(self, game_id: str, feed: Feed[Session], fetch: Fetch) -> None:
        """A room fetch; its answer (or failure) goes back to the feed."""
        if fetch.delay:
            await asyncio.sleep(fetch.delay)
        self._fetched()
        try:
            reply = await self.bus.fetch(game_id, fetch.since)
        except Exception as exc:  # the feed must hear of every end, or it waits for good
            if not isinstance(exc, BrokerUnavailable):
                log.exception("fetch for game %s failed", game_id)
            self.run(game_id, feed, feed.on_fetch_failed(fetch.since))
            return
        self.run(game_id, feed, feed.on_fetched(fetch.since, answer_of(reply)))

    async def _ask(self, game_id: str, feed: Feed[Session], ask: Ask[Session]) -> None:
        """One socket's request: a player's first one opens its seat (creating the game)."""
        session = ask.target
        claims = session.claims
        try:
            if ask.first and claims is not None:
                clock = (
                    [round(claims.clock.initial * 1000), round(claims.clock.increment * 1000)]
                    if claims.clock
                    else None
                )
                reply = await self.bus.open(
                    game_id, claims.color, claims.player_id, clock, ask.since
                )
            else:
                reply = await self.bus.fetch(game_id, ask.since)
        except Exception as exc:  # (as in _fetch: the member would stay busy for good)
            if not isinstance(exc, BrokerUnavailable):
                log.exception("request for a socket of game %s failed", game_id)
            self.run(game_id, feed, feed.on_answer_failed(session, ask.ticket))
            return
        self.run(game_id, feed, feed.on_answer(session, ask.ticket, answer_of(reply)))
