"""Property tests of the two hostile-input boundaries: client JSON and bus msgpack.

``xlmate.messages.parse_client_message`` takes whatever a WebSocket client
sends; ``xlmate.wire.decode`` takes whatever reaches a ZeroMQ socket.  Each must
turn any input into one of its messages or raise its one error type
(``ProtocolError`` with a documented code, ``WireError``), never anything else,
and what they accept must be what the rest of the system can use.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import MISSING, fields
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from xlmate.constants import BAD_JSON, BAD_MESSAGE, COLORS, UNKNOWN_TYPE
from xlmate.edge.server import _salvage_id
from xlmate.errors import ProtocolError, TokenError, WireError
from xlmate.messages import (
    MAX_ID_LEN,
    Command,
    Draw,
    GameCommand,
    Move,
    Ping,
    Resign,
    SyncRequest,
    Takeback,
    command_from_wire,
    command_to_wire,
    parse_client_message,
)
from xlmate.tokens import mint_seat_token, verify_seat_token
from xlmate.wire import (
    BUS,
    MAX_FRAME,
    AckMsg,
    AckRef,
    BrokerBeat,
    CommandMsg,
    EdgeBeat,
    EventMsg,
    EventsReply,
    FetchRequest,
    HeadMsg,
    MissingReply,
    OpenRequest,
    PgnReply,
    PgnRequest,
    PresenceMsg,
    PresenceReport,
    RejectMsg,
    StateReply,
    decode,
    decode_as,
    encode,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLIENT_CODES = {BAD_JSON, BAD_MESSAGE, UNKNOWN_TYPE}
STRICT_UCI = re.compile(r"[a-h][1-8][a-h][1-8][qrbn]?")
MAX_V = 2**53

# --- strategies: JSON ---------------------------------------------------------------

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([0, -1, 2**53 - 1, 2**53, -(2**53), 2**63, -(2**64), 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=40))
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)
squares = st.builds(lambda f, r: f + r, st.sampled_from("abcdefgh"), st.sampled_from("12345678"))
ucis = st.builds(
    lambda a, b, p: a + b + p, squares, squares, st.sampled_from(["", "q", "r", "b", "n"])
)
# Strings that look almost right: the near misses are where validation bugs hide.
near_strings = st.one_of(
    ucis,
    squares,
    ucis.map(lambda u: u + "\n"),
    squares.map(lambda s: s + "\n"),
    ucis.map(str.upper),
    st.sampled_from(["z9", "i1", "a0", "e2e4qq", "e7e8k", "", " e2e4", "e2e4 ", "e2\x00e4"]),
    st.just("e2e4" * 100),
    st.text(alphabet="abcdefgh12345678qrbnk\n \t", max_size=8),
)
actions = st.sampled_from(["offer", "accept", "decline"])
near_actions = st.one_of(actions, st.sampled_from(["OFFER", "offer\n", "", "yes"]), json_values)
types = st.one_of(
    st.sampled_from(["move", "resign", "draw", "takeback", "sync", "ping"]),
    st.sampled_from(["castle", "MOVE", "move ", "", "x" * 1000]),
    st.text(max_size=12),
    json_values,
)
ids = st.one_of(
    st.text(min_size=1, max_size=MAX_ID_LEN),
    st.integers(min_value=-(MAX_V - 1), max_value=MAX_V - 1),
)
any_ids = st.one_of(ids, json_values, st.text(min_size=MAX_ID_LEN + 1, max_size=100))
# Objects shaped like commands, with each field right, near-right or any JSON at all.
command_like = st.fixed_dictionaries(
    {"type": types},
    optional={
        "id": any_ids,
        "uci": st.one_of(near_strings, json_values),
        "from": st.one_of(near_strings, json_values),
        "to": st.one_of(near_strings, json_values),
        "promotion": st.one_of(
            st.sampled_from(["q", "r", "b", "n", "k", "Q", "", "qq"]), json_values
        ),
        "action": near_actions,
        "extra": json_values,
    },
)


def check_parse(data: str | bytes) -> None:
    """``parse_client_message`` returns a usable message or raises a documented ProtocolError."""
    try:
        message = parse_client_message(data)
    except ProtocolError as exc:
        assert exc.code in CLIENT_CODES, exc.code
        assert isinstance(exc.message, str) and len(exc.message) < 200
        return
    assert isinstance(message, Command | SyncRequest | Ping)
    if isinstance(message, Command):
        cid = message.id
        assert (
            cid is None
            or (isinstance(cid, str) and 0 < len(cid) <= MAX_ID_LEN)
            or (type(cid) is int and -MAX_V < cid < MAX_V)
        ), cid
        body = message.body
        if isinstance(body, Move):
            assert STRICT_UCI.fullmatch(body.uci), f"accepted a malformed move {body.uci!r}"
        # Whatever the edge accepts goes on the bus and must come back the same.
        assert command_from_wire(msgpack.unpackb(msgpack.packb(command_to_wire(body)))) == body


# --- parse_client_message ---------------------------------------------------------------


@FAST
@given(st.text(max_size=300))
@example("")
@example("[" * 100_000)
@example('{"type":' * 30_000)
@example("1" * 5000)
@example('{"type":"move","uci":"e2e4"}' + "x")
@example('{"type":"move","uci":' + "[" * 50_000 + "]" * 50_000 + "}")
@example("NaN")
@example('{"type":"ping","type":"sync"}')
def test_any_text_parses_or_raises_a_documented_protocol_error(text: str) -> None:
    """Arbitrary text (deep nesting, huge numbers, junk) -> a message or ProtocolError only."""
    check_parse(text)


@FAST
@given(st.binary(max_size=300))
@example(b"\xff\xfe")
@example(b'{"type":"ping"}\xff')
@example('{"type":"ping"}'.encode("utf-16"))
@example(b"\x00" * 10)
def test_any_bytes_parse_or_raise_a_documented_protocol_error(data: bytes) -> None:
    """Arbitrary bytes (invalid UTF-8, UTF-16, NULs) -> a message or ProtocolError only."""
    check_parse(data)


@FAST
@given(json_values)
def test_any_json_value_parses_or_raises_a_documented_protocol_error(value: Any) -> None:
    """Any JSON value at all (not only objects) -> a message or ProtocolError only."""
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:  # NaN and Infinity are not JSON (Python writes them anyway): bad_json
        with pytest.raises(ProtocolError) as failure:
            parse_client_message(json.dumps(value))
        assert failure.value.code == BAD_JSON
        return
    check_parse(text)
    if not isinstance(value, dict):
        with pytest.raises(ProtocolError) as failure:
            parse_client_message(json.dumps(value))
        assert failure.value.code == BAD_MESSAGE


@FAST
@given(command_like)
@example({"type": "move", "uci": "e2e4\n"})
@example({"type": "move", "from": "e2", "to": "e4\n"})
@example({"type": "move", "from": "e7", "to": "e8", "promotion": "q\n"})
@example({"type": "move", "uci": "e2e4", "id": True})
@example({"type": "move", "uci": "e2e4", "id": 2**53})
@example({"type": "draw", "action": ["offer"]})
@example({"type": "x" * 1000})
def test_command_shaped_objects_parse_or_raise_a_documented_protocol_error(
    raw: dict[str, Any],
) -> None:
    """Objects with right, near-right and wrong field types -> a valid command or ProtocolError."""
    check_parse(json.dumps(raw))


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("{", BAD_JSON),
        ("", BAD_JSON),
        ("[]", BAD_MESSAGE),
        ('"move"', BAD_MESSAGE),
        ("null", BAD_MESSAGE),
        ('{"type":5}', BAD_MESSAGE),
        ('{"type":"castle"}', UNKNOWN_TYPE),
        ('{"type":"move","uci":"' + "e2e4" * 100 + '"}', BAD_MESSAGE),
        ('{"type":"move","from":"z9","to":"e4"}', BAD_MESSAGE),
        ('{"type":"move","uci":"e2e4\\n"}', BAD_MESSAGE),
        ('{"type":"move","from":"e2","to":"e4\\n"}', BAD_MESSAGE),
        ('{"type":"move","uci":5}', BAD_MESSAGE),
        ('{"type":"draw","action":"maybe"}', BAD_MESSAGE),
        ('{"type":"resign","id":{"a":1}}', BAD_MESSAGE),
        ('{"type":"resign","id":""}', BAD_MESSAGE),
        ('{"type":"resign","id":true}', BAD_MESSAGE),
        ('{"type":"resign","id":9007199254740992}', BAD_MESSAGE),
    ],
)
def test_documented_codes_for_known_bad_inputs(payload: str, code: str) -> None:
    """Each class of bad input gets the error code docs/protocol.md documents for it."""
    with pytest.raises(ProtocolError) as failure:
        parse_client_message(payload)
    assert failure.value.code == code


@FAST
@given(
    st.one_of(
        ucis.map(Move),
        st.just(Resign()),
        actions.map(Draw),
        actions.map(Takeback),
    ),
    st.none() | ids,
)
def test_valid_commands_round_trip_through_json_and_the_bus_form(
    body: GameCommand, command_id: str | int | None
) -> None:
    """A valid command survives client JSON -> parse -> bus map -> msgpack -> command."""
    raw: dict[str, Any] = {"type": type(body).__name__.lower()}
    if isinstance(body, Move):
        raw["uci"] = body.uci
    elif isinstance(body, Draw | Takeback):
        raw["action"] = body.action
    if command_id is not None:
        raw["id"] = command_id
    parsed = parse_client_message(json.dumps(raw))
    assert parsed == Command(body, command_id)
    wire_form = msgpack.unpackb(msgpack.packb(command_to_wire(body), use_bin_type=True))
    assert command_from_wire(wire_form) == body
    if isinstance(body, Move):
        split = {"type": "move", "from": body.uci[:2], "to": body.uci[2:4]}
        if len(body.uci) == 5:
            split["promotion"] = body.uci[4]
        assert parse_client_message(json.dumps(split)) == Command(body, None)


@FAST
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries({"t": types}, optional={"u": near_strings, "a": near_actions}),
    )
)
def test_command_from_wire_takes_anything_and_raises_only_protocol_error(raw: Any) -> None:
    """The broker's rebuild of a bus command raises only ProtocolError, whatever the map holds."""
    try:
        body = command_from_wire(raw)
    except ProtocolError as exc:
        assert exc.code in CLIENT_CODES
        return
    assert command_from_wire(command_to_wire(body)) == body
    if isinstance(body, Move):
        assert STRICT_UCI.fullmatch(body.uci), body.uci


