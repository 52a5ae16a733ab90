"""Proto ⇄ domain conversions of the delivery contract: ids, enums, optional fields, durations,
page tokens and `Struct`s in; domain values out as response messages. The rules themselves
live in domain/."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2

from services.delivery.domain import outbound as outbound_rules
from services.delivery.domain import webhooks as webhook_rules
from services.delivery.domain import whatsapp as whatsapp_rules
from services.delivery.domain.outbound import Channel, Outbound, OutboundMetadata, OutboundStatus
from services.delivery.domain.webhooks import (
    Attempt,
    Delivery,
    DeliveryStatus,
    DeliveryTarget,
    Endpoint,
    NewEvent,
)
from services.delivery.domain.whatsapp import Account, Lease, SessionEntry
from services.delivery.usecases.outbound import ClaimableCount
from services.delivery.usecases.webhooks import Published
from zenthor import ids
from zenthor.convert import duration_pb, optional_duration, optional_id, optional_str, timestamp
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.common.v1 import types_pb2 as common
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.pagination import KeyPageRequest, PageRequest, key_page_request, page_request
from zenthor.validate import unstorable_json
from zenthor.webhooks import EVENT_TYPE_PB, WebhookEventType

STATUS_PB = {
    OutboundStatus.PENDING: pb.OUTBOUND_STATUS_PENDING,
    OutboundStatus.PROCESSING: pb.OUTBOUND_STATUS_PROCESSING,
    OutboundStatus.WAITING_RETRY: pb.OUTBOUND_STATUS_WAITING_RETRY,
    OutboundStatus.SENT: pb.OUTBOUND_STATUS_SENT,
    OutboundStatus.FAILED: pb.OUTBOUND_STATUS_FAILED,
}
CHANNEL_PB = {Channel.WEB: common.CHANNEL_WEB, Channel.WHATSAPP: common.CHANNEL_WHATSAPP}
CHANNEL_OF: dict[int, Channel] = {int(v): k for k, v in CHANNEL_PB.items()}


# --- requests: ids, enums, optional fields, pages ---


def claim_lease(request: pb.ClaimOutboundRequest) -> timedelta | None:
    """The claim lease: the kit refuses what cannot be a duration, the domain (claim_lease)
    says what it may be."""
    return optional_duration(request, "lease")


def lease_ttl(request: pb.AcquireLeaseRequest | pb.HeartbeatLeaseRequest) -> timedelta | None:
    """An account lease's TTL; the domain (lease_ttl) says what it may be."""
    return optional_duration(request, "ttl")


def optional_account_id(request: pb.EnqueueOutboundRequest) -> str | None:
    return optional_str(request, "account_id")


def optional_to(request: pb.EnqueueOutboundRequest) -> str | None:
    return optional_str(request, "to")


def channel(value: int, field: str = "channel") -> Channel:
    return outbound_rules.check_channel(CHANNEL_OF.get(value), field)


def conversation_id(value: str, field: str = "conversation_id") -> uuid.UUID:
    return ids.CONVERSATION.parse(value, field)


def message_id(value: str, field: str = "message_id") -> uuid.UUID:
    return ids.MESSAGE.parse(value, field)


def outbound_id(value: str, field: str = "id") -> uuid.UUID:
    return ids.OUTBOUND.parse(value, field)


def outbound_ids(values: Sequence[str], field: str) -> list[uuid.UUID]:
    return [ids.OUTBOUND.parse(v, f"{field}[{i}]") for i, v in enumerate(values)]


def outbound_refs(values: Sequence[uuid.UUID]) -> list[str]:
    return [ids.OUTBOUND.format(v) for v in values]


def outbound_metadata(request: pb.EnqueueOutboundRequest) -> OutboundMetadata | None:
    if not request.HasField("metadata"):
        return None
    return OutboundMetadata(kind=request.metadata.kind, tool_name=optional_str(request.metadata, "tool_name"))


def fail_retry(request: pb.FailOutboundRequest) -> bool:
    """FailOutbound retries unless told not to (`retry` absent means true)."""
    return request.retry if request.HasField("retry") else True


def pending_page(request: pb.ListPendingOutboundRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, outbound_rules.PENDING_PAGE)


def accounts_page(request: pb.ListWhatsAppAccountsRequest) -> KeyPageRequest:
    return key_page_request(
        request.page_size, request.page_token, whatsapp_rules.ACCOUNTS_PAGE, max_key_chars=outbound_rules.MAX_FREE_ID
    )


def owned_accounts_page(request: pb.ListOwnedAccountsRequest) -> KeyPageRequest:
    return key_page_request(
        request.page_size,
        request.page_token,
        whatsapp_rules.OWNED_ACCOUNTS_PAGE,
        max_key_chars=outbound_rules.MAX_FREE_ID,
    )


def session_page(request: pb.ListSessionValuesRequest) -> KeyPageRequest:
    return key_page_request(
        request.page_size, request.page_token, whatsapp_rules.SESSION_PAGE, max_key_chars=whatsapp_rules.MAX_SESSION_KEY
    )


