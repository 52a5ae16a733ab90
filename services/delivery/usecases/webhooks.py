"""Completion webhook use cases: endpoints (owner-scoped; admins see every user's), the
idempotent fan-out of a published event, the delivery log, manual redelivery, and the calls
WebhookDeliveryWorkflow makes for each attempt, and the retention sweep (docs/webhooks.md).

Every delivery's workflow start is an outbox event written with the delivery row (or with its
redelivery), keyed by the workflow id: the relay starts it after commit, a repeat is a no-op."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.delivery.domain import webhooks as rules
from services.delivery.domain.webhooks import (
    Attempt,
    Delivery,
    DeliveryStatus,
    DeliveryTarget,
    Endpoint,
    EndpointChanges,
    Event,
    NewEvent,
)
from services.delivery.store import webhooks as store
from services.delivery.store.tables import outbox
from services.delivery.usecases.deps import Deps
from zenthor import egress, ids
from zenthor.auth.principal import ResolvedUser, Role
from zenthor.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from zenthor.outbox import add_events
from zenthor.pagination import Page, PageRequest, Swept, check_size, next_token
from zenthor.webhooks import (
    WEBHOOK_DELIVERY_TOPIC,
    WebhookDeliveryInput,
    WebhookEventType,
    webhook_workflow_id,
)

ENDPOINT_NOT_FOUND = "Webhook endpoint not found"
DELIVERY_NOT_FOUND = "Webhook delivery not found"


def _is_admin(user: ResolvedUser) -> bool:
    return user.role is Role.ADMIN


def _visible(user: ResolvedUser, owner_id: uuid.UUID) -> bool:
    return owner_id == user.user_id or _is_admin(user)


async def _checked_url(deps: Deps, url: str) -> str:
    """The URL's rules, and every address its host resolves to now (docs/webhooks.md)."""
    target = egress.parse_target_url(url, allow_private=deps.webhooks.allow_private)
    await egress.resolve_target(target, allow_private=deps.webhooks.allow_private)
    return url


async def _visible_endpoint(conn: AsyncConnection, user: ResolvedUser, endpoint_id: uuid.UUID, *, lock: bool = False) -> Endpoint:
    """Another user's endpoint looks exactly like a missing one."""
    endpoint = await store.get_endpoint(conn, endpoint_id, lock=lock)
    if endpoint is None or not _visible(user, endpoint.user_id):
        raise NotFound(ENDPOINT_NOT_FOUND)
    return endpoint


def _start_event(deps: Deps, delivery_id: uuid.UUID, series: int) -> tuple[str, str, dict[str, Any]]:
    ref = ids.WEBHOOK_DELIVERY.format(delivery_id)
    workflow_id = webhook_workflow_id(ref, series)
    options = deps.webhooks
    run = WebhookDeliveryInput(
        delivery_id=ref,
        series=series,
        initial_interval_s=options.retry_initial_s,
        maximum_interval_s=options.retry_max_interval_s,
        max_attempts=options.max_attempts,
        timeout_s=options.timeout_s,
        allow_private=options.allow_private,
    )
    return WEBHOOK_DELIVERY_TOPIC, workflow_id, {"workflow_id": workflow_id, "input": asdict(run)}


# --- endpoints ---


@dataclass(frozen=True)
class EndpointWithSecret:
    endpoint: Endpoint
    secret: str


async def create_endpoint(
    deps: Deps,
    user: ResolvedUser,
    *,
    url: str,
    event_types: Sequence[WebhookEventType | None],
    enabled: bool | None,
    owner_id: uuid.UUID | None,
) -> EndpointWithSecret:
    """The caller's endpoint (an admin may name another owner), with its new secret."""
    owner = user.user_id if owner_id is None else owner_id
    if owner != user.user_id and not _is_admin(user):
        raise PermissionDenied("Only admins may register endpoints for another user")
    types = rules.check_event_types(event_types)
    enabled = True if enabled is None else enabled
    await _checked_url(deps, url)
    secret = rules.new_secret(deps.token_bytes)
    if rules.hears_job_events(types, enabled):
        # Before the endpoint exists: every job finished after it does is an event for it. An
        # endpoint then refused leaves a registration that costs only dropped events.
        await deps.job_event_listeners([owner], False)
    async with deps.uow() as uow:
        if await store.lock_user_endpoints(uow.conn, owner) >= rules.MAX_ENDPOINTS_PER_USER:
            raise FailedPrecondition(f"A user may have at most {rules.MAX_ENDPOINTS_PER_USER} webhook endpoints")
        endpoint = await store.insert_endpoint(
            uow.conn, ids.WEBHOOK_ENDPOINT.new(), owner, url, types, secret, enabled, deps.clock()
        )
        await uow.commit()
    return EndpointWithSecret(endpoint, secret)


async def list_endpoints(deps: Deps, user: ResolvedUser, page: PageRequest, all_users: bool) -> Page[Endpoint]:
    if all_users and not _is_admin(user):
        raise PermissionDenied("Only admins may list every user's webhook endpoints")
    async with deps.uow() as uow:
        found = await store.list_endpoints(uow.conn, None if all_users else user.user_id, page)
    return Page(found, next_token([x.id for x in found], page.size))


