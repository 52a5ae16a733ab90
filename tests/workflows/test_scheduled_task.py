"""ScheduledTaskWorkflow on the time-skipping test server, with the real agent_queue and
messages services and Postgres: a task `0 9 * * MON-FRI` in Europe/Berlin fires at 09:00 Berlin
time on each weekday across the spring DST change — 08:00Z before it, 07:00Z after — once per
run, never on the weekend; the workflow is started through agent_queue's outbox and ends when
the task is deleted."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from services.agent_queue import peers as agent_queue_peers
from services.messages.app import build_server as build_messages
from tests.service.agent_queue.conftest import (
    NO_TEMPORAL,
    AgentQueueFactory,
    agent_queue_factory,
    clock,
)
from tests.service.conftest import Running, start, stop
from tests.support.agent_queue_builders import ManualClock
from tests.support.builders import alice, boss
from tests.support.database import TestDatabase
from tests.support.grpc_client import bearer, service
from tests.support.jwks import FakeClerkIssuer
from tests.support.messages_builders import web_conversation
from tests.support.ports import free_port
from tests.support.temporal_worker import production_worker
from tests.support.waiting import eventually
from workflows import scheduled_task
from workflows.scheduled_task import ScheduledTaskInput, ScheduledTaskWorkflow
from zenthor.config import ServiceName
from zenthor.devstack.temporal import temporal_binary
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as mpb
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc
from zenthor.retries import TemporalClientProvider

# The agent_queue service tests' fixtures, used here too.
REUSED_FIXTURES = (agent_queue_factory, clock)

TEST_SERVER = temporal_binary().parent / "temporal-test-server"
BERLIN = "Europe/Berlin"
STATE_TIMEOUT_S = 60.0


@dataclass
class Stack:
    env: WorkflowEnvironment
    agent_queue: Running
    messages: Running


@asynccontextmanager
async def time_skipping_stack(
    agent_queue_factory: AgentQueueFactory,
    settings_for: Any,
    db: TestDatabase,
    clerk_issuer: FakeClerkIssuer,
    identity: Running,
    clock: ManualClock,
    *,
    starts_workflows: bool = True,
) -> AsyncIterator[Stack]:
    """agent_queue and messages pointed at each other, agent_queue starting workflows on the
    time-skipping server (unless told not to: the test starts them), and the production worker
    on the test's own task queue."""
    async with await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(TEST_SERVER)) as env:
        task_queue = f"test-{uuid.uuid4()}"
        aq_port = free_port()
        settings = settings_for(
            ServiceName.MESSAGES,
            identity_addr=f"127.0.0.1:{identity.server.port}",
            agent_queue_addr=f"127.0.0.1:{aq_port}",
        )
        messages = await start(
            await build_messages(settings, clock=clock), messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer
        )
        try:
            aq = await agent_queue_factory(
                port=aq_port,
                messages_addr=f"127.0.0.1:{messages.server.port}",
                outbox_poll_s=0.05,
                # The environment's own client: only its calls let the server skip time.
                temporal=TemporalClientProvider.of(env.client) if starts_workflows else TemporalClientProvider(NO_TEMPORAL),
                temporal_task_queue=task_queue,
            )
            async with production_worker(env.client, task_queue, agent_queue_addr=f"127.0.0.1:{aq_port}"):
                yield Stack(env, aq, messages)
        finally:
            await stop(messages)


def spring_change_after(now: datetime) -> date:
    """The first Sunday on which Europe/Berlin moves to summer time (the last Sunday of March)
    after `now`: 28 March 2027 when this is written."""
    year = now.year if now.date() < date(now.year, 3, 20) else now.year + 1
    last = date(year, 3, 31)
    return last - timedelta(days=(last.weekday() + 1) % 7)


def nine_in_berlin(day: date, change: date) -> datetime:
    """09:00 in Berlin as UTC, by the rule itself: CET (+01:00) before the change, CEST after."""
    return datetime(day.year, day.month, day.day, 8 if day < change else 7, tzinfo=UTC)


async def event_types(handle: WorkflowHandle[Any, Any]) -> list[EventType.ValueType]:
    return [e.event_type for e in (await handle.fetch_history()).events]


async def wake_ups(handle: WorkflowHandle[Any, Any]) -> list[datetime]:
    """When, in Temporal's time, each of the workflow's timers fired: when it woke to fire a
    run (the fire itself follows in the same workflow task)."""
    history = await handle.fetch_history()
    return [e.event_time.ToDatetime(tzinfo=UTC) for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED]


