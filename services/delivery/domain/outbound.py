"""Outbound queue rules: limits, the attempt cap, what a failure or an expired lease leads to,
and the delivery order.

Order guarantee (documented in delivery.proto too): per (account, channel, recipient) the
queue is FIFO by creation (`created_at`, then id) and has at most one message in flight: a
recipient's next message is claimable only once every older one is SENT or FAILED. The store
keeps this with a head per recipient (`is_head`): a message queued while its recipient has
unfinished messages waits behind them; when the head leaves for good (SENT/FAILED) the oldest
remaining one becomes the head. Claims read heads only. A message
waiting for its retry therefore holds back only its own recipient, never the rest of the account
(no head-of-line blocking), and a chat never sees its messages reordered by a retry. Across
recipients there is no order: several claimers send to different recipients in parallel. The
recipient is the phone (`to`), or the conversation when a row has no phone.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from zenthor.errors import InvalidArgument
from zenthor.pagination import PageLimits, check_size
from zenthor.validate import optional_text, required_text

# The sender's claim lease: 30 s unless asked otherwise, never under 1 s (a smaller one is raised).
DEFAULT_CLAIM_LEASE = timedelta(seconds=30)
MIN_CLAIM_LEASE = timedelta(seconds=1)
# Our bound: a longer lease would hide a crashed sender for too long.
MAX_CLAIM_LEASE = timedelta(minutes=10)
# 5 attempts in all; `retry = true` cannot go past them (docs/hardening.md #15) and an expired
# lease counts as one (docs/hardening.md #16).
MAX_ATTEMPTS = 5
# A failure's text is kept to its first 500 characters.
MAX_ERROR_CHARS = 500
MAX_CLAIM_BATCH = 100
# One call acknowledges at most a claim's worth of rows (CompleteOutboundMessages, or acks
# carried on ClaimOutbound).
MAX_ACKS = MAX_CLAIM_BATCH
MAX_FREE_ID = 128
# WhatsApp's own limit for one text message.
MAX_CONTENT_CHARS = 65_536
MAX_KIND = 64
MAX_TOOL_NAME = 200
# RequeueStaleOutbound's `batch_size`: 0 means the default.
SWEEP_BATCH = PageLimits(default=1_000, maximum=10_000)
# ListPendingOutbound's pages.
PENDING_PAGE = PageLimits(default=100, maximum=500)
# last_error of a reclaimed row, followed by the processor id that let its lease expire.
LEASE_EXPIRED_ERROR = "claim lease expired (sender crashed or stalled) while held by "
# RetryWorkflow's call after the backoff (zenthor.retries target "<service>.<Rpc>").
RELEASE_TARGET = "delivery.ReleaseOutbound"
# Outbox topic: a SENT/FAILED row marks its `messages` row delivered/failed (docs/hardening.md #27).
MARK_DELIVERY_TOPIC = "messages.mark_delivery"
# Outcomes per MarkMessagesDelivery call: the most messages' contract takes.
MAX_DELIVERY_MARKS = 100
# A WhatsApp number as identity stores it: 10 to 15 ASCII digits.
PHONE_RE = re.compile(r"^[0-9]{10,15}$")


class Channel(StrEnum):
    WEB = "web"
    WHATSAPP = "whatsapp"


class OutboundStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    WAITING_RETRY = "waiting_retry"
    SENT = "sent"
    FAILED = "failed"


UNFINISHED = (OutboundStatus.PENDING, OutboundStatus.PROCESSING, OutboundStatus.WAITING_RETRY)


@dataclass(frozen=True)
class OutboundMetadata:
    kind: str
    tool_name: str | None = None


@dataclass(frozen=True)
class Outbound:
    id: uuid.UUID
    channel: Channel
    account_id: str
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    to: str | None
    recipient_key: str
    content: str
    metadata: OutboundMetadata | None
    status: OutboundStatus
    processor_id: str | None
    locked_until: datetime | None
    attempt_count: int
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NewOutbound:
    """A validated EnqueueOutbound request."""

    channel: Channel
    account_id: str
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    to: str | None
    content: str
    metadata: OutboundMetadata | None

    @property
    def recipient_key(self) -> str:
        """What the FIFO order is kept per (module docstring)."""
        return self.to if self.to is not None else f"conversation:{self.conversation_id.hex}"


def check_channel(value: Channel | None, field: str = "channel") -> Channel:
    """A request's channel; None stands for an unknown or unset enum value."""
    if value is None:
        raise InvalidArgument(field, "must be CHANNEL_WEB or CHANNEL_WHATSAPP")
    return value


