"""Clerk webhook deliveries: the svix-id makes a delivery idempotent, kept for a replay window."""

from __future__ import annotations

from datetime import timedelta

from zenthor.pagination import PageLimits
from zenthor.validate import optional_text

# svix retries a failed delivery for about a day and a half, and an operator may resend one
# from the dashboard later; a week covers both. Older ids are swept.
DELIVERY_RETENTION = timedelta(days=7)
MAX_DELIVERY_ID = 255
# CleanupWebhookDeliveries: rows deleted per call (0 asks for the default).
CLEANUP_BATCH = PageLimits(default=1_000, maximum=10_000)


def check_delivery_id(value: str) -> str | None:
    """The delivery id to record, None for a call that is not a webhook delivery (empty)."""
    return optional_text(value, "delivery_id", max_chars=MAX_DELIVERY_ID) or None
