"""What delivery sends to its peers through the outbox: the delivery outcome of a message
(docs/hardening.md #27) to messages' idempotent MarkMessageDelivery. Retry starts
(zenthor.retries) are the other topic, wired in app.py.

A permanent answer (the message is gone, or already carries another final outcome) is parked
by the outbox relay itself (zenthor.errors.is_permanent); anything else is retried."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.delivery.domain.outbound import MARK_DELIVERY_TOPIC
from zenthor.clients import Peers
from zenthor.gen.zenthor.messages.v1 import messages_pb2
from zenthor.outbox import Handler

_OUTCOME = {"delivered": messages_pb2.MESSAGE_STATUS_DELIVERED, "failed": messages_pb2.MESSAGE_STATUS_FAILED}


def outbox_handlers(peers: Peers) -> dict[str, Handler]:
    async def mark_message_delivery(payload: Mapping[str, Any]) -> None:
        request = messages_pb2.MarkMessageDeliveryRequest(
            message_id=payload["message_id"], status=_OUTCOME[payload["outcome"]]
        )
        await peers.messages().MarkMessageDelivery(request)

    return {MARK_DELIVERY_TOPIC: mark_message_delivery}
