"""The edge's per-game delivery core (``edge.delivery``), without sockets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xlmate.constants import CLOSE_FULL, CLOSE_INTERNAL, CLOSE_NO_SUCH_GAME
from xlmate.edge.delivery import (
    MAX_BACKOFF_S,
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


def ev(v: int) -> bytes:
    return b'{"v":%d}' % v


def state(v: int) -> Snapshot:
    return Snapshot(v, {"type": "sync", "v": v})


def history(since: int, head: int) -> History:
    return History(head, [ev(v) for v in range(since + 1, head + 1)])


class Sockets:
    """What each socket was sent, as ("ev", v) / ("sync", v) in order, plus the other actions."""

    def __init__(self) -> None:
        self.got: dict[str, list[tuple[str, int]]] = {}
        self.fetches: list[Fetch] = []
        self.asks: list[Ask[str]] = []
        self.others: list[Any] = []

    def run(self, actions: Sequence[Any]) -> None:
        for action in actions:
            if isinstance(action, Deliver):
                for target in action.targets:
                    assert action.data == ev(action.v)
                    self.got.setdefault(target, []).append(("ev", action.v))
            elif isinstance(action, SendState):
                self.got.setdefault(action.target, []).append(("sync", action.v))
            elif isinstance(action, Fetch):
                self.fetches.append(action)
            elif isinstance(action, Ask):
                self.asks.append(action)
            else:
                self.others.append(action)


def joined(feed: Feed[str], io: Sockets, name: str, at: int) -> None:
    """``name`` joins with no ``v`` and gets the state at ``at``."""
    ask = feed.join(name, None, player=True)
    io.run(feed.on_answer(name, ask.ticket, state(at)))


def test_events_in_order_reach_every_synced_socket_once() -> None:
    """Consecutive bus events go to every synced socket, once each; duplicates are dropped."""
    feed: Feed[str] = Feed()
    io = Sockets()
    joined(feed, io, "a", 3)
    joined(feed, io, "b", 3)
    for v in (4, 5, 5, 4, 6):
        io.run(feed.on_event(v, ev(v)))
    assert io.got["a"] == io.got["b"] == [("sync", 3), ("ev", 4), ("ev", 5), ("ev", 6)]
    assert not io.fetches


def test_an_early_event_is_held_until_the_gap_is_fetched() -> None:
    """v+2 before v+1 is held, the room fetches since v, and both go out in order."""
    feed: Feed[str] = Feed()
    io = Sockets()
    joined(feed, io, "a", 3)
    io.run(feed.on_event(5, ev(5)))
    assert io.got["a"] == [("sync", 3)]
    assert io.fetches == [Fetch(3, 0.0)]
    io.run(feed.on_event(6, ev(6)))  # still waiting: no second fetch at once
    assert len(io.fetches) == 1
    io.run(feed.on_fetched(3, history(3, 4)))
    assert io.got["a"] == [("sync", 3), ("ev", 4), ("ev", 5), ("ev", 6)]


def test_held_events_are_bounded() -> None:
    """At most ``max_held`` early events are kept; the rest come from the fetch."""
    feed: Feed[str] = Feed(max_held=4)
    io = Sockets()
    joined(feed, io, "a", 0)
    for v in range(2, 20):
        io.run(feed.on_event(v, ev(v)))
    io.run(feed.on_fetched(0, history(0, 1)))  # fills v1, releases 2..5, then a gap
    assert io.got["a"][-1] == ("ev", 5)
    assert io.fetches[-1] == Fetch(5, 0.0)  # asks again for what was not held
    io.run(feed.on_fetched(5, history(5, 19)))
    assert io.got["a"] == [("sync", 0)] + [("ev", v) for v in range(1, 20)]


def test_a_socket_resuming_with_v_gets_exactly_the_missed_events() -> None:
    """``?v=2`` answered with events 3..5 sends those, then what the room got meanwhile."""
    feed: Feed[str] = Feed()
    io = Sockets()
    joined(feed, io, "a", 1)
    ask = feed.join("b", 2, player=False)
    assert ask.since == 2 and ask.first
    for v in range(2, 8):
        io.run(feed.on_event(v, ev(v)))
    io.run(feed.on_answer("b", ask.ticket, history(2, 5)))
    assert io.got["b"] == [("ev", v) for v in range(3, 8)]


def test_an_answer_that_does_not_continue_from_v_falls_back_to_the_state() -> None:
    """Events that do not start right after the ``v`` asked are not sent: a state is fetched."""
    feed: Feed[str] = Feed()
    io = Sockets()
    ask = feed.join("a", 2, player=True)
    io.run(feed.on_answer("a", ask.ticket, history(4, 6)))
    assert "a" not in io.got
    assert io.asks[-1].since is None
    io.run(feed.on_answer("a", io.asks[-1].ticket, state(6)))
    assert io.got["a"] == [("sync", 6)]


def test_a_full_state_fetched_before_the_room_had_a_base_is_not_applied() -> None:
    """A state fetched with no base arrives after a base: the room fetches the events instead."""
    feed: Feed[str] = Feed()
    io = Sockets()
    ask = feed.join("a", None, player=True)
    io.run(feed.on_head(7))
    assert io.fetches == [Fetch(None, 0.0)]
    io.run(feed.on_answer("a", ask.ticket, state(7)))
    io.run(feed.on_event(8, ev(8)))
    io.run(feed.on_fetched(None, state(9)))  # late: the room has v8 by now
    assert io.got["a"] == [("sync", 7), ("ev", 8)]
    assert io.fetches[-1] == Fetch(8, 0.0)
    io.run(feed.on_fetched(8, history(8, 9)))
    assert io.got["a"] == [("sync", 7), ("ev", 8), ("ev", 9)]


def test_a_late_answer_older_than_the_room_is_not_a_rewind() -> None:
    """An answer above the ``since`` asked but below the room changes nothing."""
    feed: Feed[str] = Feed()
    io = Sockets()
    joined(feed, io, "a", 3)
    io.run(feed.on_head(4))
    for v in range(4, 8):
        io.run(feed.on_event(v, ev(v)))
    io.run(feed.on_fetched(3, state(4)))
    io.run(feed.on_fetched(3, history(3, 5)))
    assert io.got["a"] == [("sync", 3)] + [("ev", v) for v in range(4, 8)]
    assert not [a for a in io.others if isinstance(a, WentBack)]


def test_a_broker_that_went_back_gives_every_socket_its_state_once() -> None:
    """An answer below the ``since`` asked is a rewind: one forced sync each, then play goes on."""
    feed: Feed[str] = Feed()
    io = Sockets()
    joined(feed, io, "a", 9)
    joined(feed, io, "b", 9)
    io.run(feed.refresh())
    io.run(feed.on_fetched(9, state(6)))
    assert WentBack(9, 6) in io.others
    io.run(feed.on_event(7, ev(7)))
    assert io.got["a"] == io.got["b"] == [("sync", 9), ("sync", 6), ("ev", 7)]


def test_a_rewind_answered_with_events_takes_the_next_full_state() -> None:
    """Events below the ``since`` asked reset the room; the following state goes to all."""
    feed: Feed[str] = Feed()
    io = Sockets()
    joined(feed, io, "a", 9)
    io.run(feed.refresh())
    io.run(feed.on_fetched(9, History(6, [])))
    assert io.fetches[-1] == Fetch(None, 0.0)
    io.run(feed.on_fetched(None, state(6)))
    assert io.got["a"] == [("sync", 9), ("sync", 6)]


def test_an_asked_sync_is_sent_even_at_the_same_v_and_nothing_overtakes_it() -> None:
    """``{"type":"sync"}`` freezes the socket until its state is sent; the rest follows."""
    feed: Feed[str] = Feed()
    io = Sockets()
    joined(feed, io, "a", 3)
    io.run(feed.ask_sync("a"))
    ask = io.asks[-1]
    assert ask.since is None and not ask.first
    io.run(feed.on_event(4, ev(4)))  # frozen: not sent before the state
    assert io.got["a"] == [("sync", 3)]
    io.run(feed.on_answer("a", ask.ticket, state(3)))
    assert io.got["a"] == [("sync", 3), ("sync", 3), ("ev", 4)]


def test_a_socket_the_ring_cannot_catch_up_gets_the_missed_events_then_a_state() -> None:
    """Behind by more than the ring: events from the broker's history, else its state."""
    feed: Feed[str] = Feed(ring=2)
    io = Sockets()
    joined(feed, io, "a", 0)
    ask = feed.join("b", None, player=False)
    for v in range(1, 6):
        io.run(feed.on_event(v, ev(v)))
    io.run(feed.on_answer("b", ask.ticket, state(1)))  # ring holds 4, 5: b lags
    assert io.fetches[-1] == Fetch(5, 0.0)
    io.run(feed.on_fetched(5, History(5, [])))
    repair = io.asks[-1]
    assert repair.since == 1
    io.run(feed.on_answer("b", repair.ticket, state(5)))  # history gone: take the state
    io.run(feed.on_answer("b", io.asks[-1].ticket, state(5)))
    assert io.got["b"] == [("sync", 1), ("sync", 5)]
    io.run(feed.on_event(6, ev(6)))
    assert io.got["b"][-1] == ("ev", 6) and io.got["a"][-1] == ("ev", 6)