async def get_endpoint(deps: Deps, user: ResolvedUser, endpoint_id: uuid.UUID) -> Endpoint:
    async with deps.uow() as uow:
        return await _visible_endpoint(uow.conn, user, endpoint_id)


async def update_endpoint(
    deps: Deps,
    user: ResolvedUser,
    endpoint_id: uuid.UUID,
    *,
    url: str | None,
    event_types: Sequence[WebhookEventType | None],
    enabled: bool | None,
) -> Endpoint:
    types = rules.check_event_types(event_types) if event_types else None
    if url is not None:
        await _checked_url(deps, url)
    async with deps.uow() as uow:
        await _visible_endpoint(uow.conn, user, endpoint_id, lock=True)
        changed = await store.update_endpoint(
            uow.conn, endpoint_id, EndpointChanges(url=url, event_types=types, enabled=enabled), deps.clock()
        )
        if rules.hears_job_events(changed.event_types, changed.enabled):
            # Inside the transaction, on purpose: the row lock orders concurrent updates, so what
            # is checked here is what commits (a state read before it could be stale), and the
            # owner is registered before the change is seen.
            await deps.job_event_listeners([changed.user_id], False)
        await uow.commit()
    return changed


async def delete_endpoint(deps: Deps, user: ResolvedUser, endpoint_id: uuid.UUID) -> None:
    async with deps.uow() as uow:
        await _visible_endpoint(uow.conn, user, endpoint_id, lock=True)
        await store.delete_endpoint(uow.conn, endpoint_id)
        await uow.commit()


async def rotate_secret(deps: Deps, user: ResolvedUser, endpoint_id: uuid.UUID) -> EndpointWithSecret:
    secret = rules.new_secret(deps.token_bytes)
    async with deps.uow() as uow:
        await _visible_endpoint(uow.conn, user, endpoint_id, lock=True)
        endpoint = await store.set_secret(uow.conn, endpoint_id, secret, deps.clock())
        await uow.commit()
    return EndpointWithSecret(endpoint, secret)


# --- the delivery log and redelivery ---


async def list_deliveries(deps: Deps, user: ResolvedUser, endpoint_id: uuid.UUID, page: PageRequest) -> Page[Delivery]:
    async with deps.uow() as uow:
        await _visible_endpoint(uow.conn, user, endpoint_id)
        found = await store.list_deliveries(uow.conn, endpoint_id, page)
    return Page(found, next_token([x.id for x in found], page.size))


async def redeliver(deps: Deps, user: ResolvedUser, delivery_id: uuid.UUID) -> Delivery:
    """A finished delivery sent again as a new attempt series (same event id and body)."""
    now = deps.clock()
    async with deps.uow() as uow:
        owner = await store.lock_owner_of_delivery(uow.conn, delivery_id)
        if owner is None or not _visible(user, owner):
            raise NotFound(DELIVERY_NOT_FOUND)
        series = await store.redeliver(uow.conn, delivery_id, now)
        if series is None:
            raise FailedPrecondition("The delivery is still being attempted; redeliver it once it is delivered or failed")
        await add_events(uow.conn, outbox, [_start_event(deps, delivery_id, series)], now)
        delivery = await store.get_delivery(uow.conn, delivery_id)
        assert delivery is not None  # updated in this transaction
        await uow.commit()
    deps.kick_outbox()
    return delivery


# --- the fan-out of published events (PublishWebhookEvent, PublishWebhookEvents) ---


@dataclass(frozen=True)
class Published:
    event_id: str
    deliveries_created: int
    duplicate: bool


async def publish_event(deps: Deps, event: NewEvent) -> Published:
    """One event: a batch of one (`publish_events`), its refusal raised as INVALID_ARGUMENT."""
    (result,) = await publish_events(deps, [event])
    if isinstance(result, InvalidArgument):
        raise result
    return result


