"""The seven cron jobs of the original backend (and the redesign's sweeps) exist as Temporal
Schedules after a worker start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    ScheduleRange,
)

from tests.workflows.conftest import SCHEDULES_NAMESPACE
from workflows.schedules import upsert_schedules
from workflows.sweep import SweepInput

DAILY = "daily"
# The original's cron table, written out here rather than read from workflows.schedules.
SPEC: dict[str, tuple[str, int | timedelta, str]] = {
    "cleanup old jobs": (DAILY, 3, "agent_queue.CleanupOldJobs"),
    "process scheduled tasks": ("every", timedelta(minutes=5), "agent_queue.ProcessDueScheduledTasks"),
    "cleanup expired verifications": (DAILY, 4, "identity.CleanupExpiredPhoneVerifications"),
    "cleanup old dedupe entries": (DAILY, 5, "messages.CleanupInboundDedupe"),
    "requeue stale agent jobs": ("every", timedelta(minutes=1), "agent_queue.RequeueStaleJobs"),
    "expire stale tool approvals": ("every", timedelta(minutes=10), "approvals.ExpireStaleApprovals"),
    "cleanup expired todoist oauth states": (
        "every",
        timedelta(hours=1),
        "todoist.CleanupExpiredTodoistOAuthStates",
    ),
    # The redesign's eighth: outbound leases nobody reclaims inline (docs/hardening.md #16).
    "requeue stale outbound messages": ("every", timedelta(minutes=1), "delivery.RequeueStaleOutbound"),
    # The redesign's: forgets Clerk webhook delivery ids past the replay window (docs/hardening.md #38).
    "cleanup old webhook deliveries": (DAILY, 6, "identity.CleanupWebhookDeliveries"),
    # The redesign's: completion webhook events past 30 days (docs/webhooks.md).
    "cleanup old webhook events": (DAILY, 7, "delivery.CleanupWebhookEvents"),
}


@pytest.fixture
async def schedules_client(temporal_address: str) -> AsyncIterator[Client]:
    client = await Client.connect(temporal_address, namespace=SCHEDULES_NAMESPACE)
    yield client
    for name in SPEC:
        await client.get_schedule_handle(name).delete()


async def listed_schedule_ids(client: Client, expected: int) -> set[str]:
    """Schedule listing goes through visibility, which indexes asynchronously."""
    ids: set[str] = set()
    for _ in range(100):
        ids = {s.id async for s in await client.list_schedules()}
        if len(ids) >= expected:
            return ids
        await asyncio.sleep(0.1)
    return ids


async def test_upsert_creates_the_cron_jobs_with_their_spec_names_and_times(
    schedules_client: Client, task_queue: str
) -> None:
    await upsert_schedules(schedules_client, task_queue)

    assert await listed_schedule_ids(schedules_client, len(SPEC)) == set(SPEC)
    for name, (kind, when, target) in SPEC.items():
        described = (await schedules_client.get_schedule_handle(name).describe()).schedule
        if kind == DAILY:
            assert described.spec.calendars == [
                ScheduleCalendarSpec(hour=(ScheduleRange(int(when)),))  # type: ignore[arg-type]
            ], name
            assert described.spec.time_zone_name == "UTC", name
            assert described.spec.intervals == [], name
        else:
            assert described.spec.intervals == [ScheduleIntervalSpec(every=when)], name  # type: ignore[arg-type]
            assert described.spec.calendars == [], name
        assert described.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert described.policy.catchup_window is not None
        assert described.policy.catchup_window <= timedelta(minutes=5)
        action = described.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "SweepWorkflow"
        assert action.task_queue == task_queue
        (sweep_input,) = await schedules_client.data_converter.decode(action.args, [SweepInput])
        assert sweep_input == SweepInput(target=target)


async def test_upserting_again_updates_in_place_and_keeps_an_operators_pause(
    schedules_client: Client, task_queue: str
) -> None:
    await upsert_schedules(schedules_client, "an-old-task-queue")
    await schedules_client.get_schedule_handle("cleanup old jobs").pause(note="maintenance")

    await upsert_schedules(schedules_client, task_queue)
    await upsert_schedules(schedules_client, task_queue)

    assert await listed_schedule_ids(schedules_client, len(SPEC)) == set(SPEC)
    for name in SPEC:
        described = (await schedules_client.get_schedule_handle(name).describe()).schedule
        assert isinstance(described.action, ScheduleActionStartWorkflow)
        assert described.action.task_queue == task_queue, name
        assert described.state.paused == (name == "cleanup old jobs"), name
    paused = await schedules_client.get_schedule_handle("cleanup old jobs").describe()
    assert paused.schedule.state.note == "maintenance"
