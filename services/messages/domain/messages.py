"""Messages: roles and states, content and tool-call limits, and what each state allows
(docs/hardening.md #11, #27, #28)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.messages.domain.conversations import Channel
from zenthor.errors import FailedPrecondition, InvalidArgument
from zenthor.pagination import PageLimits
from zenthor.validate import optional_text, required_text

# Contract limits (messages.proto); every one is INVALID_ARGUMENT naming its field.
MAX_CONTENT = 100_000  # Unicode code points (Python `len`), not UTF-16 units
MAX_TOOL_CALLS = 100
MAX_TOOL_NAME = 200
MAX_IDEMPOTENCY_KEY = 256
# FailJobPlaceholders' `reason`: agent_queue's error reasons are at most 64 characters.
MAX_JOB_FAILURE_REASON = 64
# ListMessages page sizes as the contract documents them.
MESSAGES_PAGE = PageLimits(default=200, maximum=1000)


class MessageRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class MessageStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class ToolCall:
    """One tool invocation; `input`/`output` are any JSON. `has_output` tells an absent
    output from a JSON null."""

    name: str
    input: Any
    output: Any = None
    has_output: bool = False


@dataclass(frozen=True)
class Message:
    id: uuid.UUID
    conversation_id: uuid.UUID
    role: MessageRole
    content: str
    channel: Channel
    tool_calls: tuple[ToolCall, ...]
    streaming: bool
    status: MessageStatus
    created_at: datetime
    updated_at: datetime
    revision: int
    # Last applied UpdateStreamingContent sequence (0: none or unsequenced).
    sequence: int
    # The agent job a placeholder answers (CreatePlaceholder's `job_id`); None otherwise.
    job_id: uuid.UUID | None = None


# --- state rules ---


def is_open_placeholder(message: Message) -> bool:
    return message.role is MessageRole.ASSISTANT and message.streaming


def refuse_streaming_change(message: Message, operation: str) -> FailedPrecondition:
    """Why `operation` may not touch `message`: only open assistant placeholders stream."""
    if message.role is not MessageRole.ASSISTANT:
        return FailedPrecondition(f"{operation}: message is a {message.role.value} message, not an assistant placeholder")
    if message.status is MessageStatus.FAILED:
        return FailedPrecondition(f"{operation}: placeholder already failed")
    return FailedPrecondition(f"{operation}: message is finalized and can no longer change")


DELIVERY_OUTCOMES = frozenset({MessageStatus.DELIVERED, MessageStatus.FAILED})


# How many delivery outcomes one MarkMessagesDelivery call carries: the delivery outbox's batch.
MAX_DELIVERY_MARKS = 100


class MarkOutcome(StrEnum):
    """What became of one delivery outcome report."""

    MARKED = "marked"  # the message took the outcome now
    ALREADY = "already"  # it already carried it: a repeated report
    NOT_FOUND = "not_found"
    REFUSED = "refused"  # still streaming, or another final outcome already


@dataclass(frozen=True)
class DeliveryMark:
    message_id: uuid.UUID
    outcome: MarkOutcome
    reason: str = ""  # why, when REFUSED


def judge_delivery_mark(message: Message | None, message_id: uuid.UUID, outcome: MessageStatus) -> DeliveryMark:
    """The verdict on a report the guarded update did not apply, from the message as it is now."""
    if message is None:
        return DeliveryMark(message_id, MarkOutcome.NOT_FOUND)
    if message.status is outcome and not message.streaming:
        return DeliveryMark(message_id, MarkOutcome.ALREADY)
    return DeliveryMark(message_id, MarkOutcome.REFUSED, refuse_delivery_outcome(message, outcome).message)


def refuse_delivery_outcome(message: Message, outcome: MessageStatus) -> FailedPrecondition:
    if message.streaming:
        return FailedPrecondition("message is still streaming")
    return FailedPrecondition(f"message is already {message.status.value}; cannot mark it {outcome.value}")


def check_delivery_mark_count(count: int, field: str = "items") -> None:
    if not 1 <= count <= MAX_DELIVERY_MARKS:
        raise InvalidArgument(field, f"must hold 1..{MAX_DELIVERY_MARKS} items")


# --- input checks ---


def check_content(value: str, field: str = "content") -> str:
    """Message content: 1..100 000 code points, not blank, no NUL."""
    return required_text(value, field, max_chars=MAX_CONTENT)


def check_optional_content(value: str, field: str = "content") -> str:
    """Streaming and final content may be empty."""
    return optional_text(value, field, max_chars=MAX_CONTENT) or ""


def check_tool_calls(calls: Sequence[ToolCall], field: str = "tool_calls") -> tuple[ToolCall, ...]:
    if len(calls) > MAX_TOOL_CALLS:
        raise InvalidArgument(field, f"must hold at most {MAX_TOOL_CALLS} tool calls")
    for i, call in enumerate(calls):
        required_text(call.name, f"{field}[{i}].name", max_chars=MAX_TOOL_NAME)
    return tuple(calls)


def check_sequence(value: int, field: str = "sequence") -> int:
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return value


def check_idempotency_key(value: str, field: str = "idempotency_key") -> str | None:
    return optional_text(value, field, max_chars=MAX_IDEMPOTENCY_KEY) or None


def check_job_failure_reason(value: str, field: str = "reason") -> str | None:
    return optional_text(value, field, max_chars=MAX_JOB_FAILURE_REASON) or None


def check_delivery_outcome(value: MessageStatus | None, field: str = "status") -> MessageStatus:
    """The delivery service reports only DELIVERED or FAILED (docs/hardening.md #27)."""
    if value not in DELIVERY_OUTCOMES:
        raise InvalidArgument(field, "must be MESSAGE_STATUS_DELIVERED or MESSAGE_STATUS_FAILED")
    assert value is not None
    return value
