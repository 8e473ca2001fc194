"""The delivery core under any interleaving, fuzzed by a hypothesis state machine.

A model broker appends events (and may go back, as after ``--fsync never``
and a power loss); the bus drops, duplicates and reorders them; catch-up
requests are answered from the broker's state at the time it handles them,
and those answers arrive in any order, late, or not at all (a failure);
sockets join (with or without a ``v``), leave and ask for a ``sync``.  Every
action the feed returns is carried out against model clients that check, on
every frame, what a real client relies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from xlmate.edge.delivery import (
    Answer,
    Ask,
    Close,
    Deliver,
    Feed,
    Fetch,
    History,
    SendState,
    Snapshot,
)

HISTORY = 6  # events the model broker keeps for catch-up (small, so it runs out)


def data(generation: int, v: int) -> bytes:
    return b"%d:%d" % (generation, v)


def v_of(frame: bytes) -> int:
    return int(frame.split(b":")[1])


@dataclass
class Client:
    """What one socket has seen: ``last`` is the ``v`` it is at (None before anything)."""

    name: int
    last: int | None
    active: bool = True
    synced: bool = False


@dataclass
class Request:
    """A catch-up request the edge sent: a room fetch, or one socket's (with its ticket)."""

    since: int | None
    target: int | None = None
    ticket: int = 0


