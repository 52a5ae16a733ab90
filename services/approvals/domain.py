"""Tool-approval rules as plain values and functions: the TTL, the effective status, ownership, input checks."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from zenthor.auth.principal import ResolvedUser
from zenthor.errors import FailedPrecondition, InvalidArgument
from zenthor.validate import required_text

# spec approvals.md: APPROVAL_TTL_MS = 300 000, equal to the runtime's APPROVAL_TIMEOUT_MS (5 min).
# From `created_at + APPROVAL_TTL` on, a pending approval is EXPIRED (finding 18).
APPROVAL_TTL = timedelta(seconds=300)
MAX_TOOL_NAME = 200
# The model's tool arguments; generous, but a bound keeps one row from holding megabytes.
MAX_TOOL_INPUT_BYTES = 256 * 1024
DEFAULT_SWEEP_BATCH = 1_000
MAX_SWEEP_BATCH = 10_000


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
    """The conversation's owner as copied onto the approval at creation (README §4.8)."""

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


def is_owned_by(approval: Approval, user: ResolvedUser) -> bool:
    """README §4.8: the conversation's user is the caller, or its contact is the caller's."""
    owner = approval.owner
    return (owner.user_id is not None and owner.user_id == user.user_id) or (
        owner.contact_id is not None and owner.contact_id == user.contact_id
    )


def conversation_visible_to(approvals_owned: int, approvals_foreign: int) -> bool:
    """A conversation whose approvals all belong to someone else is not the caller's; one with
    none yet cannot be told apart and is shown (empty: only own approvals are ever listed)."""
    return approvals_owned > 0 or approvals_foreign == 0


def expired_error(approval: Approval) -> FailedPrecondition:
    return FailedPrecondition(
        f"Approval expired at {approval.expires_at.isoformat()} ({int(APPROVAL_TTL.total_seconds())} s after it"
        " was requested); it can no longer be approved or rejected"
    )


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
    if batch_size < 0 or batch_size > MAX_SWEEP_BATCH:
        raise InvalidArgument("batch_size", f"must be 0 (default {DEFAULT_SWEEP_BATCH}) to {MAX_SWEEP_BATCH}")
    return batch_size or DEFAULT_SWEEP_BATCH


def check_wait_timeout(timeout: timedelta | None) -> timedelta | None:
    if timeout is not None and timeout < timedelta(0):
        raise InvalidArgument("timeout", "must not be negative")
    return timeout


def wait_deadline(approval: Approval, started: datetime, timeout: timedelta | None) -> datetime:
    """When a WaitForApproval stream stops waiting: at the expiry, or earlier if asked."""
    if timeout is None:
        return approval.expires_at
    return min(approval.expires_at, started + timeout)
