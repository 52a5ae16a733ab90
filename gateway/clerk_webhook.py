"""POST /clerk/webhook: svix verification, then at most one identity RPC per event. Checks run
in the original's order (secret, headers, signature, event); answers are plain text.

Answers: 503 without `CLERK_WEBHOOK_SECRET`; 400 for missing svix headers, a bad signature, or a
signed event whose fields are missing or of the wrong type (naming the field); 200 for a handled
event, a replayed delivery (same `svix-id`: identity records it with the change, so a replay
changes nothing, docs/hardening.md #38) and an event type we do not handle; 500 only when
identity could not be reached or failed, so svix delivers it again later."""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from svix.webhooks import Webhook

from gateway.deps import AppSettings, IdentityStub, Metadata, ServiceMetadata
from zenthor.clerk import clerk_profile
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.logs import get_logger

router = APIRouter(tags=["clerk"])
log = get_logger("gateway.clerk_webhook")

SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")
UNCONFIGURED = "Clerk webhook is not configured: set CLERK_WEBHOOK_SECRET"
# Identity answers that no redelivery can change: the event itself is wrong.
REJECTED_BY_IDENTITY = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)


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


IdentityCall = pb.UpsertClerkUserRequest | pb.DeactivateClerkUserRequest


def identity_call(event: Mapping[str, Any], delivery_id: str) -> IdentityCall | None:
    """The one identity request an event asks for, None for events we do not act on.
    InvalidArgument naming the field when a user event is malformed."""
    event_type = event.get("type")
    if event_type not in tuple(ClerkEventType):
        return None
    data = event.get("data")
    if not isinstance(data, Mapping):
        raise InvalidArgument("data", "must be an object")
    if event_type == ClerkEventType.USER_DELETED:
        external_id = data.get("id")
        if external_id is None or external_id == "":
            return None  # a deletion without data.id does nothing
        if not isinstance(external_id, str):
            raise InvalidArgument("data.id", "must be a string")
        return pb.DeactivateClerkUserRequest(external_id=external_id, delivery_id=delivery_id)
    profile = clerk_profile(data)
    return pb.UpsertClerkUserRequest(
        external_id=profile.external_id,
        name=profile.name,
        email=profile.email,
        image=profile.image,
        email_verified=profile.email_verified,
        delivery_id=delivery_id,
    )


async def send(call: IdentityCall, identity: Any, metadata: Metadata) -> bool:
    """Makes the call; True when identity had processed this delivery before."""
    if isinstance(call, pb.DeactivateClerkUserRequest):
        deactivated = await identity.DeactivateClerkUser(call, metadata=metadata)
        return bool(deactivated.duplicate)
    upserted = await identity.UpsertClerkUser(call, metadata=metadata)
    return bool(upserted.duplicate)


@router.post("/clerk/webhook", response_class=PlainTextResponse, summary="Clerk user events via svix")
async def clerk_webhook(
    request: Request, settings: AppSettings, identity: IdentityStub, metadata: ServiceMetadata
) -> PlainTextResponse:
    if settings.clerk_webhook_secret is None:
        log.error("clerk.webhook.misconfigured", reason="CLERK_WEBHOOK_SECRET is not set")
        return PlainTextResponse(UNCONFIGURED, status_code=503)
    headers = {name: request.headers.get(name, "") for name in SVIX_HEADERS}
    if not all(headers.values()):
        return PlainTextResponse("Missing svix headers", status_code=400)
    # The signature is over the exact bytes: read them before any parsing.
    body = await request.body()
    event = verified_event(settings.clerk_webhook_secret.get_secret_value(), body, headers)
    if event is None:
        return PlainTextResponse("Invalid signature", status_code=400)
    event_type = event.get("type")
    svix_id = headers["svix-id"]
    log.info("clerk.webhook.received", event_type=event_type, svix_id=svix_id)
    try:
        call = identity_call(event, svix_id)
    except InvalidArgument as e:
        log.warning("clerk.webhook.invalid", event_type=event_type, svix_id=svix_id, field=e.field, why=e.why)
        return PlainTextResponse(f"Invalid event: {e.field} {e.why}", status_code=400)
    if call is None:
        log.info("clerk.webhook.ignored", event_type=event_type, svix_id=svix_id)
        return PlainTextResponse("OK")
    try:
        duplicate = await send(call, identity, metadata)
    except grpc.aio.AioRpcError as e:
        if e.code() in REJECTED_BY_IDENTITY:
            log.warning("clerk.webhook.invalid", event_type=event_type, svix_id=svix_id, why=e.details())
            return PlainTextResponse(f"Invalid event: {e.details()}", status_code=400)
        log.error("clerk.webhook.failed", event_type=event_type, svix_id=svix_id, code=e.code().name)
        return PlainTextResponse("Internal error", status_code=500)
    # Anything else failing here is logged and answered 500, so svix delivers it again.
    except Exception:
        log.exception("clerk.webhook.failed", event_type=event_type, svix_id=svix_id)
        return PlainTextResponse("Internal error", status_code=500)
    if duplicate:
        log.info("clerk.webhook.replayed", event_type=event_type, svix_id=svix_id)
    return PlainTextResponse("OK")
