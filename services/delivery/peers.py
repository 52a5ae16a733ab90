"""What delivery sends to its peers through the outbox: the delivery outcome of a message
(docs/hardening.md #27) to messages' idempotent MarkMessageDelivery. Retry starts
(zenthor.retries) and webhook delivery starts (zenthor.webhooks) are the other topics, wired in
app.py. Also the one direct call: the web user a WhatsApp contact is linked to (identity), for
the fan-out of a contact-owned conversation's webhook events.

A permanent answer (the message is gone, or already carries another final outcome) is parked
by the outbox relay itself (zenthor.errors.is_permanent); anything else is retried."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from services.delivery.domain.outbound import MARK_DELIVERY_TOPIC
from zenthor import ids
from zenthor.clients import Peers
from zenthor.gen.zenthor.identity.v1 import identity_pb2
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


def linked_user_lookup(peers: Peers) -> Callable[[uuid.UUID], Awaitable[uuid.UUID | None]]:
    """The user a contact is linked to by phone verification; None for an unknown or unlinked
    contact. A failed call raises, so the publishing outbox tries the event again later."""

    async def linked_user(contact_id: uuid.UUID) -> uuid.UUID | None:
        reply = await peers.identity().BatchGetContacts(
            identity_pb2.BatchGetContactsRequest(ids=[ids.CONTACT.format(contact_id)])
        )
        for contact in reply.contacts:
            if contact.HasField("user_id"):
                return ids.USER.parse(contact.user_id, "user_id")
        return None

    return linked_user
