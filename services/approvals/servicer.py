"""ApprovalsService over gRPC: request → wire → one use case → wire → response. No rules, no SQL here."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.approvals import wire
from services.approvals.usecases import approvals as approvals_uc
from services.approvals.usecases.deps import Deps
from zenthor.auth.principal import ResolvedUser, current_principal
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as pb
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc
from zenthor.server import Ctx


def _user() -> ResolvedUser:
    return current_principal().require_user()


class ApprovalsServicer(approvals_pb2_grpc.ApprovalsServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateApproval(self, request: pb.CreateApprovalRequest, context: Ctx) -> pb.CreateApprovalResponse:
        approval = await approvals_uc.create_approval(
            self._deps,
            conversation_id=wire.conversation_id(request.conversation_id),
            job_id=wire.job_id(request.job_id),
            owner=wire.owner(request),
            tool_name=request.tool_name,
            tool_input=wire.tool_input(request),
            channel=wire.channel(request.channel),
        )
        return pb.CreateApprovalResponse(approval=wire.approval_pb(approval))

    async def ResolveApproval(self, request: pb.ResolveApprovalRequest, context: Ctx) -> pb.ResolveApprovalResponse:
        approval = await approvals_uc.resolve_approval(
            self._deps, wire.approval_id(request.approval_id), wire.resolution(request.status), _user()
        )
        return pb.ResolveApprovalResponse(approval=wire.optional_approval_pb(approval))

    async def ResolveApprovalAsService(
        self, request: pb.ResolveApprovalAsServiceRequest, context: Ctx
    ) -> pb.ResolveApprovalAsServiceResponse:
        approval = await approvals_uc.resolve_approval(
            self._deps, wire.approval_id(request.approval_id), wire.resolution(request.status), None
        )
        return pb.ResolveApprovalAsServiceResponse(approval=wire.optional_approval_pb(approval))

    async def ListPendingApprovals(
        self, request: pb.ListPendingApprovalsRequest, context: Ctx
    ) -> pb.ListPendingApprovalsResponse:
        page = await approvals_uc.list_pending(
            self._deps, wire.conversation_id(request.conversation_id), wire.pending_page(request), _user()
        )
        return pb.ListPendingApprovalsResponse(
            approvals=[wire.approval_pb(a) for a in page.items], next_page_token=page.next_page_token
        )

    async def ListPendingApprovalsAsService(
        self, request: pb.ListPendingApprovalsAsServiceRequest, context: Ctx
    ) -> pb.ListPendingApprovalsAsServiceResponse:
        page = await approvals_uc.list_pending(
            self._deps, wire.conversation_id(request.conversation_id), wire.pending_page(request), None
        )
        return pb.ListPendingApprovalsAsServiceResponse(
            approvals=[wire.approval_pb(a) for a in page.items], next_page_token=page.next_page_token
        )

    async def ListJobApprovals(self, request: pb.ListJobApprovalsRequest, context: Ctx) -> pb.ListJobApprovalsResponse:
        page = await approvals_uc.list_job_approvals(
            self._deps,
            wire.job_id(request.job_id),
            wire.status_filter(request.status),
            wire.job_approvals_page(request),
        )
        return pb.ListJobApprovalsResponse(
            approvals=[wire.approval_pb(a) for a in page.items], next_page_token=page.next_page_token
        )

    async def WatchApprovals(
        self, request: pb.WatchApprovalsRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchApprovalsResponse]:
        conversation_id = wire.conversation_id(request.conversation_id)
        async for pending in approvals_uc.watch_pending(self._deps, conversation_id, _user()):
            yield pb.WatchApprovalsResponse(pending_approvals=[wire.approval_pb(a) for a in pending])

    async def WaitForApproval(
        self, request: pb.WaitForApprovalRequest, context: Ctx
    ) -> AsyncIterator[pb.WaitForApprovalResponse]:
        approval_id = wire.approval_id(request.approval_id)
        async for approval in approvals_uc.wait_for_approval(self._deps, approval_id, wire.wait_timeout(request)):
            yield pb.WaitForApprovalResponse(approval=wire.approval_pb(approval))

    async def ExpireStaleApprovals(
        self, request: pb.ExpireStaleApprovalsRequest, context: Ctx
    ) -> pb.ExpireStaleApprovalsResponse:
        result = await approvals_uc.expire_stale_approvals(self._deps, request.batch_size)
        return pb.ExpireStaleApprovalsResponse(expired=result.expired, more=result.more)
