"""POST /clerk/webhook: svix verification, then at most one identity RPC per event. Checks run
in the original's order (secret, headers, signature, event); answers are plain text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from svix.webhooks import Webhook

from gateway.deps import AppSettings, IdentityStub, Metadata, ServiceMetadata
from zenthor.clerk import clerk_profile
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.logs import get_logger

router = APIRouter(tags=["clerk"])
log = get_logger("gateway.clerk_webhook")

SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")


class ClerkEventType(StrEnum):
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_DELETED = "user.deleted"


def verified_event(secret: str, body: bytes, headers: Mapping[str, str]) -> Mapping[str, Any] | None:
    """The event when the svix signature holds over the exact bytes, else None."""
    try:
        Webhook(secret).verify(body, dict(headers))
        event = json.loads(body)
    # svix raises several types (WebhookVerificationError, binascii.Error, ValueError for a
    # malformed header, EmptyWebhookSecretError); the original answers every one the same way.
    except Exception as e:
        log.info("clerk.webhook.rejected", reason=type(e).__name__)
        return None
    # A JSON body that is not an object has no type: handled like any unknown event.
    return event if isinstance(event, Mapping) else {}


async def handle_event(event: Mapping[str, Any], identity: Any, metadata: Metadata) -> None:
    """One identity RPC for a user event, nothing for others ."""
    event_type = event.get("type")
    data = event.get("data")
    data = data if isinstance(data, Mapping) else {}
    match event_type:
        case ClerkEventType.USER_CREATED | ClerkEventType.USER_UPDATED:
            profile = clerk_profile(data)
            upsert = pb.UpsertClerkUserRequest(
                external_id=profile.external_id,
                name=profile.name,
                email=profile.email,
                image=profile.image,
            )
            await identity.UpsertClerkUser(upsert, metadata=metadata)
        case ClerkEventType.USER_DELETED:
            external_id = data.get("id")
            if external_id:  # a deletion without data.id does nothing
                deactivate = pb.DeactivateClerkUserRequest(external_id=external_id)
                await identity.DeactivateClerkUser(deactivate, metadata=metadata)
        case _:
            log.info("clerk.webhook.unhandled", event_type=event_type)


@router.post("/clerk/webhook", response_class=PlainTextResponse, summary="Clerk user events via svix")
async def clerk_webhook(
    request: Request, settings: AppSettings, identity: IdentityStub, metadata: ServiceMetadata
) -> PlainTextResponse:
    if settings.clerk_webhook_secret is None:
        log.error("clerk.webhook.misconfigured", reason="CLERK_WEBHOOK_SECRET is not set")
        return PlainTextResponse("Server configuration error", status_code=500)
    headers = {name: request.headers.get(name, "") for name in SVIX_HEADERS}
    if not all(headers.values()):
        return PlainTextResponse("Missing svix headers", status_code=400)
    # The signature is over the exact bytes: read them before any parsing.
    body = await request.body()
    event = verified_event(settings.clerk_webhook_secret.get_secret_value(), body, headers)
    if event is None:
        return PlainTextResponse("Invalid signature", status_code=400)
    event_type = event.get("type")
    log.info("clerk.webhook.received", event_type=event_type, svix_id=headers["svix-id"])
    try:
        await handle_event(event, identity, metadata)
    # Step 4: whatever fails while handling is logged and answered 500, so svix retries.
    except Exception:
        log.exception("clerk.webhook.failed", event_type=event_type)
        return PlainTextResponse("Internal error", status_code=500)
    return PlainTextResponse("OK")
