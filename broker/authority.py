"""The game authority: every live game, its history and presence, without sockets.

The broker's I/O loop (``broker.server``) feeds it bus messages and the time;
it answers with a ``Batch``: journal records to write first, then frames to
publish.  That order is the broker's promise: an event (and the ack of the
command that caused it) is published only after it is journaled.

It owns:
- sequencing: ``Game`` assigns each event the next ``v`` of its game;
- idempotency: the game remembers command keys; a duplicate is acked again;
- history: the last ``history`` events of each game as client JSON, for
  catch-up; older requests get the full state;
- timers: a heap of game deadlines (flag fall, abort) for ``due``;
- presence: per game and edge, how many sockets each seat has, aggregated;
- replay: ``replay`` rebuilds all of this from journal records.
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from xlmate import logs
from xlmate.broker.archive import Archive
from xlmate.broker.game import Game, TimeControl
from xlmate.broker.pgn import game_pgn
from xlmate.broker.records import (
    CommandApplied,
    GameCreated,
    GameEnded,
    Record,
    SeatTaken,
    TimePassed,
)
from xlmate.constants import INTERNAL
from xlmate.errors import CommandRejected, ProtocolError, XLMateError
from xlmate.messages import command_from_wire
from xlmate.wire import (
    AckMsg,
    AckRef,
    CommandFields,
    CommandMsg,
    EventsReply,
    FetchRequest,
    HeadMsg,
    MissingReply,
    OpenRequest,
    PgnReply,
    PgnRequest,
    PresenceMsg,
    PresenceReport,
    RejectMsg,
    StateReply,
    edge_topic,
    encode,
    encode_event,
    game_topic,
)

log = logging.getLogger("xlmate.broker")

EDGE_SILENCE_MS: Final = 3000  # presence of an edge that stopped beating expires after this
MAX_FINISHED_IN_MEMORY: Final = 1000  # older finished games are read from the archive
FINISHED_HISTORY: Final = 16  # events a finished game keeps for catch-ups (then its state)


def event_json(event: dict[str, Any]) -> bytes:
    """The client JSON text of an event, encoded once for every edge and socket.

    orjson: compact like ``separators=(",", ":")``, non-ASCII as UTF-8, and
    several times faster than the standard library on this hot path.
    """
    return orjson.dumps(event)


@dataclass(slots=True)
class Batch:
    """What one turn of the broker loop must do: journal ``records``, then send ``frames``."""

    records: list[Record] = field(default_factory=list)
    frames: list[list[bytes]] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    def publish(self, topic: bytes, body: bytes) -> None:
        """Queue one message for the XPUB socket."""
        self.frames.append([topic, body])


@dataclass(slots=True)
class LiveGame:
    """A game in play with its recent history and presence."""

    game: Game
    topic: bytes
    history: deque[tuple[int, bytes]]
    presence: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # edge -> (w, b, x)
    shown: tuple[bool, bool, int] = (False, False, 0)
    pgn: str | None = None  # a finished game's PGN, written once when it ended


class Authority:
    """All games of one broker (see module docstring)."""

    def __init__(
        self,
        archive: Archive,
        *,
        history: int = 128,
        abort_after_ms: int = 30_000,
        max_games: int = 100_000,
    ) -> None:
        self.archive = archive
        self.history = history
        self.abort_after_ms = abort_after_ms
        self.max_games = max_games
        self.games: dict[str, LiveGame] = {}
        self.finished: OrderedDict[str, LiveGame] = OrderedDict()
        self._deadlines: list[tuple[int, str]] = []
        self.edge_seen: dict[str, int] = {}
        self.touched: set[str] = set()  # games with events since the last trailing heads
        self.events_total = 0
        self.commands_total = 0
        self.rejected_total = 0
        self.duplicates_total = 0

    # --- lookup -----------------------------------------------------------

    def find(self, game_id: str) -> LiveGame | None:
        """A game in memory, live or recently finished."""
        return self.games.get(game_id) or self.finished.get(game_id)

    def _sync(self, live: LiveGame, now_ms: int) -> dict[str, Any]:
        sync = live.game.sync(now_ms)
        white, black, _ = live.shown
        sync["players"]["white"]["online"] = white
        sync["players"]["black"]["online"] = black
        return sync

    # --- creating games ----------------------------------------------------

    def open(
        self, req: OpenRequest, now_ms: int, batch: Batch
    ) -> StateReply | EventsReply | MissingReply:
        """A seat is used: create the game if it is new, answer its state (or events since)."""
        game_id = req.game_id
        live = self.find(game_id)
        if live is None:
            archived = self.archive.load(game_id)
            if archived is not None:
                return self._archived_state(req.request_id, game_id, archived.sync)
            if len(self.games) >= self.max_games:
                log.warning("refusing game %s: %d live games", game_id, len(self.games))
                return MissingReply(request_id=req.request_id, game_id=game_id)
            created = GameCreated(game_id=game_id, clock=req.clock or [0, 0], ms=now_ms)
            live = self._create(created)
            batch.records.append(created)
        if req.player_id is not None and live.game.player(req.seat) is None:
            seated = SeatTaken(game_id=game_id, seat=req.seat, player_id=req.player_id)
            live.game.seat(req.seat, req.player_id)
            batch.records.append(seated)
        fetch = FetchRequest(request_id=req.request_id, game_id=game_id, since=req.since)
        return self.fetch(fetch, now_ms)

    @staticmethod
    def _archived_state(request_id: int, game_id: str, sync: dict[str, Any]) -> StateReply:
        return StateReply(
            request_id=request_id, game_id=game_id, v=int(sync.get("v", 0)), sync=sync
        )

    def _create(self, record: GameCreated) -> LiveGame:
        initial_ms, increment_ms = record.clock
        time_control = (
            TimeControl(initial_ms, increment_ms) if initial_ms else TimeControl.from_claim(None)
        )
        game_id = record.game_id
        game = Game(game_id, time_control, record.ms, abort_after_ms=self.abort_after_ms)
        live = LiveGame(game, game_topic(game_id), deque(maxlen=self.history))
        self.games[game_id] = live
        self._schedule(live)
        return live

    # --- commands ------------------------------------------------------------

    def command(self, msg: CommandMsg | CommandFields, now_ms: int, batch: Batch) -> None:
        """Apply one player command; queue its events, ack or rejection."""
        self.commands_total += 1
        live = self.games.get(msg.game_id)
        if live is None:
            done = self.finished.get(msg.game_id)
            if done is not None or msg.game_id in self.archive:
                self._reject(msg, "game_over", "the game is over", batch)
            else:
                self._reject(msg, INTERNAL, "the broker does not know this game", batch)
            return
        try:
            body = command_from_wire(msg.command)
            applied = live.game.apply(msg.seat, body, now_ms, f"{msg.seat}:{msg.command_id}")
        except CommandRejected as exc:
            self._after_rejection(live, now_ms, batch)
            self._reject(msg, exc.code, exc.message, batch)
            return
        except ProtocolError as exc:
            self._reject(msg, exc.code, exc.message, batch)
            return
        if applied.duplicate:
            self.duplicates_total += 1
        else:
            batch.records.append(
                CommandApplied(
                    game_id=msg.game_id,
                    seat=msg.seat,
                    command_id=msg.command_id,
                    command=msg.command,
                    ms=now_ms,
                    v=applied.v,
                )
            )
        if applied.events and not applied.duplicate:
            # The last event carries the ack: one message per move instead of two.
            ack_ref = AckRef(msg.edge_id, msg.seat, msg.command_id)
            self._emit(live, applied.events, batch, ack=ack_ref)
        else:
            ack = AckMsg(game_id=msg.game_id, seat=msg.seat, command_id=msg.command_id, v=applied.v)
            batch.publish(edge_topic(msg.edge_id), encode(ack))
        self._after_change(live, batch)

    def _after_rejection(self, live: LiveGame, now_ms: int, batch: Batch) -> None:
        """A move that came after a flag fell ends the game by timeout first."""
        self.due_game(live, now_ms, batch)

    def _reject(self, msg: CommandMsg | CommandFields, code: str, text: str, batch: Batch) -> None:
        self.rejected_total += 1
        reject = RejectMsg(
            game_id=msg.game_id, seat=msg.seat, command_id=msg.command_id, code=code, message=text
        )
        batch.publish(edge_topic(msg.edge_id), encode(reject))

    def _emit(
        self,
        live: LiveGame,
        events: list[dict[str, Any]],
        batch: Batch,
        ack: AckRef | None = None,
    ) -> None:
        """Publish ``events`` (and keep them for catch-up); the last one carries ``ack``."""
        topic, history, game_id = live.topic, live.history, live.game.game_id
        frames = batch.frames
        last = events[-1] if events else None
        for event in events:
            data = event_json(event)
            v = event["v"]
            history.append((v, data))
            carried = ack if event is last else None
            # == encode(EventMsg(...)) without the dataclass: one per move (xlmate.wire)
            frames.append([topic, encode_event(game_id, v, data, carried)])
        self.events_total += len(events)
        self.touched.add(game_id)

    def trailing_heads(self, batch: Batch) -> None:
        """Publish the head of every game that had events lately.

        PUB/SUB can drop any message, including a game's last event, after
        which no later event would reveal the gap; the trailing head does.
        """
        for game_id in self.touched:
            live = self.find(game_id)
            if live is not None:
                batch.publish(live.topic, encode(HeadMsg(game_id=game_id, v=live.game.v)))
        self.touched.clear()

    def _after_change(self, live: LiveGame, batch: Batch) -> None:
        if live.game.status == "over":
            batch.finished.append(live.game.game_id)
        else:
            self._schedule(live)

    # --- time ------------------------------------------------------------------

    def _schedule(self, live: LiveGame) -> None:
        """Push the game's next deadline; stale entries stay until popped (``due`` checks).

        Every move pushes one, so the heap is rebuilt from the live games'
        current deadlines whenever stale entries outnumber live games by far.
        """
        deadline = live.game.deadline_ms()
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, live.game.game_id))
        if len(self._deadlines) > 4 * len(self.games) + 1024:
            self._rebuild_deadlines()

    def _rebuild_deadlines(self) -> None:
        deadlines = []
        for game_id, live in self.games.items():
            deadline = live.game.deadline_ms()
            if deadline is not None:
                deadlines.append((deadline, game_id))
        heapq.heapify(deadlines)
        self._deadlines = deadlines

    def next_deadline(self) -> int | None:
        """The earliest pending game deadline (may be stale: ``due`` checks)."""
        return self._deadlines[0][0] if self._deadlines else None

    def due(self, now_ms: int, batch: Batch) -> None:
        """Fire every deadline that has passed (flag falls, aborts)."""
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            _, game_id = heapq.heappop(self._deadlines)
            live = self.games.get(game_id)
            if live is not None:
                self.due_game(live, now_ms, batch)

    def due_game(self, live: LiveGame, now_ms: int, batch: Batch) -> None:
        """Tick one game; journal and publish what time alone caused."""
        events = live.game.tick(now_ms)
        if events:
            batch.records.append(TimePassed(game_id=live.game.game_id, ms=now_ms))
            self._emit(live, events, batch)
            self._after_change(live, batch)

    # --- finishing ----------------------------------------------------------------

    def finish(self, game_id: str, now_ms: int) -> GameEnded | None:
        """Archive a game that ended; return the journal's ``end`` record."""
        live = self.games.pop(game_id, None)
        if live is None:
            return None
        game = live.game
        logs.event(
            log,
            "game_ended",
            f"game {game_id} ended: {game.result} ({game.reason}) after {len(game.moves)} moves",
            game=game_id,
            result=game.result,
            reason=game.reason,
            moves=len(game.moves),
        )
        live.pgn = game_pgn(live.game)
        self.archive.store(game_id, self._sync(live, now_ms), live.pgn)
        # Kept small: a finished game only answers late catch-ups, heads and PGN requests.
        live.game.release()
        live.history = deque(live.history, maxlen=FINISHED_HISTORY)
        self.finished[game_id] = live
        while len(self.finished) > MAX_FINISHED_IN_MEMORY:
            self.finished.popitem(last=False)
        return GameEnded(game_id=game_id)

    # --- catch-up ---------------------------------------------------------------------

    def fetch(self, req: FetchRequest, now_ms: int) -> StateReply | EventsReply | MissingReply:
        """Events after ``since`` if the history holds them all, else the full state."""
        request_id, game_id = req.request_id, req.game_id
        live = self.find(game_id)
        if live is None:
            archived = self.archive.load(game_id)
            if archived is None:
                return MissingReply(request_id=request_id, game_id=game_id)
            return self._archived_state(request_id, game_id, archived.sync)
        head = live.game.v
        since = req.since
        if since is not None and since <= head:
            if since == head:
                return EventsReply(request_id=request_id, game_id=game_id, v=head, events=[])
            history = live.history
            if history and history[0][0] <= since + 1:
                start = since + 1 - history[0][0]
                events = [data for _, data in list(history)[start:]]
                return EventsReply(request_id=request_id, game_id=game_id, v=head, events=events)
        sync = self._sync(live, now_ms)
        return StateReply(request_id=request_id, game_id=game_id, v=head, sync=sync)

    def pgn(self, req: PgnRequest) -> PgnReply | MissingReply:
        """The PGN of a live, finished or archived game."""
        request_id, game_id = req.request_id, req.game_id
        live = self.find(game_id)
        if live is not None:
            text = live.pgn or game_pgn(live.game)
            return PgnReply(request_id=request_id, game_id=game_id, text=text)
        archived = self.archive.load(game_id)
        if archived is None:
            return MissingReply(request_id=request_id, game_id=game_id)
        return PgnReply(request_id=request_id, game_id=game_id, text=archived.pgn)

    def head(self, game_id: str) -> bytes | None:
        """A ``head`` message for a game edges just subscribed to."""
        live = self.find(game_id)
        if live is None:
            return None
        return encode(HeadMsg(game_id=game_id, v=live.game.v))

    # --- presence -----------------------------------------------------------------------

    def presence_report(self, msg: PresenceReport, now_ms: int, batch: Batch) -> None:
        """An edge's socket counts for one game."""
        self.edge_seen[msg.edge_id] = now_ms
        live = self.find(msg.game_id)
        if live is None:
            return
        counts = (msg.white, msg.black, msg.spectators)
        # An edge's counts changed (a socket came or went): publish even if the total did not,
        # so a socket that just joined (say a second tab of a seat) learns the presence too.
        changed = live.presence.get(msg.edge_id, (0, 0, 0)) != counts
        if any(counts):
            live.presence[msg.edge_id] = counts
        else:
            live.presence.pop(msg.edge_id, None)
        self._show_presence(live, batch, force=changed)

    def edge_beat(self, edge_id: str, now_ms: int) -> None:
        """An edge is alive."""
        self.edge_seen[edge_id] = now_ms

    def expire_edges(self, now_ms: int, batch: Batch) -> None:
        """Forget the presence of edges that stopped beating (they died)."""
        dead = [e for e, seen in self.edge_seen.items() if now_ms - seen > EDGE_SILENCE_MS]
        if not dead:
            return
        for edge_id in dead:
            del self.edge_seen[edge_id]
            log.info("edge %s went silent; dropping its presence", edge_id)
        gone = set(dead)
        for live in list(self.games.values()):
            if gone.intersection(live.presence):
                for edge_id in gone:
                    live.presence.pop(edge_id, None)
                self._show_presence(live, batch)

    def _show_presence(self, live: LiveGame, batch: Batch, *, force: bool = False) -> None:
        white = any(w for w, _, _ in live.presence.values())
        black = any(b for _, b, _ in live.presence.values())
        spectators = sum(x for _, _, x in live.presence.values())
        shown = (white, black, spectators)
        if shown == live.shown and not force:
            return
        live.shown = shown
        data = event_json(
            {
                "type": "presence",
                "gameId": live.game.game_id,
                "white": white,
                "black": black,
                "spectators": spectators,
            }
        )
        batch.publish(live.topic, encode(PresenceMsg(game_id=live.game.game_id, json=data)))

    # --- replay -------------------------------------------------------------------------

    def replay(self, records: list[Record]) -> None:
        """Rebuild games from journal records (nothing is published or journaled)."""
        scratch = Batch()
        for record in records:
            try:
                self._replay_one(record, scratch)
            except (XLMateError, KeyError, TypeError, ValueError) as exc:
                log.error("journal record for %s could not be replayed: %r", record.game_id, exc)
            scratch.frames.clear()
            scratch.records.clear()
            scratch.finished.clear()
        self.touched.clear()

    def _replay_one(self, record: Record, scratch: Batch) -> None:
        game_id = record.game_id
        if isinstance(record, GameCreated):
            if game_id not in self.games:
                self._create(record)
            return
        if isinstance(record, GameEnded):
            self.games.pop(game_id, None)
            return
        live = self.games.get(game_id)
        if live is None:
            return
        if isinstance(record, SeatTaken):
            live.game.seat(record.seat, record.player_id)
        elif isinstance(record, TimePassed):
            self._emit(live, live.game.tick(record.ms), scratch)
            self._after_change(live, scratch)
        else:
            seat = record.seat
            try:
                applied = live.game.apply(
                    seat,
                    command_from_wire(record.command),
                    record.ms,
                    f"{seat}:{record.command_id}",
                )
            except CommandRejected as exc:
                log.error("journal replay of %s v%s was refused: %s", game_id, record.v, exc)
                return
            if applied.v != record.v:
                log.error("journal replay of %s gave v%s, not v%s", game_id, applied.v, record.v)
            self._emit(live, applied.events, scratch)
            self._after_change(live, scratch)
