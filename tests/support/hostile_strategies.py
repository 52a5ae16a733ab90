"""Hypothesis strategies built from a method's input descriptor: a new RPC or field is
covered without touching this file.

A case is a request payload (bytes, sent as they are) and the credentials it is sent with:

- well-typed: a message of the input type with every field drawn from what hurts (ids with
  the right, a wrong or no prefix, real ids of rows that exist, unicode, empty and huge
  strings, integers at their bounds, enums in and out of range, Struct/Value nested deep,
  Duration/Timestamp past their range, NaN, forged page tokens);
- ill-typed: random bytes, truncated messages, wrong wire types, invalid UTF-8 in any string
  field, nesting past the decoder's limit, broken framing, trailing garbage;
- each sent mostly with the credentials the method's auth mode asks for (so it reaches
  validation), sometimes with wrong or no credentials.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import EncodeError, Message
from hypothesis import strategies as st

from tests.support import hostile_wire as wire
from tests.support.hostile_pool import ID_KINDS, IdPool
from tests.support.hostile_stack import Credential, HostileStack
from zenthor.ids import IdKind

S = st.SearchStrategy

# How deep generic messages are filled in; JSON values nest deeper on their own.
MAX_MESSAGE_DEPTH = 4
# Lists nested this deep still build and parse; deeper ones go out as raw bytes.
MAX_BUILT_JSON_DEPTH = 45
# gRPC's default receive limit is 4 MiB.
MAX_PAYLOAD_BYTES = 3 * 1024 * 1024

INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
INTERESTING_INTS = (
    0, 1, -1, 2, 10, 99, 100, 101, 499, 500, 501, 999, 1000, 1001, 10_000, 86_400, 2**15, 2**16,
    2**31 - 1, -(2**31), 2**32 - 1, 2**53 + 1, 99_999_999_999_999, 2**63 - 1, -(2**63), 2**64 - 1,
)
# Durations past what Postgres intervals and Python timedeltas hold, and their edges.
INTERESTING_SECONDS = (0, 1, -1, 59, 60, 3600, 86_400 * 366, 315_576_000_000, -315_576_000_000, 2**63 - 1, -(2**63))
INTERESTING_NANOS = (0, 1, -1, 999_999_999, -999_999_999, 1_000_000_000, 2**31 - 1, -(2**31))

SPECIAL_STRINGS = (
    "", " ", "\t\n", "\x00", "a\x00b", "null", "undefined", "0", "-1", "true", "NaN", "1e309",
    "' OR 1=1 --", "%s%n", "${jndi:x}", "../../etc/passwd", "\u202eevil", "\ufeff", "\u200b",
    "😀" * 3, "é" * 5, "İ", "ß", "\U0010ffff", "+14155550100", "14155550100", "+1", "000000",
    "a@b.c", "boss@example.com", "CHANNEL_WEB", "default", "*", "%", "_", "\\", '"', "{}", "[]",
)
HUGE_LENGTHS = (101, 201, 256, 1_001, 4_097, 10_001, 65_537, 100_001)
TOKEN_KEYS = ("after", "after_key", "position", "r", "c", "rev", "id", "offset", "v")
DEEP_TOKEN_DEPTHS = (10, 100, 500, 1_000)


@dataclass(frozen=True)
class Case:
    """One request as a hostile client sends it."""

    kind: str
    credential: Credential
    payload: bytes

    @property
    def reaches_handler(self) -> bool:
        """Well-typed with the right credentials: the servicer runs, so a rejection must
        leave every row as it was."""
        return self.kind == "well-typed" and self.credential.fits


def message_class(descriptor: Descriptor) -> type[Message]:
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


# --- ids and tokens ---------------------------------------------------------------------

def _normal(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def id_kinds_for(field: FieldDescriptor) -> list[IdKind] | None:
    """The id schemes a string field probably carries, from its name (`conversation_id`,
    `owner_user_id`, `ids`) or, for a bare `id`/`ids`, from its message (`GetAgentRequest`);
    None when the field is not an id; empty when its kind is unknown."""
    match = re.fullmatch(r"(.*?)_?ids?", field.name)
    if match is None:
        return None
    stem = _normal(match.group(1))
    names = {_normal(name): kind for name, kind in ID_KINDS.items()}
    if stem:
        hits = [name for name in names if stem.endswith(name)]
    else:
        assert field.containing_type is not None
        message = _normal(field.containing_type.name)
        hits = [name for name in names if name in message]
    return [names[max(hits, key=len)]] if hits else []


def id_strings(kinds: list[IdKind], pool: IdPool) -> S[str]:
    """Ids of the right kind (fresh and real), of another kind, and malformed ones."""
    every = list(ID_KINDS.values())
    kinds = kinds or every

    def real(prefix: str) -> Callable[[int], str]:
        return lambda i: pool.pick(prefix, i) or f"{prefix}_{uuid.UUID(int=i).hex}"

    right = st.sampled_from(kinds)
    return st.one_of(
        st.builds(lambda k, u: k.format(u), right, st.uuids()),
        st.tuples(right, st.integers(0, 1_000)).map(lambda t: real(t[0].prefix)(t[1])),
        st.tuples(right, st.integers(0, 1_000)).map(lambda t: real(t[0].prefix)(t[1])),
        st.integers(0, 1_000).map(lambda i: pool.pick_any(i) or ""),
        st.builds(lambda k, u: k.format(u), st.sampled_from(every), st.uuids()),
        st.builds(
            lambda k, body: f"{k.prefix}{body}",
            right,
            st.sampled_from(["_", "", "_" + "0" * 31, "_" + "0" * 33, "_" + "G" * 32, "_" + "A" * 32, "_" + "０" * 32,
                             "__" + "0" * 32, "_" + "0" * 32 + "\x00", "_" + uuid.UUID(int=7).hex.upper()]),
        ),
        st.builds(lambda u: u.hex, st.uuids()),
        st.builds(str, st.uuids()),
    )


def _b64(raw: bytes, urlsafe: bool, padded: bool) -> str:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return text if padded else text.rstrip("=")


json_leaves: S[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, 2**64, 2**70, -(2**70), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.uuids().map(lambda u: u.hex),
)
# JSON a client writes as text (page tokens, `*_json` fields) may also hold half a surrogate
# pair: json.dumps writes it as a \u escape that decodes to text no UTF-8 holds (a protobuf
# string could not carry it), so a server storing or sending it must refuse it first.
unpaired_surrogates: S[str] = st.sampled_from(["\ud800", "a\udfffb"])
json_texts: S[str] = st.recursive(
    json_leaves | unpaired_surrogates,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(TOKEN_KEYS) | st.text(max_size=4) | unpaired_surrogates, inner, max_size=3),
    max_leaves=8,
).map(lambda v: json.dumps(v, allow_nan=True))


def forged_tokens(pool: IdPool) -> S[str]:
    """Page tokens and resume positions a client made up: garbage, base64 of JSON of the
    wrong shape or types, integers past 2^63, deep nesting, tokens the services issued."""
    deep = st.one_of(
        st.sampled_from(DEEP_TOKEN_DEPTHS).map(lambda n: "[" * n + "]" * n),
        st.sampled_from(DEEP_TOKEN_DEPTHS).map(lambda n: '{"a":' * n + "1" + "}" * n),
        st.just("[" * 100_000),
    )
    documents = st.one_of(
        json_texts,
        deep,
        st.sampled_from(
            [
                '{"after":5}', '{"after":null}', '{"after":[]}', '{"after":"x"}', '{"after":1e999}',
                '{"after":' + str(2**70) + "}", '{"after_key":5}', '{"after_key":"' + "k" * 2000 + '"}',
                '{"after":"' + uuid.UUID(int=1).hex + '","extra":1}', '{"after":"\\u0000"}', '{"after_key":"\\ud800"}',
                '{"r":' + str(2**70) + ',"c":"x"}', '{"r":-1}', '{"r":1.5}', '"after"', "[[[[", "1" * 1500,
            ]
        ),
    )
    return st.one_of(
        st.builds(lambda doc, urlsafe, padded: _b64(doc.encode(), urlsafe, padded), documents, st.booleans(), st.booleans()),
        st.binary(max_size=40).map(lambda b: _b64(b, True, False)),
        st.text(max_size=30),
        st.sampled_from(["!!!", "====", "%%%", "a", "ab=", "e30", "W10", "bnVsbA", "x" * 3000]),
        st.integers(0, 1_000).map(lambda i: pool.pick_token(i) or ""),
        st.tuples(st.integers(0, 1_000), st.integers(0, 40)).map(lambda t: (pool.pick_token(t[0]) or "abc")[: t[1]]),
    )


# --- scalar values ----------------------------------------------------------------------

plain_text: S[str] = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


def huge_strings() -> S[str]:
    return st.builds(lambda unit, n: (unit * n)[:n], st.sampled_from(["x", "é", "😀", "a b", "\x00"]), st.sampled_from(HUGE_LENGTHS))


def string_values(field: FieldDescriptor, pool: IdPool) -> S[str]:
    general = [plain_text, st.sampled_from(SPECIAL_STRINGS), huge_strings(), forged_tokens(pool)]
    kinds = id_kinds_for(field)
    if kinds is not None:
        ids = id_strings(kinds, pool)
        return st.one_of(ids, ids, ids, *general)
    if re.search(r"token|position|cursor", field.name):
        tokens = forged_tokens(pool)
        return st.one_of(tokens, tokens, tokens, *general)
    if field.name.endswith("_json"):
        return st.one_of(json_texts, json_texts, json_texts, *general)
    return st.one_of(*general, id_strings([], pool))


def int_values(field: FieldDescriptor) -> S[int]:
    low, high = INT_BOUNDS[field.type]
    return st.one_of(
        st.sampled_from([n for n in INTERESTING_INTS if low <= n <= high]),
        st.integers(max(low, -5), min(high, 600)),
        st.integers(low, high),
    )


def float_values(field: FieldDescriptor) -> S[float]:
    if field.type == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    return st.floats(allow_nan=True, allow_infinity=True)


def enum_values(field: FieldDescriptor) -> S[int]:
    assert field.enum_type is not None
    known = [value.number for value in field.enum_type.values]
    return st.one_of(st.sampled_from(known), st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))


# --- messages ---------------------------------------------------------------------------

def json_value(obj: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    if obj is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(obj, bool):
        value.bool_value = obj
    elif isinstance(obj, int | float):
        value.number_value = float(obj) if not isinstance(obj, int) or abs(obj) < 2**1000 else math.inf
    elif isinstance(obj, str):
        value.string_value = obj
    elif isinstance(obj, list):
        value.list_value.values.extend(json_value(item) for item in obj)
    else:
        for key, item in obj.items():
            value.struct_value.fields[key].CopyFrom(json_value(item))
    return value


def nested_lists(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


json_objects: S[Any] = st.recursive(
    json_leaves | st.text(st.characters(exclude_categories=["Cs"]), max_size=10) | huge_strings(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), max_size=6), inner, max_size=4),
    max_leaves=12,
)
json_anything: S[Any] = st.one_of(
    json_objects,
    st.builds(nested_lists, st.integers(1, MAX_BUILT_JSON_DEPTH), json_leaves),
    st.builds(lambda n, x: [x] * n, st.sampled_from([100, 1_000, 10_000]), json_leaves),
)


def _json_message(descriptor: Descriptor) -> S[Message] | None:
    name = descriptor.full_name
    if name == "google.protobuf.Value":
        return json_anything.map(json_value)
    if name == "google.protobuf.Struct":
        def struct(obj: Any) -> struct_pb2.Struct:
            result = struct_pb2.Struct()
            value = json_value(obj if isinstance(obj, dict) else {"v": obj})
            result.CopyFrom(value.struct_value)
            return result

        return json_anything.map(struct)
    if name == "google.protobuf.ListValue":
        return json_anything.map(lambda obj: json_value(obj if isinstance(obj, list) else [obj]).list_value)
    if name in ("google.protobuf.Duration", "google.protobuf.Timestamp"):
        cls = message_class(descriptor)
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n),
            st.one_of(st.sampled_from(INTERESTING_SECONDS), st.integers(-(2**63), 2**63 - 1), st.integers(-10**6, 10**8)),
            st.one_of(st.sampled_from(INTERESTING_NANOS), st.integers(-(2**31), 2**31 - 1)),
        )
    return None


class MessageStrategies:
    """Strategies for every message type reachable from an input type, built once."""

    def __init__(self, pool: IdPool) -> None:
        self.pool = pool
        self._cache: dict[tuple[str, int], S[Message]] = {}

    def message(self, descriptor: Descriptor, depth: int = 0) -> S[Message]:
        key = (descriptor.full_name, depth)
        if key not in self._cache:
            self._cache[key] = self._build(descriptor, depth)
        return self._cache[key]

    def _build(self, descriptor: Descriptor, depth: int) -> S[Message]:
        special = _json_message(descriptor)
        if special is not None:
            return special
        cls = message_class(descriptor)
        if depth >= MAX_MESSAGE_DEPTH:
            return st.just(cls())
        fields = [(f, self._deferred_value(f, depth)) for f in descriptor.fields]
        real_oneofs = [o for o in descriptor.oneofs if not (len(o.fields) == 1 and o.name == "_" + o.fields[0].name)]
        in_real_oneof = {f.name for o in real_oneofs for f in o.fields}

        @st.composite
        def build(draw: st.DrawFn) -> Message:
            message = cls()
            chosen = {draw(st.sampled_from([None, *(f.name for f in o.fields)])) for o in real_oneofs}
            for field, strategy in fields:
                if field.name in in_real_oneof and field.name not in chosen:
                    continue
                if field.name not in in_real_oneof and draw(st.integers(0, 3)) == 0:
                    continue  # left unset a quarter of the time
                assign(message, field, draw(strategy))
            return message

        return build()

    def _deferred_value(self, field: FieldDescriptor, depth: int) -> S[Any]:
        # Deferred: a message type may contain itself.
        return st.deferred(lambda: self.value(field, depth))

    def value(self, field: FieldDescriptor, depth: int) -> S[Any]:
        if wire.is_map(field):
            entry = wire.message_type(field)
            key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
            return st.dictionaries(self.single(key_field, depth), self.single(value_field, depth), max_size=4)
        single = self.single(field, depth)
        if not field.is_repeated:
            return single
        # Long lists repeat one drawn item (drawing thousands would exhaust Hypothesis' buffer);
        # lists of messages stay shorter, their items may be large themselves.
        lengths = [0, 50, 200] if field.type == FieldDescriptor.TYPE_MESSAGE else [0, 100, 1_536, 5_000]
        return st.one_of(st.lists(single, max_size=5), st.builds(lambda x, n: [x] * n, single, st.sampled_from(lengths)))

    def single(self, field: FieldDescriptor, depth: int) -> S[Any]:
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return self.message(wire.message_type(field), depth + 1)
        if kind == FieldDescriptor.TYPE_STRING:
            return string_values(field, self.pool)
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64) | st.builds(lambda n: b"\xff" * n, st.sampled_from(HUGE_LENGTHS))
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind == FieldDescriptor.TYPE_ENUM:
            return enum_values(field)
        if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return float_values(field)
        return int_values(field)


def assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(message, field.name)
    if wire.is_map(field):
        for key, item in value.items():
            if isinstance(item, Message):
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


# --- raw payloads -----------------------------------------------------------------------

def _serialized(message: Message) -> bytes:
    try:
        return message.SerializeToString()
    except EncodeError:
        return b""


def unknown_fields(descriptor: Descriptor) -> S[bytes]:
    """Fields this contract does not know, well-formed: what a newer client sends. Parsers keep
    them aside; they also make the cases of an empty request message more than one."""
    top = max((f.number for f in descriptor.fields), default=0)
    number = st.one_of(st.integers(top + 1, top + 50), st.sampled_from([1_000, 19_999, 2**29 - 1]))
    field = st.builds(
        lambda n, wire_type, seed: wire.with_wire_type(n, wire_type, seed),
        number,
        st.sampled_from([wire.VARINT, wire.FIXED64, wire.LENGTH_DELIMITED, wire.FIXED32]),
        st.binary(min_size=1, max_size=16),
    )
    return st.lists(field, max_size=3).map(b"".join)


def well_typed_payloads(descriptor: Descriptor, messages: MessageStrategies) -> S[bytes]:
    return st.builds(
        lambda body, extra: body + extra, messages.message(descriptor).map(_serialized), unknown_fields(descriptor)
    ).filter(fits_the_transport)


def fits_the_transport(payload: bytes) -> bool:
    """Whether gRPC itself accepts the payload: a larger one is refused by the transport
    (RESOURCE_EXHAUSTED) before any of our code runs, so it tests nothing of ours."""
    return len(payload) <= MAX_PAYLOAD_BYTES


def raw_payloads(descriptor: Descriptor, messages: MessageStrategies) -> S[tuple[str, bytes]]:
    """Ill-typed requests for `descriptor`, each with its kind."""
    well = messages.message(descriptor).map(_serialized).filter(fits_the_transport)
    fields = list(descriptor.fields) or None
    string_paths = wire.field_paths(descriptor, frozenset({FieldDescriptor.TYPE_STRING}))
    json_paths = wire.json_paths(descriptor)
    choices: list[S[tuple[str, bytes]]] = [
        st.binary(max_size=200).map(lambda b: ("random-bytes", b)),
        st.tuples(well, st.floats(0, 1, exclude_max=True)).map(
            lambda t: ("truncated", t[0][: int(len(t[0]) * t[1])] if len(t[0]) > 1 else b"\x0a")
        ),
        st.tuples(well, st.binary(min_size=1, max_size=20)).map(lambda t: ("trailing-garbage", t[0] + t[1])),
        st.sampled_from(wire.BROKEN_FRAMING).map(lambda b: ("broken-framing", b)),
        st.builds(
            lambda depth, number: ("deep-unknown-groups", wire.nested_unknown_groups(depth, number)),
            st.sampled_from([50, 99, 100, 101, 1_000, 10_000]),
            st.sampled_from([1, 4999, 2**29 - 1]),
        ),
    ]
    if fields:
        choices.append(
            st.builds(
                lambda field, shift, seed: (
                    "wrong-wire-type",
                    wire.with_wire_type(field.number, _other_wire_type(field, shift), seed),
                ),
                st.sampled_from(fields),
                st.integers(1, 6),
                st.binary(min_size=1, max_size=12),
            )
        )
    if string_paths:
        choices.append(
            st.builds(
                lambda path, bad: ("invalid-utf8", wire.wrap(path, wire.length_delimited(path[-1].number, bad))),
                st.sampled_from(string_paths),
                st.sampled_from(wire.INVALID_UTF8),
            )
        )
    if json_paths:
        choices.append(
            st.builds(
                lambda path, depth: (
                    "deep-json",
                    wire.wrap(path, wire.length_delimited(path[-1].number, wire.nested_json(path[-1].message_type.full_name, depth))),
                ),
                st.sampled_from(json_paths),
                st.sampled_from([46, 49, 50, 60, 64, 100, 101, 200, 1_000]),
            )
        )
    return st.one_of(*choices)


def _other_wire_type(field: FieldDescriptor, shift: int) -> int:
    """A wire type other than the field's own (6 and 7 included, which do not exist)."""
    natural = wire.natural_wire_type(field)
    candidates = [t for t in (0, 1, 2, 3, 5, 6, 7) if t != natural]
    return candidates[shift % len(candidates)]


