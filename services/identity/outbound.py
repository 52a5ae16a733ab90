"""What identity sends to its peers through the outbox: the verification code's WhatsApp
delivery (conversation → system message → outbound row). Every step is idempotent, so the
relay may re-drive an event any number of times."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zenthor.clients import Peers
from zenthor.config import ServiceName
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2
from zenthor.gen.zenthor.messages.v1 import messages_pb2
from zenthor.outbox import Handler

DELIVER_VERIFICATION_CODE = "phone_verification.deliver"


def verification_payload(
    verification_id: str, contact_id: str, phone: str, content: str, account_id: str
) -> dict[str, str]:
    return {
        "verification_id": verification_id,
        "contact_id": contact_id,
        "phone": phone,
        "content": content,
        "account_id": account_id,
    }


def outbox_handlers(peers: Peers) -> dict[str, Handler]:
    async def deliver_verification_code(payload: Mapping[str, Any]) -> None:
        messages = peers.stub(ServiceName.MESSAGES)
        conversation = (
            await messages.GetOrCreateConversation(
                messages_pb2.GetOrCreateConversationRequest(
                    channel=types_pb2.CHANNEL_WHATSAPP, contact_id=payload["contact_id"]
                )
            )
        ).conversation
        message = (
            await messages.CreateSystemMessage(
                messages_pb2.CreateSystemMessageRequest(
                    conversation_id=conversation.id,
                    content=payload["content"],
                    idempotency_key=payload["verification_id"],
                )
            )
        ).message
        # Finding 10: the row names the WhatsApp account that will claim it.
        await peers.stub(ServiceName.DELIVERY).EnqueueOutbound(
            delivery_pb2.EnqueueOutboundRequest(
                channel=types_pb2.CHANNEL_WHATSAPP,
                account_id=payload["account_id"],
                conversation_id=conversation.id,
                message_id=message.id,
                to=payload["phone"],
                content=payload["content"],
                metadata=delivery_pb2.OutboundMetadata(kind="phone_verification"),
            )
        )

    return {DELIVER_VERIFICATION_CODE: deliver_verification_code}