def check_free_id(value: str, field: str) -> str:
    """Account ids, processor ids, owner ids: free strings of 1..128 characters."""
    return required_text(value, field, max_chars=MAX_FREE_ID)


def new_outbound(
    *,
    channel: Channel,
    account_id: str,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    to: str | None,
    content: str,
    metadata: OutboundMetadata | None,
) -> NewOutbound:
    check_free_id(account_id, "account_id")
    if to is not None and not PHONE_RE.match(to):
        raise InvalidArgument("to", "must be 10 to 15 digits (no +, spaces or punctuation)")
    if to is None and channel is Channel.WHATSAPP:
        raise InvalidArgument("to", "is required for WhatsApp")
    required_text(content, "content", max_chars=MAX_CONTENT_CHARS)
    if metadata is not None:
        required_text(metadata.kind, "metadata.kind", max_chars=MAX_KIND)
        optional_text(metadata.tool_name, "metadata.tool_name", max_chars=MAX_TOOL_NAME)
    return NewOutbound(channel, account_id, conversation_id, message_id, to, content, metadata)


def claim_lease(lease: timedelta | None) -> timedelta:
    """`max(1 s, lease or 30 s)`, as senders expect; ours also refuses negative and over-long leases."""
    if lease is None or lease == timedelta(0):
        return DEFAULT_CLAIM_LEASE
    if lease < timedelta(0):
        raise InvalidArgument("lease", "must not be negative")
    if lease > MAX_CLAIM_LEASE:
        raise InvalidArgument("lease", f"must be at most {int(MAX_CLAIM_LEASE.total_seconds())} s")
    return max(MIN_CLAIM_LEASE, lease)


def claim_batch(max_messages: int) -> int:
    """0 means 1; larger than the batch limit is lowered to it."""
    if max_messages < 0:
        raise InvalidArgument("max_messages", "must not be negative")
    return min(max(max_messages, 1), MAX_CLAIM_BATCH)


def check_ack_count(count: int, field: str) -> int:
    if count > MAX_ACKS:
        raise InvalidArgument(field, f"must hold at most {MAX_ACKS} ids")
    return count


def sweep_batch(batch_size: int) -> int:
    return check_size(batch_size, SWEEP_BATCH, "batch_size")


def error_text(error: str) -> str:
    """The first 500 characters; NUL cannot be stored and carries nothing."""
    return error.replace("\x00", "")[:MAX_ERROR_CHARS]


def not_processing_reason(row: Outbound, processor_id: str, *, holds_lease: bool) -> str:
    """Why CompleteOutbound/FailOutbound was refused (docs/hardening.md #15, #41), for
    FAILED_PRECONDITION; `holds_lease`: the caller holds the row's account lease now."""
    if row.status is not OutboundStatus.PROCESSING:
        return f"outbound message is {row.status.value}, not processing: only a claimed message can be completed or failed"
    if row.processor_id != processor_id:
        return f"outbound message is leased by {row.processor_id!r}, not {processor_id!r}"
    if not holds_lease:
        return (
            f"{processor_id!r} no longer holds the WhatsApp lease of account {row.account_id!r}: only the"
            " current lease holder completes or fails its messages"
        )
    return "outbound message changed concurrently"