# --- cases ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseFamily:
    """One kind of case and its share of an RPC's cases (Hypothesis does not draw branches
    of a `one_of` evenly, so the mix is fixed here)."""

    name: str
    share: float
    cases: S[Case]


def case_families(method: MethodDescriptor, stack: HostileStack, messages: MessageStrategies) -> list[CaseFamily]:
    """Every kind of case for `method`: most with the credentials its mode asks for, so that
    they get past authentication and reach decoding and validation."""
    mode = stack.modes[f"/{method.containing_service.full_name}/{method.name}"]
    right = st.sampled_from(stack.right[mode])
    wrong = st.sampled_from(stack.wrong[mode])
    well = well_typed_payloads(method.input_type, messages)
    raw = raw_payloads(method.input_type, messages)
    return [
        CaseFamily("well-typed", 0.6, st.builds(lambda c, p: Case("well-typed", c, p), right, well)),
        CaseFamily("ill-typed", 0.3, st.builds(lambda c, kp: Case(kp[0], c, kp[1]), right, raw)),
        CaseFamily(
            "wrong credentials",
            0.1,
            st.builds(lambda c, kp: Case(kp[0], c, kp[1]), wrong, st.one_of(well.map(lambda p: ("well-typed", p)), raw)),
        ),
    ]


def budgets(total: int, families: list[CaseFamily]) -> list[int]:
    """`total` cases split by share, at least one per family, summing to `total`."""
    counts = [max(1, int(total * f.share)) for f in families]
    counts[0] += total - sum(counts)
    return counts
