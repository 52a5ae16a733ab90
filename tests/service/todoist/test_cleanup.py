"""Scenario K.109: the hourly cleanup deletes only states past their expiry; the schedule's
sweep succeeds against the real service (it failed on every fresh stack while todoist was
contract-only)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import Client

from tests.service.todoist.builders import add_state, states
from tests.service.todoist.conftest import TodoistStack
from tests.support.builders import alice
from tests.support.fake_clock import T0
from tests.support.grpc_client import service
from workflows.schedules import SCHEDULES
from workflows.sweep import SweepInput, SweepWorkflow
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2 as pb

TTL = timedelta(minutes=10)


async def test_k109_cleanup_deletes_only_expired_states(todoist: TodoistStack) -> None:
    alice_id = alice(todoist.db)
    add_state(todoist.db, alice_id, created_at=T0 - TTL - timedelta(milliseconds=1))  # expired at T0-1ms
    fresh = add_state(todoist.db, alice_id, created_at=T0 - TTL + timedelta(milliseconds=1))  # expires at T0+1ms
    exact = add_state(todoist.db, alice_id, created_at=T0 - TTL)  # expires at T0: still valid

    reply = await todoist.stub.CleanupExpiredTodoistOAuthStates(pb.CleanupExpiredTodoistOAuthStatesRequest(), metadata=service())

    assert (reply.deleted, reply.more) == (1, False)
    assert {s[0] for s in states(todoist.db)} == {fresh, exact}


async def test_cleanup_works_in_batches_and_says_when_more_are_due(todoist: TodoistStack) -> None:
    alice_id = alice(todoist.db)
    for _ in range(5):
        add_state(todoist.db, alice_id, created_at=T0 - timedelta(hours=1), status="claimed")
    request = pb.CleanupExpiredTodoistOAuthStatesRequest(batch_size=3)
    first = await todoist.stub.CleanupExpiredTodoistOAuthStates(request, metadata=service())
    second = await todoist.stub.CleanupExpiredTodoistOAuthStates(request, metadata=service())
    assert [(first.deleted, first.more), (second.deleted, second.more)] == [(3, True), (2, False)]


async def test_the_hourly_schedules_sweep_succeeds_against_the_service(oauth: TodoistStack) -> None:
    (job,) = [j for j in SCHEDULES if j.target.name == "todoist.CleanupExpiredTodoistOAuthStates"]
    assert job.spec.intervals[0].every == timedelta(hours=1)
    alice_id = alice(oauth.db)
    for _ in range(2):
        add_state(oauth.db, alice_id, created_at=T0 - timedelta(hours=2))
    client: Client = oauth.extra["client"]

    handle = await client.start_workflow(
        SweepWorkflow.run,
        SweepInput(target=job.target.name),
        id=f"sweep-{uuid.uuid4()}",
        task_queue=oauth.settings.temporal_task_queue,
    )

    assert await handle.result() == {"deleted": 2, "calls": 1}
    assert states(oauth.db) == []