@FAST
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps), command_like.map(json.dumps)))
@example("[" * 100_000)
def test_salvaging_an_id_from_a_bad_frame_never_raises(text: str) -> None:
    """The edge's id salvage for error replies returns None or a sane id, never raises."""
    cid = _salvage_id(text)
    assert cid is None or (type(cid) in (str, int) and len(str(cid)) <= MAX_ID_LEN)


# --- seat tokens: what verifies must be usable on the bus --------------------------------

SECRET = "property-test-secret-0123456789abcdef"
claims = st.fixed_dictionaries(
    {},
    optional={
        "gid": st.one_of(st.text(alphabet=string.ascii_letters + "_-", max_size=70), json_values),
        "color": st.one_of(st.sampled_from(["white", "black", "red", ""]), json_values),
        "sub": st.one_of(st.text(max_size=140), json_values),
        "clock": st.one_of(
            st.fixed_dictionaries({}, optional={"initial": numbers, "increment": numbers}),
            json_values,
        ),
    },
)


@FAST
@given(claims)
@example({"gid": "g1", "color": "white", "sub": ""})
@example({"gid": "g1", "color": "white", "clock": {"initial": 1e-9}})
@example({"gid": "g1", "color": "white", "clock": {"initial": 10**400}})
def test_a_seat_token_that_verifies_can_always_be_opened_on_the_bus(
    payload: dict[str, Any],
) -> None:
    """Any signed claims verify to usable SeatClaims (a valid OpenRequest) or raise TokenError."""
    import jwt

    token = jwt.encode(payload, SECRET, algorithm="HS256")
    try:
        seat = verify_seat_token(token, SECRET)
    except TokenError:
        return
    assert seat.color in COLORS
    clock = (
        [round(seat.clock.initial * 1000), round(seat.clock.increment * 1000)]
        if seat.clock
        else None
    )
    # Exactly what edge.server does with a verified seat: it must not be refused by the bus.
    request = OpenRequest(
        request_id=1, game_id=seat.game_id, seat=seat.color, player_id=seat.player_id, clock=clock
    )
    assert decode(encode(request)) == request


