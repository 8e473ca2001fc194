"""The edge's side of the ZeroMQ bus: one PUB, one SUB, one DEALER.

- PUB -> broker XSUB: commands, presence reports, edge beats.
- SUB <- broker XPUB: ``game:<id>`` (reference-counted by the rooms),
  ``edge:<our id>`` and ``ctl``.
- DEALER <-> broker ROUTER: ``open`` / ``fetch`` / ``pgn`` requests, matched
  to replies by request id; a reply that does not come in time raises
  ``BrokerUnavailable``.

Everything received is decoded at this boundary (``WireError`` frames are
dropped and counted) and handed to ``on_message``, except the broker's beat,
which goes to ``on_beat`` when one is given (with shards and pairs each
broker's beat must be told apart: ``edge.shardbus`` runs one ``BusClient`` per
broker).  A client whose broker is not its shard's active one is *fenced*
(``accepting`` False): its beats still go to ``on_beat``, everything else it
receives is dropped and counted (``on_fenced``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any, Final

import zmq
import zmq.asyncio

from xlmate import curve
from xlmate.config import EdgeConfig, tcp
from xlmate.constants import Color
from xlmate.errors import WireError, XLMateError
from xlmate.supervision import Faults, Supervisor
from xlmate.wire import (
    CTL_TOPIC,
    BrokerBeat,
    BusMessage,
    EventMsg,
    EventsReply,
    FetchRequest,
    MissingReply,
    OpenRequest,
    PgnReply,
    PgnRequest,
    StateReply,
    decode,
    edge_topic,
    encode,
    game_topic,
)

log = logging.getLogger("xlmate.edge.bus")

MAX_INBOUND: Final = 8 * 1024 * 1024
MAX_REQUESTS_IN_FLIGHT: Final = 10_000
MAX_DRAIN: Final = 256  # SUB messages handled per wake-up before yielding to the loop
MAX_BODIES: Final = 256  # bus messages published in one ZeroMQ message (see publish)


class BrokerUnavailable(XLMateError):
    """The broker did not answer a request in time."""


Reply = StateReply | EventsReply | MissingReply | PgnReply


class BusClient:
    """The edge's three sockets and the request/reply bookkeeping."""

    def __init__(
        self,
        config: EdgeConfig,
        context: zmq.asyncio.Context,
        on_message: Callable[[bytes, BusMessage], None],
        on_bad_frame: Callable[[], None],
        *,
        address: tuple[str, str, str] | None = None,
        on_beat: Callable[[BrokerBeat], None] | None = None,
        on_fenced: Callable[[], None] | None = None,
    ) -> None:
        """``address`` is the broker's (XSUB, XPUB, catch-up) endpoints, by default
        ``config``'s ``--broker-host`` and ports; ``on_beat`` takes its beats."""
        self.edge_id = config.id
        self._on_beat = on_beat
        self._on_fenced = on_fenced
        self.accepting = True  # False: a broker fenced off (not its shard's active one)
        if address is None:
            host = config.broker_host
            address = (
                tcp(host, config.broker_xsub_port),
                tcp(host, config.broker_xpub_port),
                tcp(host, config.broker_catchup_port),
            )
        xsub, xpub, catchup = address
        self.address = address
        self._on_message = on_message
        self._on_bad_frame = on_bad_frame
        self._request_timeout = config.request_timeout_ms / 1000
        keys: tuple[curve.KeyPair, bytes] | None = None
        if config.curve_dir is not None:
            keys = (
                curve.load_pair(config.curve_dir, "edge"),
                curve.load_public(config.curve_dir, "broker"),
            )

        def secure(sock: zmq.asyncio.Socket) -> zmq.asyncio.Socket:
            if keys is not None:
                curve.make_client(sock, *keys)
            return sock

        self.pub = secure(context.socket(zmq.PUB))
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.pub.setsockopt(zmq.LINGER, 500)
        self.pub.connect(xsub)
        self.sub = secure(context.socket(zmq.SUB))
        self.sub.setsockopt(zmq.RCVHWM, 100_000)
        self.sub.setsockopt(zmq.MAXMSGSIZE, MAX_INBOUND)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(xpub)
        self.sub.setsockopt(zmq.SUBSCRIBE, CTL_TOPIC)
        self.sub.setsockopt(zmq.SUBSCRIBE, edge_topic(self.edge_id))
        self.dealer = secure(context.socket(zmq.DEALER))
        self.dealer.setsockopt(zmq.MAXMSGSIZE, MAX_INBOUND)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.SNDHWM, MAX_REQUESTS_IN_FLIGHT)
        self.dealer.connect(catchup)
        # Plain sockets sharing the same libzmq sockets: non-blocking sends and the
        # draining of already-queued messages need no future per message.
        self._pub_now: zmq.Socket[bytes] = zmq.Socket.shadow(self.pub.underlying)
        self._out: list[bytes] = []  # bodies queued by publish, sent by flush
        self._out_topic = b""
        self._sub_now: zmq.Socket[bytes] = zmq.Socket.shadow(self.sub.underlying)
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._subscriptions: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._faults = Faults()
        self._drop_every = config.drop_events_every
        self._events_seen = 0

    def start(self, owner: Supervisor, faults: Faults | None = None) -> None:
        """Start reading the SUB and DEALER sockets, as loops of ``owner``."""
        self._faults = faults or Faults()
        self._tasks = [
            owner.loop(self._read_sub(), "edge.bus_sub_reader"),
            owner.loop(self._read_dealer(), "edge.bus_dealer_reader"),
        ]

    def close(self) -> None:
        """Close the sockets; idempotent."""
        for task in self._tasks:
            task.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(BrokerUnavailable("edge closing"))
        self._waiting.clear()
        self.flush()
        for sock in (self.pub, self.sub, self.dealer):
            if not sock.closed:
                sock.close(linger=500 if sock is self.pub else 0)

    @property
    def finished(self) -> bool:
        """Closed, and its reader tasks have ended."""
        return self.sub.closed and all(task.done() for task in self._tasks)

    async def wait_closed(self) -> None:
        """Wait for the reader tasks to end."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- publishing ---------------------------------------------------------

    def publish(self, topic: bytes, body: bytes) -> None:
        """Queue ``body`` for PUB; what one turn of the event loop queues goes out as one message.

        A ZeroMQ send that finds the I/O thread asleep wakes it, and on a busy
        machine that wake-up costs more than the rest of the hop: one message
        of several bodies per loop turn (``[topic, body, body, ...]``) pays it
        once.  Never blocks (PUB drops at the high-water mark: callers re-send).
        """
        if (self._out and topic != self._out_topic) or len(self._out) >= MAX_BODIES:
            self.flush()
        if not self._out:
            self._out_topic = topic
            asyncio.get_running_loop().call_soon(self.flush)
        self._out.append(body)

    def flush(self) -> None:
        """Send what ``publish`` queued, now."""
        if not self._out or self.pub.closed:
            return
        frames, self._out = [self._out_topic, *self._out], []
        try:
            self._pub_now.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("PUB high-water mark reached; %d messages dropped", len(frames) - 1)

    # --- subscriptions (reference-counted) -------------------------------------

    def subscribe_once(self, game_id: str) -> None:
        """Subscribe to a game unless already subscribed (``edge.shardbus`` counts itself)."""
        if game_id not in self._subscriptions:
            self.subscribe(game_id)

    def subscribe(self, game_id: str) -> None:
        """Count one more local interest in a game; subscribe on the first."""
        count = self._subscriptions.get(game_id, 0)
        self._subscriptions[game_id] = count + 1
        if count == 0:
            self.sub.setsockopt(zmq.SUBSCRIBE, game_topic(game_id))

    def unsubscribe(self, game_id: str) -> None:
        """Count one less; unsubscribe when the last local interest leaves."""
        count = self._subscriptions.get(game_id, 0) - 1
        if count > 0:
            self._subscriptions[game_id] = count
            return
        self._subscriptions.pop(game_id, None)
        if count == 0 and not self.sub.closed:
            self.sub.setsockopt(zmq.UNSUBSCRIBE, game_topic(game_id))

    @property
    def subscriptions(self) -> int:
        """How many games this edge is subscribed to."""
        return len(self._subscriptions)

    # --- requests -----------------------------------------------------------------

    def fail_requests(self, why: str) -> None:
        """Fail every request in flight with ``BrokerUnavailable(why)`` (their owners retry)."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(BrokerUnavailable(why))

    async def _request(self, build: Callable[[int], Any]) -> Reply:
        if len(self._waiting) >= MAX_REQUESTS_IN_FLIGHT:
            raise BrokerUnavailable("too many requests in flight")
        request_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            try:
                self.dealer.send(encode(build(request_id)), flags=zmq.NOBLOCK)
            except zmq.Again as exc:
                raise BrokerUnavailable("the broker is not connected") from exc
            return await asyncio.wait_for(future, self._request_timeout)
        except TimeoutError as exc:
            raise BrokerUnavailable("the broker did not answer in time") from exc
        finally:
            self._waiting.pop(request_id, None)

    async def open(
        self,
        game_id: str,
        seat: Color,
        player_id: str | None,
        clock: list[int] | None,
        since: int | None,
    ) -> Reply:
        """Use a seat: the broker creates the game if needed and answers its state."""
        return await self._request(
            lambda q: OpenRequest(
                request_id=q,
                game_id=game_id,
                seat=seat,
                player_id=player_id,
                clock=clock,
                since=since,
            )
        )

    async def fetch(self, game_id: str, since: int | None) -> Reply:
        """Events after ``since``, or the full state."""
        return await self._request(
            lambda q: FetchRequest(request_id=q, game_id=game_id, since=since)
        )

    async def pgn(self, game_id: str) -> Reply:
        """The game's PGN."""
        return await self._request(lambda q: PgnRequest(request_id=q, game_id=game_id))

    # --- reading --------------------------------------------------------------------

    async def _read_sub(self) -> None:
        sub, sub_now = self.sub, self._sub_now
        while True:
            self._on_frames(await sub.recv_multipart())
            self._faults.check("edge.bus_sub_reader")
            for _ in range(MAX_DRAIN):  # then what is already queued, without a future each
                try:
                    frames = sub_now.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._on_frames(frames)

    def _on_frames(self, frames: list[bytes]) -> None:
        """Decode one SUB message and hand it on; garbage is counted and dropped."""
        if len(frames) != 2:
            self._on_bad_frame()
            return
        try:
            message = decode(frames[1])
        except WireError:
            self._on_bad_frame()
            return
        if self._drop_every and isinstance(message, EventMsg):
            self._events_seen += 1
            if self._events_seen % self._drop_every == 0:
                return  # fault injection: PUB/SUB may drop any message
        try:
            if self._on_beat is not None and type(message) is BrokerBeat:
                self._on_beat(message)
            elif self.accepting:
                self._on_message(frames[0], message)
            elif self._on_fenced is not None:
                self._on_fenced()
        except Exception:
            log.exception("handling a bus message failed")

    async def _read_dealer(self) -> None:
        dealer = self.dealer
        while True:
            body = await dealer.recv()
            try:
                reply = decode(body)
            except WireError:
                self._on_bad_frame()
                continue
            if not isinstance(reply, Reply):
                self._on_bad_frame()
                continue
            future = self._waiting.get(reply.request_id)
            if future is not None and not future.done():
                future.set_result(reply)
