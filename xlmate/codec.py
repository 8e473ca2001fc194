"""One codec for every internal format: frozen dataclasses <-> msgpack maps.

The bus (``xlmate.wire``), discovery's heartbeats (``xlmate.heartbeat``) and
the broker's journal (``xlmate.broker.records``) all follow the same rules,
written down once here and in docs/protocol.md ("Internal formats"):

1. A message is a frozen dataclass with named attributes, validated when
   built (``__post_init__`` raises ``WireError``).  Code reads attributes
   (``event.game_id``), never wire keys.
2. On the wire it is one msgpack map.  ``"k"`` names its kind (``KIND``); every
   other key is a field.  ``KEYS`` is the message's one table from attribute
   to wire key (``{"game_id": "g"}``); an attribute it does not list travels
   under its own name.  Short keys exist only on the wire.  (The journal alone
   names the kind ``"t"``, as it always has: its bytes outlive processes, and
   an older broker must replay what a newer one wrote if a deploy is rolled
   back.)
3. A field whose value is a small named type (``NESTED``, e.g. an ack
   reference) is converted by that type's ``to_wire`` / ``from_wire``.
4. Decoding: a frame that is not a map, a kind this version does not know, a
   missing required field or a bad value raises ``WireError``.  **Keys this
   version does not know are ignored**: a newer peer (or a newer broker's
   journal) may add optional fields without breaking an older reader, which
   is what lets a cluster be upgraded one process at a time.

A ``Codec`` is one family of messages (one socket pair, or the journal).  It
builds a ``_Spec`` per class once, at import, holding the class's two
conversion functions written out for its fields, so encoding or decoding a
message costs one dict display or one constructor call and no dataclass
reflection: the broker encodes and decodes several messages per move.

    Message            base of every message class (KIND, KEYS, NESTED)
    Nested             protocol of a named value type carried in a field
    Codec              encode / decode / unpack / from_map for one family
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, fields
from typing import Any, ClassVar, Final, Protocol, TypeVar, cast

import msgpack

from xlmate.errors import WireError

KIND_KEY: Final = "k"

M = TypeVar("M", bound="Message")


class Nested(Protocol):
    """A small named value type carried in one field (e.g. ``wire.AckRef``)."""

    def to_wire(self) -> Any:
        """The msgpack value written for it."""
        ...

    @classmethod
    def from_wire(cls, raw: Any) -> Any:
        """The value rebuilt from ``raw``; ``WireError`` if ``raw`` is not one."""
        ...


class Message:
    """Base of every internal message: see the module docstring for the rules."""

    __slots__ = ()
    KIND: ClassVar[str]
    KEYS: ClassVar[Mapping[str, str]] = {}
    NESTED: ClassVar[Mapping[str, type[Nested]]] = {}


class _Spec:
    """What encoding and decoding one message class needs, computed once.

    Like ``dataclasses`` itself, it writes the two functions of its class as
    Python source once (``to_map`` and ``from_map``, kept in ``source`` for
    debugging): the per-message cost is then one dict display and one call,
    as cheap as the hand-written maps this replaced.
    """

    __slots__ = ("attrs", "cls", "from_map", "keys", "kind", "source", "to_map")

    def __init__(self, cls: type[Message], kind_key: str) -> None:
        self.cls = cls
        self.kind = cls.KIND
        declared = fields(cast(Any, cls))
        names = [f.name for f in declared]
        unknown = (set(cls.KEYS) | set(cls.NESTED)) - set(names)
        if unknown:
            raise TypeError(f"{cls.__name__}: KEYS/NESTED name no field: {sorted(unknown)}")
        self.attrs = tuple(names)
        self.keys = tuple(cls.KEYS.get(name, name) for name in names)
        if len(set(self.keys)) != len(self.keys) or kind_key in self.keys:
            raise TypeError(f"{cls.__name__}: two fields share a wire key")
        env: dict[str, Any] = {"cls": cls}
        put, get = [f"{kind_key!r}: {self.kind!r}"], []
        for n, (f, key) in enumerate(zip(declared, self.keys, strict=True)):
            nested = cls.NESTED.get(f.name)
            value = f"m.{f.name}"
            if nested is not None:
                env[f"nested{n}"] = nested
                value = f"(None if m.{f.name} is None else m.{f.name}.to_wire())"
            put.append(f"{key!r}: {value}")
            if f.default is not MISSING:
                env[f"default{n}"] = f.default
                raw = f"raw.get({key!r}, default{n})"
            elif f.default_factory is not MISSING:
                raise TypeError(f"{cls.__name__}.{f.name}: use a default, not a factory")
            else:
                raw = f"raw[{key!r}]"
            if nested is not None:
                get.append(f"(None if (x{n} := {raw}) is None else nested{n}.from_wire(x{n}))")
            else:
                get.append(raw)
        self.source = (
            f"def to_map(m):\n    return {{{', '.join(put)}}}\n"
            f"def from_map(raw):\n    return cls({', '.join(get)})\n"
        )
        exec(compile(self.source, f"<codec {cls.__name__}>", "exec"), env)
        self.to_map: Callable[[Message], dict[str, Any]] = env["to_map"]
        self.from_map: Callable[[dict[str, Any]], Message] = env["from_map"]


class Codec:
    """One family of messages: which kinds exist, and the frame size limit."""

    def __init__(
        self,
        classes: Iterable[type[Message]],
        *,
        max_frame: int,
        kind_key: str = KIND_KEY,
        legacy_kind_key: str | None = None,
    ) -> None:
        """``kind_key`` names the kind (``k``, but the journal keeps its ``t``);
        ``legacy_kind_key`` is a key older writers named it with, still read."""
        specs = [_Spec(cls, kind_key) for cls in classes]
        self.kind_key = kind_key
        self.max_frame = max_frame
        self.legacy_kind_key = legacy_kind_key
        self.kinds: dict[str, _Spec] = {spec.kind: spec for spec in specs}
        self.classes: dict[type[Message], _Spec] = {spec.cls: spec for spec in specs}
        if len(self.kinds) != len(specs):
            raise TypeError("two message classes share a kind")

    def to_map(self, message: Message) -> dict[str, Any]:
        """The wire map of ``message`` (wire keys, nested values converted)."""
        return self.classes[type(message)].to_map(message)

    def encode(self, message: Message) -> bytes:
        """msgpack bytes of one message."""
        data: bytes = msgpack.packb(self.to_map(message), use_bin_type=True)
        return data

    def decode(self, data: bytes, *, default_kind: str | None = None) -> Any:
        """The message in ``data``; ``WireError`` for anything that is not one.

        ``default_kind`` is the kind of a map that names none (a peer older
        than the kind key).
        """
        return self.from_map(self.unpack(data), default_kind=default_kind)

    def unpack(self, data: bytes) -> Any:
        """The msgpack value in one frame, not yet checked as a message (``decode``'s first half).

        ``WireError`` for what is not bytes, is over ``max_frame`` or is not msgpack.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise WireError("a frame must be bytes")
        if len(data) > self.max_frame:
            raise WireError(f"frame too large ({len(data)} bytes, limit {self.max_frame})")
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types: convert them all
            raise WireError(f"not msgpack: {type(exc).__name__}") from exc

    def from_map(self, raw: Any, *, default_kind: str | None = None) -> Any:
        """The message in an already unpacked map; ``WireError`` if it is not one."""
        if not isinstance(raw, dict):
            raise WireError("a message must be a map")
        kind = raw.get(self.kind_key)
        if kind is None and self.legacy_kind_key is not None:
            kind = raw.get(self.legacy_kind_key)
        if kind is None:
            kind = default_kind
        spec = self.kinds.get(kind) if isinstance(kind, str) else None
        if spec is None:
            raise WireError(f"unknown message kind {str(kind)[:32]!r}")
        try:
            return spec.from_map(raw)
        except KeyError as exc:
            raise WireError(f"{kind} without {exc.args[0]}") from exc
        except WireError:
            raise
        except (TypeError, ValueError) as exc:  # a validator tripped on a foreign type
            raise WireError(f"bad {kind}: {exc}") from exc

    def decode_as(self, data: bytes, expected: type[M]) -> M:
        """Decode and insist on one message class."""
        message = self.decode(data)
        if not isinstance(message, expected):
            raise WireError(f"expected {expected.KIND}, got {type(message).KIND}")
        return message
