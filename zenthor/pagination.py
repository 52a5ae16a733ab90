"""Keyset pagination: opaque page tokens over a (time-ordered id) cursor, one helper for all lists."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

from zenthor.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and the token for the next ("" when this was the last)."""

    items: list[T]
    next_page_token: str


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: uuid.UUID | None


def page_request(page_size: int, page_token: str, *, default: int = DEFAULT_PAGE_SIZE) -> PageRequest:
    """Validated page size (0 → default, 1..MAX) and the cursor inside `page_token`."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    if page_size > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be at most {MAX_PAGE_SIZE}")
    return PageRequest(size=page_size or default, after=decode_token(page_token))


def encode_token(last_id: uuid.UUID) -> str:
    raw = json.dumps({"after": last_id.hex}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> uuid.UUID | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return uuid.UUID(hex=data["after"])
    except (binascii.Error, ValueError, KeyError, TypeError) as e:
        raise InvalidArgument("page_token", "is not a token this service issued") from e


def next_token(ids: list[uuid.UUID], size: int) -> str:
    """A token for the page after `ids` when the page was full (so more may follow)."""
    return encode_token(ids[-1]) if len(ids) == size and ids else ""
