"""One game's delivery on an edge, as a pure state machine (no I/O, no clock).

Theory of operation
-------------------
The broker gives every event of a game the next ``v`` and publishes it; PUB/SUB
may drop, and (across reconnects and catch-up answers, which travel on another
socket) events and answers reach the edge in any order, late, or twice.  A
``Feed`` turns that into what each local socket must see: the events
``v = n+1, n+2, ...`` one at a time, or a full state (a ``sync``), never a gap
and never a duplicate; and, unless the broker itself went back, never a state
older than what the socket already has.

The glue (``edge.games``) feeds a ``Feed`` its inputs and carries out the
actions it returns, in order, and nothing else; it never writes the feed's
state (h11's "Rule 1"), and reads it only through ``synced``, ``handles``
and ``synced_handles``.  Each input returns the actions it caused (an empty
tuple when none: the common duplicate costs no allocation).

Inputs (methods)                           Actions (returned)
-----------------------------------------  ------------------------------------------
``on_event(v, data)``  a bus event         ``Deliver(targets, v, data)`` send ``data``
``on_head(v)``  a head, or an ack's ``v``  ``SendState(target, v, state, forced)``
``refresh()``  the broker restarted        ``Fetch(since, delay)`` fetch for the room;
``on_fetched(since, answer)``                  answer ``on_fetched`` / ``on_fetch_failed``
``on_fetch_failed(since)``                 ``Ask(target, since, ticket, first)`` fetch
``join(handle, since, player=)``               for one socket (``first``: its opening
``on_answer(handle, ticket, answer)``          request); answer ``on_answer`` /
``on_answer_failed(handle, ticket)``           ``on_answer_failed`` with the ticket
``ask_sync(handle)``  the client asked     ``Close(target, code, reason)``
``leave(handle)``                          ``Unavailable(target)`` tell it the broker
                                               is unreachable (an ``error``)
                                           ``WentBack(since, v)`` log it

The room.  ``last_v`` is the last event the room fanned out; a ring of the
last ``ring`` events lets a socket that is behind catch up without a round
trip.  An event that comes early (its predecessor was dropped) is held (at
most ``max_held``) and the room fetches ``since last_v``; while a room fetch is
in flight, more reasons to fetch only mark it ``stale`` (one more round).

The sockets (members).  Each has its own ``last_v`` (None until its first
state or events went out).  A member is *busy* while a request of its own is
in flight (its opening request, a repair, a ``sync`` it asked for): the room
does not fan out to it then, so the answer, sent after everything the member
got, can never be older than the member unless the broker went back.  Each
request carries a ticket; an answer whose ticket is not the member's current
one is late and ignored.  A member the ring cannot catch up is *lagging*;
once no room fetch is in flight, it gets the events it missed from the
broker's history (``Ask since``), or a full state when those are gone.

The broker went back only if it answers a fetch with a ``v`` below the
``since`` asked (``--fsync never`` and a power loss): every socket then gets
its state once (``forced``).  An answer that is merely older than the room
(events overtook it) is late, not a rewind; a full state fetched before the
room had a base is not applied once it has one (the room fetches the events
after its base instead).  Held events beyond the head an answer reports are
kept but not fetched for again until the next event or head (an idle game
never loops on fetches).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from xlmate.constants import CLOSE_FULL, CLOSE_INTERNAL, CLOSE_NO_SUCH_GAME

RING: Final = 128  # recent events kept per room for sockets that fell behind
MAX_HELD: Final = 256  # early events held while a gap is fetched
FIRST_BACKOFF_S: Final = 0.05  # room fetch retry after the broker did not answer
MAX_BACKOFF_S: Final = 1.0

H = TypeVar("H", bound=Hashable)  # the glue's handle for one socket


# --- answers from the broker (inputs) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The game's full state at ``v`` (the protocol's ``sync`` object, without ``you``)."""

    v: int
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class History:
    """The events after the ``since`` asked, in order, the last one being ``v``."""

    v: int
    events: list[bytes]


@dataclass(frozen=True, slots=True)
class Missing:
    """The broker does not know the game."""


Answer = Snapshot | History | Missing


# --- actions (outputs) ----------------------------------------------------------------


