"""Field checks shared by every service's request parsing; each failure names its field."""

from __future__ import annotations

from typing import Any

from zenthor.errors import InvalidArgument

DEFAULT_MAX_TEXT = 1_000


def required_text(value: str, field: str, *, max_chars: int = DEFAULT_MAX_TEXT) -> str:
    if not value or not value.strip():
        raise InvalidArgument(field, "is required")
    return optional_text(value, field, max_chars=max_chars) or ""


def optional_text(value: str | None, field: str, *, max_chars: int = DEFAULT_MAX_TEXT) -> str | None:
    if value is None:
        return None
    if len(value) > max_chars:
        raise InvalidArgument(field, f"must be at most {max_chars} characters")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    return value


def unstorable_text(value: str) -> str | None:
    """Why text cannot be stored (PostgreSQL text refuses a NUL) or sent as UTF-8 (no encoding
    holds half of a surrogate pair), if it cannot. Protobuf text is UTF-8 already; text decoded
    from JSON a caller wrote (a `\\u` escape) is what needs this."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return "must not contain an unpaired surrogate (\\ud800-\\udfff)"
    return None


def unstorable_json(value: Any) -> str | None:
    """`unstorable_text` for every key and string of a decoded JSON value."""
    if isinstance(value, str):
        return unstorable_text(value)
    if isinstance(value, dict):
        return next((why for key, item in value.items() if (why := unstorable_text(key) or unstorable_json(item))), None)
    if isinstance(value, list):
        return next((why for item in value if (why := unstorable_json(item))), None)
    return None