@FAST
@given(st.text(max_size=300))
@example(mint_seat_token("another-secret-0123456789abcdef0123", "g1", "white"))
@example("e30.e30.")
@example("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJnaWQiOiJnMSIsImNvbG9yIjoid2hpdGUifQ.")
def test_any_string_as_a_token_raises_only_token_error(token: str) -> None:
    """Garbage, unsigned (alg none) and foreign-secret tokens raise TokenError and nothing else."""
    with pytest.raises(TokenError):
        verify_seat_token(token, SECRET, "g1")


# --- wire.decode ------------------------------------------------------------------------------

wire_ids = st.text(min_size=1, max_size=128)
versions = st.integers(min_value=0, max_value=MAX_V - 1)
seats = st.sampled_from(COLORS)
msgpack_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
# Values that survive a msgpack round trip unchanged (lists, str keys, no NaN).


def _plain_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)


plain_values = st.recursive(msgpack_scalars, _plain_containers, max_leaves=15)
any_values = st.recursive(
    st.one_of(
        msgpack_scalars,
        st.floats(),
        st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    ),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=6), st.binary(max_size=4)), inner, max_size=4)
    ),
    max_leaves=15,
)

MESSAGES = {
    CommandMsg: st.builds(
        CommandMsg,
        game_id=wire_ids,
        edge_id=wire_ids,
        seat=seats,
        command_id=wire_ids,
        command=st.dictionaries(st.text(max_size=6), plain_values, max_size=4),
    ),
    PresenceReport: st.builds(
        PresenceReport,
        game_id=wire_ids,
        edge_id=wire_ids,
        white=versions,
        black=versions,
        spectators=versions,
    ),
    EdgeBeat: st.builds(EdgeBeat, edge_id=wire_ids),
    EventMsg: st.builds(
        EventMsg,
        game_id=wire_ids,
        v=versions,
        json=st.binary(max_size=200),
        ack=st.none() | st.builds(AckRef, wire_ids, seats, wire_ids),
    ),
    HeadMsg: st.builds(HeadMsg, game_id=wire_ids, v=versions),
    PresenceMsg: st.builds(PresenceMsg, game_id=wire_ids, json=st.binary(max_size=200)),
    AckMsg: st.builds(AckMsg, game_id=wire_ids, seat=seats, command_id=wire_ids, v=versions),
    RejectMsg: st.builds(
        RejectMsg,
        game_id=wire_ids,
        seat=seats,
        command_id=wire_ids,
        code=st.text(),
        message=st.text(),
    ),
    BrokerBeat: st.builds(
        BrokerBeat,
        epoch=wire_ids,
        time_ms=versions,
        role=st.sampled_from(["active", "standby"]),
        term=versions,
    ),
    OpenRequest: st.builds(
        OpenRequest,
        request_id=versions,
        game_id=wire_ids,
        seat=seats,
        player_id=st.none() | wire_ids,
        clock=st.none() | st.lists(versions, min_size=2, max_size=2),
        since=st.none() | versions,
    ),
    FetchRequest: st.builds(
        FetchRequest, request_id=versions, game_id=wire_ids, since=st.none() | versions
    ),
    PgnRequest: st.builds(PgnRequest, request_id=versions, game_id=wire_ids),
    StateReply: st.builds(
        StateReply,
        request_id=versions,
        game_id=wire_ids,
        v=versions,
        sync=st.dictionaries(st.text(max_size=6), plain_values, max_size=4),
    ),
    EventsReply: st.builds(
        EventsReply,
        request_id=versions,
        game_id=wire_ids,
        v=versions,
        events=st.lists(st.binary(max_size=50), max_size=5),
    ),
    MissingReply: st.builds(MissingReply, request_id=versions, game_id=wire_ids),
    PgnReply: st.builds(PgnReply, request_id=versions, game_id=wire_ids, text=st.text()),
}
KINDS = {cls.KIND: cls for cls in BUS.classes}
OPTIONAL_KEYS = ("p", "tc", "since", "a")  # fields that may be nil on the wire


