"""Proto messages → JSON-ready dicts for REST responses, one rule for every route."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

JsonObject = dict[str, Any]


def message_json(message: Message) -> JsonObject:
    """Proto field names; fields without presence always printed (`created: false`, an
    empty `next_page_token`), so clients need not know proto3 defaults."""
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def optional_message_json(parent: Message, field: str) -> JsonObject | None:
    """An `optional` message field as its JSON, or None (JSON null) when absent."""
    return message_json(getattr(parent, field)) if parent.HasField(field) else None
