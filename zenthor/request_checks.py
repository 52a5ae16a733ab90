"""Checks every decoded request passes before a servicer sees it, whatever its contract.

Postgres cannot store a NUL character in text, and JSON has no NaN or Infinity; a request
carrying either would otherwise fail deep in a store as an INTERNAL error. Walking the
message once here answers INVALID_ARGUMENT naming the field for every RPC, including ones
added later.
"""

from __future__ import annotations

import functools
import math

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from zenthor.errors import InvalidArgument

_VALUE = "google.protobuf.Value"


def check_request(message: Message) -> None:
    """Raises InvalidArgument naming the first string field holding a NUL character, or the
    first JSON number (google.protobuf.Value) that is NaN or infinite."""
    # Every call of every service passes here (a batch of webhook events is thousands of
    # fields), so the common case, a clean request, walks without naming anything; only a
    # request with a fault is walked again to name the field.
    if not _is_clean(message):
        _raise_first_fault(message)


# How the clean walk treats a field, by its descriptor (built once per message type).
_SKIP, _TEXT, _TEXTS, _MESSAGE, _MESSAGES, _MAP = range(6)


def _kind(field: FieldDescriptor) -> int:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _TEXTS if field.is_repeated else _TEXT
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return _MAP
        return _MESSAGES if field.is_repeated else _MESSAGE
    return _SKIP


@functools.cache
def _field_kinds(descriptor: Descriptor) -> dict[str, int]:
    return {field.name: _kind(field) for field in descriptor.fields}


def _is_clean(message: Message) -> bool:
    stack = [message]
    while stack:
        current = stack.pop()
        descriptor = current.DESCRIPTOR
        if descriptor.full_name == _VALUE and current.WhichOneof("kind") == "number_value":
            if not math.isfinite(getattr(current, "number_value")):  # noqa: B009 - Message is untyped here
                return False
        kinds = _field_kinds(descriptor)
        for field, value in current.ListFields():
            kind = kinds.get(field.name)
            if kind is None:  # not in the descriptor's fields (an extension): the full walk checks it
                return False
            if kind == _TEXT:
                if "\x00" in value:
                    return False
            elif kind == _MESSAGE:
                stack.append(value)
            elif kind == _MESSAGES:
                stack.extend(value)
            elif kind == _TEXTS:
                if any("\x00" in text for text in value):
                    return False
            elif kind == _MAP:
                for key, item in value.items():
                    if isinstance(key, str) and "\x00" in key:
                        return False
                    if isinstance(item, Message):
                        stack.append(item)
                    elif isinstance(item, str) and "\x00" in item:
                        return False
    return True


def _raise_first_fault(message: Message) -> None:
    """The walk of check_request that names the field at fault."""
    stack: list[tuple[str, Message]] = [("", message)]
    while stack:
        path, current = stack.pop()
        if current.DESCRIPTOR.full_name == _VALUE and current.WhichOneof("kind") == "number_value":
            number = getattr(current, "number_value")  # noqa: B009 - Message is untyped here
            if not math.isfinite(number):
                raise InvalidArgument(path or "request", "must be a finite JSON number (no NaN or Infinity)")
        for field, value in current.ListFields():
            name = f"{path}.{field.name}" if path else field.name
            kind = _kind(field)
            if kind == _TEXT and "\x00" in value:
                raise InvalidArgument(name, "must not contain NUL characters")
            elif kind == _TEXTS:
                for index, text in enumerate(value):
                    if "\x00" in text:
                        raise InvalidArgument(f"{name}[{index}]", "must not contain NUL characters")
            elif kind == _MAP:
                for key, item in value.items():
                    entry = f"{name}[{key!r}]"
                    if isinstance(key, str) and "\x00" in key:
                        raise InvalidArgument(name, "keys must not contain NUL characters")
                    if isinstance(item, Message):
                        stack.append((entry, item))
                    elif isinstance(item, str) and "\x00" in item:
                        raise InvalidArgument(entry, "must not contain NUL characters")
            elif kind == _MESSAGES:
                stack.extend((f"{name}[{index}]", item) for index, item in enumerate(value))
            elif kind == _MESSAGE:
                stack.append((name, value))