@dataclass(slots=True)
class Deliver(Generic[H]):
    """Send event ``v`` (``data``, client JSON) to each of ``targets``."""

    targets: list[H]
    v: int
    data: bytes


@dataclass(slots=True)
class SendState(Generic[H]):
    """Send ``target`` a ``sync`` of ``state`` at ``v``; ``forced`` if it may go back or repeat."""

    target: H
    v: int
    state: dict[str, Any]
    forced: bool


@dataclass(slots=True)
class Fetch:
    """Fetch the room's game ``since`` (None: the full state) after ``delay`` seconds."""

    since: int | None
    delay: float


@dataclass(slots=True)
class Ask(Generic[H]):
    """Fetch for one socket; ``first`` is its opening request (a player's ``open``)."""

    target: H
    since: int | None
    ticket: int
    first: bool


@dataclass(slots=True)
class Close(Generic[H]):
    """Close ``target`` with ``code``."""

    target: H
    code: int
    reason: str


@dataclass(slots=True)
class Unavailable(Generic[H]):
    """Tell ``target`` the game's broker is not reachable (its repair failed)."""

    target: H


@dataclass(slots=True)
class WentBack:
    """The broker answered below the ``since`` asked: it lost events (log it)."""

    since: int
    v: int


Action = Deliver[H] | SendState[H] | Fetch | Ask[H] | Close[H] | Unavailable[H] | WentBack

NOTHING: Final[Sequence[Any]] = ()

# A member's request in flight, if any.
IDLE: Final = 0
JOINING: Final = 1  # its opening request
MISSED: Final = 2  # the events after its last_v (a repair)
STATE: Final = 3  # a full state (a repair that history could not do, or an asked sync)
GONE: Final = 4  # closed by the feed: waits for leave()


class Member(Generic[H]):
    """One socket as the feed sees it."""

    __slots__ = ("forced", "handle", "last_v", "player", "since", "stage", "ticket")

    def __init__(self, handle: H, since: int | None, player: bool) -> None:
        self.handle = handle
        self.last_v: int | None = None
        self.since = since  # what its request in flight asked from
        self.player = player
        self.stage = JOINING
        self.ticket = 0
        self.forced = False  # its request in flight is a sync the client asked for


