"""Checks every decoded request passes before a servicer sees it, whatever its contract.

Postgres cannot store a NUL character in text, and JSON has no NaN or Infinity; a request
carrying either would otherwise fail deep in a store as an INTERNAL error. Walking the
message once here answers INVALID_ARGUMENT naming the field for every RPC, including ones
added later.
"""

from __future__ import annotations

import math

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from zenthor.errors import InvalidArgument

_VALUE = "google.protobuf.Value"


def check_request(message: Message) -> None:
    """Raises InvalidArgument naming the first string field holding a NUL character, or the
    first JSON number (google.protobuf.Value) that is NaN or infinite."""
    stack: list[tuple[str, Message]] = [("", message)]
    while stack:
        path, current = stack.pop()
        if current.DESCRIPTOR.full_name == _VALUE and current.WhichOneof("kind") == "number_value":
            number = getattr(current, "number_value")  # noqa: B009 - Message is untyped here
            if not math.isfinite(number):
                raise InvalidArgument(path or "request", "must be a finite JSON number (no NaN or Infinity)")
        for field, value in current.ListFields():
            name = f"{path}.{field.name}" if path else field.name
            repeated = field.is_repeated
            if field.type == FieldDescriptor.TYPE_STRING:
                items = value if repeated else [value]
                for index, text in enumerate(items):
                    if "\x00" in text:
                        raise InvalidArgument(f"{name}[{index}]" if repeated else name, "must not contain NUL characters")
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                if field.message_type is not None and field.message_type.GetOptions().map_entry:
                    for key, item in value.items():
                        entry = f"{name}[{key!r}]"
                        if isinstance(key, str) and "\x00" in key:
                            raise InvalidArgument(name, "keys must not contain NUL characters")
                        if isinstance(item, Message):
                            stack.append((entry, item))
                        elif isinstance(item, str) and "\x00" in item:
                            raise InvalidArgument(entry, "must not contain NUL characters")
                elif repeated:
                    stack.extend((f"{name}[{index}]", item) for index, item in enumerate(value))
                else:
                    stack.append((name, value))
