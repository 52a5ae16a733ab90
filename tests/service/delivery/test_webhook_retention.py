"""Retention of completion webhook events (docs/webhooks.md, "Retention"): CleanupWebhookEvents
forgets events stored more than 30 days ago with their deliveries and attempts, keeps an event
while one of its deliveries is PENDING, works in batches, and the daily schedule's sweep reaches
it. Rows are aged by moving their `created_at` back; the server's clock stays at T0."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import psycopg
import pytest
from temporalio.client import Client

from tests.service.conftest import Running
from tests.service.delivery.conftest import DeliveryFactory
from tests.support.builders import alice, boss
from tests.support.grpc_client import rpc_error, service
from tests.support.temporal_worker import production_worker
from tests.support.waiting import eventually
from tests.support.webhook_builders import as_user, create_endpoint, deliveries, publish
from workflows.schedules import SCHEDULES
from workflows.sweep import SweepInput, SweepWorkflow
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb

PENDING = pb.WEBHOOK_DELIVERY_STATUS_PENDING
DELIVERED = pb.WEBHOOK_DELIVERY_STATUS_DELIVERED
FAILED = pb.WEBHOOK_DELIVERY_STATUS_FAILED


@pytest.fixture
async def delivery(delivery_factory: DeliveryFactory, identity: Running) -> Running:
    """Delivery resolving principals through the real identity server."""
    return await delivery_factory(identity_addr=f"127.0.0.1:{identity.server.port}")


def age(delivery: Running, event_id: str, days: float) -> None:
    """Moves the event's storage time `days` back (the server's clock is T0)."""
    delivery.db.sql(
        "UPDATE delivery.webhook_events SET created_at = created_at - make_interval(secs => %s) WHERE id = %s",
        (days * 86_400, event_id),
    )


def events(delivery: Running) -> set[str]:
    return {str(r[0]) for r in delivery.db.sql("SELECT id FROM delivery.webhook_events")}


def attempts(delivery: Running, delivery_ids: list[uuid.UUID]) -> int:
    rows = delivery.db.sql(
        "SELECT count(*) FROM delivery.webhook_attempts WHERE delivery_id = ANY(%s)", (delivery_ids,)
    )
    return int(rows[0][0])


def waits_for_a_lock(delivery: Running, naming: str) -> bool:
    """A statement of the service's database naming `naming` waits for a row lock."""
    return bool(
        delivery.db.sql(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE %s",
            (f"%{naming}%",),
        )
    )


async def cleanup(delivery: Running, batch_size: int = 0) -> tuple[int, bool]:
    reply = await delivery.stub.CleanupWebhookEvents(
        pb.CleanupWebhookEventsRequest(batch_size=batch_size), metadata=service()
    )
    return reply.deleted, reply.more


async def attempt(delivery: Running, delivery_id: uuid.UUID, series: int, number: int, code: int) -> int:
    reply = await delivery.stub.RecordWebhookAttempt(
        pb.RecordWebhookAttemptRequest(
            delivery_id=ids.WEBHOOK_DELIVERY.format(delivery_id), series=series, attempt=number, status_code=code,
            error=None if code < 300 else f"HTTP {code}", succeeded=code < 300,
        ),
        metadata=service(),
    )
    status: int = reply.status
    return status


async def give_up(delivery: Running, delivery_id: uuid.UUID, series: int = 1) -> int:
    reply = await delivery.stub.FailWebhookDelivery(
        pb.FailWebhookDeliveryRequest(delivery_id=ids.WEBHOOK_DELIVERY.format(delivery_id), series=series, error="gave up"),
        metadata=service(),
    )
    status: int = reply.status
    return status


async def delivered_and_failed(delivery: Running, owner: uuid.UUID) -> tuple[str, list[uuid.UUID]]:
    """An event with one DELIVERED and one FAILED delivery (two endpoints), attempts logged."""
    event_id, reply = await publish(delivery, owner_user_id=owner)
    assert reply.deliveries_created == 2
    ok, ko = (row["id"] for row in deliveries(delivery, event_id))
    assert await attempt(delivery, ok, 1, 1, 500) == PENDING
    assert await attempt(delivery, ok, 1, 2, 204) == DELIVERED
    assert await attempt(delivery, ko, 1, 1, 503) == PENDING
    assert await give_up(delivery, ko) == FAILED
    return event_id, [ok, ko]


# --- what the sweep forgets and what it keeps ---


async def test_an_event_older_than_30_days_is_forgotten_and_a_younger_one_kept(delivery: Running) -> None:
    alice_id = alice(delivery.db)  # no endpoint: the events reach nobody, and are stored all the same
    old, _ = await publish(delivery, owner_user_id=alice_id)
    exactly_30, _ = await publish(delivery, owner_user_id=alice_id)
    days_29, _ = await publish(delivery, owner_user_id=alice_id)
    fresh, _ = await publish(delivery, owner_user_id=alice_id)
    age(delivery, old, 30.001)
    age(delivery, exactly_30, 30)
    age(delivery, days_29, 29)

    assert await cleanup(delivery) == (1, False)

    assert events(delivery) == {exactly_30, days_29, fresh}
    assert await cleanup(delivery) == (0, False)


