"""ApprovalsService over gRPC: requests → use cases → responses. No rules, no SQL here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, TypeAlias

import grpc
from google.protobuf import json_format, struct_pb2

from services.approvals import usecases
from services.approvals.domain import Approval, ApprovalStatus, Channel, Owner
from services.approvals.usecases import Deps
from zenthor import ids
from zenthor.auth.principal import current_principal
from zenthor.convert import timestamp
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as pb
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.pagination import page_request

Ctx: TypeAlias = grpc.aio.ServicerContext

_STATUS_TO_PB = {
    ApprovalStatus.PENDING: pb.APPROVAL_STATUS_PENDING,
    ApprovalStatus.APPROVED: pb.APPROVAL_STATUS_APPROVED,
    ApprovalStatus.REJECTED: pb.APPROVAL_STATUS_REJECTED,
    ApprovalStatus.EXPIRED: pb.APPROVAL_STATUS_EXPIRED,
}
_STATUS_FROM_PB: dict[int, ApprovalStatus] = {v: k for k, v in _STATUS_TO_PB.items()}
_CHANNEL_TO_PB = {Channel.WEB: types_pb2.CHANNEL_WEB, Channel.WHATSAPP: types_pb2.CHANNEL_WHATSAPP}
_CHANNEL_FROM_PB: dict[int, Channel] = {v: k for k, v in _CHANNEL_TO_PB.items()}


def approval_pb(approval: Approval) -> pb.Approval:
    tool_input = struct_pb2.Value()
    json_format.ParseDict(approval.tool_input, tool_input)
    owner = approval.owner
    return pb.Approval(
        id=ids.APPROVAL.format(approval.id),
        create_time=timestamp(approval.created_at),
        conversation_id=ids.CONVERSATION.format(approval.conversation_id),
        job_id=ids.JOB.format(approval.job_id),
        tool_name=approval.tool_name,
        tool_input=tool_input,
        status=_STATUS_TO_PB[approval.status],
        channel=_CHANNEL_TO_PB[approval.channel],
        resolve_time=timestamp(approval.resolved_at) if approval.resolved_at else None,
        expire_time=timestamp(approval.expires_at),
        conversation_user_id=ids.USER.format(owner.user_id) if owner.user_id else None,
        conversation_contact_id=ids.CONTACT.format(owner.contact_id) if owner.contact_id else None,
    )


def _channel(value: int) -> Channel:
    if value not in _CHANNEL_FROM_PB:
        raise InvalidArgument("channel", "must be CHANNEL_WEB or CHANNEL_WHATSAPP")
    return _CHANNEL_FROM_PB[value]


def _status_filter(value: int) -> ApprovalStatus | None:
    if value == pb.APPROVAL_STATUS_UNSPECIFIED:
        return None
    if value not in _STATUS_FROM_PB:
        raise InvalidArgument("status", "is not an ApprovalStatus")
    return _STATUS_FROM_PB[value]


def _opt(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


class ApprovalsServicer(approvals_pb2_grpc.ApprovalsServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateApproval(self, request: pb.CreateApprovalRequest, context: Ctx) -> pb.CreateApprovalResponse:
        approval = await usecases.create_approval(
            self._deps,
            conversation_id=ids.CONVERSATION.parse(request.conversation_id, "conversation_id"),
            job_id=ids.JOB.parse(request.job_id, "job_id"),
            owner=Owner(
                user_id=ids.USER.parse_optional(_opt(request, "conversation_user_id"), "conversation_user_id"),
                contact_id=ids.CONTACT.parse_optional(
                    _opt(request, "conversation_contact_id"), "conversation_contact_id"
                ),
            ),
            tool_name=request.tool_name,
            tool_input=json_format.MessageToDict(request.tool_input) if request.HasField("tool_input") else None,
            channel=_channel(request.channel),
        )
        return pb.CreateApprovalResponse(approval=approval_pb(approval))

    async def ResolveApproval(self, request: pb.ResolveApprovalRequest, context: Ctx) -> pb.ResolveApprovalResponse:
        approval = await usecases.resolve_approval(
            self._deps,
            ids.APPROVAL.parse(request.approval_id, "approval_id"),
            _STATUS_FROM_PB.get(request.status),
            current_principal().require_user(),
        )
        return pb.ResolveApprovalResponse(approval=approval_pb(approval) if approval else None)

    async def ResolveApprovalAsService(
        self, request: pb.ResolveApprovalAsServiceRequest, context: Ctx
    ) -> pb.ResolveApprovalAsServiceResponse:
        approval = await usecases.resolve_approval(
            self._deps, ids.APPROVAL.parse(request.approval_id, "approval_id"), _STATUS_FROM_PB.get(request.status), None
        )
        return pb.ResolveApprovalAsServiceResponse(approval=approval_pb(approval) if approval else None)

    async def ListPendingApprovals(
        self, request: pb.ListPendingApprovalsRequest, context: Ctx
    ) -> pb.ListPendingApprovalsResponse:
        page = await usecases.list_pending(
            self._deps,
            ids.CONVERSATION.parse(request.conversation_id, "conversation_id"),
            page_request(request.page_size, request.page_token),
            current_principal().require_user(),
        )
        return pb.ListPendingApprovalsResponse(
            approvals=[approval_pb(a) for a in page.items], next_page_token=page.next_page_token
        )

    async def ListPendingApprovalsAsService(
        self, request: pb.ListPendingApprovalsAsServiceRequest, context: Ctx
    ) -> pb.ListPendingApprovalsAsServiceResponse:
        page = await usecases.list_pending(
            self._deps,
            ids.CONVERSATION.parse(request.conversation_id, "conversation_id"),
            page_request(request.page_size, request.page_token),
            None,
        )
        return pb.ListPendingApprovalsAsServiceResponse(
            approvals=[approval_pb(a) for a in page.items], next_page_token=page.next_page_token
        )

    async def ListJobApprovals(self, request: pb.ListJobApprovalsRequest, context: Ctx) -> pb.ListJobApprovalsResponse:
        page = await usecases.list_job_approvals(
            self._deps,
            ids.JOB.parse(request.job_id, "job_id"),
            _status_filter(request.status),
            page_request(request.page_size, request.page_token),
        )
        return pb.ListJobApprovalsResponse(
            approvals=[approval_pb(a) for a in page.items], next_page_token=page.next_page_token
        )

    async def WatchApprovals(self, request: pb.WatchApprovalsRequest, context: Ctx) -> AsyncIterator[pb.WatchApprovalsResponse]:
        conversation_id = ids.CONVERSATION.parse(request.conversation_id, "conversation_id")
        user = current_principal().require_user()
        async for pending in usecases.watch_pending(self._deps, conversation_id, user):
            yield pb.WatchApprovalsResponse(pending_approvals=[approval_pb(a) for a in pending])

    async def WaitForApproval(
        self, request: pb.WaitForApprovalRequest, context: Ctx
    ) -> AsyncIterator[pb.WaitForApprovalResponse]:
        approval_id = ids.APPROVAL.parse(request.approval_id, "approval_id")
        timeout: timedelta | None = request.timeout.ToTimedelta() if request.HasField("timeout") else None
        async for approval in usecases.wait_for_approval(self._deps, approval_id, timeout):
            yield pb.WaitForApprovalResponse(approval=approval_pb(approval))

    async def ExpireStaleApprovals(
        self, request: pb.ExpireStaleApprovalsRequest, context: Ctx
    ) -> pb.ExpireStaleApprovalsResponse:
        result = await usecases.expire_stale_approvals(self._deps, request.batch_size)
        return pb.ExpireStaleApprovalsResponse(expired=result.expired, more=result.more)
