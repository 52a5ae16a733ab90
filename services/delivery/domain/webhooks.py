"""Completion webhook rules: endpoints (URL, subscribed event types, the svix-format signing
secret), events and their body, deliveries and their attempts (docs/webhooks.md).

A delivery is one event for one endpoint: PENDING while WebhookDeliveryWorkflow attempts it,
then DELIVERED (a 2xx answer) or FAILED (the attempts used up, or the endpoint disabled). A
redelivery turns a final delivery PENDING again under the next attempt series; the workflow of
an older series finds itself superseded and stops."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from zenthor.errors import InvalidArgument
from zenthor.pagination import PageLimits
from zenthor.webhooks import EVENT_JSON, MAX_PUBLISH_BATCH, WebhookEventType

SECRET_PREFIX = "whsec_"
# svix secrets are 24 to 64 random bytes, base64 after the prefix; 32 is what svix itself issues.
SECRET_BYTES = 32
MAX_EVENT_ID = 200
# One event's `data` as JSON; a message's content is the largest part (65,536 characters).
MAX_DATA_BYTES = 256 * 1024
MAX_ERROR_CHARS = 500
# Endpoints per user: enough for any integration, few enough that a fan-out stays one small insert.
MAX_ENDPOINTS_PER_USER = 20
ENDPOINTS_PAGE = PageLimits(default=100, maximum=500)
DELIVERIES_PAGE = PageLimits(default=20, maximum=100)
# Attempts shown per delivery in the log (newest kept).
ATTEMPTS_SHOWN = 100
ENDPOINT_DISABLED_ERROR = "endpoint disabled"
# An event and its delivery log are kept this long after it was stored (long enough to look
# into a delivery and redeliver it), then the daily sweep forgets them; an event with a delivery
# still PENDING stays until that one is final (docs/webhooks.md).
EVENT_RETENTION = timedelta(days=30)
# CleanupWebhookEvents: events deleted per call (0 asks for the default).
CLEANUP_BATCH = PageLimits(default=1_000, maximum=10_000)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


FINAL = (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)


@dataclass(frozen=True)
class Endpoint:
    id: uuid.UUID
    user_id: uuid.UUID
    url: str
    event_types: tuple[WebhookEventType, ...]
    enabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class EndpointChanges:
    """The fields an update sets; None leaves a field as it is."""

    url: str | None = None
    event_types: tuple[WebhookEventType, ...] | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class Attempt:
    series: int
    attempt: int
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    succeeded: bool


@dataclass(frozen=True)
class Delivery:
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str
    event_type: WebhookEventType
    status: DeliveryStatus
    series: int
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    last_error: str | None
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class DeliveryTarget:
    """What one attempt sends: the endpoint's URL and current secret, the event's body."""

    status: DeliveryStatus
    series: int
    url: str
    secret: str
    event_id: str
    body: str
    endpoint_enabled: bool


@dataclass(frozen=True)
class Event:
    id: str
    type: WebhookEventType
    occurred_at: datetime
    owner_user_id: uuid.UUID | None
    owner_contact_id: uuid.UUID | None
    body: str


@dataclass(frozen=True)
class NewEvent:
    """An event as an emitter publishes it, before its checks (`checked_event`)."""

    event_id: str
    type: WebhookEventType | None
    occurred_at: datetime
    owner_user_id: uuid.UUID | None
    owner_contact_id: uuid.UUID | None
    data: Mapping[str, Any]
    # The request field the data came in (`data` or `data_json`): the one a refusal names.
    data_field: str = "data"


@dataclass(frozen=True)
class Subscription:
    """An enabled endpoint, its owner and the event types it subscribes to."""

    endpoint_id: uuid.UUID
    user_id: uuid.UUID
    event_types: frozenset[WebhookEventType]


def subscribers(
    subscriptions: Sequence[Subscription], owners: Collection[uuid.UUID], event_type: WebhookEventType
) -> list[uuid.UUID]:
    """The endpoints an event of `event_type` owned by `owners` fans out to, in the given order."""
    return [s.endpoint_id for s in subscriptions if s.user_id in owners and event_type in s.event_types]


# The types agent_queue writes only for the users delivery registers with it (AddJobEventListeners):
# an endpoint subscribed to one of them registers its owner before it can be seen enabled.
JOB_EVENT_TYPES = frozenset({WebhookEventType.JOB_COMPLETED, WebhookEventType.JOB_FAILED})


def hears_job_events(event_types: Collection[WebhookEventType], enabled: bool) -> bool:
    return enabled and not JOB_EVENT_TYPES.isdisjoint(event_types)


def new_secret(token_bytes: Callable[[int], bytes]) -> str:
    """A signing secret in svix's format (`whsec_` + base64 of random bytes)."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode()