class DeliveryMachine(RuleBasedStateMachine):
    """Interleavings of bus events, answers and sockets; see the module docstring.

    With ``MAY_GO_BACK`` false the broker never loses events, and a socket must
    never get a ``sync`` older than what it has, nor a repeated one it did not
    ask for; with it true those two checks are off once the broker went back.
    """

    MAY_GO_BACK = False

    @initialize(ring=st.integers(1, 8), max_held=st.integers(1, 8), sockets=st.integers(0, 3))
    def start(self, ring: int, max_held: int, sockets: int) -> None:
        """A game under way, with sockets that got their state (so most runs start)."""
        self.feed: Feed[int] = Feed(ring=ring, max_held=max_held)
        self.generation = 0
        self.log: list[bytes] = []  # the broker's events, v = index + 1
        self.went_back = False
        self.bus: list[tuple[int, bytes]] = []
        self.requests: list[Request] = []  # sent, not yet handled by the broker
        self.answers: list[tuple[Request, Answer]] = []  # handled, on their way back
        self.clients: dict[int, Client] = {}
        self.names = 0
        self.broker_moves(2)
        self.bus.clear()
        for _ in range(sockets):
            self.a_socket_joins(resume=False, back=0)
        self.settle()

    # --- the model broker ----------------------------------------------------------

    @property
    def head(self) -> int:
        return len(self.log)

    def broker_answer(self, since: int | None) -> Answer:
        head = self.head
        if since is None or since > head or since < head - HISTORY:
            return Snapshot(head, {"v": head})
        return History(head, self.log[since:])

    @rule(moves=st.integers(1, 3))
    def broker_moves(self, moves: int) -> None:
        for _ in range(moves):
            self.log.append(data(self.generation, self.head + 1))
            self.bus.append((self.head, self.log[-1]))

    @rule()
    def broker_moves_and_the_bus_delivers(self) -> None:
        """One move, delivered at once (the usual case)."""
        self.broker_moves(1)
        v, frame = self.bus.pop()
        self.run(self.feed.on_event(v, frame))

    @precondition(lambda self: self.MAY_GO_BACK and self.head > 0)
    @rule(lost=st.integers(1, 4))
    def broker_goes_back(self, lost: int) -> None:
        del self.log[max(0, self.head - lost) :]
        self.generation += 1
        self.went_back = True

    # --- the bus -----------------------------------------------------------------------

    @precondition(lambda self: self.bus)
    @rule(pick=st.integers(0, 1000), keep_a_copy=st.booleans())
    def bus_delivers(self, pick: int, keep_a_copy: bool) -> None:
        """Any in-flight event arrives (reordering); a kept copy arrives again later."""
        index = pick % len(self.bus)
        v, frame = self.bus[index] if keep_a_copy else self.bus.pop(index)
        self.run(self.feed.on_event(v, frame))

    @precondition(lambda self: self.bus)
    @rule(count=st.integers(1, 6))
    def bus_delivers_in_order(self, count: int) -> None:
        """The oldest in-flight events arrive in order (the usual case)."""
        for _ in range(min(count, len(self.bus))):
            v, frame = self.bus.pop(0)
            self.run(self.feed.on_event(v, frame))

    @rule(steps=st.integers(1, 8))
    def a_quiet_moment(self, steps: int) -> None:
        """Requests are handled and answered in order for a few steps."""
        self.settle(steps)

    @precondition(lambda self: self.bus)
    @rule(pick=st.integers(0, 1000))
    def bus_drops(self, pick: int) -> None:
        self.bus.pop(pick % len(self.bus))

    @rule(behind=st.integers(0, 3))
    def head_arrives(self, behind: int) -> None:
        """A head (or an ack's ``v``), possibly an old one."""
        self.run(self.feed.on_head(max(0, self.head - behind)))

    @rule()
    def broker_restarted(self) -> None:
        self.run(self.feed.refresh())

    # --- requests and answers --------------------------------------------------------------

    @precondition(lambda self: self.requests)
    @rule(pick=st.integers(0, 1000))
    def broker_handles_a_request(self, pick: int) -> None:
        request = self.requests.pop(pick % len(self.requests))
        self.answers.append((request, self.broker_answer(request.since)))

    @precondition(lambda self: self.requests)
    @rule(pick=st.integers(0, 1000))
    def a_request_is_answered_at_once(self, pick: int) -> None:
        request = self.requests.pop(pick % len(self.requests))
        self.deliver_answer(request, self.broker_answer(request.since))

    @precondition(lambda self: self.answers)
    @rule(pick=st.integers(0, 1000))
    def an_answer_arrives(self, pick: int) -> None:
        request, answer = self.answers.pop(pick % len(self.answers))
        self.deliver_answer(request, answer)

    @precondition(lambda self: self.requests)
    @rule(pick=st.integers(0, 1000), lose=st.integers(0, 3))
    def a_request_times_out(self, pick: int, lose: int) -> None:
        """A request the broker never answers (one draw in four: failures are the exception)."""
        if lose:
            return
        request = self.requests.pop(pick % len(self.requests))
        if request.target is None:
            self.run(self.feed.on_fetch_failed(request.since))
        else:
            self.run(self.feed.on_answer_failed(request.target, request.ticket))

    def deliver_answer(self, request: Request, answer: Answer) -> None:
        if request.target is None:
            self.run(self.feed.on_fetched(request.since, answer))
        else:
            self.run(self.feed.on_answer(request.target, request.ticket, answer))

    # --- sockets ---------------------------------------------------------------------------

    @rule(resume=st.booleans(), back=st.integers(0, 8))
    def a_socket_joins(self, resume: bool, back: int) -> None:
        """A fresh socket, or one resuming with ``?v=`` it really saw (at most the head)."""
        self.names += 1
        since = max(0, self.head - back) if resume else None
        self.clients[self.names] = Client(self.names, since)
        ask = self.feed.join(self.names, since, player=self.names % 2 == 0)
        self.run([ask])

    @precondition(lambda self: any(c.active for c in self.clients.values()))
    @rule(pick=st.integers(0, 1000))
    def a_socket_leaves(self, pick: int) -> None:
        client = self.pick_active(pick)
        client.active = False
        self.feed.leave(client.name)

    @precondition(lambda self: any(c.active and c.synced for c in self.clients.values()))
    @rule(pick=st.integers(0, 1000))
    def a_socket_asks_for_a_sync(self, pick: int) -> None:
        synced = [c for c in self.clients.values() if c.active and c.synced]
        self.run(self.feed.ask_sync(synced[pick % len(synced)].name))

    def pick_active(self, pick: int) -> Client:
        active = [c for c in self.clients.values() if c.active]
        return active[pick % len(active)]

    # --- carrying out actions, checking every frame ----------------------------------------

    def run(self, actions: Sequence[Any]) -> None:
        for action in actions:
            if isinstance(action, Deliver):
                assert action.targets, "an empty delivery"
                assert len(set(action.targets)) == len(action.targets), "sent twice at once"
                for name in action.targets:
                    self.got_event(self.clients[name], action.v, action.data)
            elif isinstance(action, SendState):
                self.got_state(self.clients[action.target], action.v, action.forced)
            elif isinstance(action, Fetch):
                self.requests.append(Request(action.since))
            elif isinstance(action, Ask):
                self.requests.append(Request(action.since, action.target, action.ticket))
            elif isinstance(action, Close):
                client = self.clients[action.target]
                assert not client.synced, "a synced socket closed"
                client.active = False
                self.feed.leave(client.name)  # as the glue does when its socket ends

    def got_event(self, client: Client, v: int, frame: bytes) -> None:
        assert client.active, "an event for a socket that left"
        assert v_of(frame) == v, "an event carries another v"
        assert client.last is not None, f"event v{v} before any state or v"
        assert v == client.last + 1, f"event v{v} after v{client.last}: a gap or a duplicate"
        client.last = v
        client.synced = True

    def got_state(self, client: Client, v: int, forced: bool) -> None:
        assert client.active, "a state for a socket that left"
        if client.last is not None and not self.went_back:
            assert v >= client.last, f"a sync at v{v} after v{client.last}: went back"
            assert forced or v > client.last, f"a sync repeats v{v}"
        client.last = v
        client.synced = True

    @invariant()
    def the_room_never_runs_ahead_of_the_broker(self) -> None:
        if not self.went_back and self.feed.last_v is not None:
            assert self.feed.last_v <= self.head

    # --- and, with a quiet network, everyone catches up ---------------------------------

    def settle(self, steps: int = 5000) -> bool:
        """Answer, then deliver, in order, for at most ``steps``; True once all is quiet."""
        for _ in range(steps):
            if self.answers:
                request, answer = self.answers.pop(0)
                self.deliver_answer(request, answer)
            elif self.requests:
                request = self.requests.pop(0)
                self.answers.append((request, self.broker_answer(request.since)))
            elif self.bus:
                v, frame = self.bus.pop(0)
                self.run(self.feed.on_event(v, frame))
            else:
                return True
        return False

    def teardown(self) -> None:
        if not hasattr(self, "feed"):
            return
        assert self.settle(), "the feed kept asking on a quiet network"
        self.run(self.feed.on_head(self.head))
        self.broker_moves(1)  # the next event wakes any socket left behind by a failure
        assert self.settle(), "the feed kept asking on a quiet network"
        if self.went_back:
            return
        for client in self.clients.values():
            if client.active:
                assert client.last == self.head, f"socket {client.name} stuck at v{client.last}"


class RewindingMachine(DeliveryMachine):
    """The same, with a broker that may go back (``--fsync never`` and a power loss)."""

    MAY_GO_BACK = True


SETTINGS = settings(
    max_examples=500,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDelivery = DeliveryMachine.TestCase
TestDelivery.settings = SETTINGS
TestDeliveryWithRewinds = RewindingMachine.TestCase
TestDeliveryWithRewinds.settings = SETTINGS
