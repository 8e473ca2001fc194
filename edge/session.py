"""One client WebSocket: its seat, its bounded outbox, its writer and closer tasks.

The edge never awaits a client inside the fan-out.  ``send`` writes the frame
(shared ``bytes``, encoded once at the broker) straight to the connection
while its transport keeps up; once the transport is backed up (or a write is
in progress) frames go on a bounded queue that a writer task drains with flow
control.  A client that lets that queue fill up is a slow consumer and is
closed with 4008, so it can neither grow memory nor delay anyone.

The queue and the writer task exist only while frames wait: the first frame
that cannot go straight out creates both, and the writer drops both once it
has written the last one.  Almost every socket is idle almost all the time, and
an empty ``asyncio.Queue`` plus a parked writer task cost ~4.5 KiB and ~15
objects the cycle collector walks, per socket (benchmarks/socket_memory.md).

The direct path uses the ``websockets`` Sans-I/O protocol of the connection
(``protocol.send_text``, then writing ``protocol.data_to_send()`` to the
transport), exactly what ``Connection.send`` does inside its send context,
minus one coroutine and one task switch per frame; the project pins
``websockets`` to a major version for that reason.  The bytes are written once
per turn of the event loop (``Flusher``): a mover gets its move event and its
ack in one system call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from xlmate import logs
from xlmate.constants import CLOSE_INTERNAL, CLOSE_POLICY, Color
from xlmate.tokens import SeatClaims

log = logging.getLogger("xlmate.edge")


def dumps(payload: dict[str, Any]) -> bytes:
    """Compact JSON bytes for a client frame (orjson; the standard library for
    what orjson refuses, such as an integer echoed from a client beyond 64 bits)."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return json.dumps(payload, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=8)
def _networks(
    trusted_proxies: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies if "/" in p)


def is_trusted(peer: str, trusted_proxies: tuple[str, ...]) -> bool:
    """Whether ``peer`` is one of the proxies: an exact address or inside a CIDR block
    (on Kubernetes the ingress controller's pod address changes: trust the pod network)."""
    if peer in trusted_proxies:
        return True
    networks = _networks(trusted_proxies)
    if not networks or not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks)


def client_address(ws: ServerConnection, trusted_proxies: tuple[str, ...]) -> str:
    """The client's IP: the peer, or the last X-Forwarded-For hop if the peer is a trusted proxy."""
    peer = str(ws.remote_address[0]) if ws.remote_address else ""
    if is_trusted(peer, trusted_proxies) and ws.request is not None:
        forwarded = ws.request.headers.get("X-Forwarded-For", "")
        hop = forwarded.rsplit(",", 1)[-1].strip()
        if hop:
            return hop[:64]
    return peer


class TokenBucket:
    """A token bucket: ``rate`` tokens a second up to ``burst``; time is an input."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Flusher:
    """Writes what sessions framed during one turn of the event loop, one write each."""

    def __init__(self) -> None:
        self._sessions: list[Session] = []

    def mark(self, session: Session) -> None:
        """``session`` has framed bytes to write at the end of this loop turn."""
        if not self._sessions:
            asyncio.get_running_loop().call_soon(self.flush)
        self._sessions.append(session)

    def flush(self) -> None:
        """Write every marked session's pending frames."""
        sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.flush()


