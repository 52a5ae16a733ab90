"""TodoistOAuthWorkflow's 10-minute TTL on the time-skipping server, against the real todoist
service and database: without a callback the flow expires and its state is deleted; a
callback a moment before the TTL still connects."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import grpc
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from services.todoist import peers as todoist_peers
from tests.service.todoist.builders import complete_oauth, start_oauth, state_of, states
from tests.service.todoist.conftest import (
    TodoistFactory,
    TodoistStack,
    clock,
    fake_todoist,
    messages,
    oauth_worker,
    todoist_factory,
)
from tests.support.builders import alice
from tests.support.grpc_client import rpc_error
from workflows import todoist_oauth
from zenthor.devstack.temporal import temporal_binary
from zenthor.retries import TemporalClientProvider

# The todoist service tests' fixtures, used here too.
REUSED_FIXTURES = (clock, fake_todoist, messages, todoist_factory)

TEST_SERVER = temporal_binary().parent / "temporal-test-server"


@asynccontextmanager
async def time_skipping_stack(todoist_factory: TodoistFactory) -> AsyncIterator[tuple[WorkflowEnvironment, TodoistStack]]:
    async with await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(TEST_SERVER)) as env:
        task_queue = f"test-{uuid.uuid4()}"
        # The environment's own client: only its calls let the server skip time.
        stack = await todoist_factory(temporal=TemporalClientProvider.of(env.client), task_queue=task_queue)
        async with oauth_worker(env.client, task_queue, stack):
            yield env, stack


async def test_without_a_callback_the_flow_expires_after_ten_minutes_and_deletes_its_state(
    todoist_factory: TodoistFactory,
) -> None:
    async with time_skipping_stack(todoist_factory) as (env, stack):
        alice(stack.db)
        state = state_of(await start_oauth(stack))
        handle = env.client.get_workflow_handle(f"todoist-oauth-{state}")
        await env.sleep(timedelta(minutes=9, seconds=59))
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert [s[0] for s in states(stack.db)] == [state]

        await env.sleep(timedelta(seconds=2))
        result = await handle.result()

        assert result["end"] == "expired"
        assert states(stack.db) == []
        error = await rpc_error(complete_oauth(stack, "c0de", state))
        assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "Invalid Todoist OAuth state.")
        assert stack.fake.requests == []


async def test_a_callback_just_before_the_ttl_still_connects(todoist_factory: TodoistFactory) -> None:
    async with time_skipping_stack(todoist_factory) as (env, stack):
        alice(stack.db)
        stack.fake.issue_code(stack.fake.add_account(), "c0de")
        state = state_of(await start_oauth(stack))
        await env.sleep(timedelta(minutes=9, seconds=59))

        reply = await complete_oauth(stack, "c0de", state)

        assert reply.status.connected
        assert states(stack.db) == []


def test_the_service_starts_and_signals_the_workflow_by_its_registered_names() -> None:
    # Services never import workflows/: the two sides meet only through these names.
    assert todoist_peers.OAUTH_WORKFLOW == todoist_oauth.TODOIST_OAUTH_WORKFLOW
    assert todoist_peers.OAUTH_SIGNAL == todoist_oauth.CALLBACK_SIGNAL
