"""The edge's side of discovery: heartbeat over REQ/REP, Lazy-Pirate style.

``DiscoveryClient.run()`` sends ``status()`` every ``interval_ms`` and waits up
to ``timeout_ms`` for the reply.  When no reply comes (discovery down, slow,
restarting, or the request lost with a dying connection) the REQ socket is
stuck, so it is closed with linger 0 and a new one sends the request again at
once (the ZeroMQ guide's Lazy Pirate).  While discovery stays silent each new
attempt waits ``timeout_ms`` plus an exponential back-off with full jitter
(``backoff_ms``), capped at ``max_backoff_ms``.  The request stays queued on the
new socket during that wait and libzmq reconnects every 100 ms, so a
restarted discovery hears from every edge within about one interval of
coming back, however long it was away.

It logs one WARNING when an outage starts and one INFO when it ends, never
raises out of ``run()`` for network trouble, and never blocks the event loop.
``beat_now()`` (e.g. when draining starts) may be called while ``run()`` is
going: both go through one lock.  While discovery answers, ``beat_now()``
waits for the heartbeat in flight (a moment); during an outage it cuts the
long back-off wait short instead of queueing behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import random
from collections.abc import Callable
from typing import Final

import zmq
import zmq.asyncio

from xlmate.curve import KeyPair, make_client
from xlmate.errors import ConfigError, WireError
from xlmate.heartbeat import (
    MAX_INTERVAL_MS,
    MAX_REPLY_FRAME,
    MIN_INTERVAL_MS,
    REQUESTS,
    BrokerHeartbeat,
    Goodbye,
    Heartbeat,
    Reply,
    decode_reply,
    encode_goodbye,
)

log = logging.getLogger("xlmate.edge.discovery")

MAX_REPLY_SIZE: Final = MAX_REPLY_FRAME


def backoff_ms(attempt: int, u: float, *, base_ms: int, max_ms: int) -> float:
    """The wait before retry number ``attempt`` (0, 1, ...): full jitter, pure.

    ``u`` is a uniform random number in [0, 1); the result is
    ``u * min(max_ms, base_ms * 2**attempt)`` ("Exponential Backoff And
    Jitter", AWS architecture blog), so retries of many edges spread out.
    """
    if attempt < 0 or base_ms < 0 or max_ms < 0:
        raise ValueError("attempt, base_ms and max_ms must be >= 0")
    ceiling = float(max_ms) if attempt >= 63 else min(float(max_ms), float(base_ms) * 2**attempt)
    return min(max(u, 0.0), 1.0) * ceiling


class _Outcome(enum.Enum):
    ACCEPTED = "accepted"  # {"ok": true}
    REFUSED = "refused"  # an answer, but not ok (or not one we understand)
    TIMEOUT = "timeout"  # no answer in time: the socket was reset
    INTERRUPTED = "interrupted"  # beat_now(), goodbye() or close() cut the wait short
    SKIPPED = "skipped"  # status() failed: nothing was sent


class DiscoveryClient:
    """Heartbeats one edge's (or broker's) ``status()`` to discovery's REP socket.

    ``status`` is called for every heartbeat; its ``interval_ms`` is replaced by
    this client's own, which is what discovery's eviction must be based on.
    ``on_reply`` (optional) sees every reply discovery sends: the edge reads
    the shard map from it, a broker a refusal that must stop it.
    ``context`` is the edge's and stays open: terminate it after ``wait_closed()``.
    """

    def __init__(
        self,
        endpoint: str,
        status: Callable[[], Heartbeat | BrokerHeartbeat],
        *,
        on_reply: Callable[[Reply], None] | None = None,
        context: zmq.asyncio.Context,
        interval_ms: int = 1000,
        timeout_ms: int = 1000,
        max_backoff_ms: int = 5000,
        rng: random.Random | None = None,
        curve_keys: tuple[KeyPair, bytes] | None = None,
    ) -> None:
        if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
            raise ConfigError(
                f"heartbeat interval must be {MIN_INTERVAL_MS}-{MAX_INTERVAL_MS} ms, "
                f"not {interval_ms}"
            )
        if timeout_ms < 1 or max_backoff_ms < 0:
            raise ConfigError("timeout_ms must be >= 1 and max_backoff_ms >= 0")
        self.endpoint = endpoint
        self._status = status
        self._on_reply = on_reply
        self._ctx = context
        self._interval_ms = interval_ms
        self._timeout_ms = timeout_ms
        self._max_backoff_ms = max_backoff_ms
        self._rng = rng or random.Random()
        self._curve = curve_keys  # (our pair, discovery's public key) or None
        self._sock: zmq.asyncio.Socket | None = None
        self._lock = asyncio.Lock()
        self._preempt = asyncio.Event()  # beat_now() or goodbye() wants the socket
        self._stop = asyncio.Event()  # close() was called
        self._run_done = asyncio.Event()
        self._running = False
        self._leaving = False  # goodbye() was called: no more heartbeats
        self._failures = 0  # consecutive attempts without an answer
        self._last_sent: float | None = None  # loop time of the last answered request
        self._refusal: str | None = None  # the last error discovery answered with
        self.registered = False  # discovery accepted our last heartbeat

    # --- public ----------------------------------------------------------------

    async def run(self) -> None:
        """Heartbeat until ``close()`` (or cancellation); network trouble is logged, not raised."""
        if self._running or self._stop.is_set():
            return
        self._running = True
        loop = asyncio.get_running_loop()
        try:
            while not (self._stop.is_set() or self._leaving):
                if self._failures == 0 and self._last_sent is not None:
                    due = self._last_sent + self._interval_ms / 1000
                    if loop.time() < due:
                        await self._sleep(due - loop.time())
                        continue
                wait_ms = float(self._timeout_ms)
                if self._failures:
                    wait_ms += backoff_ms(
                        self._failures - 1,
                        self._rng.random(),
                        base_ms=self._interval_ms,
                        max_ms=self._max_backoff_ms,
                    )
                started = loop.time()
                async with self._lock:
                    if self._preempt.is_set():
                        outcome = _Outcome.INTERRUPTED  # beat_now() is waiting: let it go first
                    else:
                        # Only a wait in an outage may be cut short by beat_now(): a healthy
                        # discovery answers in a moment, and abandoning a request it is about
                        # to process could let that older status land after the newer one.
                        outcome = await self._beat(wait_ms / 1000, interruptible=self._failures > 0)
                if outcome is _Outcome.INTERRUPTED:
                    async with self._lock:  # queue behind beat_now()
                        pass
                elif outcome is _Outcome.SKIPPED:
                    await self._sleep(self._interval_ms / 1000)
                elif outcome is _Outcome.TIMEOUT:
                    # usually the whole wait went by; if the socket failed fast, finish it
                    await self._sleep(started + wait_ms / 1000 - loop.time())
        finally:
            self._reset_socket()
            self._running = False
            self._run_done.set()

    async def beat_now(self) -> bool:
        """Send a heartbeat at once (e.g. draining began); whether discovery accepted it.

        Waits at most about ``timeout_ms`` (plus a heartbeat already on the wire).
        """
        if self._stop.is_set():
            return False
        self._preempt.set()
        try:
            async with self._lock:
                self._preempt.clear()
                outcome = await self._beat(self._timeout_ms / 1000, interruptible=False)
        finally:
            self._preempt.clear()
        return outcome is _Outcome.ACCEPTED

    async def goodbye(self) -> bool:
        """Stop heartbeating and tell discovery to forget this edge now; whether it answered.

        Best effort, one ``timeout_ms``: without it discovery forgets the edge
        after 3 intervals anyway.  Call ``close()`` afterwards.
        """
        if self._stop.is_set():
            return False
        self._leaving = True
        self._preempt.set()
        try:
            async with self._lock:
                self._preempt.clear()
                try:
                    data = encode_goodbye(Goodbye(self._status().id))
                except Exception:
                    log.exception("cannot build the goodbye")
                    return False
                outcome = await self._exchange(data, self._timeout_ms / 1000, interruptible=False)
        finally:
            self._preempt.clear()
        return outcome is _Outcome.ACCEPTED

    def close(self) -> None:
        """Stop heartbeating; idempotent.  The context stays open (it is the caller's)."""
        self._stop.set()
        if not self._running and not self._lock.locked():
            self._reset_socket()

    async def wait_closed(self) -> None:
        """Return once ``run()`` has stopped and the socket is closed."""
        await self._stop.wait()
        if self._running:
            await self._run_done.wait()
        async with self._lock:
            self._reset_socket()

    # --- internals ---------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on ``close()``."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _beat(self, wait_s: float, *, interruptible: bool) -> _Outcome:
        """Send ``status()`` and record the outcome.  Caller holds the lock."""
        if self._stop.is_set() or self._leaving:
            return _Outcome.INTERRUPTED
        try:
            hb = self._status()
            if hb.interval_ms != self._interval_ms:
                hb = dataclasses.replace(hb, interval_ms=self._interval_ms)
            data = REQUESTS.encode(hb)
        except Exception:  # a bug in the edge's status(): try again next interval
            log.exception("cannot build the heartbeat")
            return _Outcome.SKIPPED
        sent_at = asyncio.get_running_loop().time()
        outcome = await self._exchange(data, wait_s, interruptible=interruptible)
        self._record(outcome, sent_at)
        return outcome

    def _record(self, outcome: _Outcome, sent_at: float) -> None:
        """Book-keeping of one attempt: the schedule, and outage logging."""
        if outcome in (_Outcome.INTERRUPTED, _Outcome.SKIPPED):
            return
        if outcome is _Outcome.TIMEOUT:
            self._failures += 1
            self.registered = False
            if self._failures == 1:
                log.warning(
                    "discovery at %s did not answer within %d ms; retrying with back-off",
                    self.endpoint,
                    self._timeout_ms,
                )
            return
        if self._failures:
            log.info(
                "discovery at %s answers again (after %d attempts without a reply)",
                self.endpoint,
                self._failures,
            )
        self._failures = 0
        self._last_sent = sent_at
        self.registered = outcome is _Outcome.ACCEPTED

    async def _exchange(self, data: bytes, wait_s: float, *, interruptible: bool) -> _Outcome:
        """One request, one reply.  Caller holds the lock.  No reply: reset the socket."""
        try:
            sock = self._socket()
            await sock.send(data, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if self._failures == 0:
                log.warning("cannot send a heartbeat to %s: %s", self.endpoint, exc)
            self._reset_socket()
            return _Outcome.TIMEOUT
        recv = asyncio.ensure_future(sock.recv())
        interrupts = [asyncio.ensure_future(self._stop.wait())]
        if interruptible:
            interrupts.append(asyncio.ensure_future(self._preempt.wait()))
        try:
            await asyncio.wait(
                [recv, *interrupts], timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for fut in interrupts:
                fut.cancel()
            if not recv.done():
                recv.cancel()
                self._reset_socket()  # a request is outstanding: this socket is stuck
        if recv.cancelled():
            if any(fut.done() and not fut.cancelled() for fut in interrupts):
                return _Outcome.INTERRUPTED
            return _Outcome.TIMEOUT
        error = recv.exception()
        if error is not None:
            log.debug("heartbeat receive failed: %s", error)
            self._reset_socket()
            return _Outcome.TIMEOUT
        return self._read_reply(recv.result())

    def _read_reply(self, frame: bytes) -> _Outcome:
        try:
            reply = decode_reply(frame)
        except WireError as exc:
            self._refused(f"an unreadable reply ({exc})")
            return _Outcome.REFUSED
        if self._on_reply is not None:
            try:
                self._on_reply(reply)
            except Exception:  # the owner's bug must not stop the heartbeats
                log.exception("handling discovery's reply failed")
        if reply.ok:
            self._refusal = None
            return _Outcome.ACCEPTED
        self._refused(
            f"{reply.error or 'error'}: {reply.message}"
            if reply.message
            else reply.error or "error"
        )
        return _Outcome.REFUSED

    def _refused(self, why: str) -> None:
        if why != self._refusal:
            log.warning("discovery at %s refused our heartbeat: %s", self.endpoint, why)
        self._refusal = why

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_SIZE)
            if self._curve is not None:
                make_client(sock, *self._curve)
            try:
                sock.connect(self.endpoint)
            except zmq.ZMQError:
                sock.close(linger=0)
                raise
            self._sock = sock
        return self._sock

    def _reset_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