def test_every_bus_message_class_has_a_strategy() -> None:
    """The round-trip property below covers every kind ``decode`` knows."""
    assert set(MESSAGES) == set(BUS.classes)


@FAST
@given(st.one_of(*MESSAGES.values()))
def test_every_bus_message_round_trips_through_encode_and_decode(message: Any) -> None:
    """encode -> decode gives back an equal message of the same class, for every kind."""
    data = encode(message)
    back = decode(data)
    assert type(back) is type(message) and back == message
    assert decode_as(data, type(message)) == message


def test_bus_maps_keep_the_documented_one_letter_keys() -> None:
    """Named attributes travel under the keys docs/protocol.md lists: the bytes did not change."""
    ack = AckRef("edge-1", "black", "c7")
    event = EventMsg(game_id="g1", v=3, json=b"{}", ack=ack)
    assert msgpack.unpackb(encode(event)) == {
        "k": "ev",
        "g": "g1",
        "v": 3,
        "j": b"{}",
        "a": ["edge-1", "black", "c7"],
    }
    command = CommandMsg(
        game_id="g1", edge_id="e1", seat="white", command_id="c1", command={"t": "resign"}
    )
    assert encode(command) == msgpack.packb(
        {"k": "cmd", "g": "g1", "e": "e1", "s": "white", "i": "c1", "c": {"t": "resign"}},
        use_bin_type=True,
    )
    reply = EventsReply(request_id=4, game_id="g1", v=9, events=[b"x"])
    assert msgpack.unpackb(encode(reply)) == {
        "k": "events",
        "q": 4,
        "g": "g1",
        "v": 9,
        "evs": [b"x"],
    }
    beat = BrokerBeat(epoch="abc", time_ms=5)
    assert msgpack.unpackb(encode(beat)) == {
        "k": "hb",
        "ep": "abc",
        "t": 5,
        "ro": "active",
        "tm": 0,
    }
    # A beat from a broker older than pairs (no role, no term) is an active broker in term 0.
    assert decode(msgpack.packb({"k": "hb", "ep": "abc", "t": 5})) == beat
    standby = BrokerBeat(epoch="abc", time_ms=5, role="standby", term=7)
    assert msgpack.unpackb(encode(standby))["ro"] == "standby"
    assert msgpack.unpackb(encode(standby))["tm"] == 7


