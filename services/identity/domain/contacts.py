"""Contacts (the WhatsApp side of a person) and the phone number rules they share with phone
verification."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from zenthor.errors import InvalidArgument
from zenthor.validate import required_text

MAX_PHONE_LOOKUP = 32
# A WhatsApp number as stored: 10 to 15 ASCII digits, nothing else.
PHONE_RE = re.compile(r"^[0-9]{10,15}$")


@dataclass(frozen=True)
class Contact:
    id: uuid.UUID
    phone: str
    name: str
    is_allowed: bool
    user_id: uuid.UUID | None
    created_at: datetime


def check_phone(value: str, field: str = "phone") -> str:
    """A WhatsApp number as stored: 10 to 15 digits, no `+` or punctuation."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not PHONE_RE.match(value):
        raise InvalidArgument(field, "must be 10 to 15 digits (no +, spaces or punctuation)")
    return value


def check_phone_lookup(value: str, field: str = "phone") -> str:
    """Lookups are exact matches: any non-empty short string, no format rule."""
    return required_text(value, field, max_chars=MAX_PHONE_LOOKUP)