def test_room_fetches_back_off_while_the_broker_is_silent() -> None:
    """Failed room fetches are retried with a doubling, capped delay, and stop when empty."""
    feed: Feed[str] = Feed()
    io = Sockets()
    joined(feed, io, "a", 0)
    io.run(feed.on_head(3))
    delays = []
    for _ in range(8):
        actions = feed.on_fetch_failed(0)
        assert len(actions) == 1 and isinstance(actions[0], Fetch)
        delays.append(actions[0].delay)
    assert delays[0] > 0 and delays == sorted(delays) and delays[-1] == MAX_BACKOFF_S
    feed.leave("a")
    assert feed.on_fetch_failed(0) == ()


def test_opening_requests_that_fail_close_the_socket_with_the_right_code() -> None:
    """No game: 4004 for a spectator, 1013 for a player (no room); no answer: 1011."""
    feed: Feed[str] = Feed()
    io = Sockets()
    for name, player, answer, code in (
        ("w", True, Missing(), CLOSE_FULL),
        ("s", False, Missing(), CLOSE_NO_SUCH_GAME),
        ("x", True, None, CLOSE_INTERNAL),
    ):
        ask = feed.join(name, None, player=player)
        if answer is None:
            io.run(feed.on_answer_failed(name, ask.ticket))
        else:
            io.run(feed.on_answer(name, ask.ticket, answer))
        assert [a.code for a in io.others if isinstance(a, Close) and a.target == name] == [code]
        assert not feed.synced(name)