class Feed(Generic[H]):
    """The delivery state of one game on one edge: see the module docstring."""

    __slots__ = (
        "_backoff",
        "_fetching",
        "_held",
        "_lagging",
        "_max_held",
        "_members",
        "_rewound",
        "_ring",
        "_stale",
        "_tickets",
        "last_v",
    )

    def __init__(self, *, ring: int = RING, max_held: int = MAX_HELD) -> None:
        self.last_v: int | None = None  # read-only outside: the last v the room fanned out
        self._ring: deque[tuple[int, bytes]] = deque(maxlen=ring)
        self._held: dict[int, bytes] = {}
        self._max_held = max_held
        self._members: dict[H, Member[H]] = {}
        self._lagging: set[H] = set()
        self._fetching = False
        self._stale = False  # a room fetch is wanted again once the current one ends
        self._rewound = False  # the broker went back: the next full state goes to all
        self._backoff = 0.0
        self._tickets = 0

    # --- queries -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._members)

    def handles(self) -> Iterable[H]:
        """Every socket of the game."""
        return self._members.keys()

    def synced(self, handle: H) -> bool:
        """True once ``handle`` got its first state or events."""
        member = self._members.get(handle)
        return member is not None and member.last_v is not None

    def synced_handles(self) -> Iterator[H]:
        """The sockets that got their first state (presence goes to these)."""
        for member in self._members.values():
            if member.last_v is not None:
                yield member.handle

    # --- bus inputs -------------------------------------------------------------------

    def on_event(self, v: int, data: bytes) -> Sequence[Action[H]]:
        """Event ``v`` came on the bus."""
        last = self.last_v
        if last is not None and v == last + 1:  # the common case: the next one
            out: list[Action[H]] = []
            self._accept(v, data, out)
            if self._held:
                self._release_held(out)
            if self._lagging and not self._fetching:
                self._repair_lagging(out)
            return out
        if last is not None and v <= last:
            return NOTHING  # a duplicate, or a late copy
        self._hold(v, data)
        out = []
        self._want_fetch(out)
        return out

    def on_head(self, v: int) -> Sequence[Action[H]]:
        """The broker says the game is at ``v`` (a head, or an ack): fetch if behind."""
        if self.last_v is not None and v <= self.last_v:
            return NOTHING
        out: list[Action[H]] = []
        self._want_fetch(out)
        return out

    def refresh(self) -> Sequence[Action[H]]:
        """The broker restarted or came back: fetch what we may have missed."""
        out: list[Action[H]] = []
        self._want_fetch(out)
        return out

    # --- room fetches ----------------------------------------------------------------------

    def on_fetched(self, since: int | None, answer: Answer) -> Sequence[Action[H]]:
        """The answer to ``Fetch(since)``."""
        out: list[Action[H]] = []
        self._backoff = 0.0
        self._apply(since, answer, out)
        # Held events the broker's answer should have reached: ask again.  Held events
        # beyond its head wait for the next event or head (no busy loop on an idle game).
        behind = (
            bool(self._held)
            and not isinstance(answer, Missing)
            and (self.last_v is None or self.last_v < answer.v)
        )
        if self._members and (self._stale or behind):
            self._stale = False
            out.append(Fetch(self.last_v, 0.0))
        else:
            self._fetching = self._stale = False
            self._finish(out)
        return out

    def on_fetch_failed(self, since: int | None) -> Sequence[Action[H]]:
        """``Fetch(since)`` got no answer: try again after a back-off, while anyone listens."""
        if not self._members:
            self._fetching = self._stale = False
            return NOTHING
        self._backoff = min(MAX_BACKOFF_S, max(FIRST_BACKOFF_S, self._backoff * 2))
        self._stale = False
        return [Fetch(self.last_v, self._backoff)]

    def _want_fetch(self, out: list[Action[H]]) -> None:
        if not self._members:
            return
        if self._fetching:
            self._stale = True
            return
        self._fetching = True
        self._stale = False
        out.append(Fetch(self.last_v, 0.0))

    def _apply(self, since: int | None, answer: Answer, out: list[Action[H]]) -> None:
        """Apply the answer to a room fetch (see the module docstring for the cases)."""
        if isinstance(answer, Missing):
            for member in self._members.values():
                self._close(member, CLOSE_NO_SUCH_GAME, "no such game", out)
            return
        if since is not None and answer.v < since:
            out.append(WentBack(since, answer.v))
            if isinstance(answer, Snapshot):
                self._rewind(answer, out)
            else:  # (our broker answers a state then; an event list cannot rewind)
                self._rewound, self.last_v, self._stale = True, None, True
                self._held.clear()
            return
        if isinstance(answer, History):
            if self.last_v is None:
                self._stale = True  # no base yet: take the full state
            else:
                self._take_events(answer, out)
            return
        if self._rewound:
            self._rewind(answer, out)
        elif since is None and self.last_v is not None:
            # The room got a base while this full state travelled: fetch the
            # events after it rather than make its sockets jump to a state.
            self._stale = True
        elif self.last_v is None or answer.v > self.last_v:
            self._reset(answer.v, out)
            for member in self._members.values():
                last = member.last_v
                if last is not None and answer.v > last:
                    self._send_state(member, answer, False, out)
        # else: the state is older than what the room already delivered: nothing new

    def _rewind(self, answer: Snapshot, out: list[Action[H]]) -> None:
        """Take the broker's (older) state and give it to every socket once."""
        self._rewound = False
        self._held.clear()
        self._reset(answer.v, out)
        for member in self._members.values():
            if member.last_v is not None and member.stage != GONE:
                self._send_state(member, answer, True, out)

    # --- sockets ------------------------------------------------------------------------------

    def join(self, handle: H, since: int | None, *, player: bool) -> Ask[H]:
        """A socket joined, having seen up to ``since``: carry out its opening request."""
        member = Member(handle, since, player)
        self._members[handle] = member
        member.ticket = self._next_ticket()
        return Ask(handle, since, member.ticket, True)

    def leave(self, handle: H) -> None:
        """A socket left; its answers still on the way will be ignored."""
        self._members.pop(handle, None)
        self._lagging.discard(handle)

    def ask_sync(self, handle: H) -> Sequence[Action[H]]:
        """The client asked for ``{"type": "sync"}``: a full state, even at the same ``v``."""
        member = self._members.get(handle)
        if member is None or member.last_v is None or member.stage in (JOINING, GONE):
            return NOTHING
        out: list[Action[H]] = []
        self._lagging.discard(handle)
        self._request(member, STATE, None, out)
        member.forced = True
        return out

    def on_answer(self, handle: H, ticket: int, answer: Answer) -> Sequence[Action[H]]:
        """The answer to ``Ask(handle, ..., ticket)``."""
        member = self._members.get(handle)
        if member is None or member.ticket != ticket or member.stage in (IDLE, GONE):
            return NOTHING  # it left, or a newer request replaced this one
        out: list[Action[H]] = []
        stage = member.stage
        if stage == JOINING:
            self._on_opened(member, answer, out)
        elif stage == MISSED:
            if isinstance(answer, History) and self._continues(member, answer):
                member.stage = IDLE
                self._give_events(member, answer, out)
                self._settle(member, out)
            else:  # the broker's history no longer has them: a full state
                self._request(member, STATE, None, out)
        elif isinstance(answer, Snapshot):
            self._on_repair_state(member, answer, out)
        else:  # the game is gone (or an answer we did not ask for): nothing to send
            member.stage = IDLE
        self._finish(out)
        return out

    def on_answer_failed(self, handle: H, ticket: int) -> Sequence[Action[H]]:
        """``Ask(handle, ..., ticket)`` got no answer."""
        member = self._members.get(handle)
        if member is None or member.ticket != ticket or member.stage in (IDLE, GONE):
            return NOTHING
        out: list[Action[H]] = []
        if member.stage == JOINING:
            self._close(member, CLOSE_INTERNAL, "the game's broker is not reachable", out)
        elif member.stage == MISSED:
            self._request(member, STATE, None, out)
        else:
            member.stage = IDLE
            out.append(Unavailable(handle))
        return out

    def _on_opened(self, member: Member[H], answer: Answer, out: list[Action[H]]) -> None:
        if isinstance(answer, Missing):
            if member.player:
                self._close(member, CLOSE_FULL, "no room for new games", out)
            else:
                self._close(member, CLOSE_NO_SUCH_GAME, "no such game", out)
            return
        if isinstance(answer, History) and not self._continues(member, answer):
            self._request(member, STATE, None, out)  # not what it asked for: take the state
            return
        member.stage = IDLE
        if isinstance(answer, Snapshot):
            if self.last_v is None:
                self._reset(answer.v, out)
            elif self.last_v < answer.v:
                self._want_fetch(out)
            self._send_state(member, answer, False, out)
        else:
            self._give_events(member, answer, out)
            first = answer.v - len(answer.events) + 1
            if self.last_v is None:
                self._reset(first - 1, out)
            self._take_events(answer, out)
            if self._held:  # the socket was ahead of the room: fetch the room's gap now
                self._want_fetch(out)
        self._settle(member, out)

    def _on_repair_state(self, member: Member[H], answer: Snapshot, out: list[Action[H]]) -> None:
        """A full state for one socket.  The socket was frozen while it travelled, so a
        state older than the socket means the broker went back."""
        forced, member.forced = member.forced, False
        member.stage = IDLE
        last = member.last_v
        if self.last_v is not None and self.last_v < answer.v:
            self._want_fetch(out)
        if last is None or answer.v > last or forced:
            self._send_state(member, answer, forced, out)
        elif answer.v < last:
            self._want_fetch(out)  # the room's own fetch tells a rewind from a late answer
        self._settle(member, out)

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    def _continues(member: Member[H], answer: History) -> bool:
        """True if ``answer`` is exactly the events after what ``member`` asked from."""
        since = member.since
        return since is not None and answer.v >= since and answer.v - len(answer.events) == since

    def _next_ticket(self) -> int:
        self._tickets += 1
        return self._tickets

    def _request(
        self, member: Member[H], stage: int, since: int | None, out: list[Action[H]]
    ) -> None:
        member.stage = stage
        member.since = since
        member.ticket = self._next_ticket()
        out.append(Ask(member.handle, since, member.ticket, False))

    def _close(self, member: Member[H], code: int, reason: str, out: list[Action[H]]) -> None:
        if member.stage == GONE:
            return
        member.stage = GONE
        self._lagging.discard(member.handle)
        out.append(Close(member.handle, code, reason))

    def _send_state(
        self, member: Member[H], answer: Snapshot, forced: bool, out: list[Action[H]]
    ) -> None:
        """Send a full state; it replaces whatever request the socket had in flight."""
        if member.stage != IDLE:
            member.stage = IDLE
            member.ticket = self._next_ticket()
        member.forced = False
        member.last_v = answer.v
        self._lagging.discard(member.handle)
        out.append(SendState(member.handle, answer.v, answer.state, forced))

    def _give_events(self, member: Member[H], answer: History, out: list[Action[H]]) -> None:
        """Send one socket the events of ``answer`` that follow its ``last_v``."""
        v = answer.v - len(answer.events)
        for data in answer.events:
            v += 1
            last = member.last_v
            if last is None or v == last + 1:
                member.last_v = v
                out.append(Deliver([member.handle], v, data))
        if member.last_v is None:
            member.last_v = answer.v

    def _settle(self, member: Member[H], out: list[Action[H]]) -> None:
        """After a socket's own request: the ring catches it up, or it lags."""
        if not self._catch_up(member, out):
            self._lagging.add(member.handle)
            self._want_fetch(out)

    def _finish(self, out: list[Action[H]]) -> None:
        if self._held and self.last_v is not None:
            self._release_held(out)
        if self._lagging and not self._fetching:
            self._repair_lagging(out)

    def _repair_lagging(self, out: list[Action[H]]) -> None:
        lagging, self._lagging = self._lagging, set()
        for handle in lagging:
            member = self._members.get(handle)
            if member is not None and member.stage == IDLE and member.last_v is not None:
                self._request(member, MISSED, member.last_v, out)

    # --- ordering --------------------------------------------------------------------------

    def _take_events(self, answer: History, out: list[Action[H]]) -> None:
        """Events fetched from the broker: fan out those that follow, hold those ahead."""
        v = answer.v - len(answer.events)
        for data in answer.events:
            v += 1
            last = self.last_v
            if last is None or v > last + 1:
                self._hold(v, data)
            elif v == last + 1:
                self._accept(v, data, out)
                if self._held:
                    self._release_held(out)

    def _reset(self, v: int, out: list[Action[H]]) -> None:
        """Jump to ``v`` (after a full state): history before it is gone."""
        self.last_v = v
        self._ring.clear()
        self._held = {k: d for k, d in self._held.items() if k > v}
        self._release_held(out)

    def _hold(self, v: int, data: bytes) -> None:
        if len(self._held) < self._max_held:
            self._held[v] = data

    def _release_held(self, out: list[Action[H]]) -> None:
        held = self._held
        while held and self.last_v is not None:
            nxt = self.last_v + 1
            data = held.pop(nxt, None)
            if data is None:
                for old in [k for k in held if k <= self.last_v]:
                    del held[old]
                return
            self._accept(nxt, data, out)

    def _accept(self, v: int, data: bytes, out: list[Action[H]]) -> None:
        """Fan event ``v`` out: the hot path, O(sockets), one list per event."""
        self.last_v = v
        self._ring.append((v, data))
        targets: list[H] = []
        for member in self._members.values():
            last = member.last_v
            if last is None or member.stage != IDLE or v <= last:
                continue  # not synced yet, frozen by its own request, or ahead
            if v == last + 1:
                member.last_v = v
                targets.append(member.handle)
            elif not self._catch_up(member, out):
                self._lagging.add(member.handle)
        if targets:
            out.append(Deliver(targets, v, data))

    def _catch_up(self, member: Member[H], out: list[Action[H]]) -> bool:
        """Send a socket what the ring holds after its ``last_v``; False if the ring can't."""
        last = member.last_v
        if last is None or self.last_v is None or last >= self.last_v:
            return True
        ring = self._ring
        if not ring or ring[0][0] > last + 1:
            return False
        handle = member.handle
        for v, data in ring:
            if v > last:
                out.append(Deliver([handle], v, data))
        member.last_v = self.last_v
        return True
