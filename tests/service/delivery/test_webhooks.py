"""Completion webhooks in the delivery service over gRPC (docs/webhooks.md): endpoints scoped to
their owner, URL rules (https, no loopback/private targets without the dev flag), the idempotent
fan-out of a published event, and the guarded delivery transitions the workflow calls. The
workflow itself, with a real receiver, is tests/workflows/test_webhook_delivery.py."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY
from svix.webhooks import Webhook

from tests.service.conftest import Running
from tests.service.delivery.conftest import DeliveryFactory
from tests.support.builders import add_contact, alice, bob, boss
from tests.support.grpc_client import rpc_error, service
from tests.support.webhook_builders import (
    APPROVAL_REQUESTED,
    JOB_COMPLETED,
    JOB_FAILED,
    MESSAGE_CREATED,
    PUBLIC_URL,
    as_user,
    create_endpoint,
    deliveries,
    publish,
    workflow_starts,
)
from zenthor import egress, ids
from zenthor.clients import Peers, violated_fields
from zenthor.config import ServiceName
from zenthor.convert import timestamp
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.outbox import PermanentDeliveryError
from zenthor.webhooks import WebhookEventType, webhook_event, webhook_event_handler

PENDING = pb.WEBHOOK_DELIVERY_STATUS_PENDING
DELIVERED = pb.WEBHOOK_DELIVERY_STATUS_DELIVERED
FAILED = pb.WEBHOOK_DELIVERY_STATUS_FAILED


def now_pb() -> Timestamp:
    return timestamp(datetime.now(UTC))


@pytest.fixture
async def delivery(delivery_factory: DeliveryFactory, identity: Running) -> Running:
    """Delivery resolving principals through the real identity server; no dev flag."""
    return await delivery_factory(identity_addr=f"127.0.0.1:{identity.server.port}")


# --- URL rules ---


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://api.localhost/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
    ],
)
async def test_a_loopback_url_is_refused_without_the_dev_flag(delivery: Running, url: str) -> None:
    alice(delivery.db)
    error = await rpc_error(create_endpoint(delivery, "user_alice", url=url))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["url"]
    assert delivery.db.sql("SELECT count(*) FROM delivery.webhook_endpoints") == [(0,)]


@pytest.mark.parametrize(
    "url",
    [
        "https://10.1.2.3/hook",
        "https://172.16.0.9/hook",
        "https://192.168.1.20/hook",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
        "https://100.64.0.1/hook",  # carrier-grade NAT
        "https://0.0.0.0/hook",
        "https://[fd00::1]/hook",
        "https://[fe80::1]/hook",
        "https://224.0.0.1/hook",
    ],
)
async def test_a_private_range_ip_literal_is_refused(delivery: Running, url: str) -> None:
    alice(delivery.db)
    error = await rpc_error(create_endpoint(delivery, "user_alice", url=url))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["url"]


@pytest.mark.parametrize(
    "url", ["http://93.184.216.34/hook", "ftp://93.184.216.34/", "https://user:pw@93.184.216.34/", "not a url", ""]
)
async def test_only_plain_https_urls_are_accepted(delivery: Running, url: str) -> None:
    alice(delivery.db)
    error = await rpc_error(create_endpoint(delivery, "user_alice", url=url))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["url"]


async def test_a_host_name_is_resolved_and_every_address_checked() -> None:
    """Not only literals: a name is resolved and refused when an address it has is not public
    (the same check runs again before every delivery attempt)."""
    target = egress.TargetUrl(url="https://localhost/hook", scheme="https", host="localhost", port=443)
    with pytest.raises(InvalidArgument) as refused:
        await egress.resolve_target(target, allow_private=False)
    assert refused.value.field == "url" and "127.0.0.1" in refused.value.message
    assert await egress.resolve_target(target, allow_private=True)


async def test_the_dev_flag_admits_a_loopback_http_receiver(delivery_factory: DeliveryFactory, identity: Running) -> None:
    delivery = await delivery_factory(identity_addr=f"127.0.0.1:{identity.server.port}", webhooks_allow_private=True)
    alice(delivery.db)
    created = await create_endpoint(delivery, "user_alice", url="http://127.0.0.1:9/hook")
    assert created.endpoint.url == "http://127.0.0.1:9/hook"


async def test_an_update_to_a_private_url_is_refused_and_changes_nothing(delivery: Running) -> None:
    alice(delivery.db)
    created = await create_endpoint(delivery, "user_alice")
    error = await rpc_error(
        delivery.stub.UpdateWebhookEndpoint(
            pb.UpdateWebhookEndpointRequest(id=created.endpoint.id, url="https://10.0.0.1/x"),
            metadata=as_user(delivery, "user_alice"),
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == ["url"]
    got = await delivery.stub.GetWebhookEndpoint(
        pb.GetWebhookEndpointRequest(id=created.endpoint.id), metadata=as_user(delivery, "user_alice")
    )
    assert got.endpoint.url == PUBLIC_URL


# --- endpoints and their owners ---


async def test_an_endpoint_gets_an_svix_secret_once_and_a_rotation_replaces_it(delivery: Running) -> None:
    alice(delivery.db)
    created = await create_endpoint(delivery, "user_alice")
    assert created.secret.startswith("whsec_")
    Webhook(created.secret)  # the svix library accepts it as a signing secret
    assert created.endpoint.enabled and list(created.endpoint.event_types) == [JOB_COMPLETED, JOB_FAILED]
    assert created.endpoint.user_id.startswith("usr_")
    rotated = await delivery.stub.RotateWebhookEndpointSecret(
        pb.RotateWebhookEndpointSecretRequest(id=created.endpoint.id), metadata=as_user(delivery, "user_alice")
    )
    assert rotated.secret.startswith("whsec_") and rotated.secret != created.secret
    stored = delivery.db.sql("SELECT secret FROM delivery.webhook_endpoints")
    assert stored == [(rotated.secret,)]


async def test_event_types_are_required_and_known(delivery: Running) -> None:
    alice(delivery.db)
    for types in ((), (0,), (JOB_COMPLETED, JOB_COMPLETED), (99,)):
        error = await rpc_error(create_endpoint(delivery, "user_alice", event_types=types))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == ["event_types"]


async def test_a_user_cannot_see_or_touch_another_users_endpoints(delivery: Running) -> None:
    alice(delivery.db)
    bob(delivery.db)
    mine = (await create_endpoint(delivery, "user_alice")).endpoint
    as_bob = as_user(delivery, "user_bob")
    listed = await delivery.stub.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(), metadata=as_bob)
    assert list(listed.endpoints) == []
    for call in (
        delivery.stub.GetWebhookEndpoint(pb.GetWebhookEndpointRequest(id=mine.id), metadata=as_bob),
        delivery.stub.UpdateWebhookEndpoint(pb.UpdateWebhookEndpointRequest(id=mine.id, enabled=False), metadata=as_bob),
        delivery.stub.RotateWebhookEndpointSecret(pb.RotateWebhookEndpointSecretRequest(id=mine.id), metadata=as_bob),
        delivery.stub.DeleteWebhookEndpoint(pb.DeleteWebhookEndpointRequest(id=mine.id), metadata=as_bob),
        delivery.stub.ListWebhookDeliveries(pb.ListWebhookDeliveriesRequest(endpoint_id=mine.id), metadata=as_bob),
    ):
        error = await rpc_error(call)
        # Exactly what a missing one answers.
        assert error.code() is grpc.StatusCode.NOT_FOUND and error.details() == "Webhook endpoint not found"
    everyone = await rpc_error(
        delivery.stub.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(all_users=True), metadata=as_bob)
    )
    assert everyone.code() is grpc.StatusCode.PERMISSION_DENIED
    someone_else = await rpc_error(create_endpoint(delivery, "user_bob", user_id=mine.user_id))
    assert someone_else.code() is grpc.StatusCode.PERMISSION_DENIED
    stored = delivery.db.sql("SELECT url, enabled, user_id FROM delivery.webhook_endpoints")
    assert stored == [(PUBLIC_URL, True, ids.USER.parse(mine.user_id, "user_id"))]


async def test_an_admin_manages_any_users_endpoints(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    boss(delivery.db)
    mine = (await create_endpoint(delivery, "user_alice")).endpoint
    as_boss = as_user(delivery, "user_boss")
    theirs = (await create_endpoint(delivery, "user_boss", user_id=ids.USER.format(alice_id))).endpoint
    assert theirs.user_id == ids.USER.format(alice_id)
    listed = await delivery.stub.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(all_users=True), metadata=as_boss)
    assert [e.id for e in listed.endpoints] == [mine.id, theirs.id]
    updated = await delivery.stub.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(id=mine.id, enabled=False, event_types=[MESSAGE_CREATED]), metadata=as_boss
    )
    assert not updated.endpoint.enabled and list(updated.endpoint.event_types) == [MESSAGE_CREATED]
    await delivery.stub.DeleteWebhookEndpoint(pb.DeleteWebhookEndpointRequest(id=mine.id), metadata=as_boss)
    gone = await rpc_error(
        delivery.stub.GetWebhookEndpoint(pb.GetWebhookEndpointRequest(id=mine.id), metadata=as_user(delivery, "user_alice"))
    )
    assert gone.code() is grpc.StatusCode.NOT_FOUND


# --- the fan-out ---


async def test_an_event_fans_out_once_to_each_subscribed_enabled_endpoint_of_its_owner(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    bob_id = bob(delivery.db)
    jobs = (await create_endpoint(delivery, "user_alice")).endpoint
    await create_endpoint(delivery, "user_alice", event_types=(MESSAGE_CREATED,))
    off = (await create_endpoint(delivery, "user_alice", enabled=False)).endpoint
    await create_endpoint(delivery, "user_bob")
    event_id, reply = await publish(delivery, owner_user_id=alice_id)
    assert (reply.deliveries_created, reply.duplicate) == (1, False)
    (row,) = deliveries(delivery, event_id)
    assert (ids.WEBHOOK_ENDPOINT.format(row["endpoint_id"]), row["status"], row["series"]) == (jobs.id, "pending", 1)
    # The workflow start rides in the same transaction, keyed by the delivery id.
    assert workflow_starts(delivery) == [ids.WEBHOOK_DELIVERY.format(row["id"])]
    # Idempotent on the event id, also after a new endpoint subscribed.
    await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED,))
    again = await delivery.stub.PublishWebhookEvent(
        pb.PublishWebhookEventRequest(
            event_id=event_id, type=JOB_COMPLETED, occur_time=now_pb(), owner_user_id=ids.USER.format(alice_id)
        ),
        metadata=service(),
    )
    assert (again.deliveries_created, again.duplicate) == (0, True)
    assert len(deliveries(delivery, event_id)) == 1
    assert off.id not in {ids.WEBHOOK_ENDPOINT.format(r["endpoint_id"]) for r in deliveries(delivery)}
    # Bob's endpoint gets Bob's events only.
    _, bobs = await publish(delivery, owner_user_id=bob_id, event_type=JOB_FAILED)
    assert bobs.deliveries_created == 1


async def test_an_event_is_stored_with_its_body_and_time_exactly_as_published(delivery: Running) -> None:
    # The batch travels to Postgres as one JSON document (services/delivery/store/webhooks.py):
    # quotes, backslashes, escapes and characters beyond the BMP must come out as they went in.
    alice_id = alice(delivery.db)
    contact = add_contact(delivery.db, "5511999990002")
    awkward = {"text": 'say "hi" \\ back\\slash \\u0041 ünïcödé 😀 \t tab', "nested": {"list": [1.5, None, True]}}
    event_id, _ = await publish(delivery, owner_user_id=alice_id, owner_contact_id=contact, data=awkward)
    ((type_, owner_user, owner_contact, body, occurred),) = delivery.db.sql(
        "SELECT type, owner_user_id, owner_contact_id, body, occurred_at FROM delivery.webhook_events WHERE id = %s",
        (event_id,),
    )
    assert (type_, owner_user, owner_contact) == ("job.completed", alice_id, contact)
    assert json.loads(body)["data"] == awkward
    assert occurred.tzinfo is not None and abs((datetime.now(UTC) - occurred).total_seconds()) < 600


async def test_a_contact_owned_event_reaches_the_user_the_contact_is_linked_to(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    contact = add_contact(delivery.db, "5511999990000", user_id=alice_id)
    stranger = add_contact(delivery.db, "5511999990001")
    await create_endpoint(delivery, "user_alice")
    _, linked = await publish(delivery, owner_user_id=None, owner_contact_id=contact)
    assert linked.deliveries_created == 1
    _, unlinked = await publish(delivery, owner_user_id=None, owner_contact_id=stranger)
    assert unlinked.deliveries_created == 0


async def test_a_published_event_needs_an_id_a_type_and_an_owner(delivery: Running) -> None:
    for request, field in (
        (pb.PublishWebhookEventRequest(type=JOB_COMPLETED, occur_time=now_pb(), owner_user_id=ids.USER.format(ids.USER.new())), "event_id"),
        (pb.PublishWebhookEventRequest(event_id="x:1", occur_time=now_pb(), owner_user_id=ids.USER.format(ids.USER.new())), "type"),
        (pb.PublishWebhookEventRequest(event_id="x:1", type=JOB_COMPLETED, owner_user_id=ids.USER.format(ids.USER.new())), "occur_time"),
        (pb.PublishWebhookEventRequest(event_id="x:1", type=JOB_COMPLETED, occur_time=now_pb()), "owner_user_id"),
        (pb.PublishWebhookEventRequest(event_id="x 1", type=JOB_COMPLETED, occur_time=now_pb(), owner_user_id=ids.USER.format(ids.USER.new())), "event_id"),
    ):
        error = await rpc_error(delivery.stub.PublishWebhookEvent(request, metadata=service()))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == [field]
    assert delivery.db.sql("SELECT count(*) FROM delivery.webhook_events") == [(0,)]


# --- the guarded transitions the workflow calls, and redelivery ---


async def test_only_the_current_series_settles_a_delivery_and_only_a_final_one_is_redelivered(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    endpoint = (await create_endpoint(delivery, "user_alice")).endpoint
    event_id, _ = await publish(delivery, owner_user_id=alice_id)
    (row,) = deliveries(delivery, event_id)
    delivery_id = ids.WEBHOOK_DELIVERY.format(row["id"])
    as_alice = as_user(delivery, "user_alice")

    busy = await rpc_error(delivery.stub.RedeliverWebhook(pb.RedeliverWebhookRequest(delivery_id=delivery_id), metadata=as_alice))
    assert busy.code() is grpc.StatusCode.FAILED_PRECONDITION

    def record(series: int, attempt: int, code: int) -> pb.RecordWebhookAttemptRequest:
        return pb.RecordWebhookAttemptRequest(
            delivery_id=delivery_id, series=series, attempt=attempt, status_code=code,
            error=None if code < 300 else f"HTTP {code}", succeeded=code < 300,
        )

    reply = await delivery.stub.RecordWebhookAttempt(record(1, 1, 500), metadata=service())
    assert reply.status == PENDING
    # Recorded once however often the activity retries the call.
    await delivery.stub.RecordWebhookAttempt(record(1, 1, 500), metadata=service())
    assert (await delivery.stub.RecordWebhookAttempt(record(1, 2, 204), metadata=service())).status == DELIVERED
    # A late failure of the same series changes nothing.
    late = await delivery.stub.FailWebhookDelivery(
        pb.FailWebhookDeliveryRequest(delivery_id=delivery_id, series=1, error="gave up"), metadata=service()
    )
    assert late.status == DELIVERED

    redelivered = await delivery.stub.RedeliverWebhook(pb.RedeliverWebhookRequest(delivery_id=delivery_id), metadata=as_alice)
    assert (redelivered.delivery.status, redelivered.delivery.series) == (PENDING, 2)
    assert workflow_starts(delivery) == sorted([delivery_id, f"{delivery_id}-2"])
    # The first series can no longer settle it.
    assert (await delivery.stub.RecordWebhookAttempt(record(1, 3, 204), metadata=service())).status == PENDING
    failed = await delivery.stub.FailWebhookDelivery(
        pb.FailWebhookDeliveryRequest(delivery_id=delivery_id, series=2, error="gave up after 5 attempts"), metadata=service()
    )
    assert failed.status == FAILED

    log = await delivery.stub.ListWebhookDeliveries(pb.ListWebhookDeliveriesRequest(endpoint_id=endpoint.id), metadata=as_alice)
    (entry,) = log.deliveries
    assert (entry.id, entry.event_id, entry.status, entry.series, entry.last_error) == (
        delivery_id, event_id, FAILED, 2, "gave up after 5 attempts"
    )
    assert [(a.series, a.attempt, a.status_code, a.succeeded) for a in entry.attempts] == [
        (1, 1, 500, False), (1, 2, 204, True), (1, 3, 204, True)
    ]
    bob(delivery.db)
    hidden = await rpc_error(
        delivery.stub.RedeliverWebhook(pb.RedeliverWebhookRequest(delivery_id=delivery_id), metadata=as_user(delivery, "user_bob"))
    )
    assert hidden.code() is grpc.StatusCode.NOT_FOUND


async def test_deleting_an_endpoint_removes_its_log_and_stops_its_deliveries(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    endpoint = (await create_endpoint(delivery, "user_alice")).endpoint
    event_id, _ = await publish(delivery, owner_user_id=alice_id)
    (row,) = deliveries(delivery, event_id)
    await delivery.stub.DeleteWebhookEndpoint(
        pb.DeleteWebhookEndpointRequest(id=endpoint.id), metadata=as_user(delivery, "user_alice")
    )
    assert deliveries(delivery) == []
    target = await rpc_error(
        delivery.stub.GetWebhookDeliveryTarget(
            pb.GetWebhookDeliveryTargetRequest(delivery_id=ids.WEBHOOK_DELIVERY.format(row["id"])), metadata=service()
        )
    )
    assert target.code() is grpc.StatusCode.NOT_FOUND


# --- a batch of events (PublishWebhookEvents), as the emitting services' outboxes publish ---


def batch_item(
    event_type: pb.WebhookEventType.ValueType,
    entity: str,
    *,
    owner_user_id: uuid.UUID | None = None,
    owner_contact_id: uuid.UUID | None = None,
) -> pb.PublishWebhookEventRequest:
    names = {JOB_COMPLETED: "job.completed", JOB_FAILED: "job.failed", MESSAGE_CREATED: "message.created",
             APPROVAL_REQUESTED: "approval.requested"}
    data = struct_pb2.Struct()
    data.update({"entity": entity})
    return pb.PublishWebhookEventRequest(
        event_id=f"{names[event_type]}:{entity}",
        type=event_type,
        occur_time=now_pb(),
        owner_user_id=ids.USER.format(owner_user_id) if owner_user_id else None,
        owner_contact_id=ids.CONTACT.format(owner_contact_id) if owner_contact_id else None,
        data=data,
    )


async def publish_batch(delivery: Running, items: list[pb.PublishWebhookEventRequest]) -> list[pb.PublishedWebhookEvent]:
    reply = await delivery.stub.PublishWebhookEvents(pb.PublishWebhookEventsRequest(events=items), metadata=service())
    assert len(reply.results) == len(items)
    return list(reply.results)


def outcome(result: pb.PublishedWebhookEvent) -> tuple[str, int, bool, str | None]:
    """(event id, deliveries created, duplicate, the refused field or None)."""
    refused = result.refusal.field if result.HasField("refusal") else None
    return result.event_id, result.deliveries_created, result.duplicate, refused


def identity_calls(method: str) -> float:
    """Calls the real identity server answered, from its own gRPC server metrics (process-wide:
    compare before and after)."""
    labels = {"grpc_service": "zenthor.identity.v1.IdentityService", "grpc_method": method, "grpc_type": "unary",
              "grpc_code": "OK"}
    return REGISTRY.get_sample_value("zenthor_grpc_server_handled_total", labels) or 0.0


async def test_a_batch_fans_out_as_publishing_its_events_one_by_one_with_one_contact_lookup(delivery: Running) -> None:
    alice_id, bob_id = alice(delivery.db), bob(delivery.db)
    to_alice = add_contact(delivery.db, "5511999990000", user_id=alice_id)
    to_bob = add_contact(delivery.db, "5511999990001", user_id=bob_id)
    stranger = add_contact(delivery.db, "5511999990002")
    await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED, JOB_FAILED))
    await create_endpoint(delivery, "user_alice", event_types=(MESSAGE_CREATED,))
    await create_endpoint(delivery, "user_bob", event_types=(JOB_COMPLETED, MESSAGE_CREATED))
    await create_endpoint(delivery, "user_bob", event_types=(JOB_FAILED,), enabled=False)
    events = [  # (type, owner user, owner contact): deliveries expected
        (JOB_COMPLETED, alice_id, None),  # 1: alice's job endpoint
        (JOB_FAILED, bob_id, None),  # 0: bob's job.failed endpoint is disabled
        (MESSAGE_CREATED, None, to_alice),  # 1: alice's message endpoint, through the link
        (MESSAGE_CREATED, alice_id, to_bob),  # 2: alice's and bob's message endpoints
        (JOB_COMPLETED, None, stranger),  # 0: a contact linked to nobody
        (APPROVAL_REQUESTED, bob_id, None),  # 0: nobody subscribes
        (JOB_COMPLETED, None, to_bob),  # 1: bob's endpoint, through the link
    ]

    def items(suffix: str) -> list[pb.PublishWebhookEventRequest]:
        return [
            batch_item(t, f"{n}-{suffix}", owner_user_id=user, owner_contact_id=contact)
            for n, (t, user, contact) in enumerate(events)
        ]

    lookups = identity_calls("BatchGetContacts")
    singles = [
        await delivery.stub.PublishWebhookEvent(item, metadata=service()) for item in items("single")
    ]
    assert identity_calls("BatchGetContacts") - lookups == 4  # one per contact-owned event
    lookups = identity_calls("BatchGetContacts")
    batched = await publish_batch(delivery, items("batch"))
    # One identity call for the batch's three distinct contacts (one by one took four).
    assert identity_calls("BatchGetContacts") - lookups == 1

    assert [r.deliveries_created for r in batched] == [s.deliveries_created for s in singles] == [1, 0, 1, 2, 0, 0, 1]
    assert not any(r.duplicate or r.HasField("refusal") for r in batched)
    assert [r.event_id for r in batched] == [i.event_id for i in items("batch")]

    def fanned_out(suffix: str) -> list[tuple[str, uuid.UUID, str]]:
        return sorted(
            (r["event_id"].removesuffix(f"-{suffix}"), r["endpoint_id"], r["status"])
            for r in deliveries(delivery)
            if r["event_id"].endswith(f"-{suffix}")
        )

    assert fanned_out("batch") == fanned_out("single") and len(fanned_out("batch")) == 5
    # Each of the batch's deliveries has its workflow start, written in the same transaction.
    batch_deliveries = {ids.WEBHOOK_DELIVERY.format(r["id"]) for r in deliveries(delivery) if r["event_id"].endswith("-batch")}
    assert batch_deliveries <= set(workflow_starts(delivery))
    stored = delivery.db.sql("SELECT id, owner_user_id, owner_contact_id FROM delivery.webhook_events WHERE id LIKE '%%-batch'")
    assert sorted(stored) == sorted(
        (i.event_id, user, contact) for i, (_, user, contact) in zip(items("batch"), events, strict=True)
    )


async def test_a_batch_nobody_subscribes_to_is_stored_and_stays_published_for_endpoints_registered_since(
    delivery: Running,
) -> None:
    """Such a batch takes the one-statement path (no deliveries to create); what it stores is
    what the whole fan-out would: the events, each published once, so a later subscriber does
    not make a repeat fan out, while a new event fans out to it."""
    alice_id = alice(delivery.db)
    stranger = add_contact(delivery.db, "5511999990002")
    await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED,), enabled=False)
    await create_endpoint(delivery, "user_alice", event_types=(MESSAGE_CREATED,))
    batch = [
        batch_item(JOB_COMPLETED, "a", owner_user_id=alice_id),  # her job endpoint is disabled
        batch_item(JOB_FAILED, "b", owner_user_id=alice_id),  # her enabled one takes messages only
        batch_item(JOB_COMPLETED, "c", owner_contact_id=stranger),  # linked to nobody
    ]
    first = await publish_batch(delivery, [*batch, batch[0]])
    assert [outcome(r) for r in first] == [
        ("job.completed:a", 0, False, None), ("job.failed:b", 0, False, None), ("job.completed:c", 0, False, None),
        ("job.completed:a", 0, True, None),
    ]
    assert sorted(r[0] for r in delivery.db.sql("SELECT id FROM delivery.webhook_events")) == [
        "job.completed:a", "job.completed:c", "job.failed:b"
    ]

    await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED, JOB_FAILED))
    again = await publish_batch(delivery, [*batch, batch_item(JOB_COMPLETED, "d", owner_user_id=alice_id)])
    assert [outcome(r) for r in again] == [
        ("job.completed:a", 0, True, None), ("job.failed:b", 0, True, None), ("job.completed:c", 0, True, None),
        ("job.completed:d", 1, False, None),
    ]
    assert [r["event_id"] for r in deliveries(delivery)] == ["job.completed:d"]


async def test_a_repeated_event_is_a_duplicate_in_a_later_batch_and_within_one(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED,))
    first = await publish_batch(
        delivery, [batch_item(JOB_COMPLETED, "a", owner_user_id=alice_id), batch_item(JOB_COMPLETED, "b", owner_user_id=alice_id)]
    )
    assert [outcome(r) for r in first] == [("job.completed:a", 1, False, None), ("job.completed:b", 1, False, None)]
    # A new subscriber does not make a repeat fan out again.
    await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED,))
    again = await publish_batch(
        delivery,
        [
            batch_item(JOB_COMPLETED, "a", owner_user_id=alice_id),
            batch_item(JOB_COMPLETED, "c", owner_user_id=alice_id),
            batch_item(JOB_COMPLETED, "c", owner_user_id=alice_id),
        ],
    )
    assert [outcome(r) for r in again] == [
        ("job.completed:a", 0, True, None), ("job.completed:c", 2, False, None), ("job.completed:c", 0, True, None)
    ]
    per_event = delivery.db.sql("SELECT event_id, count(*) FROM delivery.webhook_deliveries GROUP BY event_id ORDER BY 1")
    assert per_event == [("job.completed:a", 1), ("job.completed:b", 1), ("job.completed:c", 2)]
    assert delivery.db.sql("SELECT count(*) FROM delivery.webhook_events") == [(3,)]
    assert len(workflow_starts(delivery)) == 4


async def test_an_invalid_event_is_refused_in_its_result_and_the_others_are_published(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED,))
    unknown_type = batch_item(JOB_COMPLETED, "unknown-type", owner_user_id=alice_id)
    unknown_type.type = pb.WebhookEventType.ValueType(99)
    no_owner = batch_item(JOB_COMPLETED, "no-owner")
    bad_id = batch_item(JOB_COMPLETED, "x", owner_user_id=alice_id)
    bad_id.event_id = "job.completed x"
    wrong_kind_owner = batch_item(JOB_COMPLETED, "wrong-owner")
    wrong_kind_owner.owner_user_id = ids.CONTACT.format(ids.CONTACT.new())
    no_time = batch_item(JOB_COMPLETED, "no-time", owner_user_id=alice_id)
    no_time.ClearField("occur_time")
    results = await publish_batch(
        delivery,
        [
            batch_item(JOB_COMPLETED, "ok-1", owner_user_id=alice_id),
            unknown_type, no_owner, bad_id, wrong_kind_owner, no_time,
            batch_item(JOB_COMPLETED, "ok-2", owner_user_id=alice_id),
        ],
    )
    assert [outcome(r) for r in results] == [
        ("job.completed:ok-1", 1, False, None),
        ("job.completed:unknown-type", 0, False, "type"),
        ("job.completed:no-owner", 0, False, "owner_user_id"),
        ("job.completed x", 0, False, "event_id"),
        ("job.completed:wrong-owner", 0, False, "owner_user_id"),
        ("job.completed:no-time", 0, False, "occur_time"),
        ("job.completed:ok-2", 1, False, None),
    ]
    assert all(r.refusal.description for r in results if r.HasField("refusal"))
    stored = delivery.db.sql("SELECT id FROM delivery.webhook_events ORDER BY id")
    assert stored == [("job.completed:ok-1",), ("job.completed:ok-2",)]
    assert len(deliveries(delivery)) == 2
    # A batch of only refused events stores nothing and is still no error.
    (alone,) = await publish_batch(delivery, [no_owner])
    assert outcome(alone) == ("job.completed:no-owner", 0, False, "owner_user_id")


async def test_a_batch_holds_one_to_a_hundred_events(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED,))
    for count in (0, 101):
        items = [batch_item(JOB_COMPLETED, f"e{n}", owner_user_id=alice_id) for n in range(count)]
        error = await rpc_error(
            delivery.stub.PublishWebhookEvents(pb.PublishWebhookEventsRequest(events=items), metadata=service())
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == ["events"]
    assert delivery.db.sql("SELECT count(*) FROM delivery.webhook_events") == [(0,)]
    full = await publish_batch(delivery, [batch_item(JOB_COMPLETED, f"e{n}", owner_user_id=alice_id) for n in range(100)])
    assert sum(r.deliveries_created for r in full) == 100 == len(deliveries(delivery))


async def test_the_emitters_handler_publishes_a_chunk_in_one_call_and_parks_only_a_refused_event(
    delivery: Running, settings_for: Any
) -> None:
    """zenthor.webhooks.webhook_event_handler as every emitting relay runs it: one
    PublishWebhookEvents per chunk; a refused event is permanent (dead letter), the rest delivered."""
    alice_id = alice(delivery.db)
    await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED,))
    peers = Peers(settings_for(ServiceName.AGENT_QUEUE, delivery_addr=f"127.0.0.1:{delivery.server.port}"))
    try:
        handler = webhook_event_handler(peers)
        assert handler.max_size == 100
        payloads = [
            webhook_event(
                WebhookEventType.JOB_COMPLETED, f"job_{n}", occurred_at=datetime.now(UTC), owner_user_id=owner,
                owner_contact_id=None, data={"n": n},
            )[2]
            for n, owner in enumerate([alice_id, None, alice_id])
        ]
        answer = await handler.call(payloads)
    finally:
        await peers.close()
    assert answer[0] is None and answer[2] is None
    assert isinstance(answer[1], PermanentDeliveryError) and "owner_user_id" in str(answer[1])
    assert {r["event_id"] for r in deliveries(delivery)} == {"job.completed:job_0", "job.completed:job_2"}


async def test_the_emitters_handler_sends_data_as_json_text_that_arrives_exactly_as_stored(
    delivery: Running, settings_for: Any
) -> None:
    """The relay sends `data_json`: an integer beyond a double's 53 bits (a Struct number would
    round it), a fraction and text beyond ASCII reach the body as the emitter's outbox holds them."""
    alice_id = alice(delivery.db)
    data = {"big": 2**63 - 1, "ratio": 0.25, "count": 2, "text": 'ünï "😀" \\u0000', "none": None}
    payload = webhook_event(
        WebhookEventType.JOB_COMPLETED, "job_json", occurred_at=datetime.now(UTC), owner_user_id=alice_id,
        owner_contact_id=None, data=data,
    )[2]
    peers = Peers(settings_for(ServiceName.AGENT_QUEUE, delivery_addr=f"127.0.0.1:{delivery.server.port}"))
    try:
        assert await webhook_event_handler(peers).call([payload]) == [None]
    finally:
        await peers.close()
    ((body,),) = delivery.db.sql("SELECT body FROM delivery.webhook_events WHERE id = 'job.completed:job_json'")
    assert json.loads(body)["data"] == data
    assert '"big":9223372036854775807' in body


