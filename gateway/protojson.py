"""Proto messages ⇄ JSON at the edge, one rule for every route.

Out: proto field names; fields without presence always printed (`created: false`, an empty
`next_page_token`), so clients need not know proto3 defaults; a top-level message field that
is absent is `null` (`{"conversation": null}` when the caller owns no such conversation).

In: path variables, query parameters and the JSON body become one request message. Each
input is checked against the field it names, so a bad one is `InvalidInput` naming that field
(answered 400, never 500): unknown names, a number out of its field's range, a word where a
number belongs, a value given twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from zenthor.validate import unstorable_json, unstorable_text

JsonObject = dict[str, Any]

_INTEGER = re.compile(r"[+-]?[0-9]+")
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
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


class InvalidInput(Exception):
    """A path variable, query parameter or body the request message cannot take; `field` is
    the proto field name when one is to blame."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --- out ---


def message_json(message: Message) -> JsonObject:
    """The message as JSON with proto field names and every no-presence field printed."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def response_json(message: Message) -> JsonObject:
    """`message_json`, with each absent top-level message field as null."""
    body = message_json(message)
    for field in _descriptor(message).fields:
        if field.message_type is not None and not field.is_repeated and field.name not in body:
            if not field.message_type.GetOptions().map_entry:
                body[field.name] = None
    return body


# --- in ---


def _descriptor(message: Message) -> Descriptor:
    # types-protobuf types DESCRIPTOR as the pure-Python or the upb class; they behave alike.
    return cast(Descriptor, message.DESCRIPTOR)


def _field_named(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """Proto name (`page_size`) or its JSON name (`pageSize`), as protobuf's JSON accepts both."""
    field = descriptor.fields_by_name.get(name)
    if field is not None:
        return field
    return next((f for f in descriptor.fields if f.json_name == name), None)


def _scalar(field: FieldDescriptor, text: str) -> object:
    """A path or query string as the JSON value protobuf's parser takes for `field`."""
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        if not _INTEGER.fullmatch(text) or not low <= int(text) <= high:
            raise InvalidInput(field.name, f"{field.name}: must be an integer from {low} to {high}")
        return int(text)
    if field.type == FieldDescriptor.TYPE_BOOL:
        if text.lower() not in _BOOLEANS:
            raise InvalidInput(field.name, f"{field.name}: must be true or false")
        return _BOOLEANS[text.lower()]
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        try:
            return float(text)
        except ValueError:
            raise InvalidInput(field.name, f"{field.name}: must be a number") from None
    if field.type == FieldDescriptor.TYPE_ENUM and _INTEGER.fullmatch(text):
        return int(text)
    # Strings, bytes (base64), enum names and well-known types (`60s`, RFC 3339 times) are
    # written in a URL as in JSON.
    return text


def _merge(message: Message, field: FieldDescriptor, value: object) -> None:
    try:
        json_format.ParseDict({field.name: value}, message)
    except json_format.ParseError as e:
        raise InvalidInput(field.name, f"{field.name}: {_parse_reason(e)}") from None


def _parse_reason(error: json_format.ParseError) -> str:
    # protobuf prefixes "Failed to parse <field> field: "; the field is named by us already.
    return re.sub(r"^Failed to parse \S+ field: ", "", str(error))


def request_from_http(
    message: Message,
    *,
    path: Mapping[str, str],
    query: Sequence[tuple[str, str]],
    query_fields: Sequence[FieldDescriptor],
    body: bytes | None,
    body_fields: Sequence[FieldDescriptor],
) -> Message:
    """Fills `message` from the JSON body (when the route takes one), then the query
    parameters, then the path variables, which win over a body field of the same name."""
    if body_fields or body:
        _merge_body(message, body or b"", body_fields)
    allowed = {f.name for f in query_fields}
    given: dict[str, tuple[FieldDescriptor, list[str]]] = {}
    for name, value in query:
        field = _field_named(_descriptor(message), name)
        if field is None or field.name not in allowed:
            raise InvalidInput(name, f"{name}: unknown query parameter")
        given.setdefault(field.name, (field, []))[1].append(value)
    for name, (field, values) in given.items():
        if field.is_repeated:
            _merge(message, field, [_scalar(field, v) for v in values])
        elif len(values) > 1:
            raise InvalidInput(name, f"{name}: given more than once")
        else:
            _merge(message, field, _scalar(field, values[0]))
    for name, value in path.items():
        message.ClearField(name)
        set_from_text(message, name, value)
    return message


def set_from_text(message: Message, name: str, text: str) -> None:
    """One field of `message` from its text form, as a query parameter would give it."""
    field = _descriptor(message).fields_by_name[name]
    _merge(message, field, _scalar(field, text))


def _merge_body(message: Message, raw: bytes, fields: Sequence[FieldDescriptor]) -> None:
    if not fields:
        # A body on a route that takes none (a POST custom method of an empty request) is
        # accepted only when it says nothing.
        try:
            empty = raw.strip() == b"" or json.loads(raw) in ({}, None)
        except ValueError:
            empty = False
        if not empty:
            raise InvalidInput(None, "this route takes no request body")
        return
    if raw.strip() == b"":
        return  # no body: every field keeps its default
    try:
        document = json.loads(raw)
    except ValueError:
        raise InvalidInput(None, "request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidInput(None, "request body must be a JSON object")
    allowed = {f.name: f for f in fields}
    # Half a surrogate pair (only a \u escape decodes to one: raw bytes that are not UTF-8 fail
    # json.loads) is text no UTF-8 holds: protobuf's field lookup fails on it with a SystemError,
    # a Struct key with a UnicodeEncodeError, and no reply could name it. Refused first.
    escaped = b"\\u" in raw
    known: dict[str, object] = {}
    for key, value in document.items():
        if escaped and (why := unstorable_text(key)) is not None:
            raise InvalidInput(None, f"request body field names {why}")
        field = _field_named(_descriptor(message), key)
        if field is None:
            raise InvalidInput(key, f"{key}: unknown field")
        if field.name not in allowed:
            continue  # a path field repeated in the body: the path's value is used
        if escaped and (why := unstorable_json(value)) is not None:
            raise InvalidInput(field.name, f"{field.name}: {why}")
        known[field.name] = value
    try:
        json_format.ParseDict(known, message)
    except json_format.ParseError as e:
        # Parse field by field to name the one to blame.
        for name, value in known.items():
            probe = type(message)()
            try:
                json_format.ParseDict({name: value}, probe)
            except json_format.ParseError as one:
                raise InvalidInput(name, f"{name}: {_parse_reason(one)}") from None
        raise InvalidInput(None, _parse_reason(e)) from None
