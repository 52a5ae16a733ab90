"""`job.completed` / `job.failed` webhook events (docs/webhooks.md): stored in the agent_queue
outbox by the statement or transaction that finishes the job, one per job also for batched
acknowledgements, none for a refused ack, a retry still to come, or a job without an owner; and
relayed to the real delivery server a batch per PublishWebhookEvents call, which fans them out to
the owner's endpoint."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.agent_queue.store.job_events import EVERYONE
from services.delivery.app import build_server as build_delivery
from tests.service.agent_queue.conftest import AgentQueueFactory
from tests.service.conftest import Running, job_event_listeners, start, stop
from tests.support.agent_queue_builders import ManualClock, add_job, conv, job_id, lease
from tests.support.builders import alice
from tests.support.database import TestDatabase
from tests.support.grpc_client import rpc_error, service
from tests.support.jwks import FakeClerkIssuer
from tests.support.ports import free_port
from tests.support.waiting import eventually
from tests.support.webhook_builders import JOB_COMPLETED, JOB_FAILED, create_endpoint, deliveries
from zenthor import ids
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc
from zenthor.outbox import BUNDLE_KEY

TOPIC = "delivery.publish_webhook_event"


def events(aq: Running) -> dict[str, dict[str, Any]]:
    """Event id → payload, of every stored row (a statement's events are one bundle row)."""
    rows = aq.db.sql("SELECT payload FROM agent_queue.outbox WHERE topic = %s", (TOPIC,))
    return {e["event_id"]: e for (bundle,) in rows for e in bundle[BUNDLE_KEY]}


def outbox_rows(aq: Running) -> int:
    return int(aq.db.sql("SELECT count(*) FROM agent_queue.outbox WHERE topic = %s", (TOPIC,))[0][0])


async def claim(aq: Running, processor: str = "w1", max_jobs: int = 10, **extra: Any) -> list[pb.Job]:
    reply = await aq.stub.ClaimJobs(
        pb.ClaimJobsRequest(processor_id=processor, max_jobs=max_jobs, lease=lease(60), **extra), metadata=service()
    )
    return list(reply.jobs)


def owned_job(aq: Running, user_id: uuid.UUID) -> uuid.UUID:
    return add_job(aq.db, conv(), user_id=user_id)


async def test_a_completed_job_is_an_event_written_by_its_acknowledgement(agent_queue: Running) -> None:
    owner = ids.USER.new()
    job = owned_job(agent_queue, owner)
    await claim(agent_queue)
    refused = await rpc_error(
        agent_queue.stub.CompleteJob(pb.CompleteJobRequest(job_id=job_id(job), processor_id="w2"), metadata=service())
    )
    assert refused.code().name == "FAILED_PRECONDITION" and events(agent_queue) == {}
    await agent_queue.stub.CompleteJob(
        pb.CompleteJobRequest(job_id=job_id(job), processor_id="w1", model_used="gpt"), metadata=service()
    )
    (key, payload), = events(agent_queue).items()
    assert key == f"job.completed:{job_id(job)}" and outbox_rows(agent_queue) == 1
    assert (payload["event_id"], payload["type"], payload["owner_user_id"], payload["owner_contact_id"]) == (
        key, "job.completed", ids.USER.format(owner), None
    )
    data = payload["data"]
    assert (data["job_id"], data["status"], data["model_used"], data["attempt_count"]) == (job_id(job), "completed", "gpt", 0)
    assert data["conversation_id"].startswith("conv_") and data["message_id"].startswith("msg_")
    assert payload["occurred_at"] == data["finish_time"]


async def test_batched_acknowledgements_write_one_event_per_completed_job(agent_queue: Running) -> None:
    owner = ids.USER.new()
    batch = [owned_job(agent_queue, owner) for _ in range(3)]
    carried = [owned_job(agent_queue, owner) for _ in range(2)]
    unowned = add_job(agent_queue.db, conv())  # no owner on record: nobody could receive it
    await claim(agent_queue)
    reply = await agent_queue.stub.CompleteJobs(
        pb.CompleteJobsRequest(
            processor_id="w1", completions=[pb.JobCompletion(job_id=job_id(j), model_used="m") for j in [*batch, unowned]]
        ),
        metadata=service(),
    )
    assert list(reply.refused_job_ids) == []
    await claim(agent_queue, completed=[pb.JobCompletion(job_id=job_id(j), model_used="m") for j in carried])
    assert set(events(agent_queue)) == {f"job.completed:{job_id(j)}" for j in [*batch, *carried]}
    assert outbox_rows(agent_queue) == 2  # one bundle per acknowledging statement


async def test_a_job_failed_for_good_is_an_event_and_one_with_a_retry_ahead_is_not(
    agent_queue: Running, clock: ManualClock
) -> None:
    owner = ids.USER.new()
    failed = owned_job(agent_queue, owner)
    retried = owned_job(agent_queue, owner)
    exhausted = add_job(agent_queue.db, conv(), user_id=owner, attempt_count=2)
    stale = add_job(agent_queue.db, conv(), user_id=owner, attempt_count=2)
    await claim(agent_queue)
    await agent_queue.stub.FailJob(
        pb.FailJobRequest(job_id=job_id(failed), processor_id="w1", error_reason="tool_error"), metadata=service()
    )
    await agent_queue.stub.RetryJob(pb.RetryJobRequest(job_id=job_id(retried), processor_id="w1"), metadata=service())
    await agent_queue.stub.RetryJob(pb.RetryJobRequest(job_id=job_id(exhausted), processor_id="w1"), metadata=service())
    clock.advance(timedelta(minutes=10))  # the last one's lease runs out: the sweep ends it
    swept = await agent_queue.stub.RequeueStaleJobs(pb.RequeueStaleJobsRequest(), metadata=service())
    assert swept.failed == 1
    found = events(agent_queue)
    assert set(found) == {f"job.failed:{job_id(j)}" for j in (failed, exhausted, stale)}
    assert found[f"job.failed:{job_id(failed)}"]["data"]["error_reason"] == "tool_error"
    assert found[f"job.failed:{job_id(stale)}"]["data"]["error_reason"] == "stale_lease"


async def listen(aq: Running, *users: uuid.UUID, all_registered: bool = False) -> int:
    reply = await aq.stub.AddJobEventListeners(
        pb.AddJobEventListenersRequest(user_ids=[ids.USER.format(u) for u in users], all_registered=all_registered),
        metadata=service(),
    )
    return reply.added


async def complete_all(aq: Running, jobs: list[uuid.UUID]) -> None:
    await claim(aq)
    reply = await aq.stub.CompleteJobs(
        pb.CompleteJobsRequest(processor_id="w1", completions=[pb.JobCompletion(job_id=job_id(j)) for j in jobs]),
        metadata=service(),
    )
    assert list(reply.refused_job_ids) == []


async def test_once_every_listener_is_registered_only_theirs_and_contacts_jobs_are_events(agent_queue: Running) -> None:
    listener, other = ids.USER.new(), ids.USER.new()
    assert await listen(agent_queue, listener) == 1
    # Until delivery says it has registered every listener, everyone's jobs are events.
    before = [owned_job(agent_queue, listener), owned_job(agent_queue, other)]
    await complete_all(agent_queue, before)
    assert set(events(agent_queue)) == {f"job.completed:{job_id(j)}" for j in before}
    assert await listen(agent_queue, all_registered=True) == 0
    assert job_event_listeners(agent_queue.db) == {ids.USER.format(listener)}
    heard = owned_job(agent_queue, listener)
    unheard = owned_job(agent_queue, other)
    contacts = add_job(agent_queue.db, conv(), contact_id=ids.CONTACT.new())  # its user is identity's to know
    await complete_all(agent_queue, [heard, unheard, contacts])
    assert set(events(agent_queue)) == {f"job.completed:{job_id(j)}" for j in [*before, heard, contacts]}


async def test_registering_listeners_is_idempotent_and_checks_every_id(agent_queue: Running) -> None:
    first, second = ids.USER.new(), ids.USER.new()
    assert await listen(agent_queue, first, first) == 1
    assert await listen(agent_queue, first, second) == 1
    assert job_event_listeners(agent_queue.db) == {"everyone", ids.USER.format(first), ids.USER.format(second)}
    bad = [
        (pb.AddJobEventListenersRequest(user_ids=[ids.USER.format(first), "ctc_nope"]), "user_ids[1]"),
        (pb.AddJobEventListenersRequest(user_ids=[ids.USER.format(ids.USER.new()) for _ in range(1001)]), "user_ids"),
        (pb.AddJobEventListenersRequest(user_ids=[ids.USER.format(EVERYONE)], all_registered=True), "user_ids"),
    ]
    for request, field in bad:
        refused = await rpc_error(agent_queue.stub.AddJobEventListeners(request, metadata=service()))
        assert refused.code().name == "INVALID_ARGUMENT" and field in (refused.details() or ""), request
    # A refused call changed nothing: the row standing for everyone is still there.
    assert job_event_listeners(agent_queue.db) == {"everyone", ids.USER.format(first), ids.USER.format(second)}


@pytest.fixture
async def relayed(
    agent_queue_factory: AgentQueueFactory, settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer,
    identity: Running,
) -> AsyncIterator[tuple[Running, Running]]:
    aq_port = free_port()  # each points at the other
    settings = settings_for(
        ServiceName.DELIVERY, identity_addr=f"127.0.0.1:{identity.server.port}", temporal_address="127.0.0.1:1",
        agent_queue_addr=f"127.0.0.1:{aq_port}",
    )
    delivery = await start(await build_delivery(settings), delivery_pb2_grpc.DeliveryServiceStub, settings, db, clerk_issuer)
    aq = await agent_queue_factory(delivery_addr=f"127.0.0.1:{delivery.server.port}", outbox_poll_s=0.05, port=aq_port)
    yield aq, delivery
    await stop(delivery)


async def test_the_relay_hands_each_event_to_delivery(relayed: tuple[Running, Running]) -> None:
    aq, delivery = relayed
    owner = alice(delivery.db)
    endpoint = (await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED, JOB_FAILED))).endpoint
    done, broken = owned_job(aq, owner), owned_job(aq, owner)
    await claim(aq)
    await aq.stub.CompleteJobs(
        pb.CompleteJobsRequest(processor_id="w1", completions=[pb.JobCompletion(job_id=job_id(done))]), metadata=service()
    )
    await aq.stub.FailJob(pb.FailJobRequest(job_id=job_id(broken), processor_id="w1"), metadata=service())
    await eventually(lambda: len(deliveries(delivery)) == 2)
    assert {r["event_id"] for r in deliveries(delivery)} == {f"job.completed:{job_id(done)}", f"job.failed:{job_id(broken)}"}
    assert {ids.WEBHOOK_ENDPOINT.format(r["endpoint_id"]) for r in deliveries(delivery)} == {endpoint.id}