def json_item(entity: str, **fields: Any) -> pb.PublishWebhookEventRequest:
    return pb.PublishWebhookEventRequest(
        event_id=f"job.completed:{entity}", type=JOB_COMPLETED, occur_time=now_pb(),
        owner_user_id=ids.USER.format(ids.USER.new()), **fields,
    )


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"data_json": "[1, 2]"}, "must be a JSON object"),
        ({"data_json": '{"a": 1'}, "must be a JSON object"),
        ({"data_json": '{"a": NaN}'}, "must be a JSON object"),
        ({"data_json": '{"a": [1e999]}'}, "must hold finite numbers only"),
        ({"data_json": '{"a": {"b": "x\\u0000y"}}'}, "must not contain NUL characters"),
        ({"data_json": '{"a": ["\\ud800"]}'}, "unpaired surrogate"),
        ({"data_json": '{"\\udfff": 1}'}, "unpaired surrogate"),
        ({"data_json": "{}", "data": struct_pb2.Struct(fields={"a": struct_pb2.Value(number_value=1)})}, "not both"),
    ],
    ids=["array", "truncated", "nan", "infinite", "nul", "surrogate", "surrogate-key", "both"],
)
async def test_json_text_data_that_is_no_finite_object_is_refused_naming_data_json(
    delivery: Running, fields: dict[str, Any], why: str
) -> None:
    error = await rpc_error(delivery.stub.PublishWebhookEvent(json_item("job_bad", **fields), metadata=service()))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == ["data_json"]
    assert why in (error.details() or "")
    # In a batch, the refused event is answered as refused and the good one beside it is kept.
    results = await publish_batch(delivery, [json_item("job_bad", **fields), json_item("job_good", data_json='{"a":1}')])
    assert [outcome(r)[3] for r in results] == ["data_json", None]
    assert delivery.db.sql("SELECT id FROM delivery.webhook_events") == [("job.completed:job_good",)]


@pytest.mark.parametrize(
    ("data_json", "data"),
    [('{"a":"\\\\u0000"}', {"a": "\\u0000"}), ('{"\\ud83d\\ude00":"\\uD83D\\uDE00"}', {"😀": "😀"})],
    ids=["backslash-then-u0000", "surrogate-pair"],
)
async def test_escapes_that_decode_to_storable_text_are_kept(
    delivery: Running, data_json: str, data: dict[str, str]
) -> None:
    """`\\\\u0000` in JSON is a backslash followed by `u0000`, not a NUL character; a surrogate
    pair's two escapes are one character."""
    await delivery.stub.PublishWebhookEvent(json_item("job_text", data_json=data_json), metadata=service())
    ((body,),) = delivery.db.sql("SELECT body FROM delivery.webhook_events")
    assert json.loads(body)["data"] == data
