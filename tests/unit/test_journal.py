"""Journal records: typed, framed, and still readable when written by older brokers.

``data/journal-before-typed-records.log`` was written by the broker code of
main before records became typed (plain dicts packed as they were): a live
game with draw and takeback offers, a game lost on time (``tick``) and a
resigned game, each finished one followed by its ``end`` record.  Next to it,
``.json`` holds what that code answered for the live game afterwards.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xlmate.broker.archive import Archive
from xlmate.broker.authority import Authority
from xlmate.broker.journal import HEADER, Journal, pack_record, read_records
from xlmate.broker.records import (
    RECORDS,
    CommandApplied,
    GameCreated,
    GameEnded,
    Record,
    SeatTaken,
    TimePassed,
    record_from_map,
)
from xlmate.errors import WireError
from xlmate.wire import FetchRequest, StateReply

DATA = Path(__file__).parent / "data"
LEGACY = DATA / "journal-before-typed-records.log"

SAMPLES: list[Record] = [
    GameCreated(game_id="g1", clock=[300_000, 2_000], ms=1),
    SeatTaken(game_id="g1", seat="black", player_id="bob"),
    CommandApplied(
        game_id="g1", seat="white", command_id="c1", command={"t": "move", "u": "e2e4"}, ms=2, v=1
    ),
    TimePassed(game_id="g1", ms=3),
    GameEnded(game_id="g1"),
]


def frame(body: Any) -> bytes:
    """One record framed as every version of the journal frames it."""
    data = msgpack.packb(body, use_bin_type=True)
    return HEADER.pack(len(data), zlib.crc32(data)) + data


def test_a_journal_written_before_typed_records_replays_to_the_same_games(tmp_path: Path) -> None:
    """main's old journal decodes to typed records and rebuilds the live game exactly."""
    expected = json.loads(LEGACY.with_suffix(".json").read_text())
    records, end, problem = read_records(LEGACY)
    assert problem is None and end == LEGACY.stat().st_size
    assert [r.KIND for r in records] == (
        ["create", "seat", "seat"]
        + ["cmd"] * 10
        + ["create", "cmd", "cmd", "tick", "end"]
        + ["create", "seat", "cmd", "cmd", "end"]
    )
    assert records[1] == SeatTaken(game_id="live", seat="white", player_id="alice")
    authority = Authority(Archive(tmp_path / "archive"))
    authority.replay(records)
    assert sorted(authority.games) == expected["live_games"]
    reply = authority.fetch(
        FetchRequest(request_id=1, game_id="live", since=None), expected["now_ms"]
    )
    assert isinstance(reply, StateReply)
    assert json.loads(json.dumps(reply.sync)) == expected["sync"]
    history = [data.decode() for _, data in authority.games["live"].history]
    assert history == expected["events"]


def test_typed_records_write_the_same_bytes_as_before(tmp_path: Path) -> None:
    """Rewriting the old journal from typed records gives it back byte for byte (rollback-safe)."""
    records, _, _ = read_records(LEGACY)
    journal = Journal(tmp_path)
    journal.rewrite(records)
    journal.close()
    assert journal.path.read_bytes() == LEGACY.read_bytes()


def test_every_record_kind_round_trips_through_the_journal(tmp_path: Path) -> None:
    """Appended typed records come back equal, in order, with every kind covered."""
    assert {type(r) for r in SAMPLES} == set(RECORDS.classes)
    journal = Journal(tmp_path)
    journal.open()
    journal.append(SAMPLES)
    journal.close()
    assert journal.load() == SAMPLES


def test_an_intact_record_this_version_cannot_read_is_skipped_not_cut(tmp_path: Path) -> None:
    """An unknown kind (a newer broker's), a bad seat or a non-map is skipped, not cut."""
    path = tmp_path / "journal.log"
    path.write_bytes(
        pack_record(SAMPLES[0])
        + frame({"t": "future", "g": "g1", "x": 1})
        + frame({"t": "seat", "g": "g1", "s": "purple", "p": "x"})
        + frame([1, 2, 3])
        + pack_record(SAMPLES[1])
    )
    records, end, problem = read_records(path)
    assert records == SAMPLES[:2] and problem is None and end == path.stat().st_size


def test_unknown_keys_in_a_record_are_ignored() -> None:
    """The one rule of every internal format holds for records too."""
    raw = RECORDS.to_map(SAMPLES[2]) | {"zz": [1, 2], "note": "newer broker"}
    assert record_from_map(raw) == SAMPLES[2]


def test_a_record_with_a_missing_or_bad_field_is_refused() -> None:
    """Every required field is checked: dropping one or giving a wrong type raises WireError."""
    for record in SAMPLES:
        for key in RECORDS.classes[type(record)].keys:
            raw = RECORDS.to_map(record)
            del raw[key]
            with pytest.raises(WireError):
                record_from_map(raw)
            raw[key] = 1.5
            with pytest.raises(WireError):
                record_from_map(raw)


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@given(
    st.sampled_from(["create", "seat", "cmd", "tick", "end", "nope"]),
    st.sampled_from(["t", "k"]),
    st.dictionaries(st.sampled_from(["g", "tc", "ms", "s", "p", "i", "c", "v", "x"]), _values),
)
def test_any_record_map_decodes_or_raises_wire_error(kind: str, key: str, body: Any) -> None:
    """Maps under either kind key, with our keys and any values -> a valid record or WireError."""
    try:
        record = record_from_map({key: kind, **body})
    except WireError:
        return
    assert record_from_map(RECORDS.to_map(record)) == record
