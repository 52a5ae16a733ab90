"""What delivery sends to its peers through the outbox: the delivery outcomes of messages
(docs/hardening.md #27) to messages' idempotent MarkMessagesDelivery, a batch per call (one per
outbound message would cost a call per WhatsApp message sent). Retry starts
(zenthor.retries) and webhook delivery starts (zenthor.webhooks) are the other topics, wired in
app.py. Also two direct calls: the web user a WhatsApp contact is linked to (identity), for
the fan-out of a contact-owned conversation's webhook events; and the registration of an
endpoint's owner with agent_queue, which writes job events only for registered users.

A permanent answer (the message is gone, or already carries another final outcome) is parked
by the outbox relay itself, per event of the batch; anything else is retried."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

import grpc

from services.delivery.domain.outbound import MARK_DELIVERY_TOPIC, MAX_DELIVERY_MARKS
from services.delivery.usecases.deps import JobEventListeners
from zenthor import ids
from zenthor.clients import Peers
from zenthor.errors import Unavailable
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2
from zenthor.gen.zenthor.identity.v1 import identity_pb2
from zenthor.gen.zenthor.messages.v1 import messages_pb2
from zenthor.outbox import Batched, PermanentDeliveryError, TopicHandler

_OUTCOME = {"delivered": messages_pb2.MESSAGE_STATUS_DELIVERED, "failed": messages_pb2.MESSAGE_STATUS_FAILED}
_MARK_ACCEPTED = (messages_pb2.DELIVERY_MARK_OUTCOME_MARKED, messages_pb2.DELIVERY_MARK_OUTCOME_ALREADY)


def outbox_handlers(peers: Peers) -> dict[str, TopicHandler]:
    async def mark_messages_delivery(payloads: Sequence[Mapping[str, Any]]) -> list[Exception | None]:
        request = messages_pb2.MarkMessagesDeliveryRequest(
            items=[
                messages_pb2.MarkMessageDeliveryRequest(message_id=p["message_id"], status=_OUTCOME[p["outcome"]])
                for p in payloads
            ]
        )
        reply = await peers.messages().MarkMessagesDelivery(request)
        # The message is gone, or carries another final outcome: no retry changes that.
        return [
            None if r.outcome in _MARK_ACCEPTED
            else PermanentDeliveryError(r.reason or messages_pb2.DeliveryMarkOutcome.Name(r.outcome))
            for r in reply.results
        ]

    return {MARK_DELIVERY_TOPIC: Batched(mark_messages_delivery, max_size=MAX_DELIVERY_MARKS)}


def linked_user_lookup(peers: Peers) -> Callable[[Collection[uuid.UUID]], Awaitable[dict[uuid.UUID, uuid.UUID]]]:
    """The users contacts are linked to by phone verification, all in one call (a published
    batch of events asks once, however many contacts own them); an unknown or unlinked contact
    is left out. A failed call raises, so the publishing outbox tries the events again later."""

    async def linked_users(contact_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        if not contact_ids:
            return {}
        reply = await peers.identity().BatchGetContacts(
            identity_pb2.BatchGetContactsRequest(ids=[ids.CONTACT.format(c) for c in contact_ids])
        )
        return {
            ids.CONTACT.parse(c.id, "id"): ids.USER.parse(c.user_id, "user_id")
            for c in reply.contacts
            if c.HasField("user_id")
        }

    return linked_users


def job_event_listener_registry(peers: Peers) -> JobEventListeners:
    """AddJobEventListeners: a failed call raises Unavailable (the endpoint change it guards is
    not made, and the caller may retry)."""

    async def add(users: Collection[uuid.UUID], all_registered: bool) -> None:
        request = agent_queue_pb2.AddJobEventListenersRequest(
            user_ids=[ids.USER.format(u) for u in users], all_registered=all_registered
        )
        try:
            await peers.agent_queue().AddJobEventListeners(request)
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"agent_queue service: {e.code().name}; nothing was changed, retry") from e

    return add