def account_meta(request: pb.UpsertWhatsAppAccountRequest) -> dict[str, Any] | None:
    return json_format.MessageToDict(request.meta) if request.HasField("meta") else None


# --- responses ---


def outbound_pb(row: Outbound) -> pb.OutboundMessage:
    metadata = (
        pb.OutboundMetadata(kind=row.metadata.kind, tool_name=row.metadata.tool_name) if row.metadata else None
    )
    return pb.OutboundMessage(
        id=ids.OUTBOUND.format(row.id),
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        channel=CHANNEL_PB[row.channel],
        account_id=row.account_id,
        conversation_id=ids.CONVERSATION.format(row.conversation_id),
        message_id=ids.MESSAGE.format(row.message_id),
        to=row.to,
        payload=pb.OutboundPayload(content=row.content, metadata=metadata),
        status=STATUS_PB[row.status],
        processor_id=row.processor_id,
        lease_expire_time=timestamp(row.locked_until) if row.locked_until else None,
        attempt_count=row.attempt_count,
        last_error=row.last_error,
        next_attempt_time=timestamp(row.next_attempt_at) if row.next_attempt_at else None,
    )


def optional_outbound_pb(row: Outbound | None) -> pb.OutboundMessage | None:
    return outbound_pb(row) if row is not None else None


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


def optional_lease_pb(lease: Lease | None) -> pb.Lease | None:
    return lease_pb(lease) if lease is not None else None


def session_entry_pb(entry: SessionEntry) -> pb.SessionEntry:
    return pb.SessionEntry(
        key=entry.key, data=entry.data, create_time=timestamp(entry.created_at), update_time=timestamp(entry.updated_at)
    )


def watch_outbound_pb(claimable: ClaimableCount) -> pb.WatchOutboundResponse:
    return pb.WatchOutboundResponse(claimable_count=claimable.count, observe_time=timestamp(claimable.observed_at))


# --- completion webhooks ---

WEBHOOK_EVENT_TYPE_OF: dict[int, WebhookEventType] = {int(v): k for k, v in EVENT_TYPE_PB.items()}
DELIVERY_STATUS_PB = {
    DeliveryStatus.PENDING: pb.WEBHOOK_DELIVERY_STATUS_PENDING,
    DeliveryStatus.DELIVERED: pb.WEBHOOK_DELIVERY_STATUS_DELIVERED,
    DeliveryStatus.FAILED: pb.WEBHOOK_DELIVERY_STATUS_FAILED,
}
# The longest attempt the log records: far above any POST's bound (ZENTHOR_WEBHOOKS_TIMEOUT_S).
MAX_ATTEMPT_DURATION = timedelta(hours=1)


def webhook_event_types(values: Sequence[int]) -> list[WebhookEventType | None]:
    """Unknown or unspecified values stay None: the domain refuses them naming the field."""
    return [WEBHOOK_EVENT_TYPE_OF.get(v) for v in values]


def webhook_endpoint_id(value: str, field: str = "id") -> uuid.UUID:
    return ids.WEBHOOK_ENDPOINT.parse(value, field)


def webhook_delivery_id(value: str, field: str = "delivery_id") -> uuid.UUID:
    return ids.WEBHOOK_DELIVERY.parse(value, field)


def optional_webhook_owner(request: pb.CreateWebhookEndpointRequest) -> uuid.UUID | None:
    return optional_id(ids.USER, request, "user_id")


def webhook_endpoints_page(request: pb.ListWebhookEndpointsRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, webhook_rules.ENDPOINTS_PAGE)


def webhook_deliveries_page(request: pb.ListWebhookDeliveriesRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, webhook_rules.DELIVERIES_PAGE)


def new_event(request: pb.PublishWebhookEventRequest) -> NewEvent:
    """A published event as the rules check it; INVALID_ARGUMENT naming the field when a value
    cannot even be read (an id of the wrong kind, an impossible time, data that is not a JSON
    object)."""
    data, data_field = event_data(request)
    return NewEvent(
        event_id=request.event_id,
        type=WEBHOOK_EVENT_TYPE_OF.get(request.type),
        occurred_at=occur_time(request),
        owner_user_id=optional_id(ids.USER, request, "owner_user_id"),
        owner_contact_id=optional_id(ids.CONTACT, request, "owner_contact_id"),
        data=data,
        data_field=data_field,
    )


def new_events(request: pb.PublishWebhookEventsRequest) -> list[NewEvent | InvalidArgument]:
    """Each event of a batch, or why it cannot be read: one bad event does not fail the call."""
    events: list[NewEvent | InvalidArgument] = []
    for item in request.events:
        try:
            events.append(new_event(item))
        except InvalidArgument as refused:
            events.append(refused)
    return events


def published_events_pb(
    request: pb.PublishWebhookEventsRequest, results: Sequence[Published | InvalidArgument]
) -> pb.PublishWebhookEventsResponse:
    """One result per event, in order; a refused one carries its event id as sent."""
    return pb.PublishWebhookEventsResponse(
        results=[
            pb.PublishedWebhookEvent(
                event_id=item.event_id,
                refusal=pb.WebhookEventRefusal(field=result.field, description=result.why),
            )
            if isinstance(result, InvalidArgument)
            else pb.PublishedWebhookEvent(
                event_id=result.event_id, deliveries_created=result.deliveries_created, duplicate=result.duplicate
            )
            for item, result in zip(request.events, results, strict=True)
        ]
    )


