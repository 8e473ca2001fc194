"""The heartbeat wire format (xlmate.heartbeat) and the client's back-off (pure parts)."""

from __future__ import annotations

import contextlib
import random
import string
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xlmate.edge.discovery_client import backoff_ms
from xlmate.errors import WireError
from xlmate.heartbeat import (
    MAX_FRAME,
    Goodbye,
    Heartbeat,
    Reply,
    decode_heartbeat,
    decode_reply,
    decode_request,
    encode_goodbye,
    encode_heartbeat,
    encode_reply,
)

GOOD: dict[str, Any] = {
    "id": "eu-west-8101",
    "region": "eu-west",
    "url": "wss://edge1.example.org",
    "load": 0.25,
    "connections": 250,
    "capacity": 1000,
    "draining": False,
    "interval_ms": 1000,
}


def frame(**changes: Any) -> bytes:
    """A heartbeat frame with some fields changed (None deletes one)."""
    obj = {"k": "heartbeat", **GOOD, **changes}
    return bytes(msgpack.packb({k: v for k, v in obj.items() if v is not None}))


def test_heartbeat_round_trip() -> None:
    """A heartbeat survives encode -> decode unchanged."""
    hb = Heartbeat(**GOOD)
    assert decode_heartbeat(encode_heartbeat(hb)) == hb
    assert decode_request(encode_heartbeat(hb)) == hb


def test_goodbye_round_trip_and_is_not_a_heartbeat() -> None:
    """A goodbye decodes as a request, but decode_heartbeat refuses it."""
    data = encode_goodbye(Goodbye("edge-1"))
    assert decode_request(data) == Goodbye("edge-1")
    with pytest.raises(WireError):
        decode_heartbeat(data)


def test_reply_round_trip() -> None:
    """Both reply shapes survive encode -> decode."""
    assert decode_reply(encode_reply(Reply(True))) == Reply(True)
    assert decode_reply(encode_reply(Reply(False, "registry_full"))) == Reply(
        False, "registry_full"
    )
    assert msgpack.unpackb(encode_reply(Reply(True))) == {
        "k": "reply",
        "ok": True,
        "error": None,
        "message": None,  # (a refusal's sentence, and the shard map: optional fields)
        "shards": None,
        "lease": None,  # (to a paired broker: its shard's lease)
    }


def test_frames_of_peers_older_than_the_kind_key_are_still_read() -> None:
    """A request naming its kind under ``type`` and a reply with no kind decode as before."""
    legacy = msgpack.packb({"type": "heartbeat", **GOOD})
    assert decode_heartbeat(legacy) == Heartbeat(**GOOD)
    assert decode_request(msgpack.packb({"type": "goodbye", "id": "e1"})) == Goodbye("e1")
    assert decode_reply(msgpack.packb({"ok": True})) == Reply(True)
    assert decode_reply(msgpack.packb({"ok": False, "error": "bad_frame"})) == Reply(
        False, "bad_frame"
    )


def test_a_field_with_a_default_may_be_left_out_and_a_required_one_may_not() -> None:
    """The codec's rule: omitted optional fields take the class default; required ones fail."""
    hb = decode_heartbeat(frame(interval_ms=None, capacity=None))
    assert (hb.interval_ms, hb.capacity) == (1000, 1)
    for required in ("id", "region", "url"):
        with pytest.raises(WireError):
            decode_request(frame(**{required: None}))


def test_integer_load_becomes_float_and_unknown_keys_are_ignored() -> None:
    """load 1 (an int on the wire) is accepted as 1.0; extra keys from newer edges are ignored."""
    hb = decode_heartbeat(frame(load=1, future_field=[1, 2]))
    assert hb.load == 1.0
    assert isinstance(hb.load, float)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", ""),
        ("id", "x" * 65),
        ("id", "has space"),
        ("id", 7),
        ("region", "EU-WEST"),
        ("region", ""),
        ("region", "r" * 33),
        ("region", "eu_west"),
        ("url", "http://edge"),
        ("url", "ws://" + "a" * 252),
        ("url", b"ws://edge"),
        ("load", -0.1),
        ("load", 1.01),
        ("load", float("nan")),
        ("load", float("inf")),
        ("load", True),
        ("load", "0.5"),
        ("connections", -1),
        ("connections", 1.5),
        ("connections", True),
        ("capacity", 0),
        ("capacity", False),
        ("draining", 0),
        ("draining", "yes"),
        ("interval_ms", 99),
        ("interval_ms", 60_001),
        ("interval_ms", 1000.0),
    ],
)
def test_bad_field_is_wire_error(field: str, value: object) -> None:
    """Each out-of-range or wrongly typed field raises WireError, when built and when decoded."""
    with pytest.raises(WireError):
        Heartbeat(**{**GOOD, field: value})
    with pytest.raises(WireError):
        decode_heartbeat(frame(**{field: value}))