async def fired_runs(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The run each FireScheduledTask activity was asked to fire."""
    history = await handle.fetch_history()
    return [
        json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)["run_time"]
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "scheduled_task_fire"
    ]


async def test_weekdays_at_nine_in_berlin_fire_at_the_right_instants_across_the_spring_change(
    agent_queue_factory: AgentQueueFactory,
    settings_for: Any,
    db: TestDatabase,
    clerk_issuer: FakeClerkIssuer,
    identity: Running,
    clock: ManualClock,
) -> None:
    async with time_skipping_stack(agent_queue_factory, settings_for, db, clerk_issuer, identity, clock) as stack:
        env, aq = stack.env, stack.agent_queue
        change = spring_change_after(await env.get_current_time())
        wednesday_before = change - timedelta(days=4)
        # The service's clock: Wednesday 10:00 Berlin before the change, when the task is made.
        clock.set(nine_in_berlin(wednesday_before, change) + timedelta(hours=1))
        alice(db)
        w1 = await web_conversation(stack.messages.stub, bearer(stack.messages.issuer.token("user_alice")))
        task = (
            await aq.stub.CreateScheduledTask(
                pb.CreateScheduledTaskRequest(
                    name="standup", payload="Ask about blockers", enabled=True, conversation_id=w1.id,
                    cron="0 9 * * MON-FRI", time_zone=BERLIN,
                ),
                metadata=service(),
            )
        ).task
        handle = env.client.get_workflow_handle_for(ScheduledTaskWorkflow.run, agent_queue_peers.task_workflow_id(task.id))

        # Started through the outbox; asleep on its first run before any time is skipped.
        async def asleep() -> bool:
            try:
                return EventType.EVENT_TYPE_TIMER_STARTED in await event_types(handle)
            except Exception:  # not started yet
                return False

        await eventually(asleep, timeout_s=60)
        # Through to the Wednesday after the change, noon.
        end = datetime.combine(wednesday_before + timedelta(days=7), datetime.min.time(), UTC) + timedelta(hours=12)
        await env.sleep(end - await env.get_current_time())

        days = [wednesday_before + timedelta(days=n) for n in range(1, 8)]
        expected = [nine_in_berlin(d, change) for d in days if d.weekday() < 5]
        assert len(expected) == 5  # Thu, Fri, (Sat, Sun: the change), Mon, Tue, Wed

        async def all_jobs_queued() -> bool:
            return aq.db.sql("SELECT count(*) FROM agent_queue.jobs") == [(len(expected),)]

        await eventually(all_jobs_queued, timeout_s=60)
        # A Temporal timer counts from when its workflow task completes, a few milliseconds
        # after the workflow read the time: each wake-up is at its run, give or take that,
        # well inside the minute, and the run fired is the instant itself.
        woke = await wake_ups(handle)
        assert len(woke) == len(expected)
        assert all(run <= at < run + timedelta(minutes=1) for at, run in zip(woke, expected, strict=True)), woke
        assert await fired_runs(handle) == [instant.isoformat() for instant in expected]
        keys = [k for (k,) in aq.db.sql("SELECT key FROM agent_queue.outbox WHERE topic = 'messages.create_system_message' ORDER BY key")]
        assert keys == [f"{task.id}:{instant.isoformat()}" for instant in expected]
        history = await stack.messages.stub.GetConversationHistory(
            mpb.GetConversationHistoryRequest(conversation_id=w1.id), metadata=service()
        )
        assert [m.content for m in history.messages] == ["[Scheduled Task: standup] Ask about blockers"] * len(expected)
        boss(db)
        admin = bearer(aq.issuer.token("user_boss"))
        shown = (await aq.stub.GetScheduledTask(pb.GetScheduledTaskRequest(id=task.id), metadata=admin)).task
        assert shown.last_run_time.ToDatetime(tzinfo=UTC) == expected[-1]
        assert shown.next_run_time.ToDatetime(tzinfo=UTC) == nine_in_berlin(days[-1] + timedelta(days=1), change)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

        # Deleting the task ends its workflow (woken through the outbox, it finds the task gone).
        await aq.stub.DeleteScheduledTask(pb.DeleteScheduledTaskRequest(id=task.id), metadata=admin)
        async with asyncio.timeout(STATE_TIMEOUT_S):
            result = await handle.result()
        assert (result.end, result.fired) == ("gone", len(expected))
        await Replayer(workflows=[ScheduledTaskWorkflow]).replay_workflow(await handle.fetch_history())


async def test_the_workflow_continues_as_new_and_keeps_firing(
    agent_queue_factory: AgentQueueFactory,
    settings_for: Any,
    db: TestDatabase,
    clerk_issuer: FakeClerkIssuer,
    identity: Running,
    clock: ManualClock,
) -> None:
    async with time_skipping_stack(
        agent_queue_factory, settings_for, db, clerk_issuer, identity, clock, starts_workflows=False
    ) as stack:
        env, aq = stack.env, stack.agent_queue
        now = await env.get_current_time()
        clock.set(now)
        task = (
            await aq.stub.CreateScheduledTask(
                pb.CreateScheduledTaskRequest(name="tick", payload="p", enabled=True, cron="*/10 * * * *"),
                metadata=service(),
            )
        ).task
        first = task.next_run_time.ToDatetime(tzinfo=UTC)
        # Started here with a short run (the service's own start uses the default, 100 runs).
        handle = await env.client.start_workflow(
            ScheduledTaskWorkflow.run,
            ScheduledTaskInput(task_id=task.id, max_fires_per_run=2),
            id=agent_queue_peers.task_workflow_id(task.id),
            task_queue=stack.agent_queue.settings.temporal_task_queue,
        )
        first_run_id = handle.result_run_id
        await env.sleep(first + timedelta(minutes=25) - now)

        async def fired_three() -> bool:
            found = aq.db.sql("SELECT last_run_at FROM agent_queue.scheduled_tasks")
            return found == [(first + timedelta(minutes=20),)]

        await eventually(fired_three, timeout_s=60)
        # Two runs fired by the first workflow run, the third by the run it continued as.
        latest = env.client.get_workflow_handle(handle.id)
        described = await latest.describe()
        assert described.status == WorkflowExecutionStatus.RUNNING and described.run_id != first_run_id
        assert await fired_runs(env.client.get_workflow_handle(handle.id, run_id=first_run_id)) == [
            first.isoformat(),
            (first + timedelta(minutes=10)).isoformat(),
        ]
        assert await fired_runs(latest) == [(first + timedelta(minutes=20)).isoformat()]


def test_the_service_starts_and_signals_the_workflow_by_its_registered_names() -> None:
    # Services never import workflows/: the two sides meet only through these names.
    assert agent_queue_peers.TASK_WORKFLOW == scheduled_task.SCHEDULED_TASK_WORKFLOW
    assert agent_queue_peers.TASK_REFRESH_SIGNAL == scheduled_task.REFRESH_SIGNAL