def check_decode(data: bytes) -> None:
    """``decode`` returns a well-typed message or raises WireError, nothing else."""
    try:
        message = decode(data)
    except WireError:
        return
    assert type(message) in BUS.classes
    # What got through must be what the code behind the boundary can use.
    assert decode(encode(message)) == message
    for f in fields(message):
        value = getattr(message, f.name)
        if f.name in ("game_id", "edge_id", "command_id", "epoch"):
            assert isinstance(value, str) and 0 < len(value) <= 128, (f.name, value)
        elif f.name in ("v", "request_id", "time_ms", "white", "black", "spectators"):
            assert type(value) is int and 0 <= value < MAX_V, (f.name, value)
        elif f.name == "seat":
            assert value in COLORS
        elif f.name == "role":
            assert value in ("active", "standby")
        elif f.name == "term":
            assert type(value) is int and 0 <= value < MAX_V, (f.name, value)
        elif f.name == "json":
            assert isinstance(value, bytes)
        elif f.name in ("sync", "command"):
            assert isinstance(value, dict), (f.name, value)
        elif f.name == "events":
            assert isinstance(value, list) and all(isinstance(e, bytes) for e in value)
        elif f.name in ("text", "code", "message"):
            assert isinstance(value, str)
        elif f.name == "ack":
            assert value is None or (
                isinstance(value, AckRef)
                and value.seat in COLORS
                and all(0 < len(x) <= 128 for x in (value.edge_id, value.command_id))
            )


