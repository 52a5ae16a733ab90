"""Field checks shared by every service's request parsing; each failure names its field."""

from __future__ import annotations

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
