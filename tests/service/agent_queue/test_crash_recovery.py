"""A worker process killed with SIGKILL mid-job: its lease lapses, the sweep sends the job to
a retry, another worker completes it; a job whose workers keep crashing fails with
`stale_lease` after 3 attempts."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.service.agent_queue.test_jobs import release, sweep
from tests.service.conftest import Running
from tests.support.agent_queue_builders import ManualClock, add_job, conv, job_id, job_row

REPO = Path(__file__).resolve().parents[3]
LEASE_S = 1.0


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout=30)
        assert raw, "the worker exited without a word"
        result: dict[str, Any] = json.loads(raw)
        return result

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    async def exit_code(self) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout=30)


async def spawn(aq: Running, processor_id: str, mode: str) -> WorkerProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.agent_queue_worker",
        f"127.0.0.1:{aq.server.port}", processor_id, mode, str(LEASE_S),
        cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )
    return WorkerProcess(proc)


async def crash_mid_job(aq: Running, processor_id: str, job: uuid.UUID) -> None:
    worker = await spawn(aq, processor_id, "hang")
    assert (await worker.line())["claimed"] == job_id(job)
    await worker.kill()


async def test_job_of_a_killed_worker_is_requeued_after_its_lease_and_completed_by_another(
    agent_queue: Running, clock: ManualClock
) -> None:
    job = add_job(agent_queue.db, conv())
    await crash_mid_job(agent_queue, "worker-a", job)
    assert job_row(agent_queue.db, job)["processor_id"] == "worker-a"

    assert (await sweep(agent_queue)).requeued == 0  # the lease has not lapsed yet
    clock.advance(LEASE_S + 1)
    assert (await sweep(agent_queue)).requeued == 1
    assert job_row(agent_queue.db, job)["status"] == "waiting_retry"
    await release(agent_queue, job, 1)  # what RetryWorkflow does after the backoff

    worker = await spawn(agent_queue, "worker-b", "complete")
    assert await worker.line() == {"claimed": job_id(job), "attempt_count": 1}
    assert await worker.line() == {"completed": job_id(job)}
    assert await worker.exit_code() == 0
    row = job_row(agent_queue.db, job)
    assert (row["status"], row["model_used"], row["attempt_count"]) == ("completed", "test-model", 1)


async def test_after_three_crashes_the_job_fails_with_stale_lease(agent_queue: Running, clock: ManualClock) -> None:
    job = add_job(agent_queue.db, conv())
    for attempt in (1, 2, 3):
        await crash_mid_job(agent_queue, f"worker-{attempt}", job)
        clock.advance(LEASE_S + 1)
        swept = await sweep(agent_queue)
        if attempt < 3:
            assert (swept.requeued, swept.failed) == (1, 0)
            await release(agent_queue, job, attempt)
    assert (swept.requeued, swept.failed) == (0, 1)
    row = job_row(agent_queue.db, job)
    assert (row["status"], row["error_reason"], row["attempt_count"]) == ("failed", "stale_lease", 2)
    worker = await spawn(agent_queue, "worker-late", "complete")
    assert await worker.line() == {"claimed": None}
    assert await worker.exit_code() == 0