def delivery_calls(method: str) -> float:
    """Calls the real delivery server answered, from its own gRPC server metrics (process-wide:
    compare before and after)."""
    labels = {"grpc_service": "zenthor.delivery.v1.DeliveryService", "grpc_method": method, "grpc_type": "unary",
              "grpc_code": "OK"}
    return REGISTRY.get_sample_value("zenthor_grpc_server_handled_total", labels) or 0.0


async def test_the_relay_publishes_the_events_of_many_finished_jobs_in_one_call(relayed: tuple[Running, Running]) -> None:
    aq, delivery = relayed
    owner = alice(delivery.db)
    endpoint = (await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED,))).endpoint
    jobs = [owned_job(aq, owner) for _ in range(5)]
    await claim(aq)
    batches, singles = delivery_calls("PublishWebhookEvents"), delivery_calls("PublishWebhookEvent")
    # One acknowledgement writes the five events in one transaction: the relay's next round
    # leases them together.
    await aq.stub.CompleteJobs(
        pb.CompleteJobsRequest(processor_id="w1", completions=[pb.JobCompletion(job_id=job_id(j)) for j in jobs]),
        metadata=service(),
    )
    await eventually(lambda: len(deliveries(delivery)) == 5)
    assert {r["event_id"] for r in deliveries(delivery)} == {f"job.completed:{job_id(j)}" for j in jobs}
    assert {ids.WEBHOOK_ENDPOINT.format(r["endpoint_id"]) for r in deliveries(delivery)} == {endpoint.id}
    # And the relay took them as delivered: it has the reply, so the server counted the call
    # (its rows are visible before that, while the call is still being answered).
    await eventually(
        lambda: aq.db.sql(
            "SELECT count(*) FROM agent_queue.outbox WHERE topic = 'delivery.publish_webhook_event' AND delivered_at IS NULL"
        ) == [(0,)]
    )
    assert delivery_calls("PublishWebhookEvents") - batches == 1
    assert delivery_calls("PublishWebhookEvent") - singles == 0


async def test_a_job_finished_after_its_owner_created_an_endpoint_reaches_it_and_nobody_elses_is_written(
    relayed: tuple[Running, Running],
) -> None:
    aq, delivery = relayed
    owner = alice(delivery.db)
    # delivery registers the owners of existing endpoints at start, and then says all are.
    await eventually(lambda: "everyone" not in job_event_listeners(aq.db))
    stranger = owned_job(aq, ids.USER.new())
    await complete_all(aq, [stranger])
    assert events(aq) == {}
    endpoint = (await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED,))).endpoint
    hers = owned_job(aq, owner)
    await complete_all(aq, [hers])
    await eventually(lambda: len(deliveries(delivery)) == 1)
    (row,) = deliveries(delivery)
    assert (row["event_id"], ids.WEBHOOK_ENDPOINT.format(row["endpoint_id"])) == (f"job.completed:{job_id(hers)}", endpoint.id)
