"""Rooms: the local sockets of one game, and that game's delivery order.

A room knows the last ``v`` it has fanned out and keeps a small ring of recent
events, so a socket that joins mid-game catches up without another broker
round trip.  Events must go out in ``v`` order with no gap: an event that
arrives early (PUB/SUB dropped the one before it) is held, and the room asks
the broker for what it missed (``need_fetch``) before delivering anything
newer.  Rooms hold no state that the broker cannot give back: they are cache.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from xlmate.constants import Color
from xlmate.edge.session import Session

RING: Final = 128  # recent events kept per room for joining sockets
MAX_HELD: Final = 256  # early events held while a gap is fetched


class Room:
    """One game's local sockets and delivery state."""

    __slots__ = (
        "fetching",
        "game_id",
        "held",
        "lagging",
        "last_v",
        "rewound",
        "ring",
        "sessions",
        "stale",
    )

    def __init__(self, game_id: str) -> None:
        self.game_id = game_id
        self.sessions: set[Session] = set()
        self.last_v: int | None = None
        self.ring: deque[tuple[int, bytes]] = deque(maxlen=RING)
        self.held: dict[int, bytes] = {}
        self.fetching = False
        self.stale = False  # a fetch is wanted again once the current one ends
        self.lagging: set[Session] = set()  # sessions the ring cannot catch up: need a sync
        self.rewound = False  # the broker went back in v: the next full state goes to all

    # --- membership -------------------------------------------------------

    def counts(self) -> tuple[int, int, int]:
        """Sockets per seat: (white, black, spectators)."""
        white = black = spectators = 0
        for session in self.sessions:
            if session.seat == "white":
                white += 1
            elif session.seat == "black":
                black += 1
            else:
                spectators += 1
        return white, black, spectators

    def seated(self, seat: Color) -> list[Session]:
        """The sockets of one seat."""
        return [s for s in self.sessions if s.seat == seat]

    # --- ordering -------------------------------------------------------------

    def on_event(self, v: int, data: bytes) -> bool:
        """Take event ``v`` from the bus; return True if a fetch is needed (a gap)."""
        last = self.last_v
        if last is None:
            self._hold(v, data)
            return True
        if v <= last:
            return False
        if v != last + 1:
            self._hold(v, data)
            return True
        self._accept(v, data)
        self._release_held()
        return False

    def on_head(self, v: int) -> bool:
        """The broker says the game is at ``v``; True if we are behind."""
        return self.last_v is None or v > self.last_v

    def on_events(self, v_first: int, events: list[bytes]) -> None:
        """Events fetched from the broker, ``v_first`` being the version of the first."""
        for offset, data in enumerate(events):
            self.on_event(v_first + offset, data)

    def reset(self, v: int) -> None:
        """Jump to ``v`` (after a full state): history before it is gone."""
        self.last_v = v
        self.ring.clear()
        self.held = {k: d for k, d in self.held.items() if k > v}
        self._release_held()

    def _hold(self, v: int, data: bytes) -> None:
        if len(self.held) < MAX_HELD:
            self.held[v] = data

    def _release_held(self) -> None:
        held = self.held
        while held and self.last_v is not None:
            nxt = self.last_v + 1
            data = held.pop(nxt, None)
            if data is None:
                for stale in [k for k in held if k <= self.last_v]:
                    del held[stale]
                return
            self._accept(nxt, data)

    def _accept(self, v: int, data: bytes) -> None:
        self.last_v = v
        self.ring.append((v, data))
        for session in self.sessions:
            if not session.deliver(v, data) and not self.catch_up(session):
                self.lagging.add(session)

    def catch_up(self, session: Session) -> bool:
        """Send a session what the ring holds after its ``last_v``; False if the ring can't."""
        last = session.last_v
        if last is None or self.last_v is None or last >= self.last_v:
            return True
        if not self.ring or self.ring[0][0] > last + 1:
            return False
        for v, data in self.ring:
            if v > last:
                session.deliver(v, data)
        return True
