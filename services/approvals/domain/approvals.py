"""Tool approvals: the TTL, the effective status at a given time, input checks, page limits."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from zenthor.errors import FailedPrecondition, InvalidArgument
from zenthor.pagination import PageLimits, check_size
from zenthor.validate import required_text

# 5 minutes, the same as the runtime's own approval timeout: it stops waiting then too.
# From `created_at + APPROVAL_TTL` on, a pending approval is EXPIRED (docs/hardening.md #18).
APPROVAL_TTL = timedelta(seconds=300)
MAX_TOOL_NAME = 200
# The model's tool arguments; generous, but a bound keeps one row from holding megabytes.
MAX_TOOL_INPUT_BYTES = 256 * 1024
# ExpireStaleApprovals' `batch_size`: 0 means the default.
SWEEP_BATCH = PageLimits(default=1_000, maximum=10_000)
# Pages of ListPendingApprovals(AsService) and ListJobApprovals.
PENDING_PAGE = PageLimits(default=100, maximum=500)
JOB_APPROVALS_PAGE = PageLimits(default=100, maximum=500)


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Channel(StrEnum):
    WEB = "web"
    WHATSAPP = "whatsapp"


RESOLUTIONS = frozenset({ApprovalStatus.APPROVED, ApprovalStatus.REJECTED})


@dataclass(frozen=True)
class Owner:
    """The conversation's owner as copied onto the approval at creation, so ownership needs no
    cross-service read: the approval is the caller's when `ResolvedUser.owns` says so of these ids."""

    user_id: uuid.UUID | None
    contact_id: uuid.UUID | None


@dataclass(frozen=True)
class Approval:
    id: uuid.UUID
    conversation_id: uuid.UUID
    job_id: uuid.UUID
    owner: Owner
    tool_name: str
    tool_input: Any
    status: ApprovalStatus
    channel: Channel
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None

    @property
    def is_final(self) -> bool:
        return self.status is not ApprovalStatus.PENDING

    def as_of(self, now: datetime) -> Approval:
        """The approval as callers see it at `now`: a pending row past its expiry IS expired,
        whether or not the sweep has written that yet (it left PENDING at `expires_at`)."""
        if self.status is ApprovalStatus.PENDING and has_expired(self, now):
            return replace(self, status=ApprovalStatus.EXPIRED, resolved_at=self.expires_at)
        return self


def expiry_for(created_at: datetime) -> datetime:
    return created_at + APPROVAL_TTL


def has_expired(approval: Approval, now: datetime) -> bool:
    """Expired at exactly the TTL: `expires_at` itself is already too late."""
    return now >= approval.expires_at


def conversation_visible_to(approvals_owned: int, approvals_foreign: int) -> bool:
    """A conversation whose approvals all belong to someone else is not the caller's; one with
    none yet cannot be told apart and is shown (empty: only own approvals are ever listed)."""
    return approvals_owned > 0 or approvals_foreign == 0


def expired_error(approval: Approval) -> FailedPrecondition:
    return FailedPrecondition(
        f"Approval expired at {approval.expires_at.isoformat()} ({int(APPROVAL_TTL.total_seconds())} s after it"
        " was requested); it can no longer be approved or rejected"
    )


def check_channel(value: Channel | None, field: str = "channel") -> Channel:
    """A request's channel; None stands for an unknown or unset enum value."""
    if value is None:
        raise InvalidArgument(field, "must be CHANNEL_WEB or CHANNEL_WHATSAPP")
    return value


def check_status_filter(value: ApprovalStatus | None, field: str = "status") -> ApprovalStatus:
    """A list's status filter; None stands for an enum value this service does not know."""
    if value is None:
        raise InvalidArgument(field, "is not an ApprovalStatus")
    return value


def check_resolution(status: ApprovalStatus | None) -> ApprovalStatus:
    if status not in RESOLUTIONS:
        raise InvalidArgument("status", "must be APPROVAL_STATUS_APPROVED or APPROVAL_STATUS_REJECTED")
    assert status is not None
    return status


def check_owner(owner: Owner) -> Owner:
    if owner.user_id is None and owner.contact_id is None:
        raise InvalidArgument(
            "conversation_user_id", "one of conversation_user_id or conversation_contact_id is required"
        )
    return owner


def check_tool(tool_name: str, tool_input: Any) -> None:
    required_text(tool_name, "tool_name", max_chars=MAX_TOOL_NAME)
    if len(json.dumps(tool_input, separators=(",", ":")).encode()) > MAX_TOOL_INPUT_BYTES:
        raise InvalidArgument("tool_input", f"must be at most {MAX_TOOL_INPUT_BYTES} bytes of JSON")


def check_batch_size(batch_size: int) -> int:
    return check_size(batch_size, SWEEP_BATCH, "batch_size")


def check_wait_timeout(timeout: timedelta | None) -> timedelta | None:
    if timeout is not None and timeout < timedelta(0):
        raise InvalidArgument("timeout", "must not be negative")
    return timeout


def wait_deadline(approval: Approval, started: datetime, timeout: timedelta | None) -> datetime:
    """When a WaitForApproval stream stops waiting: at the expiry, or earlier if asked."""
    if timeout is None:
        return approval.expires_at
    return min(approval.expires_at, started + timeout)
