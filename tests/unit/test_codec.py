"""The codec every internal format uses (xlmate/codec.py): its tables and its rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack
import pytest

from xlmate.codec import Codec, Message
from xlmate.errors import WireError


@dataclass(frozen=True, slots=True)
class Point(Message):
    """A test message: one renamed field, one kept name, one optional field."""

    KIND: ClassVar[str] = "pt"
    KEYS: ClassVar = {"label": "l"}
    label: str
    x: int
    note: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not isinstance(self.x, int):
            raise WireError("bad point")


CODEC = Codec((Point,), max_frame=64, legacy_kind_key="type")


def test_attributes_travel_under_their_table_keys_and_come_back() -> None:
    """KEYS renames on the wire only; unlisted attributes keep their names."""
    point = Point("a", 3)
    assert msgpack.unpackb(CODEC.encode(point)) == {"k": "pt", "l": "a", "x": 3, "note": None}
    assert CODEC.decode(CODEC.encode(point)) == point


def test_unknown_keys_are_ignored_and_defaults_fill_omitted_optional_fields() -> None:
    """The one rule: extra keys are ignored; a field with a default may be left out."""
    data = msgpack.packb({"k": "pt", "l": "a", "x": 3, "later": [1, 2]})
    assert CODEC.decode(data) == Point("a", 3, None)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ({"k": "pt", "x": 3}, "without l"),
        ({"k": "pt", "l": "a", "x": "3"}, "bad point"),
        ({"k": "nope", "l": "a", "x": 3}, "unknown message kind"),
        ({"l": "a", "x": 3}, "unknown message kind"),
        ([1, 2], "must be a map"),
    ],
)
def test_what_is_not_a_message_is_a_wire_error(raw: Any, why: str) -> None:
    """Missing required field, bad value, unknown or no kind, not a map -> WireError."""
    with pytest.raises(WireError, match=why):
        CODEC.decode(msgpack.packb(raw))


def test_oversize_and_non_bytes_frames_are_refused_before_unpacking() -> None:
    """max_frame bounds what is unpacked; only bytes-like frames are read."""
    with pytest.raises(WireError, match="too large"):
        CODEC.decode(msgpack.packb({"k": "pt", "l": "a" * 80, "x": 1}))
    with pytest.raises(WireError):
        CODEC.decode("text")  # type: ignore[arg-type]


def test_an_older_kind_key_and_an_implied_kind_are_read() -> None:
    """legacy_kind_key names the kind when k is absent; default_kind when neither is."""
    assert CODEC.decode(msgpack.packb({"type": "pt", "l": "a", "x": 1})) == Point("a", 1)
    assert CODEC.decode(msgpack.packb({"l": "a", "x": 1}), default_kind="pt") == Point("a", 1)


def test_a_table_that_cannot_round_trip_is_refused_at_import() -> None:
    """KEYS naming no field, two fields on one key, or a default factory: TypeError at once."""

    @dataclass(frozen=True, slots=True)
    class Typo(Message):
        KIND: ClassVar[str] = "typo"
        KEYS: ClassVar = {"nmae": "n"}
        name: str

    @dataclass(frozen=True, slots=True)
    class Clash(Message):
        KIND: ClassVar[str] = "clash"
        KEYS: ClassVar = {"a": "x"}
        a: int
        x: int

    @dataclass(frozen=True, slots=True)
    class Factory(Message):
        KIND: ClassVar[str] = "factory"
        items: list[int] = field(default_factory=list)

    for cls in (Typo, Clash, Factory):
        with pytest.raises(TypeError):
            Codec((cls,), max_frame=64)
    with pytest.raises(TypeError):
        Codec((Point, Point), max_frame=64)
