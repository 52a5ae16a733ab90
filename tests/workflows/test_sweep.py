"""SweepWorkflow on a real Temporal dev server, calling real gRPC servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import grpc
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer, Worker

from tests.service.conftest import Running
from tests.support.grpc_client import SERVICE_KEY
from workflows.sweep import SweepActivities, SweepCounts, SweepInput, SweepWorkflow
from workflows.worker import build_worker
from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as pb
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc

EXPIRE = "approvals.ExpireStaleApprovals"
UNAVAILABLE = object()  # a scripted reply: answer UNAVAILABLE instead
UNIMPLEMENTED = object()  # a scripted reply: answer UNIMPLEMENTED, as an unbuilt RPC does


class ScriptedApprovals(approvals_pb2_grpc.ApprovalsServiceServicer):
    """Stands in for the approvals service until its sweep lands: answers the scripted
    replies in order and records what it was sent."""

    def __init__(self, replies: Iterable[pb.ExpireStaleApprovalsResponse | object]) -> None:
        self.replies = list(replies)
        self.requests: list[pb.ExpireStaleApprovalsRequest] = []
        self.service_keys: list[str | None] = []

    async def ExpireStaleApprovals(
        self, request: pb.ExpireStaleApprovalsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExpireStaleApprovalsResponse:
        self.requests.append(request)
        self.service_keys.append(dict(context.invocation_metadata() or ()).get("x-service-key"))
        reply = self.replies.pop(0)
        if reply is UNAVAILABLE:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "approvals is restarting")
        if reply is UNIMPLEMENTED:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "ApprovalsService/ExpireStaleApprovals is not built yet")
        assert isinstance(reply, pb.ExpireStaleApprovalsResponse)
        return reply


@asynccontextmanager
async def approvals_peer(servicer: ScriptedApprovals) -> AsyncIterator[Settings]:
    """A real grpc.aio server on a free port; yields worker settings pointing at it."""
    server = grpc.aio.server()
    approvals_pb2_grpc.add_ApprovalsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Settings(approvals_addr=f"127.0.0.1:{port}", service_key=SERVICE_KEY)  # type: ignore[arg-type]
    finally:
        await server.stop(0)


@asynccontextmanager
async def running_worker(client: Client, task_queue: str, settings: Settings) -> AsyncIterator[Worker]:
    peers = Peers(settings)
    try:
        async with build_worker(client, task_queue, peers, grace=timedelta(0)) as worker:
            yield worker
    finally:
        await peers.close()


async def start_sweep(client: Client, task_queue: str, target: str) -> WorkflowHandle[Any, SweepCounts]:
    return await client.start_workflow(
        SweepWorkflow.run, SweepInput(target=target), id=f"sweep-{uuid.uuid4()}", task_queue=task_queue
    )


async def activity_attempts(handle: WorkflowHandle[Any, Any]) -> list[int]:
    """The attempt number of each recorded activity start (retries reuse one event)."""
    history = await handle.fetch_history()
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]


async def test_sweep_follows_more_until_the_service_says_done(client: Client, task_queue: str) -> None:
    servicer = ScriptedApprovals(
        [
            pb.ExpireStaleApprovalsResponse(expired=500, more=True),
            pb.ExpireStaleApprovalsResponse(expired=500, more=True),
            pb.ExpireStaleApprovalsResponse(expired=7, more=False),
        ]
    )
    async with approvals_peer(servicer) as settings, running_worker(client, task_queue, settings):
        result = await (await start_sweep(client, task_queue, EXPIRE)).result()

    assert result == {"expired": 1007, "calls": 3}
    assert [r.batch_size for r in servicer.requests] == [500, 500, 500]
    assert servicer.service_keys == [SERVICE_KEY] * 3


async def test_unavailable_service_is_retried_and_the_counts_survive_the_retry(
    client: Client, task_queue: str
) -> None:
    servicer = ScriptedApprovals(
        [
            pb.ExpireStaleApprovalsResponse(expired=500, more=True),
            UNAVAILABLE,
            pb.ExpireStaleApprovalsResponse(expired=3, more=False),
        ]
    )
    async with approvals_peer(servicer) as settings, running_worker(client, task_queue, settings):
        handle = await start_sweep(client, task_queue, EXPIRE)
        result = await handle.result()

    assert result == {"expired": 503, "calls": 2}
    assert await activity_attempts(handle) == [2]


async def test_unbuilt_sweep_fails_once_and_for_good_naming_the_rpc(client: Client, task_queue: str) -> None:
    # An RPC whose issue has not landed answers UNIMPLEMENTED, which no retry can fix.
    servicer = ScriptedApprovals([UNIMPLEMENTED])
    async with approvals_peer(servicer) as settings, running_worker(client, task_queue, settings):
        handle = await start_sweep(client, task_queue, EXPIRE)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    assert activity_error.retry_state == RetryState.NON_RETRYABLE_FAILURE
    error = activity_error.cause
    assert isinstance(error, ApplicationError)
    assert error.non_retryable
    assert error.type == "grpc.UNIMPLEMENTED"
    assert EXPIRE in error.message and "ExpireStaleApprovals is not built yet" in error.message
    assert await activity_attempts(handle) == [1]


async def test_scheduled_sweep_cleans_up_old_verifications_in_the_real_identity_service(
    client: Client, task_queue: str, identity: Running
) -> None:
    [(user_id,)] = identity.db.sql(
        "INSERT INTO identity.users (id, external_id, name, email, status, created_at, updated_at)"
        " VALUES (gen_random_uuid(), 'user_x', 'X', '', 'active', now(), now()) RETURNING id"
    )
    for _ in range(3):
        identity.db.sql(
            "INSERT INTO identity.phone_verifications (id, user_id, phone, code_hash, status, attempts, created_at)"
            " VALUES (gen_random_uuid(), %s, '5511977776666', 'x$y', 'pending', 0, now() - interval '25 hours')",
            (user_id,),
        )
    settings = identity.settings.model_copy(update={"identity_addr": f"127.0.0.1:{identity.server.port}"})
    async with running_worker(client, task_queue, settings):
        result = await (await start_sweep(client, task_queue, "identity.CleanupExpiredPhoneVerifications")).result()

    assert result == {"deleted": 3, "calls": 1}
    assert identity.db.sql("SELECT count(*) FROM identity.phone_verifications") == [(0,)]


async def test_a_target_that_is_not_a_sweep_rpc_fails_without_retrying(
    client: Client, task_queue: str
) -> None:
    async with running_worker(client, task_queue, Settings()):
        handle = await start_sweep(client, task_queue, "identity.ListUsers")
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    assert isinstance(failure.value.cause, ActivityError)
    error = failure.value.cause.cause
    assert isinstance(error, ApplicationError)
    assert error.type == "InvalidSweepTarget"
    assert "identity.ListUsers is not a sweep RPC" in error.message
    assert await activity_attempts(handle) == [1]


async def test_sweep_history_replays_deterministically(client: Client, task_queue: str) -> None:
    servicer = ScriptedApprovals(
        [
            pb.ExpireStaleApprovalsResponse(expired=2, more=True),
            pb.ExpireStaleApprovalsResponse(expired=1, more=False),
        ]
    )
    async with approvals_peer(servicer) as settings, running_worker(client, task_queue, settings):
        handle = await start_sweep(client, task_queue, EXPIRE)
        await handle.result()

    history = await handle.fetch_history()
    await Replayer(workflows=[SweepWorkflow]).replay_workflow(history)


async def test_activity_reports_progress_by_heartbeat() -> None:
    servicer = ScriptedApprovals(
        [
            pb.ExpireStaleApprovalsResponse(expired=4, more=True),
            pb.ExpireStaleApprovalsResponse(expired=0, more=False),
        ]
    )
    heartbeats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: heartbeats.append(details[0])
    async with approvals_peer(servicer) as settings:
        peers = Peers(settings)
        try:
            result = await env.run(SweepActivities(peers).sweep, SweepInput(target=EXPIRE, batch_size=4))
        finally:
            await peers.close()

    assert result == {"expired": 4, "calls": 2}
    assert heartbeats == [{"calls": 1, "expired": 4}, {"calls": 2, "expired": 4}]
    assert [r.batch_size for r in servicer.requests] == [4, 4]
