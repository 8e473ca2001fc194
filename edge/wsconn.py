"""The edge's WebSocket connection: websockets' own, minus one reference cycle per socket.

websockets' sans-I/O ``Protocol`` parses incoming bytes with a generator it keeps in
``protocol.parser``; once a connection has ended, that generator (``discard()``)
stays suspended at its last ``yield`` for good, and its frame references the
protocol.  Protocol -> generator -> frame -> protocol is a reference cycle, so
every closed connection's protocol, reader, logger adapter, close frame and
buffers (~11 tracked objects, ~20 allocated blocks) wait for the cyclic garbage
collector instead of being freed when the last reference goes.

Without ``xlmate/gcfreeze.py`` that costs a little collector work.  With it, it
is a leak: the freezer froze those objects while the socket was open, and a
frozen object is never collected, so they stayed until the next thaw
(BENCHMARKS.md, "The GC freezer's leak").

A connection that ends without a closing handshake (the client's TCP connection
just goes) makes a second cycle: the parser stores the ``EOFError`` it hit in
``protocol.parser_exc``, whose traceback holds the parser's frame, whose locals
hold the protocol (~13 objects per socket).

``EdgeConnection.connection_lost`` breaks both once websockets has fed the
protocol its end of stream: the protocol is then CLOSED and its reader at EOF,
after which websockets never steps the parser again (``receive_data`` and
``receive_eof`` stop at the reader).  It closes the generator and clears the
locals of the frames in ``parser_exc``'s traceback (``traceback.clear_frames``:
the exception and where it was raised stay).  That changes no behaviour; it only
ends the references that closed the cycles, and reference counting frees the rest.
"""

from __future__ import annotations

import traceback

from websockets.asyncio.server import ServerConnection
from websockets.protocol import Protocol, State


def release_parser(protocol: Protocol) -> None:
    """End ``protocol``'s parser and its error's frames if the connection is over (else
    leave it alone)."""
    if protocol.state is State.CLOSED and protocol.reader.eof:
        protocol.parser.close()
        if protocol.parser_exc is not None:
            traceback.clear_frames(protocol.parser_exc.__traceback__)


class EdgeConnection(ServerConnection):
    """``ServerConnection`` that breaks the protocol's parser cycle when the TCP
    connection is lost (module docstring); ``serve(create_connection=...)``."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        release_parser(self.protocol)