@FAST
@given(st.binary(max_size=400))
@example(b"")
@example(b"\xc1")
@example(b"\x91" * 100_000)
@example(b"\xdd\xff\xff\xff\xff")
@example(b"\xdf\xff\xff\xff\xff")
@example(b"\xc6\xff\xff\xff\xff")
@example(b"\xd7\xff" + b"\x00" * 8)
def test_any_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    """Arbitrary bytes (truncated, lying lengths, deep nesting) -> a message or WireError only."""
    check_decode(data)


@FAST
@given(any_values)
def test_any_msgpack_value_decodes_or_raises_wire_error(value: Any) -> None:
    """Any msgpack value (ext types, byte keys, huge ints) -> a message or WireError only."""
    check_decode(msgpack.packb(value, use_bin_type=True))


@FAST
@given(
    st.sampled_from(sorted(KINDS)),
    st.data(),
)
def test_maps_with_a_valid_kind_and_wrong_field_types_raise_only_wire_error(
    kind: str, data: st.DataObject
) -> None:
    """A known ``k`` with missing, extra or wrongly typed fields -> a sane message or WireError."""
    keys = BUS.kinds[kind].keys
    raw: dict[Any, Any] = {"k": kind}
    for key in keys:
        if data.draw(st.integers(0, 9), label=f"keep {key}"):
            raw[key] = data.draw(any_values, label=key)
    if data.draw(st.booleans(), label="extra field"):
        raw[data.draw(st.text(max_size=4), label="extra")] = 1
    check_decode(msgpack.packb(raw, use_bin_type=True))


@FAST
@given(st.sampled_from(list(MESSAGES)), st.data())
def test_one_wrong_field_in_a_valid_message_is_refused(cls: type[Any], data: st.DataObject) -> None:
    """A valid message with one field replaced by a value of another type -> WireError."""
    message = data.draw(MESSAGES[cls], label="message")
    raw = BUS.to_map(message)
    key = data.draw(st.sampled_from(BUS.classes[cls].keys), label="field")
    good = raw[key]
    bad = data.draw(any_values.filter(lambda v: not _same_kind(v, good)), label="bad value")
    raw[key] = bad
    packed = msgpack.packb(raw, use_bin_type=True)
    try:
        decoded = decode(packed)
    except WireError:
        return
    # Only an optional field may change kind: to None, or from None to a valid value.
    assert key in OPTIONAL_KEYS, (key, bad)
    assert BUS.to_map(decoded)[key] is None or good is None, (key, bad)


@FAST
@given(st.one_of(*MESSAGES.values()), st.dictionaries(st.text(max_size=6), plain_values))
def test_keys_a_reader_does_not_know_are_ignored(message: Any, extra: dict[str, Any]) -> None:
    """The one rule for unknown keys: a message with extra keys decodes to the same message."""
    raw = BUS.to_map(message)
    raw.update({key: value for key, value in extra.items() if key not in raw})
    assert decode(msgpack.packb(raw, use_bin_type=True)) == message


@FAST
@given(st.one_of(*MESSAGES.values()))
def test_no_message_decodes_without_a_required_field(message: Any) -> None:
    """Dropping any field that has no default from a valid message -> WireError."""
    spec = BUS.classes[type(message)]
    required = [
        key for key, f in zip(spec.keys, fields(message), strict=True) if f.default is MISSING
    ]
    for key in required:
        raw = BUS.to_map(message)
        del raw[key]
        with pytest.raises(WireError):
            decode(msgpack.packb(raw, use_bin_type=True))


def _same_kind(value: Any, good: Any) -> bool:
    if good is None or value is None:
        return value is None and good is None
    return type(value) is type(good)


def test_frames_over_the_bus_limit_are_refused_before_unpacking() -> None:
    """A frame over MAX_FRAME (1 MiB) is a WireError without being unpacked."""
    big = msgpack.packb({"k": "ev", "g": "g", "v": 1, "j": b"x" * MAX_FRAME})
    assert len(big) > MAX_FRAME
    with pytest.raises(WireError, match="too large"):
        decode(big)
    with pytest.raises(WireError):
        decode_as(encode(HeadMsg(game_id="g", v=1)), AckMsg)
