"""Pages and opaque tokens: one helper for every list, watch position and cursor.

A list RPC takes `page_size` / `page_token` and answers `next_page_token`. Each RPC declares
its own `PageLimits` (the default when `page_size` is 0, and the maximum it accepts); the
token is opaque to callers and checked field by field when it comes back, so a forged or
damaged token is INVALID_ARGUMENT naming the field, never a crash deeper down.

    page_request(size, token, LIMITS)  → PageRequest(size, after: UUID | None)   id cursors
    key_page_request(size, token, …)   → KeyPageRequest(size, after: str | None) text keys
    encode_token({...}) / decode_token(token, {"c": str, "r": int}, field=…)     any cursor
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from zenthor.errors import InvalidArgument
from zenthor.validate import unstorable_text

T = TypeVar("T")

# Tokens this kit issues are far shorter; a longer one is refused before it is decoded, which
# also bounds how deep a forged JSON document can nest.
MAX_TOKEN_CHARS = 2048
# Integers inside tokens are Postgres bigints (revisions, offsets).
MAX_TOKEN_INT = 2**63 - 1
MAX_TOKEN_STR = 1024

TokenField = type[str] | type[int]


@dataclass(frozen=True)
class PageLimits:
    """What one list RPC accepts: `page_size` 0 means `default`, above `maximum` is refused."""

    default: int = 100
    maximum: int = 500

    def __post_init__(self) -> None:
        assert 0 < self.default <= self.maximum


DEFAULT_LIMITS = PageLimits()


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and the token for the next ("" when this was the last)."""

    items: list[T]
    next_page_token: str


@dataclass(frozen=True)
class PageRequest:
    """A validated page of a list keyed by time-ordered UUIDs."""

    size: int
    after: uuid.UUID | None


@dataclass(frozen=True)
class KeyPageRequest:
    """A validated page of a list keyed by free text (session keys, account ids)."""

    size: int
    after: str | None


def check_size(value: int, limits: PageLimits = DEFAULT_LIMITS, field: str = "page_size") -> int:
    """`value`, or the default for 0; INVALID_ARGUMENT naming `field` outside 0..maximum.
    Also serves batch sizes of sweeps (`batch_size`)."""
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    if value > limits.maximum:
        raise InvalidArgument(field, f"must be at most {limits.maximum}")
    return value or limits.default


def page_request(page_size: int, page_token: str, limits: PageLimits = DEFAULT_LIMITS) -> PageRequest:
    """The page a list RPC asked for, with the UUID cursor inside `page_token`."""
    size = check_size(page_size, limits)
    fields = decode_token(page_token, {"after": str})
    if fields is None:
        return PageRequest(size=size, after=None)
    return PageRequest(size=size, after=_uuid(fields["after"], "page_token"))


def key_page_request(
    page_size: int, page_token: str, limits: PageLimits = DEFAULT_LIMITS, *, max_key_chars: int = MAX_TOKEN_STR
) -> KeyPageRequest:
    """The page a list RPC asked for, with the text cursor inside `page_token`."""
    size = check_size(page_size, limits)
    fields = decode_token(page_token, {"after_key": str})
    if fields is None:
        return KeyPageRequest(size=size, after=None)
    after = fields["after_key"]
    assert isinstance(after, str)
    if len(after) > max_key_chars:
        raise InvalidArgument("page_token", "is not a token this service issued")
    return KeyPageRequest(size=size, after=after)


def next_token(ids: list[uuid.UUID], size: int) -> str:
    """A token for the page after `ids` when the page was full (so more may follow)."""
    return encode_token({"after": ids[-1].hex}) if ids and len(ids) == size else ""


def next_key_token(keys: list[str], size: int) -> str:
    """A token for the page after `keys` when the page was full."""
    return encode_token({"after_key": keys[-1]}) if keys and len(keys) == size else ""


def encode_token(fields: Mapping[str, str | int]) -> str:
    """An opaque token carrying `fields` (strings and integers only)."""
    raw = json.dumps(dict(fields), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, schema: Mapping[str, TokenField], *, field: str = "page_token") -> dict[str, str | int] | None:
    """The fields of a token `encode_token` made, checked against `schema` (exactly these
    keys, each of its type: strings at most MAX_TOKEN_STR long, integers 0..2^63-1); None for
    an empty token. Anything else is INVALID_ARGUMENT naming `field`."""
    if not token:
        return None
    refused = InvalidArgument(field, "is not a token this service issued")
    if len(token) > MAX_TOKEN_CHARS:
        raise refused
    try:
        data = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
    except (binascii.Error, ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise refused from e
    if not isinstance(data, dict) or set(data) != set(schema):
        raise refused
    for name, kind in schema.items():
        value = data[name]
        if kind is int:
            if type(value) is not int or not 0 <= value <= MAX_TOKEN_INT:
                raise refused
        elif type(value) is not str or len(value) > MAX_TOKEN_STR or unstorable_text(value):
            raise refused
    return data


def _uuid(value: str | int, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(hex=str(value))
    except ValueError as e:
        raise InvalidArgument(field, "is not a token this service issued") from e


@dataclass(frozen=True)
class Swept:
    """One call of a batched deletion sweep: the rows it deleted, and whether its batch was full
    (more may be due: the schedule's SweepWorkflow calls again)."""

    deleted: int
    more: bool

    @classmethod
    def of(cls, deleted: int, batch: int) -> Swept:
        return cls(deleted=deleted, more=deleted == batch)
