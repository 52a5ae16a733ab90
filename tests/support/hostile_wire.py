"""Protobuf wire format written by hand: what a hostile client sends that the library would
never produce (wrong wire types, invalid UTF-8, nesting past the decoder's limit, broken
framing)."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5

_VARINT_TYPES = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM,
}
_FIXED64_TYPES = {FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_DOUBLE}
_FIXED32_TYPES = {FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_FLOAT}

JSON_TYPES = frozenset({"google.protobuf.Value", "google.protobuf.Struct", "google.protobuf.ListValue"})

# Byte sequences that are not UTF-8: a lone continuation byte, an overlong encoding, an
# encoded surrogate, a code point past U+10FFFF, a truncated sequence, 0xFF.
INVALID_UTF8 = (b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"abc\xe2\x82", b"\xff\xfe", b"ok\xc3")


def varint(n: int) -> bytes:
    """Base-128 varint of n (negative numbers as their 64-bit two's complement, like int64)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    return tag(number, LENGTH_DELIMITED) + varint(len(payload)) + payload


def message_type(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    assert field.message_type is not None, field.full_name
    return field.message_type


def is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and message_type(field).GetOptions().map_entry


def natural_wire_type(field: FieldDescriptor) -> int:
    if field.type in _VARINT_TYPES:
        return LENGTH_DELIMITED if field.is_repeated and field.is_packed else VARINT
    if field.type in _FIXED64_TYPES:
        return LENGTH_DELIMITED if field.is_repeated and field.is_packed else FIXED64
    if field.type in _FIXED32_TYPES:
        return LENGTH_DELIMITED if field.is_repeated and field.is_packed else FIXED32
    if field.type == FieldDescriptor.TYPE_GROUP:
        return START_GROUP
    return LENGTH_DELIMITED


def with_wire_type(number: int, wire_type: int, seed: bytes) -> bytes:
    """Field `number` carrying a value of `wire_type` built from `seed`; wire types 6 and 7
    do not exist."""
    if wire_type == VARINT:
        return tag(number, VARINT) + varint(int.from_bytes(seed[:9] or b"\x01", "little"))
    if wire_type == FIXED64:
        return tag(number, FIXED64) + (seed + bytes(8))[:8]
    if wire_type == FIXED32:
        return tag(number, FIXED32) + (seed + bytes(4))[:4]
    if wire_type == LENGTH_DELIMITED:
        return length_delimited(number, seed)
    if wire_type == START_GROUP:
        return tag(number, START_GROUP) + seed[:4] + tag(number, END_GROUP)
    return tag(number, wire_type) + seed


def wrap(path: list[FieldDescriptor], innermost: bytes) -> bytes:
    """`innermost` (the encoded last field of `path`) nested inside the messages the path
    goes through, outermost first."""
    payload = innermost
    for field in reversed(path[:-1]):
        payload = length_delimited(field.number, payload)
    return payload


def field_paths(descriptor: Descriptor, wanted: frozenset[int] | None, max_depth: int = 4) -> list[list[FieldDescriptor]]:
    """Every path of fields (map entries included) from `descriptor` down to a field whose
    type is in `wanted` (None: every field), at most `max_depth` deep."""
    found: list[list[FieldDescriptor]] = []

    def walk(current: Descriptor, path: list[FieldDescriptor]) -> None:
        for field in current.fields:
            here = [*path, field]
            if wanted is None or field.type in wanted:
                found.append(here)
            if field.type == FieldDescriptor.TYPE_MESSAGE and len(here) < max_depth:
                walk(message_type(field), here)

    walk(descriptor, [])
    return found


def json_paths(descriptor: Descriptor, max_depth: int = 4) -> list[list[FieldDescriptor]]:
    """Paths to fields holding free JSON (Value, Struct, ListValue), where nesting is
    unbounded by the contract."""
    return [
        path
        for path in field_paths(descriptor, frozenset({FieldDescriptor.TYPE_MESSAGE}), max_depth)
        if message_type(path[-1]).full_name in JSON_TYPES
        and all(message_type(f).full_name not in JSON_TYPES for f in path[:-1])
    ]


def nested_json(type_name: str, depth: int) -> bytes:
    """The body of a Value / Struct / ListValue nesting `depth` levels of lists and objects."""
    value = length_delimited(3, b"leaf")  # Value.string_value
    for level in range(depth):
        if level % 2:
            value = length_delimited(6, length_delimited(1, value))  # Value.list_value.values
        else:
            entry = length_delimited(1, b"k") + length_delimited(2, value)
            value = length_delimited(5, length_delimited(1, entry))  # Value.struct_value.fields
    if type_name == "google.protobuf.Struct":
        return length_delimited(1, length_delimited(1, b"k") + length_delimited(2, value))
    if type_name == "google.protobuf.ListValue":
        return length_delimited(1, value)
    return value


def nested_unknown_groups(depth: int, number: int = 4999) -> bytes:
    """An unknown field holding groups inside groups: skipped by parsers, but only by recursing."""
    return tag(number, START_GROUP) * depth + tag(number, END_GROUP) * depth


# Framing no encoder produces: field number 0, a field number past 2^29-1, a varint of eleven
# bytes, a length running past the end, an end-group with no start, a lone tag.
BROKEN_FRAMING = (
    b"\x00",
    b"\x02\x00",
    varint((1 << 29) << 3 | 0) + b"\x01",
    b"\x08" + b"\xff" * 10 + b"\x01",
    b"\x0a\xff\xff\xff\xff\x0f",
    b"\x0a\x10abc",
    b"\x0c",
    b"\x08",
    b"\x0b\x08\x01",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
)
