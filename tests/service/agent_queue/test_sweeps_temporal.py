"""The cron schedules' SweepWorkflow drives this service's real batched sweeps to the end."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import Client

from tests.service.agent_queue.test_retries_temporal import retry_worker
from tests.service.conftest import Running
from tests.support.agent_queue_builders import T0, ManualClock, add_job, conv
from workflows.sweep import SweepInput, SweepWorkflow


async def sweep(client: Client, task_queue: str, target: str, batch_size: int) -> dict[str, int]:
    handle = await client.start_workflow(
        SweepWorkflow.run, SweepInput(target=target, batch_size=batch_size), id=f"sweep-{uuid.uuid4()}", task_queue=task_queue
    )
    return await handle.result()


async def test_requeue_stale_agent_jobs_schedule_sweeps_every_batch(
    agent_queue: Running, clock: ManualClock, client: Client, task_queue: str
) -> None:
    for attempts in (0, 0, 0, 2, 2):
        add_job(agent_queue.db, conv(), status="processing", processor_id="w", locked_until=T0, started_at=T0, attempt_count=attempts)
    clock.advance(1)
    async with retry_worker(client, task_queue, agent_queue):
        counts = await sweep(client, task_queue, "agent_queue.RequeueStaleJobs", batch_size=2)
    assert counts == {"calls": 3, "requeued": 3, "failed": 2}


async def test_cleanup_and_scheduled_task_sweeps_run_against_the_service(
    agent_queue: Running, clock: ManualClock, client: Client, task_queue: str
) -> None:
    old = T0 - timedelta(days=8)
    for _ in range(3):
        add_job(agent_queue.db, conv(), status="completed", created_at=old, finished_at=old)
    async with retry_worker(client, task_queue, agent_queue):
        cleaned = await sweep(client, task_queue, "agent_queue.CleanupOldJobs", batch_size=2)
        due = await sweep(client, task_queue, "agent_queue.ProcessDueScheduledTasks", batch_size=10)
    assert cleaned == {"calls": 2, "deleted": 3}
    assert due == {"calls": 1, "fired": 0, "advanced": 0}
