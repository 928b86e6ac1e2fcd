"""Hypothesis strategies built from protobuf descriptors, for fuzzing the servers.

`Strategies(hints).message(method.input_type)` draws requests of any RPC
(`methods(services)` lists them): each message is generated field by field from its descriptor
(scalars with their edge values, enums with unknown numbers too, nested
messages, repeated fields and maps, occasionally far past any limit), so a field
or an RPC added to a `.proto` is fuzzed without touching the tests. `hints` maps
a field name to values drawn as often as the generic ones (ids that exist,
plausible specs), and every message is also drawn with only its hinted fields set,
so that requests also get past routing and validation into the handlers;
`overrides` to values drawn instead (programs that are safe to run,
since random words can name real ones). Knows protobuf descriptors and
hypothesis; nothing of agenthost beyond what callers pass in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

Hints = Mapping[str, st.SearchStrategy[Any]]

MAX_DEPTH = 4  # nested messages deeper than this are left empty
# Sizes past every bound of common/limits.py (ids, argv and env bytes, stdin, labels).
LONG_TEXTS = ("x" * 64, "y" * 300, "z" * (140 << 10))
EDGE_TEXTS = ("", "\0", "a\0b", "-", ".", "/", "../..", "é", "\U0001f600", " ", "\n")
BIG_BYTES = (b"\0" * (1 << 20) + b"!",)  # just past MAX_STDIN
# How many copies of one element a "huge" repeated field or map gets.
HUGE_COUNTS = (65, 129, 1025, 3000)

_INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Any integer of the range, with its edges and small values drawn often."""
    candidates = (low, low + 1, -1, 0, 1, 2, 3, 64, 65, 128, 129, 1000, 1024, 65535, 65536)
    edges = sorted({v for v in (*candidates, high - 1, high) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def texts() -> st.SearchStrategy[str]:
    """Short text of any characters, edge cases (NUL, separators) and overlong text."""
    return st.one_of(
        st.text(max_size=12),
        st.sampled_from(EDGE_TEXTS),
        st.sampled_from(LONG_TEXTS),
        st.from_regex(r"[a-z][a-z0-9_.-]{0,70}", fullmatch=True),
    )


def binaries() -> st.SearchStrategy[bytes]:
    """Short bytes, and bytes past the largest bound."""
    return st.one_of(st.binary(max_size=64), st.sampled_from(BIG_BYTES))


def doubles(width: int = 64) -> st.SearchStrategy[float]:
    """Any float: NaN, the infinities, negatives, huge values, and small seconds."""
    return st.one_of(
        st.sampled_from([0.0, 0.01, 0.5, 1.0, -1.0, float("nan"), float("inf"), float("-inf")]),
        st.floats(width=width),
    )


@dataclass(frozen=True)
class Strategies:
    """Strategies for the fields of messages, with per-field-name hints and overrides."""

    # Drawn as often as the generic values, and instead of them.
    hints: Hints = dataclasses.field(default_factory=dict)
    overrides: Hints = dataclasses.field(default_factory=dict)

    def message(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        """Messages of descriptor's type with any subset of their fields set."""
        cls = GetMessageClass(descriptor)
        if depth > MAX_DEPTH:
            return st.just(cls())
        fields = {f.name: self.field_values(f, depth) for f in descriptor.fields}
        anything = st.fixed_dictionaries({}, optional=fields).map(
            lambda values: _build(cls, descriptor, values)
        )
        plausible = self.plausible(descriptor)
        return anything if plausible is None else st.one_of(anything, plausible)

    def plausible(self, descriptor: Descriptor) -> st.SearchStrategy[Message] | None:
        """Messages with every hinted (or overridden) field set from its hint alone and
        nothing else: requests that get past routing and validation into the handlers,
        which random fields alone seldom do. None when no field of descriptor has one."""
        cls = GetMessageClass(descriptor)
        fields: dict[str, st.SearchStrategy[Any]] = {}
        for f in descriptor.fields:
            chosen = self.overrides.get(f.name)
            if chosen is None:
                chosen = self.hint(f)
            if chosen is not None:
                fields[f.name] = chosen
        if not fields:
            return None
        return st.fixed_dictionaries(fields).map(lambda values: _build(cls, descriptor, values))

    def field_values(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        """Values of one field: its override's; else generic ones for its type, and as
        often its hint's."""
        override = self.overrides.get(field.name)
        if override is not None:
            return override
        generic = self.generic(field, depth)
        hint = self.hint(field)
        return generic if hint is None else st.one_of(hint, generic)

    def hint(self, field: FieldDescriptor) -> st.SearchStrategy[Any] | None:
        """The field's hint: by "Message.field" first, else by its name alone."""
        qualified = self.hints.get(f"{field.containing_type.name}.{field.name}")
        return qualified if qualified is not None else self.hints.get(field.name)

    def generic(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        """Any value of the field's type: its edges, random ones, and huge collections."""
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            key = self.single(key_field, depth + 1)
            value = self.single(field.message_type.fields_by_name["value"], depth + 1)
            string_keys = key_field.type == FieldDescriptor.TYPE_STRING
            small = self.small(field.message_type.fields_by_name["value"])
            generic: st.SearchStrategy[Any] = st.one_of(
                st.dictionaries(key, value, max_size=4),
                st.tuples(st.sampled_from(HUGE_COUNTS), small).map(
                    lambda nv: {(f"k{i}" if string_keys else i): nv[1] for i in range(nv[0])}
                ),
            )
        elif field.is_repeated:
            generic = st.one_of(
                st.lists(self.single(field, depth + 1), max_size=4),
                st.tuples(st.sampled_from(HUGE_COUNTS), self.small(field)).map(
                    lambda nv: [nv[1]] * nv[0]
                ),
            )
        else:
            generic = self.single(field, depth + 1)
        return generic

    def small(self, field: FieldDescriptor) -> st.SearchStrategy[Any]:
        """A small value of the field's element type: what a huge repeated field or map
        holds many copies of (a count past a limit, never megabytes times thousands)."""
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return st.just(GetMessageClass(field.message_type)())
        if kind == FieldDescriptor.TYPE_STRING:
            return st.sampled_from(["", "a", "p0", "sleep"])
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.just(b"x")
        return self.single(field, MAX_DEPTH)

    def single(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        """One value of the field's element type."""
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return self.message(field.message_type, depth)
        if kind == FieldDescriptor.TYPE_ENUM:
            known = [v.number for v in field.enum_type.values]
            return st.one_of(st.sampled_from(known), integers(-(2**31), 2**31 - 1))
        if kind == FieldDescriptor.TYPE_STRING:
            return texts()
        if kind == FieldDescriptor.TYPE_BYTES:
            return binaries()
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind == FieldDescriptor.TYPE_DOUBLE:
            return doubles(64)
        if kind == FieldDescriptor.TYPE_FLOAT:
            return doubles(32)
        if kind in _INT_RANGES:
            return integers(*_INT_RANGES[kind])
        raise NotImplementedError(f"no strategy for field {field.full_name} of type {kind}")


def _build(cls: Callable[[], Message], descriptor: Descriptor, values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for k, v in value.items():
                    getattr(message, name)[k].CopyFrom(v)
            else:
                getattr(message, name).update(value)
        elif field.is_repeated:
            getattr(message, name).extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def methods(
    services: Sequence[ServiceDescriptor], skip: Sequence[str] = ()
) -> list[MethodDescriptor]:
    """Every RPC of services but those whose full name is in skip."""
    return [m for s in services for m in s.methods if m.full_name not in skip]