def test_answers_to_a_replaced_request_are_ignored() -> None:
    """A repair superseded by an asked sync, or a socket gone, ignores its late answer."""
    feed: Feed[str] = Feed()
    io = Sockets()
    joined(feed, io, "a", 3)
    io.run(feed.ask_sync("a"))
    first = io.asks[-1]
    io.run(feed.ask_sync("a"))
    assert feed.on_answer("a", first.ticket, state(3)) == ()
    io.run(feed.on_answer("a", io.asks[-1].ticket, state(4)))
    assert io.got["a"] == [("sync", 3), ("sync", 4)]
    feed.leave("a")
    assert feed.on_answer("a", io.asks[-1].ticket, state(5)) == ()


def test_a_failed_repair_tells_the_socket_the_broker_is_unreachable() -> None:
    """A sync that cannot be fetched answers ``unavailable``; the socket keeps its place."""
    feed: Feed[str] = Feed()
    io = Sockets()
    joined(feed, io, "a", 3)
    io.run(feed.ask_sync("a"))
    io.run(feed.on_answer_failed("a", io.asks[-1].ticket))
    assert Unavailable("a") in io.others
    io.run(feed.on_event(4, ev(4)))
    assert io.got["a"] == [("sync", 3), ("ev", 4)]


def test_a_socket_ahead_of_the_room_makes_the_room_fetch_its_gap() -> None:
    """``?v=12`` on a room at 10: the socket gets 13..14, and the room fetches 11..14 at once."""
    feed: Feed[str] = Feed()
    io = Sockets()
    joined(feed, io, "a", 10)
    ask = feed.join("b", 12, player=False)
    io.run(feed.on_answer("b", ask.ticket, history(12, 14)))
    assert io.got["b"] == [("ev", 13), ("ev", 14)]
    assert io.fetches == [Fetch(10, 0.0)]  # not waiting for the next event or head
    io.run(feed.on_fetched(10, history(10, 14)))
    assert io.got["a"] == [("sync", 10), ("ev", 11), ("ev", 12), ("ev", 13), ("ev", 14)]
    assert io.got["b"] == [("ev", 13), ("ev", 14)]
