"""Retries carried by Temporal: RetryWorkflow (workflows/retry.py) started through the
agent_queue outbox releases the job after its backoff; duplicate starts are no-ops; a
Temporal outage delays a retry and loses none; the history replays."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tests.service.agent_queue.conftest import AgentQueueFactory
from tests.service.agent_queue.test_jobs import claim, retry, sweep
from tests.service.conftest import Running
from tests.support.agent_queue_builders import ManualClock, add_job, conv, job_id, job_row
from tests.support.grpc_client import SERVICE_KEY
from tests.support.ports import free_port
from tests.support.waiting import eventually
from workflows.retry import RetryWorkflow
from workflows.worker import build_worker
from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.devstack.temporal import temporal_binary
from zenthor.retries import RetryInput, TemporalClientProvider, retry_starter

TEST_SERVER = temporal_binary().parent / "temporal-test-server"


@asynccontextmanager
async def retry_worker(client: Client, task_queue: str, aq: Running) -> AsyncIterator[None]:
    """The production worker (build_worker), reaching agent_queue over gRPC."""
    peers = Peers(Settings(agent_queue_addr=f"127.0.0.1:{aq.server.port}", service_key=SERVICE_KEY))  # type: ignore[arg-type]
    try:
        async with build_worker(client, task_queue, peers, grace=timedelta(0)):
            yield
    finally:
        await peers.close()


async def started(client: Client, workflow_id: str) -> WorkflowHandle[Any, Any]:
    """The handle of a run another process starts, bound to its run id (the time-skipping
    server follows only a known run)."""
    run_ids: list[str] = []

    async def exists() -> bool:
        try:
            run_ids.append((await client.get_workflow_handle(workflow_id).describe()).run_id)
        except RPCError:
            return False
        return True

    await eventually(exists)
    return client.get_workflow_handle(workflow_id, run_id=run_ids[-1])


def timer_durations(history: Any) -> list[timedelta]:
    return [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]


async def test_retry_workflow_releases_the_job_after_its_backoff(
    agent_queue_factory: AgentQueueFactory, clock: ManualClock
) -> None:
    # The time-skipping server: the real backoff (tens of seconds) passes at once.
    async with await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(TEST_SERVER)) as env:
        task_queue = f"test-{uuid.uuid4()}"
        aq = await agent_queue_factory(
            # The environment's own client: only its calls let the server skip time.
            temporal=TemporalClientProvider.of(env.client),
            temporal_task_queue=task_queue,
            outbox_poll_s=0.1,
            retry_base_s=60.0,
        )
        job = add_job(aq.db, conv())
        await claim(aq, "w1", job)
        waiting = (await retry(aq, job, "w1")).job
        backoff = waiting.next_attempt_time.ToDatetime() - clock.now.replace(tzinfo=None)
        assert timedelta(seconds=30) <= backoff <= timedelta(seconds=60)

        async with retry_worker(env.client, task_queue, aq):
            handle = await started(env.client, f"retry-{job_id(job)}-1")
            assert job_row(aq.db, job)["status"] == "waiting_retry"  # still sleeping
            # Skips the server's clock past the backoff (a handle not made by this client's
            # start_workflow does not skip time by itself).
            await env.sleep(backoff + timedelta(seconds=1))
            result = await handle.result()

        assert result["released"] is True and result["job"]["status"] == "JOB_STATUS_PENDING"
        assert job_row(aq.db, job)["status"] == "pending"
        history = await handle.fetch_history()
        (slept,) = timer_durations(history)
        assert abs(slept - backoff) < timedelta(milliseconds=1)
        # The workflow id names the job, so operators find it in the Temporal UI.
        assert handle.id == f"retry-{job_id(job)}-1"


async def test_stale_lease_goes_through_the_same_retry_path(
    agent_queue_factory: AgentQueueFactory, clock: ManualClock, client: Client, task_queue: str, temporal_address: str
) -> None:
    aq = await agent_queue_factory(
        temporal_address=temporal_address, temporal_task_queue=task_queue, outbox_poll_s=0.05, retry_base_s=0.2
    )
    job = add_job(aq.db, conv())
    await claim(aq, "w1", job, lease_s=1)
    clock.advance(2)
    async with retry_worker(client, task_queue, aq):
        await sweep(aq)
        handle = await started(client, f"retry-{job_id(job)}-1")
        await handle.result()
    row = job_row(aq.db, job)
    assert (row["status"], row["attempt_count"]) == ("pending", 1)
    history = await handle.fetch_history()
    await Replayer(workflows=[RetryWorkflow]).replay_workflow(history)


async def test_with_temporal_stopped_a_failing_job_still_reaches_retry_once_temporal_is_back(
    agent_queue_factory: AgentQueueFactory, clock: ManualClock, task_queue: str
) -> None:
    port = free_port()
    aq = await agent_queue_factory(
        temporal_address=f"127.0.0.1:{port}", temporal_task_queue=task_queue, outbox_poll_s=0.05, retry_base_s=0.2
    )
    job = add_job(aq.db, conv())
    await claim(aq, "w1", job)
    await retry(aq, job, "w1")

    def outbox() -> tuple[Any, ...]:
        ((attempts, delivered, error),) = aq.db.sql(
            "SELECT attempts, delivered_at IS NOT NULL, last_error FROM agent_queue.outbox WHERE topic = 'temporal.retry'"
        )
        return attempts, delivered, error

    async def attempted() -> bool:
        # The lease counts the attempt before the call; its failure is recorded after it.
        attempts, _, error = outbox()
        return attempts >= 1 and error is not None

    await eventually(attempted)  # Temporal is down: the start failed and stays in the outbox
    assert outbox()[1] is False
    assert job_row(aq.db, job)["status"] == "waiting_retry"

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()), port=port, dev_server_startup_timeout=timedelta(seconds=30)
    )
    try:
        clock.advance(timedelta(minutes=10))  # past the relay's backoff for the event
        async with retry_worker(env.client, task_queue, aq):
            handle = await started(env.client, f"retry-{job_id(job)}-1")
            await handle.result()
        assert outbox()[1] is True
        assert job_row(aq.db, job)["status"] == "pending"
    finally:
        await env.shutdown()


async def test_a_second_start_with_the_same_id_is_a_no_op(client: Client, task_queue: str, temporal_address: str) -> None:
    # No worker on this task queue: the first run stays open, so both id policies are exercised.
    start = retry_starter(TemporalClientProvider(temporal_address), task_queue)
    workflow_id = f"retry-job_{uuid.uuid4().hex}-1"
    payload = {"workflow_id": workflow_id, "target": "agent_queue.ReleaseJob", "request": {}, "delay_s": 3600.0}
    await start(payload)
    first = await client.get_workflow_handle(workflow_id).describe()
    await start(payload)  # running: the existing run is kept
    assert (await client.get_workflow_handle(workflow_id).describe()).run_id == first.run_id
    await client.get_workflow_handle(workflow_id).terminate("test")
    await start(payload)  # finished: a duplicate is rejected, quietly
    after = await client.get_workflow_handle(workflow_id).describe()
    assert after.run_id == first.run_id and after.status == WorkflowExecutionStatus.TERMINATED


async def test_a_target_that_is_not_an_rpc_fails_at_once(
    agent_queue: Running, client: Client, task_queue: str
) -> None:
    async with retry_worker(client, task_queue, agent_queue):
        handle = await client.start_workflow(
            RetryWorkflow.run,
            RetryInput(target="agent_queue.NoSuchRpc", request={}, delay_s=0),
            id=f"retry-x-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, ActivityError)
    error = failure.value.cause.cause
    assert isinstance(error, ApplicationError) and error.type == "InvalidRetryTarget" and error.non_retryable


async def test_a_release_the_service_refuses_is_not_retried(
    agent_queue: Running, client: Client, task_queue: str
) -> None:
    async with retry_worker(client, task_queue, agent_queue):
        handle = await client.start_workflow(
            RetryWorkflow.run,
            RetryInput(target="agent_queue.ReleaseJob", request={"job_id": "job_" + "0" * 32, "attempt_count": 1}),
            id=f"retry-x-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, ActivityError)
    error = failure.value.cause.cause
    assert isinstance(error, ApplicationError) and error.type == "grpc.NOT_FOUND"
