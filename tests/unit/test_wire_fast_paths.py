"""The broker's fast paths of the bus codec give what the slow paths give, byte for byte.

``decode_inbound`` (a ``cmd`` as ``CommandFields``), ``encode_event`` (an ``ev``
without ``EventMsg``) and the cached ``Move`` of ``command_from_wire`` exist
only for speed (BENCHMARKS.md, issue 15's broker CPU): each is checked here
against ``decode``, ``encode`` and ``Move`` on valid, hostile and near-miss input.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.unit.test_parsers_properties import FAST, MESSAGES, any_values, plain_values, wire_ids
from xlmate.errors import ProtocolError, WireError
from xlmate.messages import Move, command_from_wire
from xlmate.wire import (
    BUS,
    AckRef,
    CommandFields,
    CommandMsg,
    EventMsg,
    decode,
    decode_inbound,
    encode,
    encode_event,
)

CMD_KEYS = BUS.kinds["cmd"].keys


def same_outcome(data: bytes) -> None:
    """``decode_inbound(data)`` refuses what ``decode`` refuses, else gives the same message."""
    try:
        slow: Any = decode(data)
    except WireError:
        with pytest.raises(WireError):
            decode_inbound(data)
        return
    fast = decode_inbound(data)
    if isinstance(slow, CommandMsg):
        assert type(fast) is CommandFields
        assert fast == CommandFields(
            slow.game_id, slow.edge_id, slow.seat, slow.command_id, slow.command
        )
    else:
        assert type(fast) is type(slow) and fast == slow


@FAST
@given(st.one_of(*MESSAGES.values()))
def test_every_valid_message_decodes_alike(message: Any) -> None:
    """Each kind of bus message: the fast decode gives the slow decode's message or fields."""
    same_outcome(encode(message))


@FAST
@given(st.binary(max_size=300))
@example(b"")
@example(b"\xc1")
def test_any_bytes_are_refused_or_accepted_alike(data: bytes) -> None:
    """Arbitrary bytes: refused by both, or the same message from both."""
    same_outcome(data)


@FAST
@given(st.data())
def test_cmd_maps_with_missing_or_wrong_fields_are_judged_alike(data: st.DataObject) -> None:
    """A ``cmd`` with fields dropped, replaced by any value or left valid: the same verdict."""
    good = BUS.to_map(data.draw(MESSAGES[CommandMsg], label="command"))
    raw: dict[str, Any] = {"k": "cmd"}
    for key in CMD_KEYS:
        choice = data.draw(st.integers(0, 4), label=f"{key}: 0 drop, 1 any value, else keep")
        if choice == 1:
            raw[key] = data.draw(any_values, label=key)
        elif choice > 1:
            raw[key] = good[key]
    if data.draw(st.booleans(), label="extra key"):
        raw[data.draw(st.text(max_size=4), label="extra")] = data.draw(plain_values)
    same_outcome(msgpack.packb(raw, use_bin_type=True))


@pytest.mark.parametrize(
    "raw",
    [
        {"k": "cmd", "g": "", "e": "e", "s": "white", "i": "1", "c": {}},
        {"k": "cmd", "g": "g" * 129, "e": "e", "s": "white", "i": "1", "c": {}},
        {"k": "cmd", "g": "g", "e": "e", "s": "red", "i": "1", "c": {}},
        {"k": "cmd", "g": "g", "e": "e", "s": "white", "i": 1, "c": {}},
        {"k": "cmd", "g": "g", "e": "e", "s": "white", "i": "1", "c": []},
        {"k": "cmd", "g": "g", "e": "e", "s": ["white"], "i": "1", "c": {}},
        {"k": "cmd", "g": "g", "e": "e", "s": "white", "i": "1"},
        {"k": "cmd", "g": "g", "e": "e", "s": "white", "i": "1", "c": {}, "x": 1},
    ],
)
def test_near_miss_commands_are_judged_alike(raw: dict[str, Any]) -> None:
    """Edge cases of each check (empty, too long, wrong seat or type, missing, extra key)."""
    same_outcome(msgpack.packb(raw, use_bin_type=True))


@FAST
@given(
    wire_ids,
    st.integers(0, 2**53 - 1),
    st.binary(max_size=300),
    st.none() | st.builds(AckRef, wire_ids, st.sampled_from(["white", "black"]), wire_ids),
)
def test_encode_event_writes_the_bytes_of_encode(
    game_id: str, v: int, json: bytes, ack: AckRef | None
) -> None:
    """``encode_event`` == ``encode(EventMsg(...))``, with and without an ack, byte for byte."""
    expected = encode(EventMsg(game_id=game_id, v=v, json=json, ack=ack))
    assert encode_event(game_id, v, json, ack) == expected


@given(st.text(max_size=6) | st.from_regex(r"[a-h][1-8][a-h][1-8][qrbn]?\Z") | any_values)
@FAST
def test_cached_moves_are_the_moves_move_would_build(uci: Any) -> None:
    """``command_from_wire`` on a move: the ``Move`` it builds, or its error, every time."""
    raw = {"t": "move", "u": uci}
    try:
        expected = Move(uci)
    except ProtocolError as exc:
        for _ in range(2):  # never cached: refused every time, with the same code
            with pytest.raises(ProtocolError) as caught:
                command_from_wire(raw)
            assert caught.value.code == exc.code
        return
    assert command_from_wire(raw) == expected
    assert command_from_wire(raw) == expected  # (the second comes from the cache)
