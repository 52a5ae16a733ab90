"""DeliveryService over gRPC: requests → use cases → responses. No rules, no SQL here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, TypeAlias

import grpc
from google.protobuf import json_format, struct_pb2

from services.delivery.domain.outbound import Channel, Outbound, OutboundMetadata, OutboundStatus
from services.delivery.domain.whatsapp import (
    DEFAULT_SESSION_PAGE,
    MAX_SESSION_PAGE,
    Account,
    Lease,
    SessionEntry,
    key_page,
)
from services.delivery.usecases import outbound as outbound_uc
from services.delivery.usecases import whatsapp as whatsapp_uc
from services.delivery.usecases.deps import Deps
from zenthor import ids
from zenthor.convert import timestamp
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc
from zenthor.pagination import page_request

Ctx: TypeAlias = grpc.aio.ServicerContext

_STATUS = {
    OutboundStatus.PENDING: pb.OUTBOUND_STATUS_PENDING,
    OutboundStatus.PROCESSING: pb.OUTBOUND_STATUS_PROCESSING,
    OutboundStatus.WAITING_RETRY: pb.OUTBOUND_STATUS_WAITING_RETRY,
    OutboundStatus.SENT: pb.OUTBOUND_STATUS_SENT,
    OutboundStatus.FAILED: pb.OUTBOUND_STATUS_FAILED,
}
_CHANNEL_TO_PB = {Channel.WEB: types_pb2.CHANNEL_WEB, Channel.WHATSAPP: types_pb2.CHANNEL_WHATSAPP}
_CHANNEL_FROM_PB: dict[int, Channel] = {v: k for k, v in _CHANNEL_TO_PB.items()}


def _opt(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _duration(message: Any, field: str) -> timedelta | None:
    return getattr(message, field).ToTimedelta() if message.HasField(field) else None


def _channel(value: int) -> Channel:
    if value not in _CHANNEL_FROM_PB:
        raise InvalidArgument("channel", "must be CHANNEL_WEB or CHANNEL_WHATSAPP")
    return _CHANNEL_FROM_PB[value]


def outbound_pb(row: Outbound) -> pb.OutboundMessage:
    metadata = (
        pb.OutboundMetadata(kind=row.metadata.kind, tool_name=row.metadata.tool_name) if row.metadata else None
    )
    return pb.OutboundMessage(
        id=ids.OUTBOUND.format(row.id),
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        channel=_CHANNEL_TO_PB[row.channel],
        account_id=row.account_id,
        conversation_id=ids.CONVERSATION.format(row.conversation_id),
        message_id=ids.MESSAGE.format(row.message_id),
        to=row.to,
        payload=pb.OutboundPayload(content=row.content, metadata=metadata),
        status=_STATUS[row.status],
        processor_id=row.processor_id,
        lease_expire_time=timestamp(row.locked_until) if row.locked_until else None,
        attempt_count=row.attempt_count,
        last_error=row.last_error,
        next_attempt_time=timestamp(row.next_attempt_at) if row.next_attempt_at else None,
    )


def account_pb(account: Account) -> pb.WhatsAppAccount:
    meta = None
    if account.meta is not None:
        meta = struct_pb2.Struct()
        meta.update(account.meta)
    return pb.WhatsAppAccount(
        account_id=account.account_id,
        create_time=timestamp(account.created_at),
        update_time=timestamp(account.updated_at),
        phone=account.phone,
        enabled=account.enabled,
        meta=meta,
    )


def lease_pb(lease: Lease) -> pb.Lease:
    return pb.Lease(
        account_id=lease.account_id,
        owner_id=lease.owner_id,
        expire_time=timestamp(lease.expires_at),
        heartbeat_time=timestamp(lease.heartbeat_at),
    )


def session_entry_pb(entry: SessionEntry) -> pb.SessionEntry:
    return pb.SessionEntry(
        key=entry.key, data=entry.data, create_time=timestamp(entry.created_at), update_time=timestamp(entry.updated_at)
    )


class DeliveryServicer(delivery_pb2_grpc.DeliveryServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    # --- outbound queue ---

    async def EnqueueOutbound(self, request: pb.EnqueueOutboundRequest, context: Ctx) -> pb.EnqueueOutboundResponse:
        metadata = None
        if request.HasField("metadata"):
            metadata = OutboundMetadata(kind=request.metadata.kind, tool_name=_opt(request.metadata, "tool_name"))
        result = await outbound_uc.enqueue_outbound(
            self._deps,
            channel=_channel(request.channel),
            account_id=_opt(request, "account_id"),
            conversation_id=ids.CONVERSATION.parse(request.conversation_id, "conversation_id"),
            message_id=ids.MESSAGE.parse(request.message_id, "message_id"),
            to=_opt(request, "to"),
            content=request.content,
            metadata=metadata,
        )
        return pb.EnqueueOutboundResponse(outbound=outbound_pb(result.outbound), created=result.created)

    async def ClaimOutbound(self, request: pb.ClaimOutboundRequest, context: Ctx) -> pb.ClaimOutboundResponse:
        claimed = await outbound_uc.claim_outbound(
            self._deps,
            account_id=request.account_id,
            processor_id=request.processor_id,
            channel=_channel(request.channel),
            max_messages=request.max_messages,
            lease=_duration(request, "lease"),
        )
        return pb.ClaimOutboundResponse(outbound_messages=[outbound_pb(r) for r in claimed])

    async def CompleteOutbound(self, request: pb.CompleteOutboundRequest, context: Ctx) -> pb.CompleteOutboundResponse:
        row = await outbound_uc.complete_outbound(
            self._deps, ids.OUTBOUND.parse(request.id, "id"), request.processor_id
        )
        return pb.CompleteOutboundResponse(outbound=outbound_pb(row) if row else None)

    async def FailOutbound(self, request: pb.FailOutboundRequest, context: Ctx) -> pb.FailOutboundResponse:
        row = await outbound_uc.fail_outbound(
            self._deps,
            ids.OUTBOUND.parse(request.id, "id"),
            request.processor_id,
            request.error,
            retry=request.retry if request.HasField("retry") else True,
        )
        return pb.FailOutboundResponse(outbound=outbound_pb(row) if row else None)

    async def ReleaseOutbound(self, request: pb.ReleaseOutboundRequest, context: Ctx) -> pb.ReleaseOutboundResponse:
        released = await outbound_uc.release_outbound(
            self._deps, ids.OUTBOUND.parse(request.id, "id"), request.attempt_count
        )
        return pb.ReleaseOutboundResponse(released=released)

    async def ListPendingOutbound(
        self, request: pb.ListPendingOutboundRequest, context: Ctx
    ) -> pb.ListPendingOutboundResponse:
        page = await outbound_uc.list_pending_outbound(
            self._deps,
            ids.CONVERSATION.parse(request.conversation_id, "conversation_id"),
            page_request(request.page_size, request.page_token),
        )
        return pb.ListPendingOutboundResponse(
            outbound_messages=[outbound_pb(r) for r in page.items], next_page_token=page.next_page_token
        )

    async def WatchOutbound(self, request: pb.WatchOutboundRequest, context: Ctx) -> AsyncIterator[pb.WatchOutboundResponse]:
        channel = _channel(request.channel)
        async for claimable in outbound_uc.watch_outbound(self._deps, request.account_id, channel):
            yield pb.WatchOutboundResponse(
                claimable_count=claimable.count, observe_time=timestamp(claimable.observed_at)
            )

    async def RequeueStaleOutbound(
        self, request: pb.RequeueStaleOutboundRequest, context: Ctx
    ) -> pb.RequeueStaleOutboundResponse:
        swept = await outbound_uc.requeue_stale_outbound(self._deps, request.batch_size)
        return pb.RequeueStaleOutboundResponse(requeued=swept.requeued, failed=swept.failed, more=swept.more)

    # --- WhatsApp accounts ---

    async def UpsertWhatsAppAccount(
        self, request: pb.UpsertWhatsAppAccountRequest, context: Ctx
    ) -> pb.UpsertWhatsAppAccountResponse:
        meta = json_format.MessageToDict(request.meta) if request.HasField("meta") else None
        account, created = await whatsapp_uc.upsert_account(
            self._deps, request.account_id, request.phone, request.enabled, meta
        )
        return pb.UpsertWhatsAppAccountResponse(account=account_pb(account), created=created)

    async def ListWhatsAppAccounts(
        self, request: pb.ListWhatsAppAccountsRequest, context: Ctx
    ) -> pb.ListWhatsAppAccountsResponse:
        page = await whatsapp_uc.list_accounts(
            self._deps, request.include_disabled, key_page(request.page_size, request.page_token)
        )
        return pb.ListWhatsAppAccountsResponse(
            accounts=[account_pb(a) for a in page.items], next_page_token=page.next_page_token
        )

    # --- WhatsApp account leases ---

    async def AcquireLease(self, request: pb.AcquireLeaseRequest, context: Ctx) -> pb.AcquireLeaseResponse:
        result = await whatsapp_uc.acquire_lease(
            self._deps, request.account_id, request.owner_id, _duration(request, "ttl")
        )
        return pb.AcquireLeaseResponse(acquired=result.acquired, lease=lease_pb(result.lease))

    async def HeartbeatLease(self, request: pb.HeartbeatLeaseRequest, context: Ctx) -> pb.HeartbeatLeaseResponse:
        lease = await whatsapp_uc.heartbeat_lease(
            self._deps, request.account_id, request.owner_id, _duration(request, "ttl")
        )
        return pb.HeartbeatLeaseResponse(renewed=lease is not None, lease=lease_pb(lease) if lease else None)

    async def ReleaseLease(self, request: pb.ReleaseLeaseRequest, context: Ctx) -> pb.ReleaseLeaseResponse:
        released = await whatsapp_uc.release_lease(self._deps, request.account_id, request.owner_id)
        return pb.ReleaseLeaseResponse(released=released)

    async def ListOwnedAccounts(self, request: pb.ListOwnedAccountsRequest, context: Ctx) -> pb.ListOwnedAccountsResponse:
        page = await whatsapp_uc.list_owned_accounts(
            self._deps, request.owner_id, key_page(request.page_size, request.page_token)
        )
        return pb.ListOwnedAccountsResponse(account_ids=page.items, next_page_token=page.next_page_token)

    async def GetLease(self, request: pb.GetLeaseRequest, context: Ctx) -> pb.GetLeaseResponse:
        lease = await whatsapp_uc.get_lease(self._deps, request.account_id)
        return pb.GetLeaseResponse(lease=lease_pb(lease) if lease else None)

    # --- WhatsApp session store ---

    async def GetSessionValue(self, request: pb.GetSessionValueRequest, context: Ctx) -> pb.GetSessionValueResponse:
        return pb.GetSessionValueResponse(data=await whatsapp_uc.get_session_value(self._deps, request.key))

    async def SetSessionValue(self, request: pb.SetSessionValueRequest, context: Ctx) -> pb.SetSessionValueResponse:
        await whatsapp_uc.set_session_value(self._deps, request.key, request.data)
        return pb.SetSessionValueResponse()

    async def DeleteSessionValue(
        self, request: pb.DeleteSessionValueRequest, context: Ctx
    ) -> pb.DeleteSessionValueResponse:
        return pb.DeleteSessionValueResponse(deleted=await whatsapp_uc.delete_session_value(self._deps, request.key))

    async def ListSessionValues(self, request: pb.ListSessionValuesRequest, context: Ctx) -> pb.ListSessionValuesResponse:
        page = await whatsapp_uc.list_session_values(
            self._deps,
            key_page(request.page_size, request.page_token, default=DEFAULT_SESSION_PAGE, maximum=MAX_SESSION_PAGE),
        )
        return pb.ListSessionValuesResponse(
            entries=[session_entry_pb(e) for e in page.items], next_page_token=page.next_page_token
        )

    async def ClearSessionValues(
        self, request: pb.ClearSessionValuesRequest, context: Ctx
    ) -> pb.ClearSessionValuesResponse:
        return pb.ClearSessionValuesResponse(deleted=await whatsapp_uc.clear_session_values(self._deps))
