"""DeliveryService over gRPC: request → wire → one use case → wire → response. No rules, no SQL here."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.delivery import wire
from services.delivery.usecases import outbound as outbound_uc
from services.delivery.usecases import webhooks as webhooks_uc
from services.delivery.usecases import whatsapp as whatsapp_uc
from services.delivery.usecases.deps import Deps
from zenthor.auth.principal import ResolvedUser, current_principal
from zenthor.convert import optional_bool, optional_str
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc
from zenthor.server import Ctx


class DeliveryServicer(delivery_pb2_grpc.DeliveryServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    # --- outbound queue ---

    async def EnqueueOutbound(self, request: pb.EnqueueOutboundRequest, context: Ctx) -> pb.EnqueueOutboundResponse:
        result = await outbound_uc.enqueue_outbound(
            self._deps,
            channel=wire.channel(request.channel),
            account_id=wire.optional_account_id(request),
            conversation_id=wire.conversation_id(request.conversation_id),
            message_id=wire.message_id(request.message_id),
            to=wire.optional_to(request),
            content=request.content,
            metadata=wire.outbound_metadata(request),
        )
        return pb.EnqueueOutboundResponse(outbound=wire.outbound_pb(result.outbound), created=result.created)

    async def ClaimOutbound(self, request: pb.ClaimOutboundRequest, context: Ctx) -> pb.ClaimOutboundResponse:
        outcome = await outbound_uc.claim_outbound(
            self._deps,
            account_id=request.account_id,
            processor_id=request.processor_id,
            channel=wire.channel(request.channel),
            max_messages=request.max_messages,
            lease=wire.claim_lease(request),
            completed=wire.outbound_ids(request.completed_ids, "completed_ids"),
        )
        return pb.ClaimOutboundResponse(
            outbound_messages=[wire.outbound_pb(r) for r in outcome.claimed],
            refused_ids=wire.outbound_refs(outcome.refused),
        )

    async def WorkOutbound(
        self, requests: AsyncIterator[pb.WorkOutboundRequest], context: Ctx
    ) -> AsyncIterator[pb.WorkOutboundResponse]:
        # One ClaimOutbound per message, answered in order: the same validation, acks and claim.
        async for request in requests:
            yield pb.WorkOutboundResponse(claim=await self.ClaimOutbound(request.claim, context))

    async def CompleteOutbound(self, request: pb.CompleteOutboundRequest, context: Ctx) -> pb.CompleteOutboundResponse:
        row = await outbound_uc.complete_outbound(self._deps, wire.outbound_id(request.id), request.processor_id)
        return pb.CompleteOutboundResponse(outbound=wire.optional_outbound_pb(row))

    async def CompleteOutboundMessages(
        self, request: pb.CompleteOutboundMessagesRequest, context: Ctx
    ) -> pb.CompleteOutboundMessagesResponse:
        refused = await outbound_uc.complete_outbound_messages(
            self._deps, request.processor_id, wire.outbound_ids(request.ids, "ids")
        )
        return pb.CompleteOutboundMessagesResponse(refused_ids=wire.outbound_refs(refused))

    async def FailOutbound(self, request: pb.FailOutboundRequest, context: Ctx) -> pb.FailOutboundResponse:
        row = await outbound_uc.fail_outbound(
            self._deps,
            wire.outbound_id(request.id),
            request.processor_id,
            request.error,
            retry=wire.fail_retry(request),
        )
        return pb.FailOutboundResponse(outbound=wire.optional_outbound_pb(row))

    async def ReleaseOutbound(self, request: pb.ReleaseOutboundRequest, context: Ctx) -> pb.ReleaseOutboundResponse:
        released = await outbound_uc.release_outbound(self._deps, wire.outbound_id(request.id), request.attempt_count)
        return pb.ReleaseOutboundResponse(released=released)

    async def ListPendingOutbound(
        self, request: pb.ListPendingOutboundRequest, context: Ctx
    ) -> pb.ListPendingOutboundResponse:
        page = await outbound_uc.list_pending_outbound(
            self._deps,
            wire.conversation_id(request.conversation_id),
            wire.pending_page(request),
        )
        return pb.ListPendingOutboundResponse(
            outbound_messages=[wire.outbound_pb(r) for r in page.items], next_page_token=page.next_page_token
        )

    async def WatchOutbound(self, request: pb.WatchOutboundRequest, context: Ctx) -> AsyncIterator[pb.WatchOutboundResponse]:
        channel = wire.channel(request.channel)
        async for claimable in outbound_uc.watch_outbound(self._deps, request.account_id, channel):
            yield wire.watch_outbound_pb(claimable)

    async def RequeueStaleOutbound(
        self, request: pb.RequeueStaleOutboundRequest, context: Ctx
    ) -> pb.RequeueStaleOutboundResponse:
        swept = await outbound_uc.requeue_stale_outbound(self._deps, request.batch_size)
        return pb.RequeueStaleOutboundResponse(requeued=swept.requeued, failed=swept.failed, more=swept.more)

    # --- WhatsApp accounts ---

    async def UpsertWhatsAppAccount(
        self, request: pb.UpsertWhatsAppAccountRequest, context: Ctx
    ) -> pb.UpsertWhatsAppAccountResponse:
        account, created = await whatsapp_uc.upsert_account(
            self._deps, request.account_id, request.phone, request.enabled, wire.account_meta(request)
        )
        return pb.UpsertWhatsAppAccountResponse(account=wire.account_pb(account), created=created)

    async def ListWhatsAppAccounts(
        self, request: pb.ListWhatsAppAccountsRequest, context: Ctx
    ) -> pb.ListWhatsAppAccountsResponse:
        page = await whatsapp_uc.list_accounts(self._deps, request.include_disabled, wire.accounts_page(request))
        return pb.ListWhatsAppAccountsResponse(
            accounts=[wire.account_pb(a) for a in page.items], next_page_token=page.next_page_token
        )

    # --- WhatsApp account leases ---

    async def AcquireLease(self, request: pb.AcquireLeaseRequest, context: Ctx) -> pb.AcquireLeaseResponse:
        result = await whatsapp_uc.acquire_lease(
            self._deps, request.account_id, request.owner_id, wire.lease_ttl(request)
        )
        return pb.AcquireLeaseResponse(acquired=result.acquired, lease=wire.lease_pb(result.lease))

    async def HeartbeatLease(self, request: pb.HeartbeatLeaseRequest, context: Ctx) -> pb.HeartbeatLeaseResponse:
        lease = await whatsapp_uc.heartbeat_lease(
            self._deps, request.account_id, request.owner_id, wire.lease_ttl(request)
        )
        return pb.HeartbeatLeaseResponse(renewed=lease is not None, lease=wire.optional_lease_pb(lease))

    async def ReleaseLease(self, request: pb.ReleaseLeaseRequest, context: Ctx) -> pb.ReleaseLeaseResponse:
        released = await whatsapp_uc.release_lease(self._deps, request.account_id, request.owner_id)
        return pb.ReleaseLeaseResponse(released=released)

    async def ListOwnedAccounts(self, request: pb.ListOwnedAccountsRequest, context: Ctx) -> pb.ListOwnedAccountsResponse:
        page = await whatsapp_uc.list_owned_accounts(self._deps, request.owner_id, wire.owned_accounts_page(request))
        return pb.ListOwnedAccountsResponse(account_ids=page.items, next_page_token=page.next_page_token)

    async def GetLease(self, request: pb.GetLeaseRequest, context: Ctx) -> pb.GetLeaseResponse:
        lease = await whatsapp_uc.get_lease(self._deps, request.account_id)
        return pb.GetLeaseResponse(lease=wire.optional_lease_pb(lease))

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
        page = await whatsapp_uc.list_session_values(self._deps, wire.session_page(request))
        return pb.ListSessionValuesResponse(
            entries=[wire.session_entry_pb(e) for e in page.items], next_page_token=page.next_page_token
        )

    async def ClearSessionValues(
        self, request: pb.ClearSessionValuesRequest, context: Ctx
    ) -> pb.ClearSessionValuesResponse:
        return pb.ClearSessionValuesResponse(deleted=await whatsapp_uc.clear_session_values(self._deps))

    # --- completion webhooks ---

    async def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: Ctx
    ) -> pb.CreateWebhookEndpointResponse:
        created = await webhooks_uc.create_endpoint(
            self._deps,
            _user(),
            url=request.url,
            event_types=wire.webhook_event_types(request.event_types),
            enabled=optional_bool(request, "enabled"),
            owner_id=wire.optional_webhook_owner(request),
        )
        return pb.CreateWebhookEndpointResponse(endpoint=wire.webhook_endpoint_pb(created.endpoint), secret=created.secret)

    async def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: Ctx
    ) -> pb.ListWebhookEndpointsResponse:
        page = await webhooks_uc.list_endpoints(self._deps, _user(), wire.webhook_endpoints_page(request), request.all_users)
        return pb.ListWebhookEndpointsResponse(
            endpoints=[wire.webhook_endpoint_pb(e) for e in page.items], next_page_token=page.next_page_token
        )

    async def GetWebhookEndpoint(self, request: pb.GetWebhookEndpointRequest, context: Ctx) -> pb.GetWebhookEndpointResponse:
        endpoint = await webhooks_uc.get_endpoint(self._deps, _user(), wire.webhook_endpoint_id(request.id))
        return pb.GetWebhookEndpointResponse(endpoint=wire.webhook_endpoint_pb(endpoint))

    async def UpdateWebhookEndpoint(
        self, request: pb.UpdateWebhookEndpointRequest, context: Ctx
    ) -> pb.UpdateWebhookEndpointResponse:
        endpoint = await webhooks_uc.update_endpoint(
            self._deps,
            _user(),
            wire.webhook_endpoint_id(request.id),
            url=optional_str(request, "url"),
            event_types=wire.webhook_event_types(request.event_types),
            enabled=optional_bool(request, "enabled"),
        )
        return pb.UpdateWebhookEndpointResponse(endpoint=wire.webhook_endpoint_pb(endpoint))

    async def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, context: Ctx
    ) -> pb.DeleteWebhookEndpointResponse:
        await webhooks_uc.delete_endpoint(self._deps, _user(), wire.webhook_endpoint_id(request.id))
        return pb.DeleteWebhookEndpointResponse()

    async def RotateWebhookEndpointSecret(
        self, request: pb.RotateWebhookEndpointSecretRequest, context: Ctx
    ) -> pb.RotateWebhookEndpointSecretResponse:
        rotated = await webhooks_uc.rotate_secret(self._deps, _user(), wire.webhook_endpoint_id(request.id))
        return pb.RotateWebhookEndpointSecretResponse(endpoint=wire.webhook_endpoint_pb(rotated.endpoint), secret=rotated.secret)

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Ctx
    ) -> pb.ListWebhookDeliveriesResponse:
        page = await webhooks_uc.list_deliveries(
            self._deps, _user(), wire.webhook_endpoint_id(request.endpoint_id, "endpoint_id"), wire.webhook_deliveries_page(request)
        )
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[wire.webhook_delivery_pb(d) for d in page.items], next_page_token=page.next_page_token
        )

    async def RedeliverWebhook(self, request: pb.RedeliverWebhookRequest, context: Ctx) -> pb.RedeliverWebhookResponse:
        delivery = await webhooks_uc.redeliver(self._deps, _user(), wire.webhook_delivery_id(request.delivery_id))
        return pb.RedeliverWebhookResponse(delivery=wire.webhook_delivery_pb(delivery))

    async def PublishWebhookEvent(
        self, request: pb.PublishWebhookEventRequest, context: Ctx
    ) -> pb.PublishWebhookEventResponse:
        published = await webhooks_uc.publish_event(self._deps, wire.new_event(request))
        return pb.PublishWebhookEventResponse(deliveries_created=published.deliveries_created, duplicate=published.duplicate)

    async def PublishWebhookEvents(
        self, request: pb.PublishWebhookEventsRequest, context: Ctx
    ) -> pb.PublishWebhookEventsResponse:
        results = await webhooks_uc.publish_events(self._deps, wire.new_events(request))
        return wire.published_events_pb(request, results)

    async def GetWebhookDeliveryTarget(
        self, request: pb.GetWebhookDeliveryTargetRequest, context: Ctx
    ) -> pb.GetWebhookDeliveryTargetResponse:
        target = await webhooks_uc.delivery_target(self._deps, wire.webhook_delivery_id(request.delivery_id))
        return wire.webhook_target_pb(target)

    async def RecordWebhookAttempt(
        self, request: pb.RecordWebhookAttemptRequest, context: Ctx
    ) -> pb.RecordWebhookAttemptResponse:
        status = await webhooks_uc.record_attempt(
            self._deps, wire.webhook_delivery_id(request.delivery_id), wire.webhook_attempt(request, self._deps.clock())
        )
        return pb.RecordWebhookAttemptResponse(status=wire.DELIVERY_STATUS_PB[status])

    async def FailWebhookDelivery(self, request: pb.FailWebhookDeliveryRequest, context: Ctx) -> pb.FailWebhookDeliveryResponse:
        status = await webhooks_uc.fail_delivery(
            self._deps, wire.webhook_delivery_id(request.delivery_id), request.series, request.error
        )
        return pb.FailWebhookDeliveryResponse(status=wire.DELIVERY_STATUS_PB[status])

    async def CleanupWebhookEvents(
        self, request: pb.CleanupWebhookEventsRequest, context: Ctx
    ) -> pb.CleanupWebhookEventsResponse:
        counts = await webhooks_uc.cleanup_events(self._deps, request.batch_size)
        return pb.CleanupWebhookEventsResponse(deleted=counts.deleted, more=counts.more)


def _user() -> ResolvedUser:
    return current_principal().require_user()
