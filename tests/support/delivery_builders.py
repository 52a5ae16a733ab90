"""Builders and readers for delivery tests: queue rows over gRPC, read them back from Postgres."""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf.duration_pb2 import Duration

from tests.service.conftest import Running
from tests.support.grpc_client import service
from zenthor import ids
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.outbox import BUNDLE_KEY

WHATSAPP = types_pb2.CHANNEL_WHATSAPP
WEB = types_pb2.CHANNEL_WEB


async def enqueue(
    delivery: Running,
    *,
    to: str | None = "5511999990000",
    account_id: str | None = "default",
    channel: int = WHATSAPP,
    content: str = "hello",
    conversation_id: uuid.UUID | None = None,
    message_id: uuid.UUID | None = None,
    kind: str = "assistant_message",
) -> pb.OutboundMessage:
    reply = await delivery.stub.EnqueueOutbound(
        pb.EnqueueOutboundRequest(
            channel=channel,
            account_id=account_id,
            conversation_id=ids.CONVERSATION.format(conversation_id or ids.CONVERSATION.new()),
            message_id=ids.MESSAGE.format(message_id or ids.MESSAGE.new()),
            to=to,
            content=content,
            metadata=pb.OutboundMetadata(kind=kind),
        ),
        metadata=service(),
    )
    return reply.outbound


async def hold_lease(delivery: Running, owner_id: str, *, account_id: str = "default", ttl_s: int = 600) -> pb.Lease:
    """The account's WhatsApp lease for `owner_id`, as its egress holds it before claiming (only
    the holder claims, completes and fails, docs/hardening.md #41): the account is upserted, and a
    lease another owner still holds is released first, as that owner does when it stops."""
    stub = delivery.stub
    await stub.UpsertWhatsAppAccount(
        pb.UpsertWhatsAppAccountRequest(account_id=account_id, phone=account_id, enabled=True), metadata=service()
    )
    acquire = pb.AcquireLeaseRequest(account_id=account_id, owner_id=owner_id, ttl=Duration(seconds=ttl_s))
    reply = await stub.AcquireLease(acquire, metadata=service())
    if not reply.acquired:
        await stub.ReleaseLease(
            pb.ReleaseLeaseRequest(account_id=account_id, owner_id=reply.lease.owner_id), metadata=service()
        )
        reply = await stub.AcquireLease(acquire, metadata=service())
    assert reply.acquired, reply
    return reply.lease


async def claim(
    delivery: Running, processor_id: str, *, account_id: str = "default", max_messages: int = 1, **extra: Any
) -> list[pb.OutboundMessage]:
    """ClaimOutbound as `processor_id` (who must hold the account's lease to get anything)."""
    reply = await delivery.stub.ClaimOutbound(
        pb.ClaimOutboundRequest(
            account_id=account_id, processor_id=processor_id, channel=extra.pop("channel", WHATSAPP),
            max_messages=max_messages, **extra,
        ),
        metadata=service(),
    )
    return list(reply.outbound_messages)


def row(delivery: Running, outbound_id: str) -> dict[str, Any]:
    """The stored outbound row, by column name."""
    columns = ["status", "processor_id", "locked_until", "attempt_count", "last_error", "next_attempt_at", "account_id",
               "is_head"]
    rows = delivery.db.sql(
        f"SELECT {', '.join(columns)} FROM delivery.outbound_messages WHERE id = %s",
        (ids.OUTBOUND.parse(outbound_id, "id"),),
    )
    assert len(rows) == 1, rows
    return dict(zip(columns, rows[0], strict=True))


def set_attempts(delivery: Running, outbound_id: str, attempt_count: int) -> None:
    delivery.db.sql(
        "UPDATE delivery.outbound_messages SET attempt_count = %s WHERE id = %s",
        (attempt_count, ids.OUTBOUND.parse(outbound_id, "id")),
    )


def outbox_events(delivery: Running, topic: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (k, p)
        for k, p in delivery.db.sql(
            "SELECT key, payload FROM delivery.outbox WHERE topic = %s ORDER BY created_at, key", (topic,)
        )
    ]


def delivery_marks(delivery: Running) -> list[tuple[str, dict[str, Any]]]:
    """The outcome reports to messages, as (outbound id, payload) in write order: each acknowledging
    statement stores its reports as one bundle row (zenthor.outbox.add_bundle)."""
    return [
        (mark["outbound_id"], {k: v for k, v in mark.items() if k != "outbound_id"})
        for _, bundle in outbox_events(delivery, "messages.mark_delivery")
        for mark in bundle[BUNDLE_KEY]
    ]


def count_rows(delivery: Running, table: str) -> int:
    return int(delivery.db.sql(f"SELECT count(*) FROM delivery.{table}")[0][0])
