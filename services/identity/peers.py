"""Everything identity sends out: the Clerk Backend API (bulk sync) over HTTP, and the outbox
handler that delivers a verification code over WhatsApp through messages and delivery. Every
outbox step is idempotent, so the relay may re-drive an event any number of times; a peer's
permanent answer parks the event (the relay judges it with zenthor.errors.is_permanent)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from services.identity.usecases.phone import DELIVER_VERIFICATION_CODE, CodeDelivery
from zenthor.clerk import ClerkProfile, clerk_profile
from zenthor.clients import Peers
from zenthor.errors import FailedPrecondition, Unavailable
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2
from zenthor.gen.zenthor.messages.v1 import messages_pb2
from zenthor.outbox import Handler

CLERK_PAGE_SIZE = 100  # users per Backend API page, as the original sync read them
CLERK_TIMEOUT_S = 10.0


class ClerkBackendApi:
    """`GET /users/count` and `GET /users?limit&offset` of the Clerk Backend API, read page by
    page; each user becomes a profile only when the sync reaches it."""

    def __init__(self, base_url: str, secret_key: str | None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._secret_key = secret_key
        self._transport = transport

    async def users(self) -> AsyncIterator[ClerkProfile]:
        if not self._secret_key:
            raise FailedPrecondition("CLERK_SECRET_KEY is not set")
        headers = {"Authorization": f"Bearer {self._secret_key}"}
        async with httpx.AsyncClient(
            base_url=self._base_url, headers=headers, timeout=CLERK_TIMEOUT_S, transport=self._transport
        ) as client:
            total = int((await self._get(client, "/users/count", {}))["total_count"])
            offset = 0
            while True:
                page = await self._get(
                    client, "/users", {"limit": CLERK_PAGE_SIZE, "offset": offset, "order_by": "+created_at"}
                )
                if not page:
                    return
                for data in page:
                    yield clerk_profile(data)
                offset += CLERK_PAGE_SIZE
                if offset >= total:
                    return

    async def _get(self, client: httpx.AsyncClient, path: str, params: Mapping[str, str | int]) -> Any:
        """The JSON body (Clerk's own shapes, read by zenthor.clerk); a transport failure or an
        error status is Unavailable."""
        try:
            response = await client.get(path, params=dict(params))
        except httpx.HTTPError as e:
            raise Unavailable(f"Clerk API unreachable: {e.__class__.__name__}") from e
        if response.status_code >= 400:
            raise Unavailable(f"Clerk API answered {response.status_code} for {path}")
        return response.json()


def outbox_handlers(peers: Peers) -> dict[str, Handler]:
    async def deliver_verification_code(payload: Mapping[str, Any]) -> None:
        delivery = CodeDelivery.from_payload(payload)
        messages = peers.messages()
        conversation = (
            await messages.GetOrCreateConversation(
                messages_pb2.GetOrCreateConversationRequest(
                    channel=types_pb2.CHANNEL_WHATSAPP, contact_id=delivery.contact_id
                )
            )
        ).conversation
        # Keyed by the verification id: a re-driven event finds the message it wrote before.
        message = (
            await messages.CreateSystemMessage(
                messages_pb2.CreateSystemMessageRequest(
                    conversation_id=conversation.id,
                    content=delivery.content,
                    idempotency_key=delivery.verification_id,
                )
            )
        ).message
        # The row names the WhatsApp account that will claim it (docs/hardening.md #10).
        await peers.delivery().EnqueueOutbound(
            delivery_pb2.EnqueueOutboundRequest(
                channel=types_pb2.CHANNEL_WHATSAPP,
                account_id=delivery.account_id,
                conversation_id=conversation.id,
                message_id=message.id,
                to=delivery.phone,
                content=delivery.content,
                metadata=delivery_pb2.OutboundMetadata(kind="phone_verification"),
            )
        )

    return {DELIVER_VERIFICATION_CODE: deliver_verification_code}