def check_event_types(values: Sequence[WebhookEventType | None], field: str = "event_types") -> tuple[WebhookEventType, ...]:
    """1..4 distinct known types, in the order given."""
    if not values:
        raise InvalidArgument(field, "must name at least one event type")
    if any(v is None for v in values):
        raise InvalidArgument(field, "must name known event types")
    types = tuple(v for v in values if v is not None)
    if len(set(types)) != len(types):
        raise InvalidArgument(field, "must not repeat an event type")
    return types


_NOT_IN_A_HEADER = re.compile(r"[\x00-\x20\x7f]")


def check_event_id(value: str) -> str:
    if not value:
        raise InvalidArgument("event_id", "is required")
    if len(value) > MAX_EVENT_ID:
        raise InvalidArgument("event_id", f"must be at most {MAX_EVENT_ID} characters")
    if _NOT_IN_A_HEADER.search(value):
        # It travels as the svix-id header: no whitespace or control characters.
        raise InvalidArgument("event_id", "must not contain whitespace or control characters")
    return value


def check_owner(user_id: uuid.UUID | None, contact_id: uuid.UUID | None) -> None:
    if user_id is None and contact_id is None:
        raise InvalidArgument("owner_user_id", "an event needs an owner user or contact")


def check_event_batch(count: int) -> None:
    """PublishWebhookEvents takes 1..MAX_PUBLISH_BATCH events."""
    if count == 0:
        raise InvalidArgument("events", "must hold at least one event")
    if count > MAX_PUBLISH_BATCH:
        raise InvalidArgument("events", f"must hold at most {MAX_PUBLISH_BATCH} events")


def checked_event(new: NewEvent) -> Event:
    """The event as stored, or InvalidArgument naming the field at fault."""
    check_event_id(new.event_id)
    if new.type is None:
        raise InvalidArgument("type", "must be a known event type")
    check_owner(new.owner_user_id, new.owner_contact_id)
    body = event_body(new.event_id, new.type, new.occurred_at, new.data, data_field=new.data_field)
    return Event(new.event_id, new.type, new.occurred_at, new.owner_user_id, new.owner_contact_id, body)


def check_attempt(series: int, attempt: int) -> None:
    if series < 1:
        raise InvalidArgument("series", "must be at least 1")
    if attempt < 1:
        raise InvalidArgument("attempt", "must be at least 1")


def check_status_code(value: int | None) -> int | None:
    if value is not None and not 100 <= value <= 599:
        raise InvalidArgument("status_code", "must be an HTTP status (100..599)")
    return value


def error_text(value: str | None) -> str | None:
    return value[:MAX_ERROR_CHARS] if value else None


def event_body(
    event_id: str,
    event_type: WebhookEventType,
    occurred_at: datetime,
    data: Mapping[str, Any],
    *,
    data_field: str = "data",
) -> str:
    """The JSON every endpoint gets for the event, byte for byte on every attempt and redelivery
    (it is what the signature covers)."""
    try:
        body = EVENT_JSON.encode(
            {"id": event_id, "type": event_type.value, "timestamp": occurred_at.isoformat(), "data": dict(data)}
        )
    except ValueError:
        raise InvalidArgument(data_field, "must hold finite numbers only") from None
    if len(body.encode()) > MAX_DATA_BYTES:
        raise InvalidArgument(data_field, f"must be at most {MAX_DATA_BYTES // 1024} KiB as JSON")
    return body


def may_redeliver(status: DeliveryStatus) -> bool:
    return status in FINAL