class Session:
    """A connected player or spectator of one game on this edge."""

    __slots__ = (
        "_closer",
        "_flusher",
        "_marked",
        "_writer",
        "_writing",
        "claims",
        "closed",
        "game_id",
        "on_kill",
        "queue",
        "queue_limit",
        "rate",
        "remote",
        "seat",
        "strikes",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        game_id: str,
        seat: Color | None,
        *,
        remote: str,
        queue_limit: int,
        rate: TokenBucket,
        flusher: Flusher,
        on_kill: Callable[[int], None] | None = None,
        claims: SeatClaims | None = None,
    ) -> None:
        self.ws = ws
        self.game_id = game_id
        self.seat = seat
        self.claims = claims  # the seat token's claims (None for a spectator)
        self.queue: deque[bytes] | None = None  # frames waiting for the writer (lazy)
        self.queue_limit = queue_limit
        self.rate = rate
        self.strikes = 0
        self.closed = False
        self._writing = False  # the writer task holds a frame: keep order, queue behind it
        self._flusher = flusher
        self._marked = False  # frames framed by send, written at the end of the loop turn
        self.on_kill = on_kill  # told the close code whenever the edge closes this socket
        self.remote = remote
        # The session owns its two tasks, each made when needed; the connection handler
        # awaits them (wait_closed).  The writer lives only while frames wait.
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    @property
    def you(self) -> str:
        """What ``sync.you`` says for this socket."""
        return self.seat or "spectator"

    def send(self, data: bytes) -> None:
        """Send one text frame now, or queue it; a full queue closes the socket with 4008."""
        if self.closed:
            return
        ws = self.ws
        if (
            self.queue is None
            and not (self._writing or ws.paused)
            and ws.protocol.state is State.OPEN
        ):
            try:
                ws.protocol.send_text(data)
            except Exception:  # the connection went away under us: the reader will see it
                self.closed = True
                return
            if not self._marked:
                self._marked = True
                self._flusher.mark(self)
            return
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        if len(queue) >= self.queue_limit:
            self.kill_for_policy("slow_consumer", "slow consumer")
            return
        queue.append(data)
        if self._writer is None:
            self._writer = asyncio.create_task(
                self._write(queue), name=f"edge.writer {self.game_id}"
            )

    def flush(self) -> None:
        """Write the frames ``send`` framed since the last flush, with one system call."""
        self._marked = False
        ws = self.ws
        chunks = ws.protocol.data_to_send()
        if not chunks:
            return
        try:
            if all(chunks):
                ws.transport.write(b"".join(chunks))
            else:  # an end-of-stream marker (the connection is closing): do as websockets does
                for chunk in chunks:
                    if chunk:
                        ws.transport.write(chunk)
                    elif ws.transport.can_write_eof():
                        ws.transport.write_eof()
                    else:
                        ws.transport.close()
        except Exception:  # the transport went away under us: the reader will see it
            self.closed = True

    def send_json(self, payload: dict[str, Any]) -> None:
        """Queue one JSON message."""
        self.send(dumps(payload))

    def kill_for_policy(self, why: str, reason: str) -> None:
        """Close 4008 a client that breaks a limit (``why``: slow_consumer, flooding), with
        the operator's log line."""
        if not self.closed:
            logs.event(
                log,
                "client_closed",
                f"{reason} on game {self.game_id} ({self.remote}): closing 4008",
                logging.WARNING,
                game=self.game_id,
                seat=self.you,
                remote=self.remote,
                why=why,
                code=CLOSE_POLICY,
            )
        self.kill(CLOSE_POLICY, reason)

    def kill(self, code: int, reason: str) -> None:
        """Close the socket with ``code`` (once), dropping what is queued."""
        if self.closed:
            return
        self.closed = True
        if self.on_kill is not None:
            self.on_kill(code)
        if self.queue is not None:
            self.queue.clear()
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        self._closer = asyncio.create_task(self._close(code, reason), name="edge.close")

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    async def _write(self, queue: deque[bytes]) -> None:
        """Write ``queue`` out with flow control until it is empty, then let both go."""
        ws = self.ws
        try:
            while queue:
                data = queue.popleft()
                self._writing = True
                try:
                    await ws.send(data, text=True)
                finally:
                    self._writing = False
        except ConnectionClosed:
            self.closed = True
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug, not the client: say so, and do not leave the socket mute
            log.exception("writer of game %s failed", self.game_id)
            self.kill(CLOSE_INTERNAL, "internal error")
        finally:
            if self.queue is queue:  # nothing waits any more: the next backlog makes new ones
                self.queue = None
                self._writer = None

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until queued frames are written, before a clean close."""
        if self._writer is not None:  # it ends once the last queued frame is written
            await asyncio.wait({self._writer}, timeout=timeout)

    def stop(self) -> None:
        """The socket is gone: stop the writer."""
        self.closed = True
        if self._writer is not None:
            self._writer.cancel()

    async def wait_closed(self) -> None:
        """Wait for the writer and the close handshake (after ``stop``); log what they raised."""
        tasks = [task for task in (self._writer, self._closer) if task is not None]
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("socket task of game %s failed", self.game_id, exc_info=result)
