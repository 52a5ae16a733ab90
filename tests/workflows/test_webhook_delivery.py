"""Completion webhooks end to end on the real Temporal dev server (docs/webhooks.md): an event
published to delivery fans out to the owner's endpoint, its WebhookDeliveryWorkflow (started
through delivery's outbox) POSTs it signed the svix way to a local receiver that verifies every
request with the svix library and fails the first two attempts; the receiver accepts each event
exactly once, the delivery log shows every attempt, and a manual redelivery delivers it again.
The retry schedule is compressed by settings; the production worker (build_worker) runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.worker import Replayer

from tests.service.conftest import Running, job_event_registry
from tests.service.delivery.conftest import DeliveryFactory, clock, delivery_factory
from tests.support.builders import alice
from tests.support.grpc_client import SERVICE_KEY
from tests.support.webhook_builders import (
    JOB_COMPLETED,
    JOB_FAILED,
    MESSAGE_CREATED,
    as_user,
    create_endpoint,
    publish,
)
from tests.support.webhook_receiver import WebhookReceiver
from workflows.webhook_delivery import WebhookDeliveryWorkflow
from workflows.worker import build_worker
from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb

REUSED_FIXTURES = (clock, delivery_factory, job_event_registry)
DELIVERED = pb.WEBHOOK_DELIVERY_STATUS_DELIVERED
FAILED = pb.WEBHOOK_DELIVERY_STATUS_FAILED


@pytest.fixture
def receiver() -> AsyncIterator[WebhookReceiver]:
    server = WebhookReceiver(fail_first=2)
    yield server
    server.close()


async def webhook_stack(
    delivery_factory: DeliveryFactory, identity: Running, temporal_address: str, task_queue: str, max_attempts: int = 5
) -> Running:
    """Delivery with the dev flag (the receiver is on loopback) and a schedule of fractions of a
    second instead of a day."""
    return await delivery_factory(
        clock=utc_now,
        identity_addr=f"127.0.0.1:{identity.server.port}",
        temporal_address=temporal_address,
        temporal_task_queue=task_queue,
        webhooks_allow_private=True,
        webhooks_retry_initial_s=0.05,
        webhooks_retry_max_interval_s=0.2,
        webhooks_max_attempts=max_attempts,
        webhooks_timeout_s=5.0,
        build={"outbox_poll_s": 0.05},
    )


@asynccontextmanager
async def worker(client: Client, task_queue: str, delivery: Running) -> AsyncIterator[None]:
    """The production worker, reaching delivery over gRPC."""
    peers = Peers(Settings(delivery_addr=f"127.0.0.1:{delivery.server.port}", service_key=SERVICE_KEY))  # type: ignore[arg-type]
    try:
        async with build_worker(client, task_queue, peers, grace=timedelta(0)):
            yield
    finally:
        await peers.close()


async def delivery_log(delivery: Running, endpoint_id: str) -> list[pb.WebhookDelivery]:
    reply = await delivery.stub.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(endpoint_id=endpoint_id), metadata=as_user(delivery, "user_alice")
    )
    return list(reply.deliveries)


async def test_a_receiver_verifies_each_event_and_accepts_it_once_after_failing_twice(
    delivery_factory: DeliveryFactory,
    identity: Running,
    receiver: WebhookReceiver,
    client: Client,
    task_queue: str,
    temporal_address: str,
) -> None:
    delivery = await webhook_stack(delivery_factory, identity, temporal_address, task_queue)
    alice_id = alice(delivery.db)
    created = await create_endpoint(delivery, "user_alice", url=receiver.url, event_types=(JOB_COMPLETED, JOB_FAILED))
    receiver.secret = created.secret
    async with worker(client, task_queue, delivery):
        completed, _ = await publish(delivery, owner_user_id=alice_id, event_type=JOB_COMPLETED)
        failed, _ = await publish(delivery, owner_user_id=alice_id, event_type=JOB_FAILED)
        unsubscribed, skipped = await publish(delivery, owner_user_id=alice_id, event_type=MESSAGE_CREATED)
        assert skipped.deliveries_created == 0
        await receiver.wait_until(lambda: len(receiver.accepted(completed)) == 1 and len(receiver.accepted(failed)) == 1)
        for event_id in (completed, failed):
            handle = client.get_workflow_handle(
                next(d.id for d in await delivery_log(delivery, created.endpoint.id) if d.event_id == event_id)
            )
            assert await handle.result() == "delivered"

    for event_id in (completed, failed):
        seen = receiver.seen(event_id)
        # Every request verified with the endpoint's secret; 500, 500, then accepted once.
        assert [(r.verified, r.answered) for r in seen] == [(True, 500), (True, 500), (True, 204)]
        assert {r.body["id"] if r.body else None for r in seen} == {event_id}
        assert len(receiver.accepted(event_id)) == 1
    assert receiver.seen(unsubscribed) == []
    body = receiver.accepted(completed)[0].body
    assert body is not None and body["type"] == "job.completed" and set(body) == {"id", "type", "timestamp", "data"}

    log = {d.event_id: d for d in await delivery_log(delivery, created.endpoint.id)}
    for event_id in (completed, failed):
        entry = log[event_id]
        assert (entry.status, entry.series) == (DELIVERED, 1)
        assert [(a.series, a.attempt, a.status_code, a.succeeded) for a in entry.attempts] == [
            (1, 1, 500, False), (1, 2, 500, False), (1, 3, 204, True)
        ]
        assert entry.attempts[0].error == "HTTP 500" and entry.HasField("delivered_time")

    # Replayed from its recorded history, the workflow is deterministic.
    history = await client.get_workflow_handle(log[completed].id).fetch_history()
    await Replayer(workflows=[WebhookDeliveryWorkflow]).replay_workflow(history)


async def test_a_manual_redelivery_sends_the_event_again_as_a_new_series(
    delivery_factory: DeliveryFactory,
    identity: Running,
    receiver: WebhookReceiver,
    client: Client,
    task_queue: str,
    temporal_address: str,
) -> None:
    delivery = await webhook_stack(delivery_factory, identity, temporal_address, task_queue)
    alice_id = alice(delivery.db)
    created = await create_endpoint(delivery, "user_alice", url=receiver.url)
    receiver.secret = created.secret
    receiver.fail_first = 0
    async with worker(client, task_queue, delivery):
        event_id, _ = await publish(delivery, owner_user_id=alice_id)
        await receiver.wait_until(lambda: len(receiver.accepted(event_id)) == 1)
        (entry,) = await delivery_log(delivery, created.endpoint.id)
        assert await client.get_workflow_handle(entry.id).result() == "delivered"
        again = await delivery.stub.RedeliverWebhook(
            pb.RedeliverWebhookRequest(delivery_id=entry.id), metadata=as_user(delivery, "user_alice")
        )
        assert again.delivery.series == 2
        await receiver.wait_until(lambda: len(receiver.accepted(event_id)) == 2)
        assert await client.get_workflow_handle(f"{entry.id}-2").result() == "delivered"
    first, second = receiver.accepted(event_id)
    # The same event (id and body) under a fresh signature.
    assert first.body == second.body and first.headers["svix-id"] == second.headers["svix-id"] == event_id
    (entry,) = await delivery_log(delivery, created.endpoint.id)
    assert (entry.status, entry.series) == (DELIVERED, 2)
    assert [(a.series, a.attempt, a.succeeded) for a in entry.attempts] == [(1, 1, True), (2, 1, True)]


async def test_a_delivery_fails_once_its_attempts_are_used_up(
    delivery_factory: DeliveryFactory,
    identity: Running,
    receiver: WebhookReceiver,
    client: Client,
    task_queue: str,
    temporal_address: str,
) -> None:
    delivery = await webhook_stack(delivery_factory, identity, temporal_address, task_queue, max_attempts=3)
    alice_id = alice(delivery.db)
    created = await create_endpoint(delivery, "user_alice", url=receiver.url)
    receiver.secret = created.secret
    receiver.fail_first = 100
    async with worker(client, task_queue, delivery):
        event_id, _ = await publish(delivery, owner_user_id=alice_id)
        await receiver.wait_until(lambda: len(receiver.seen(event_id)) == 3)
        (entry,) = await delivery_log(delivery, created.endpoint.id)
        assert await client.get_workflow_handle(entry.id).result() == "failed"
    (entry,) = await delivery_log(delivery, created.endpoint.id)
    assert entry.status == FAILED and entry.last_error.startswith("gave up after 3 attempts")
    assert [a.status_code for a in entry.attempts] == [500, 500, 500]
    assert receiver.accepted(event_id) == []


async def test_an_address_is_checked_again_at_delivery_time(
    delivery_factory: DeliveryFactory,
    identity: Running,
    receiver: WebhookReceiver,
    client: Client,
    task_queue: str,
    temporal_address: str,
) -> None:
    """A URL accepted at registration that points to a non-public address when the POST is due
    (DNS rebinding; here: registered by a dev-flagged replica, delivered by one without the flag,
    as in production) is refused before connecting: nothing reaches the receiver, the log says
    why, and the attempts are used up as for any failure."""
    dev = await webhook_stack(delivery_factory, identity, temporal_address, task_queue)
    alice_id = alice(dev.db)
    created = await create_endpoint(dev, "user_alice", url=receiver.url.replace("127.0.0.1", "localhost"))
    receiver.secret = created.secret
    production = await delivery_factory(
        clock=utc_now,
        identity_addr=f"127.0.0.1:{identity.server.port}",
        temporal_address=temporal_address,
        temporal_task_queue=task_queue,
        webhooks_retry_initial_s=0.05,
        webhooks_retry_max_interval_s=0.2,
        webhooks_max_attempts=2,
        build={"outbox_poll_s": 0.05},
    )
    async with worker(client, task_queue, production):
        event_id, _ = await publish(production, owner_user_id=alice_id)
        (entry,) = await delivery_log(production, created.endpoint.id)
        assert await client.get_workflow_handle(entry.id).result() == "failed"
    assert receiver.seen(event_id) == []
    (entry,) = await delivery_log(production, created.endpoint.id)
    assert len(entry.attempts) == 2 and not any(a.HasField("status_code") for a in entry.attempts)
    # Refused by the URL rules (http://, a loopback host) before any connection was made.
    assert all(a.error.startswith("url: must") for a in entry.attempts), entry.attempts