async def publish_events(deps: Deps, events: Sequence[NewEvent | InvalidArgument]) -> list[Published | InvalidArgument]:
    """One PENDING delivery, and its workflow start, per enabled endpoint of each event's owner
    (or of the user the owning contact is linked to) subscribed to the event's type. Idempotent
    on the event id: a repeat creates nothing, also for endpoints registered since; an id given
    twice is published once, the later one answering `duplicate`.

    One answer per event, in order. An invalid event (refused already by the wire, as given, or
    by the rules here) is answered with its InvalidArgument and stores nothing; the others go
    on. A batch none of whose owners has an endpoint for its types is one statement; any other
    is one transaction of a fixed number of statements (events, endpoints, deliveries, workflow
    starts) after it. Its contact owners cost one identity call, however many events it holds."""
    rules.check_event_batch(len(events))
    checked: list[Event | InvalidArgument] = []
    for item in events:
        if isinstance(item, InvalidArgument):
            checked.append(item)
            continue
        try:
            checked.append(rules.checked_event(item))
        except InvalidArgument as refused:
            checked.append(refused)
    first: dict[str, Event] = {}
    for event in checked:
        if isinstance(event, Event):
            first.setdefault(event.id, event)
    unique = list(first.values())
    # Before the transaction: none stays open while a peer is called.
    linked = await deps.linked_users({e.owner_contact_id for e in unique if e.owner_contact_id is not None})
    owners = {e.id: _owners(e, linked) for e in unique}
    now = deps.clock()
    created: list[tuple[uuid.UUID, str]] = []
    # Most batches have no subscriber at all: stored in one statement, with nothing to fan out.
    fresh = await store.insert_unsubscribed_events(deps.db, unique, {u for us in owners.values() for u in us}, now)
    if fresh is None:
        async with deps.uow() as uow:
            fresh = await store.insert_events_if_absent(uow.conn, unique, now)
            new_events = [e for e in unique if e.id in fresh]
            subscriptions = await store.subscriptions(
                uow.conn, {u for e in new_events for u in owners[e.id]}, {e.type for e in new_events}
            )
            rows = [
                (ids.WEBHOOK_DELIVERY.new(), e.id, endpoint_id)
                for e in new_events
                for endpoint_id in rules.subscribers(subscriptions, owners[e.id], e.type)
            ]
            created = sorted(await store.insert_deliveries(uow.conn, rows, now))
            await add_events(uow.conn, outbox, [_start_event(deps, delivery_id, 1) for delivery_id, _ in created], now)
            await uow.commit()
    if created:
        deps.kick_outbox()
    per_event = Counter(event_id for _, event_id in created)
    answered: set[str] = set()
    results: list[Published | InvalidArgument] = []
    for event in checked:
        if isinstance(event, InvalidArgument):
            results.append(event)
            continue
        new = event.id in fresh and event.id not in answered
        answered.add(event.id)
        results.append(Published(event.id, per_event[event.id] if new else 0, duplicate=not new))
    return results


def _owners(event: Event, linked: Mapping[uuid.UUID, uuid.UUID]) -> list[uuid.UUID]:
    """The users whose endpoints get the event: its owner user, and the user its owner contact
    is linked to."""
    owners = [event.owner_user_id] if event.owner_user_id is not None else []
    user = linked.get(event.owner_contact_id) if event.owner_contact_id is not None else None
    if user is not None and user not in owners:
        owners.append(user)
    return owners


# --- the workflow's calls ---


async def delivery_target(deps: Deps, delivery_id: uuid.UUID) -> DeliveryTarget:
    async with deps.uow() as uow:
        target = await store.delivery_target(uow.conn, delivery_id)
    if target is None:
        raise NotFound(DELIVERY_NOT_FOUND)
    return target


async def record_attempt(deps: Deps, delivery_id: uuid.UUID, attempt: Attempt) -> DeliveryStatus:
    """The attempt in the log (once per series and attempt); a 2xx makes the delivery of that
    series DELIVERED. Answers the delivery's status afterwards."""
    rules.check_attempt(attempt.series, attempt.attempt)
    rules.check_status_code(attempt.status_code)
    attempt = replace(attempt, error=rules.error_text(attempt.error))
    now = deps.clock()
    async with deps.uow() as uow:
        if await store.current_status(uow.conn, delivery_id) is None:
            raise NotFound(DELIVERY_NOT_FOUND)
        await store.insert_attempt(uow.conn, delivery_id, attempt)
        if attempt.succeeded:
            await store.mark_delivered(uow.conn, delivery_id, attempt.series, now)
        else:
            await store.note_failed_attempt(uow.conn, delivery_id, attempt.series, attempt.error, now)
        status = await store.current_status(uow.conn, delivery_id)
        await uow.commit()
    assert status is not None
    return status


async def fail_delivery(deps: Deps, delivery_id: uuid.UUID, series: int, error: str) -> DeliveryStatus:
    """The workflow gave up on this series: PENDING → FAILED (a newer series or a final status
    is left as it is)."""
    rules.check_attempt(series, 1)
    async with deps.uow() as uow:
        if await store.current_status(uow.conn, delivery_id) is None:
            raise NotFound(DELIVERY_NOT_FOUND)
        await store.mark_failed(uow.conn, delivery_id, series, rules.error_text(error), deps.clock())
        status = await store.current_status(uow.conn, delivery_id)
        await uow.commit()
    assert status is not None
    return status


# --- retention (the "cleanup old webhook events" schedule) ---


async def cleanup_events(deps: Deps, batch_size: int) -> Swept:
    """Forgets up to one batch of events stored longer ago than the retention, with their
    deliveries and attempts (an event with a PENDING delivery stays); `more` when the batch was
    full."""
    limit = check_size(batch_size, rules.CLEANUP_BATCH, "batch_size")
    async with deps.uow() as uow:
        deleted = await store.delete_old_events(uow.conn, deps.clock() - rules.EVENT_RETENTION, limit)
        await uow.commit()
    return Swept.of(deleted, limit)
