"""Proto ⇄ domain conversions of the approvals contract: ids, enums, optional fields, durations,
page tokens and JSON values in; domain values out as response messages. The rules themselves
live in domain/."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message as ProtoMessage

from services.approvals.domain import approvals as approval_rules
from services.approvals.domain.approvals import Approval, ApprovalStatus, Channel, Owner
from zenthor import ids
from zenthor.convert import optional_duration, timestamp
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as pb
from zenthor.gen.zenthor.common.v1 import types_pb2 as common
from zenthor.pagination import PageRequest, page_request

STATUS_PB = {
    ApprovalStatus.PENDING: pb.APPROVAL_STATUS_PENDING,
    ApprovalStatus.APPROVED: pb.APPROVAL_STATUS_APPROVED,
    ApprovalStatus.REJECTED: pb.APPROVAL_STATUS_REJECTED,
    ApprovalStatus.EXPIRED: pb.APPROVAL_STATUS_EXPIRED,
}
STATUS_OF: dict[int, ApprovalStatus] = {int(v): k for k, v in STATUS_PB.items()}
CHANNEL_PB = {Channel.WEB: common.CHANNEL_WEB, Channel.WHATSAPP: common.CHANNEL_WHATSAPP}
CHANNEL_OF: dict[int, Channel] = {int(v): k for k, v in CHANNEL_PB.items()}


# --- requests: ids, enums, optional fields, pages ---


def _optional_str(message: ProtoMessage, field: str) -> str | None:
    """A proto3 `optional string` field: its value when set, None when absent."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    assert isinstance(value, str)
    return value


def approval_id(value: str, field: str = "approval_id") -> uuid.UUID:
    return ids.APPROVAL.parse(value, field)


def conversation_id(value: str, field: str = "conversation_id") -> uuid.UUID:
    return ids.CONVERSATION.parse(value, field)


def job_id(value: str, field: str = "job_id") -> uuid.UUID:
    return ids.JOB.parse(value, field)


def owner(request: pb.CreateApprovalRequest) -> Owner:
    """The conversation's owner the caller copies onto the approval (either id may be absent)."""
    return Owner(
        user_id=ids.USER.parse_optional(_optional_str(request, "conversation_user_id"), "conversation_user_id"),
        contact_id=ids.CONTACT.parse_optional(
            _optional_str(request, "conversation_contact_id"), "conversation_contact_id"
        ),
    )


def tool_input(request: pb.CreateApprovalRequest) -> Any:
    """The tool's arguments as plain JSON (any JSON value), None when absent."""
    return json_format.MessageToDict(request.tool_input) if request.HasField("tool_input") else None


def channel(value: int, field: str = "channel") -> Channel:
    return approval_rules.check_channel(CHANNEL_OF.get(value), field)


def resolution(value: int) -> ApprovalStatus | None:
    """The status a resolve asks for; domain.check_resolution says which ones are allowed."""
    return STATUS_OF.get(value)


def status_filter(value: int, field: str = "status") -> ApprovalStatus | None:
    """ListJobApprovals' filter: UNSPECIFIED lists every status."""
    if value == pb.APPROVAL_STATUS_UNSPECIFIED:
        return None
    return approval_rules.check_status_filter(STATUS_OF.get(value), field)


def wait_timeout(request: pb.WaitForApprovalRequest) -> timedelta | None:
    # The kit's bound, not Duration.ToTimedelta: that overflows on a Duration of 2^63 seconds.
    return optional_duration(request, "timeout")


def pending_page(request: pb.ListPendingApprovalsRequest | pb.ListPendingApprovalsAsServiceRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, approval_rules.PENDING_PAGE)


def job_approvals_page(request: pb.ListJobApprovalsRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, approval_rules.JOB_APPROVALS_PAGE)


# --- responses ---


def approval_pb(approval: Approval) -> pb.Approval:
    tool_input = json_format.ParseDict(approval.tool_input, struct_pb2.Value())
    owner = approval.owner
    return pb.Approval(
        id=ids.APPROVAL.format(approval.id),
        create_time=timestamp(approval.created_at),
        conversation_id=ids.CONVERSATION.format(approval.conversation_id),
        job_id=ids.JOB.format(approval.job_id),
        tool_name=approval.tool_name,
        tool_input=tool_input,
        status=STATUS_PB[approval.status],
        channel=CHANNEL_PB[approval.channel],
        resolve_time=timestamp(approval.resolved_at) if approval.resolved_at else None,
        expire_time=timestamp(approval.expires_at),
        conversation_user_id=ids.USER.format(owner.user_id) if owner.user_id else None,
        conversation_contact_id=ids.CONTACT.format(owner.contact_id) if owner.contact_id else None,
    )


def optional_approval_pb(approval: Approval | None) -> pb.Approval | None:
    return approval_pb(approval) if approval is not None else None
