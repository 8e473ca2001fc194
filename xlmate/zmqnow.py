"""ZeroMQ on the event loop without pyzmq's futures: for the broker's per-move I/O.

``zmq.asyncio`` gives every awaited receive a future, a queued event record,
two ``EVENTS`` queries and a done-callback, and every ``send_multipart`` a
type check of each frame and enum arithmetic per frame: tens of microseconds
per call in all, which the broker pays per loop turn and per message
(BENCHMARKS.md, issue 15's broker CPU).  Two plain replacements:

- ``send_now``: a multipart send with the flags combined once;
- ``Readable``: wait until a socket has a message to read, with one reader
  on its file descriptor and one future per wait, then read it with
  non-blocking calls on a plain (shadow) socket.

libzmq's descriptor is edge-triggered: it signals a change of the socket's
state, not "readable", and ``zmq.EVENTS`` both reports the state and clears
the signal.  So ``Readable.wait`` asks ``EVENTS`` before it sleeps (a message
that arrived during the last reads raises no new signal) and the reader asks
it again before it wakes the waiter.
"""

from __future__ import annotations

import asyncio
from typing import Final, cast

import zmq

_MORE: Final = int(zmq.SNDMORE | zmq.NOBLOCK)
_LAST: Final = int(zmq.NOBLOCK)
_POLLIN: Final = int(zmq.POLLIN)
_EVENTS: Final = int(zmq.EVENTS)


def send_now(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """``sock.send_multipart(frames, flags=zmq.NOBLOCK)`` for frames of bytes, cheaper.

    libzmq takes a multipart message whole or not at all: a full queue refuses
    its first frame (``zmq.Again``), as under ``send_multipart``.
    """
    send = sock.send
    for frame in frames[:-1]:
        send(frame, _MORE)
    send(frames[-1], _LAST)


class Readable:
    """Waits for messages on one socket that only its owner reads (see module docstring).

    ``sock`` is a plain socket (``zmq.Socket.shadow`` of an asyncio one is
    fine, as long as nothing awaits a receive on that asyncio socket: its
    wrapper would register its own reader on the same descriptor).  Use
    ``async with``: the reader is removed on the way out, before the socket
    can be closed.
    """

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self._sock = sock
        self._fd = cast(int, sock.getsockopt(zmq.FD))  # (pyzmq types options int | bytes)
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Readable:
        self._loop.add_reader(self._fd, self._signalled)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._loop.remove_reader(self._fd)

    def _signalled(self) -> None:
        ready = self._has_message()  # (asked every time: it clears the signal)
        waiter = self._waiter
        if ready and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _has_message(self) -> bool:
        return bool(cast(int, self._sock.getsockopt(_EVENTS)) & _POLLIN)

    async def wait(self) -> None:
        """Return once a message can be read without blocking."""
        if self._has_message():
            return
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