def test_edge_values_are_accepted() -> None:
    """The limits themselves are valid: 64-char id, 256-char url, load 0 and 1, 100/60000 ms."""
    Heartbeat(**{**GOOD, "id": "a" * 64, "url": "ws://" + "a" * 251, "load": 0, "interval_ms": 100})
    Heartbeat(**{**GOOD, "id": "A.b:c_d-9", "load": 1.0, "interval_ms": 60_000, "connections": 0})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\xc1",  # a byte msgpack never uses
        msgpack.packb([1, 2, 3]),
        msgpack.packb("heartbeat"),
        msgpack.packb({1: 2}),
        msgpack.packb({"k": "heartbeat"}),
        msgpack.packb({"k": "nope", **GOOD}),
        msgpack.packb({"type": "nope", **GOOD}),
        msgpack.packb({"k": "reply", "ok": True}),  # a reply is not a request
        msgpack.packb(GOOD),  # no kind
        msgpack.packb({"k": "goodbye"}),
        msgpack.packb({"type": "goodbye"}),
        frame(id=None),
        frame(region=None),
        frame() + b"trailing",
        frame(pad="x" * MAX_FRAME),
    ],
)
def test_garbage_is_wire_error(data: bytes) -> None:
    """Frames that are not msgpack, not a map, incomplete, unknown or oversize raise WireError."""
    with pytest.raises(WireError):
        decode_request(data)


def test_reply_garbage_is_wire_error() -> None:
    """A reply without ok, or with a non-boolean ok, raises WireError."""
    for data in (
        b"x",
        msgpack.packb({}),
        msgpack.packb({"ok": 1}),
        msgpack.packb({"ok": False, "error": 5}),
    ):
        with pytest.raises(WireError):
            decode_reply(data)


@given(st.binary(max_size=MAX_FRAME + 64))
def test_random_bytes_only_raise_wire_error(data: bytes) -> None:
    """Any byte string decodes to a request or raises WireError, never anything else."""
    with contextlib.suppress(WireError):
        decode_request(data)


_CHARS = string.ascii_letters + string.digits + "-_.:/ \u00e9\u2603"
_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
_values = st.one_of(
    st.none(),
    st.booleans(),
    _ints,
    st.floats(allow_nan=True),
    st.text(alphabet=_CHARS, max_size=80),
    st.binary(max_size=20),
    st.lists(_ints, max_size=3),
    st.dictionaries(st.text(alphabet=_CHARS, max_size=5), _ints, max_size=3),
)


@given(st.dictionaries(st.sampled_from([*GOOD, "k", "type", "extra"]), _values))
def test_random_maps_only_raise_wire_error(obj: dict[str, Any]) -> None:
    """Maps with our keys and random values decode to a valid request or raise WireError."""
    try:
        request = decode_request(msgpack.packb(obj))
    except WireError:
        return
    assert isinstance(request, Heartbeat | Goodbye)


@given(
    st.fixed_dictionaries(
        {
            "id": st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
            "region": st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True),
            "url": st.from_regex(r"wss?://[a-z0-9.:]{1,200}", fullmatch=True),
            "load": st.floats(min_value=0.0, max_value=1.0),
            "connections": st.integers(min_value=0, max_value=2**40),
            "capacity": st.integers(min_value=1, max_value=2**40),
            "draining": st.booleans(),
            "interval_ms": st.integers(min_value=100, max_value=60_000),
        }
    )
)
def test_every_valid_heartbeat_round_trips(fields: dict[str, Any]) -> None:
    """Every heartbeat that can be built survives encode -> decode and fits in a frame."""
    hb = Heartbeat(**fields)
    data = encode_heartbeat(hb)
    assert len(data) <= MAX_FRAME
    assert decode_heartbeat(data) == hb


# --- back-off (edge.discovery_client.backoff_ms) ----------------------------------------


def test_backoff_bounds_follow_u() -> None:
    """u=0 gives 0, u->1 gives the ceiling min(max, base * 2**attempt)."""
    assert backoff_ms(0, 0.0, base_ms=100, max_ms=5000) == 0.0
    assert backoff_ms(0, 0.999999, base_ms=100, max_ms=5000) == pytest.approx(100, rel=1e-5)
    assert backoff_ms(3, 0.5, base_ms=100, max_ms=5000) == pytest.approx(400)


def test_backoff_ceiling_grows_then_caps() -> None:
    """The ceiling doubles per attempt and stops at max_ms, even for huge attempt numbers."""
    ceilings = [backoff_ms(n, 1.0, base_ms=100, max_ms=5000) for n in range(10)]
    assert ceilings[:6] == [100, 200, 400, 800, 1600, 3200]
    assert ceilings[6:] == [5000] * 4
    assert backoff_ms(10_000, 1.0, base_ms=100, max_ms=5000) == 5000


def test_backoff_full_jitter_with_seeded_random() -> None:
    """With a seeded RNG, delays spread over [0, ceiling] (full jitter), reproducibly."""
    rng = random.Random(42)
    delays = [backoff_ms(4, rng.random(), base_ms=100, max_ms=5000) for _ in range(2000)]
    assert all(0 <= d <= 1600 for d in delays)
    assert min(delays) < 100 and max(delays) > 1500
    assert 700 < sum(delays) / len(delays) < 900  # mean of U(0, 1600) is 800
    again = random.Random(42)
    assert delays[:5] == [backoff_ms(4, again.random(), base_ms=100, max_ms=5000) for _ in range(5)]


def test_backoff_rejects_negative_input() -> None:
    """Negative attempt, base or max are programming errors."""
    with pytest.raises(ValueError):
        backoff_ms(-1, 0.5, base_ms=100, max_ms=1000)
    with pytest.raises(ValueError):
        backoff_ms(0, 0.5, base_ms=-1, max_ms=1000)
