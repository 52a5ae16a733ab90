"""WhatsApp accounts, account leases and the session key/value store: values, limits, checks."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.delivery.domain.outbound import MAX_FREE_ID, check_free_id
from zenthor.errors import InvalidArgument
from zenthor.validate import required_text

# spec delivery.md §3: default TTL 45 000 ms, minimum 10 000 ms (smaller is raised).
DEFAULT_LEASE_TTL = timedelta(seconds=45)
MIN_LEASE_TTL = timedelta(seconds=10)
# Our bound: a crashed runtime must not keep an account for long.
MAX_LEASE_TTL = timedelta(minutes=10)
MAX_PHONE = 128
MAX_META_BYTES = 64 * 1024
# Session store: the runtime's Baileys auth state; keys like `creds`, `<category>-<id>`.
MAX_SESSION_KEY = 512
MAX_SESSION_VALUE_BYTES = 1024 * 1024  # 1 MiB of UTF-8
DEFAULT_SESSION_PAGE = 500
MAX_SESSION_PAGE = 1_000
DEFAULT_PAGE = 100
MAX_PAGE = 500


@dataclass(frozen=True)
class Account:
    account_id: str
    phone: str
    enabled: bool
    meta: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Lease:
    """Held by `owner_id` at `now` iff `expires_at > now` (spec)."""

    account_id: str
    owner_id: str
    expires_at: datetime
    heartbeat_at: datetime

    def held_at(self, now: datetime) -> bool:
        return self.expires_at > now


@dataclass(frozen=True)
class SessionEntry:
    key: str
    data: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class KeyPage:
    """A page over a text-keyed table: size and the key to continue after."""

    size: int
    after: str | None


def lease_ttl(ttl: timedelta | None) -> timedelta:
    """spec: `max(10000, ttlMs or 45000)`; ours refuses negative and over-long TTLs."""
    if ttl is None or ttl == timedelta(0):
        return DEFAULT_LEASE_TTL
    if ttl < timedelta(0):
        raise InvalidArgument("ttl", "must not be negative")
    if ttl > MAX_LEASE_TTL:
        raise InvalidArgument("ttl", f"must be at most {int(MAX_LEASE_TTL.total_seconds())} s")
    return max(MIN_LEASE_TTL, ttl)


def check_account(account_id: str, phone: str, meta: dict[str, Any] | None) -> None:
    check_free_id(account_id, "account_id")
    required_text(phone, "phone", max_chars=MAX_PHONE)
    if meta is not None and len(json.dumps(meta, separators=(",", ":")).encode()) > MAX_META_BYTES:
        raise InvalidArgument("meta", f"must be at most {MAX_META_BYTES} bytes of JSON")


def check_session_key(key: str) -> str:
    return required_text(key, "key", max_chars=MAX_SESSION_KEY)


def check_session_value(data: str) -> str:
    if len(data.encode()) > MAX_SESSION_VALUE_BYTES:
        raise InvalidArgument("data", f"must be at most {MAX_SESSION_VALUE_BYTES} bytes (1 MiB) of UTF-8")
    if "\x00" in data:
        raise InvalidArgument("data", "must not contain NUL characters")
    return data


# --- text-key page tokens (ids here are free strings, not the kit's UUID cursors) ---


def key_page(page_size: int, page_token: str, *, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE) -> KeyPage:
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    if page_size > maximum:
        raise InvalidArgument("page_size", f"must be at most {maximum}")
    return KeyPage(size=page_size or default, after=_decode_key_token(page_token))


def next_key_token(keys: list[str], size: int) -> str:
    if len(keys) != size or not keys:
        return ""
    raw = json.dumps({"after_key": keys[-1]}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_key_token(token: str) -> str | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
        after = data["after_key"]
    except (binascii.Error, ValueError, KeyError, TypeError) as e:
        raise InvalidArgument("page_token", "is not a token this service issued") from e
    if not isinstance(after, str) or len(after) > max(MAX_SESSION_KEY, MAX_FREE_ID):
        raise InvalidArgument("page_token", "is not a token this service issued")
    return after
