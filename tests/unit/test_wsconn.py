"""The edge's connection breaks websockets' protocol <-> parser cycle once a socket is over."""

from __future__ import annotations

import gc
import struct
import weakref
from collections.abc import Iterator

import pytest
from websockets.protocol import State
from websockets.server import ServerProtocol

from xlmate.edge.wsconn import release_parser

HANDSHAKE = (
    b"GET /v1/games/g/ws HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
CLIENT_CLOSE_1000 = bytes([0x88, 0x82]) + b"\0\0\0\0" + struct.pack("!H", 1000)  # masked


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The cycle collector off: only reference counting frees anything here."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def open_protocol() -> ServerProtocol:
    """A server protocol past its opening handshake (sans I/O, as the edge's connection uses)."""
    protocol = ServerProtocol()
    protocol.receive_data(HANDSHAKE)
    [request] = protocol.events_received()
    protocol.send_response(protocol.accept(request))
    assert protocol.state is State.OPEN
    return protocol


def closed_protocol(handshake: bool) -> ServerProtocol:
    """A protocol whose TCP stream ended, after the client's close frame (1000) or not."""
    protocol = open_protocol()
    if handshake:
        protocol.receive_data(CLIENT_CLOSE_1000)
    protocol.receive_eof()
    assert protocol.state is State.CLOSED
    assert (protocol.parser_exc is None) == handshake  # else the EOFError it hit
    return protocol


@pytest.mark.parametrize("handshake", [True, False], ids=["closed", "aborted"])
def test_a_closed_protocol_is_a_cycle_that_refcounting_alone_cannot_free(
    no_gc: None, handshake: bool
) -> None:
    """websockets as it is (if this fails, upstream broke the cycle and wsconn.py can go)."""
    protocol = closed_protocol(handshake)
    alive = weakref.ref(protocol)
    del protocol
    assert alive() is not None  # protocol -> parser (or its error's traceback) -> protocol
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("handshake", [True, False], ids=["closed", "aborted"])
def test_release_parser_lets_refcounting_free_a_closed_protocol(
    no_gc: None, handshake: bool
) -> None:
    """After release_parser, dropping the last reference frees the protocol at once."""
    protocol = closed_protocol(handshake)
    release_parser(protocol)
    alive = weakref.ref(protocol)
    del protocol
    assert alive() is None


def test_release_parser_leaves_a_live_protocol_working() -> None:
    """On a connection that is not over, release_parser does nothing: frames still parse."""
    protocol = open_protocol()
    release_parser(protocol)
    protocol.receive_data(CLIENT_CLOSE_1000)
    assert protocol.state is State.CLOSING
    protocol.receive_eof()
    assert protocol.state is State.CLOSED
