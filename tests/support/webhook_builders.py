"""Builders for webhook tests: endpoints over gRPC as their owners register them, events as the
emitting services publish them, the stored rows read back from Postgres."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2

from tests.service.conftest import Running
from tests.support.grpc_client import bearer, service
from zenthor import ids
from zenthor.convert import timestamp
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb

JOB_COMPLETED = pb.WEBHOOK_EVENT_TYPE_JOB_COMPLETED
JOB_FAILED = pb.WEBHOOK_EVENT_TYPE_JOB_FAILED
APPROVAL_REQUESTED = pb.WEBHOOK_EVENT_TYPE_APPROVAL_REQUESTED
MESSAGE_CREATED = pb.WEBHOOK_EVENT_TYPE_MESSAGE_CREATED
# A public address as an IP literal: accepted without the dev flag, and no DNS needed.
PUBLIC_URL = "https://93.184.216.34/hooks/zenthor"


def as_user(delivery: Running, subject: str) -> tuple[tuple[str, str], ...]:
    return bearer(delivery.issuer.token(subject))


async def create_endpoint(
    delivery: Running,
    subject: str,
    *,
    url: str = PUBLIC_URL,
    event_types: tuple[int, ...] = (JOB_COMPLETED, JOB_FAILED),
    **extra: Any,
) -> pb.CreateWebhookEndpointResponse:
    request = pb.CreateWebhookEndpointRequest(url=url, event_types=list(event_types), **extra)
    reply: pb.CreateWebhookEndpointResponse = await delivery.stub.CreateWebhookEndpoint(
        request, metadata=as_user(delivery, subject)
    )
    return reply


async def publish(
    delivery: Running,
    *,
    owner_user_id: uuid.UUID | None,
    event_type: int = JOB_COMPLETED,
    entity: str | None = None,
    owner_contact_id: uuid.UUID | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[str, pb.PublishWebhookEventResponse]:
    """An event as an emitting service's outbox publishes it; answers its id and the reply."""
    names = {JOB_COMPLETED: "job.completed", JOB_FAILED: "job.failed", MESSAGE_CREATED: "message.created",
             APPROVAL_REQUESTED: "approval.requested"}
    event_id = f"{names[event_type]}:{entity or ids.JOB.format(ids.JOB.new())}"
    struct = struct_pb2.Struct()
    struct.update(data or {"job_id": event_id.split(":", 1)[1], "attempt_count": 1})
    reply = await delivery.stub.PublishWebhookEvent(
        pb.PublishWebhookEventRequest(
            event_id=event_id,
            type=event_type,
            occur_time=timestamp(datetime.now(UTC)),
            owner_user_id=ids.USER.format(owner_user_id) if owner_user_id else None,
            owner_contact_id=ids.CONTACT.format(owner_contact_id) if owner_contact_id else None,
            data=struct,
        ),
        metadata=service(),
    )
    return event_id, reply


DELIVERY_COLUMNS = ("id", "event_id", "endpoint_id", "status", "series", "last_error")


def deliveries(delivery: Running, event_id: str | None = None) -> list[dict[str, Any]]:
    rows = delivery.db.sql(
        f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM delivery.webhook_deliveries"
        " WHERE %s::text IS NULL OR event_id = %s ORDER BY id",
        (event_id, event_id),
    )
    return [dict(zip(DELIVERY_COLUMNS, r, strict=True)) for r in rows]


def workflow_starts(delivery: Running) -> list[str]:
    """The keys (workflow ids) of the delivery workflow starts in delivery's outbox."""
    rows = delivery.db.sql("SELECT key FROM delivery.outbox WHERE topic = 'temporal.webhook_delivery' ORDER BY key")
    return [str(r[0]) for r in rows]
