"""Completion webhooks in the delivery service over gRPC (docs/webhooks.md): endpoints scoped to
their owner, URL rules (https, no loopback/private targets without the dev flag), the idempotent
fan-out of a published event, and the guarded delivery transitions the workflow calls. The
workflow itself, with a real receiver, is tests/workflows/test_webhook_delivery.py."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from svix.webhooks import Webhook

from tests.service.conftest import Running
from tests.service.delivery.conftest import DeliveryFactory
from tests.support.builders import add_contact, alice, bob, boss
from tests.support.grpc_client import rpc_error, service
from tests.support.webhook_builders import (
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
from zenthor.clients import violated_fields
from zenthor.convert import timestamp
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb

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