def occur_time(request: pb.PublishWebhookEventRequest) -> datetime:
    if not request.HasField("occur_time"):
        raise InvalidArgument("occur_time", "is required")
    try:
        return request.occur_time.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument("occur_time", "is not a valid timestamp") from None


def event_data(request: pb.PublishWebhookEventRequest) -> tuple[dict[str, Any], str]:
    """The event's data object, and the field it came in: `data_json` (JSON text, what the
    relays send) or the `data` Struct."""
    if request.data_json:
        if request.HasField("data"):
            raise InvalidArgument("data_json", "set either data or data_json, not both")
        return _json_object(request.data_json), "data_json"
    return _whole_numbers(json_format.MessageToDict(request.data)), "data"


def _not_a_number(constant: str) -> Any:
    raise ValueError(constant)


# One decoder for every event (json.loads with an option builds a new one per call).
_DATA_DECODER = json.JSONDecoder(parse_constant=_not_a_number)


def _json_object(text: str) -> dict[str, Any]:
    """`data_json`, which must hold an object, refused as the request checks refuse the same
    values in a Struct (zenthor/request_checks.py): no NaN or Infinity, no NUL character; and
    no unpaired surrogate, which a Struct cannot hold at all."""
    try:
        value = _DATA_DECODER.decode(text)
    except (ValueError, RecursionError):
        raise InvalidArgument("data_json", "must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidArgument("data_json", "must be a JSON object")
    # Only a \u escape decodes to a NUL or to half of a surrogate pair: raw ones cannot reach
    # here (the request checks refuse a NUL, protobuf refuses text that is not UTF-8).
    if "\\u" in text and (why := unstorable_json(value)):
        raise InvalidArgument("data_json", why)
    return value


def _whole_numbers(value: Any) -> Any:
    """Struct carries every number as a double: whole ones go back to JSON integers (ids,
    counts), so receivers get `"attempt_count": 1`, not `1.0`."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def webhook_attempt(request: pb.RecordWebhookAttemptRequest, now: datetime) -> Attempt:
    """The attempt as recorded; its time defaults to now."""
    attempted_at = now
    if request.HasField("attempt_time"):
        try:
            attempted_at = request.attempt_time.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            raise InvalidArgument("attempt_time", "is not a valid timestamp") from None
    duration = optional_duration(request, "duration", maximum=MAX_ATTEMPT_DURATION) or timedelta(0)
    return Attempt(
        series=request.series,
        attempt=request.attempt,
        attempted_at=attempted_at,
        duration_ms=int(duration.total_seconds() * 1000),
        status_code=request.status_code if request.HasField("status_code") else None,
        error=optional_str(request, "error"),
        succeeded=request.succeeded,
    )


def webhook_endpoint_pb(endpoint: Endpoint) -> pb.WebhookEndpoint:
    return pb.WebhookEndpoint(
        id=ids.WEBHOOK_ENDPOINT.format(endpoint.id),
        create_time=timestamp(endpoint.created_at),
        update_time=timestamp(endpoint.updated_at),
        user_id=ids.USER.format(endpoint.user_id),
        url=endpoint.url,
        event_types=[EVENT_TYPE_PB[t] for t in endpoint.event_types],
        enabled=endpoint.enabled,
    )


def webhook_attempt_pb(attempt: Attempt) -> pb.WebhookAttempt:
    return pb.WebhookAttempt(
        series=attempt.series,
        attempt=attempt.attempt,
        attempt_time=timestamp(attempt.attempted_at),
        duration=duration_pb(timedelta(milliseconds=attempt.duration_ms)),
        status_code=attempt.status_code,
        error=attempt.error,
        succeeded=attempt.succeeded,
    )


def webhook_delivery_pb(delivery: Delivery) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        id=ids.WEBHOOK_DELIVERY.format(delivery.id),
        create_time=timestamp(delivery.created_at),
        update_time=timestamp(delivery.updated_at),
        endpoint_id=ids.WEBHOOK_ENDPOINT.format(delivery.endpoint_id),
        event_id=delivery.event_id,
        event_type=EVENT_TYPE_PB[delivery.event_type],
        status=DELIVERY_STATUS_PB[delivery.status],
        series=delivery.series,
        delivered_time=timestamp(delivery.delivered_at) if delivery.delivered_at else None,
        last_error=delivery.last_error,
        attempts=[webhook_attempt_pb(a) for a in delivery.attempts],
    )


def webhook_target_pb(target: DeliveryTarget) -> pb.GetWebhookDeliveryTargetResponse:
    return pb.GetWebhookDeliveryTargetResponse(
        status=DELIVERY_STATUS_PB[target.status],
        series=target.series,
        url=target.url,
        secret=target.secret,
        event_id=target.event_id,
        body=target.body,
        endpoint_enabled=target.endpoint_enabled,
    )