async def test_an_old_event_goes_with_its_finished_deliveries_and_their_attempts(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    first = (await create_endpoint(delivery, "user_alice")).endpoint
    await create_endpoint(delivery, "user_alice")
    old, old_deliveries = await delivered_and_failed(delivery, alice_id)
    recent, recent_deliveries = await delivered_and_failed(delivery, alice_id)
    age(delivery, old, 31)
    assert attempts(delivery, old_deliveries) == 3

    assert await cleanup(delivery) == (1, False)

    assert events(delivery) == {recent}
    assert deliveries(delivery, old) == []
    assert attempts(delivery, old_deliveries) == 0
    # The younger event's log is untouched, as its owner sees it.
    assert {r["id"] for r in deliveries(delivery, recent)} == set(recent_deliveries)
    assert attempts(delivery, recent_deliveries) == 3
    log = await delivery.stub.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(endpoint_id=first.id), metadata=as_user(delivery, "user_alice")
    )
    assert [d.event_id for d in log.deliveries] == [recent]


async def test_an_old_event_stays_while_a_delivery_of_it_is_pending(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    await create_endpoint(delivery, "user_alice")
    await create_endpoint(delivery, "user_alice")
    retrying, _ = await publish(delivery, owner_user_id=alice_id)
    done, waiting = (row["id"] for row in deliveries(delivery, retrying))
    assert await attempt(delivery, done, 1, 1, 204) == DELIVERED
    assert await attempt(delivery, waiting, 1, 1, 500) == PENDING  # its retries go on
    redelivered, redelivered_deliveries = await delivered_and_failed(delivery, alice_id)
    reply = await delivery.stub.RedeliverWebhook(
        pb.RedeliverWebhookRequest(delivery_id=ids.WEBHOOK_DELIVERY.format(redelivered_deliveries[0])),
        metadata=as_user(delivery, "user_alice"),
    )
    assert (reply.delivery.status, reply.delivery.series) == (PENDING, 2)
    age(delivery, retrying, 40)
    age(delivery, redelivered, 40)

    assert await cleanup(delivery) == (0, False)

    assert events(delivery) == {retrying, redelivered}
    assert len(deliveries(delivery)) == 4
    assert attempts(delivery, [done, waiting, *redelivered_deliveries]) == 5
    # Once the delivery is final, the next sweep forgets the event.
    assert await give_up(delivery, waiting) == FAILED
    assert await cleanup(delivery) == (1, False)
    assert events(delivery) == {redelivered}
    assert attempts(delivery, [done, waiting]) == 0


async def test_a_redelivery_committed_while_the_sweep_runs_keeps_its_event(delivery: Running) -> None:
    """The sweep chose the event while its delivery was DELIVERED; a redelivery commits before
    the delete: the delivery, now PENDING, is not deleted under its workflow."""
    alice_id = alice(delivery.db)
    await create_endpoint(delivery, "user_alice")
    event_id, _ = await publish(delivery, owner_user_id=alice_id)
    (row,) = deliveries(delivery, event_id)
    assert await attempt(delivery, row["id"], 1, 1, 204) == DELIVERED
    age(delivery, event_id, 31)

    async with await psycopg.AsyncConnection.connect(delivery.db.admin_dsn()) as redelivery:
        # RedeliverWebhook's guarded update (services/delivery/store/webhooks.py), held uncommitted.
        await redelivery.execute(
            "UPDATE delivery.webhook_deliveries SET status = 'pending', series = series + 1, delivered_at = NULL"
            " WHERE id = %s AND status IN ('delivered', 'failed')",
            (row["id"],),
        )
        sweep = asyncio.create_task(cleanup(delivery))

        await eventually(lambda: waits_for_a_lock(delivery, "delivery.webhook_events"),
                         what="the sweep waiting for the redelivered row")
        await redelivery.commit()
        async with asyncio.timeout(30):
            assert await sweep == (0, False)

    assert events(delivery) == {event_id}
    (after,) = deliveries(delivery, event_id)
    assert (after["status"], after["series"]) == ("pending", 2)
    assert attempts(delivery, [row["id"]]) == 1


async def test_a_redelivery_asked_while_the_sweep_deletes_its_delivery_is_not_found(delivery: Running) -> None:
    """The other order: the sweep locked the delivery and deleted its event first. The
    redelivery waits for it, then finds nothing: NOT_FOUND, not "still being attempted"."""
    alice_id = alice(delivery.db)
    await create_endpoint(delivery, "user_alice")
    event_id, _ = await publish(delivery, owner_user_id=alice_id)
    (row,) = deliveries(delivery, event_id)
    assert await attempt(delivery, row["id"], 1, 1, 204) == DELIVERED

    async with await psycopg.AsyncConnection.connect(delivery.db.admin_dsn()) as sweep:
        # What CleanupWebhookEvents' statement does (services/delivery/store/webhooks.py), held
        # uncommitted: the delivery locked, the event deleted with it.
        await sweep.execute("SELECT 1 FROM delivery.webhook_deliveries WHERE event_id = %s FOR UPDATE", (event_id,))
        await sweep.execute("DELETE FROM delivery.webhook_events WHERE id = %s", (event_id,))
        redelivery = asyncio.create_task(rpc_error(delivery.stub.RedeliverWebhook(
            pb.RedeliverWebhookRequest(delivery_id=ids.WEBHOOK_DELIVERY.format(row["id"])),
            metadata=as_user(delivery, "user_alice"), timeout=30,
        )))

        await eventually(lambda: waits_for_a_lock(delivery, "webhook_deliveries"),
                         what="the redelivery waiting for the swept row")
        await sweep.commit()
        async with asyncio.timeout(30):
            error = await redelivery

    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert deliveries(delivery, event_id) == []


async def test_a_forgotten_event_published_again_is_a_new_event(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    await create_endpoint(delivery, "user_alice")
    job = ids.JOB.format(ids.JOB.new())
    event_id, first = await publish(delivery, owner_user_id=alice_id, entity=job)
    (row,) = deliveries(delivery, event_id)
    assert await attempt(delivery, row["id"], 1, 1, 204) == DELIVERED
    _, repeat = await publish(delivery, owner_user_id=alice_id, entity=job)
    assert (first.duplicate, repeat.duplicate, repeat.deliveries_created) == (False, True, 0)
    age(delivery, event_id, 31)

    assert await cleanup(delivery) == (1, False)
    _, again = await publish(delivery, owner_user_id=alice_id, entity=job)

    assert (again.duplicate, again.deliveries_created) == (False, 1)
    (fresh,) = deliveries(delivery, event_id)
    assert fresh["id"] != row["id"] and fresh["status"] == "pending"


# --- batches and callers ---


async def test_the_sweep_works_in_batches_and_says_when_more_are_due(delivery: Running) -> None:
    alice_id = alice(delivery.db)
    for _ in range(5):
        event_id, _ = await publish(delivery, owner_user_id=alice_id)
        age(delivery, event_id, 31)
    kept, _ = await publish(delivery, owner_user_id=alice_id)

    assert [await cleanup(delivery, 2) for _ in range(3)] == [(2, True), (2, True), (1, False)]
    assert await cleanup(delivery) == (0, False)
    assert events(delivery) == {kept}


@pytest.mark.parametrize("batch_size", [-1, 10_001])
async def test_a_batch_size_outside_0_to_10000_is_invalid_argument(delivery: Running, batch_size: int) -> None:
    alice_id = alice(delivery.db)
    event_id, _ = await publish(delivery, owner_user_id=alice_id)
    age(delivery, event_id, 31)

    error = await rpc_error(cleanup(delivery, batch_size))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["batch_size"]
    assert events(delivery) == {event_id}
    assert await cleanup(delivery, 10_000) == (1, False)


@pytest.mark.parametrize("subject, builder", [("user_alice", alice), ("user_boss", boss)])
async def test_a_user_even_an_admin_cannot_run_the_sweep(delivery: Running, subject: str, builder: Any) -> None:
    owner = builder(delivery.db)
    event_id, _ = await publish(delivery, owner_user_id=owner)
    age(delivery, event_id, 31)

    error = await rpc_error(
        delivery.stub.CleanupWebhookEvents(pb.CleanupWebhookEventsRequest(), metadata=as_user(delivery, subject))
    )

    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert events(delivery) == {event_id}


# --- the daily schedule ---


async def test_the_daily_schedules_sweep_forgets_old_events_through_the_service(
    delivery: Running, client: Client, task_queue: str
) -> None:
    (job,) = [j for j in SCHEDULES if j.target.name == "delivery.CleanupWebhookEvents"]
    assert job.name == "cleanup old webhook events"
    alice_id = alice(delivery.db)
    for _ in range(3):
        event_id, _ = await publish(delivery, owner_user_id=alice_id)
        age(delivery, event_id, 31)
    kept, _ = await publish(delivery, owner_user_id=alice_id)

    async with production_worker(client, task_queue, delivery_addr=f"127.0.0.1:{delivery.server.port}"):
        handle = await client.start_workflow(
            SweepWorkflow.run, SweepInput(target=job.target.name), id=f"sweep-{uuid.uuid4()}", task_queue=task_queue
        )
        async with asyncio.timeout(60):
            assert await handle.result() == {"deleted": 3, "calls": 1}

    assert events(delivery) == {kept}
