"""WhatsApp accounts, account leases and the session key/value store: values, limits, checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.delivery.domain.outbound import check_free_id
from zenthor.errors import InvalidArgument
from zenthor.pagination import PageLimits
from zenthor.validate import required_text

# The runtime's account lease: 45 s unless asked otherwise, never under 10 s (a smaller TTL is raised).
DEFAULT_LEASE_TTL = timedelta(seconds=45)
MIN_LEASE_TTL = timedelta(seconds=10)
# Our bound: a crashed runtime must not keep an account for long.
MAX_LEASE_TTL = timedelta(minutes=10)
MAX_PHONE = 128
MAX_META_BYTES = 64 * 1024
# Session store: the runtime's Baileys auth state; keys like `creds`, `<category>-<id>`.
MAX_SESSION_KEY = 512
MAX_SESSION_VALUE_BYTES = 1024 * 1024  # 1 MiB of UTF-8
# Page sizes of the list RPCs; their tokens carry the last key (an account id or a session key).
ACCOUNTS_PAGE = PageLimits(default=100, maximum=500)
OWNED_ACCOUNTS_PAGE = PageLimits(default=100, maximum=500)
# The runtime loads its whole auth state at start: larger pages.
SESSION_PAGE = PageLimits(default=500, maximum=1_000)


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
    """Held by `owner_id` at `now` iff `expires_at > now`: a lease ends at its expiry instant."""

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


def lease_ttl(ttl: timedelta | None) -> timedelta:
    """`max(10 s, ttl or 45 s)`, as the runtime expects; ours also refuses negative and over-long TTLs."""
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
