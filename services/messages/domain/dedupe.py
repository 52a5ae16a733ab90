"""Inbound dedupe: the key of a provider message (its account included, docs/hardening.md #35)
and the daily sweep's retention and batch size."""

from __future__ import annotations

from datetime import timedelta

from zenthor.errors import InvalidArgument
from zenthor.pagination import PageLimits, check_size
from zenthor.validate import optional_text, required_text

MAX_CHANNEL_MESSAGE_ID = 256
MAX_ACCOUNT_ID = 256
# A registration is kept 24 h unless the sweep asks otherwise (the original's 86 400 000 ms).
DEFAULT_DEDUPE_RETENTION = timedelta(hours=24)
# The longest retention a sweep may ask for; a longer `older_than` is INVALID_ARGUMENT.
MAX_DEDUPE_RETENTION = timedelta(days=365)
# Rows one CleanupInboundDedupe call deletes: 0 means the default.
CLEANUP_BATCH = PageLimits(default=1_000, maximum=10_000)


def check_channel_message_id(value: str, field: str = "channel_message_id") -> str:
    return required_text(value, field, max_chars=MAX_CHANNEL_MESSAGE_ID)


def check_account_id(value: str, field: str = "account_id") -> str | None:
    """Empty is its own key value (stored as NULL; the unique key treats NULLs as equal)."""
    return optional_text(value, field, max_chars=MAX_ACCOUNT_ID) or None


def check_retention(value: timedelta | None, field: str = "older_than") -> timedelta:
    """How old a registration must be to be swept; absent means DEFAULT_DEDUPE_RETENTION."""
    if value is None:
        return DEFAULT_DEDUPE_RETENTION
    if value < timedelta(0):
        raise InvalidArgument(field, "must not be negative")
    return value


def check_cleanup_batch(value: int, field: str = "batch_size") -> int:
    return check_size(value, CLEANUP_BATCH, field)
