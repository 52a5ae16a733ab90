"""`kill -9` of the agent_queue server under load: jobs are enqueued and claimed by worker
processes while the server process is killed and started again. Every acknowledged enqueue
becomes exactly one job, and every job is completed exactly once (counted from a log the
database writes at each status change). Claims whose answer died with the server come back
when their lease lapses, through the stale-lease sweep and the release RetryWorkflow makes."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.conftest import Record, Tally
from tests.service.agent_queue.test_claim_storm import CLAIM_LOG
from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from tests.support.ports import free_port
from tests.support.retrying_client import IDEMPOTENT_RETRY, RetryingClient
from tests.support.service_process import REPO, ServiceProcess, service_env
from zenthor import ids
from zenthor.clients import open_channel
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc

LEASE_S = 3.0  # workers' claim lease: a claim lost with the server comes back this soon
SETTLE_S = 120.0


@dataclass(frozen=True)
class Size:
    jobs: int
    workers: int
    kills: int


async def spawn_worker(address: str, name: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.queue_worker", address, name, str(LEASE_S),
            cwd=REPO, stdout=out, stderr=out,
        )


async def stop_workers(workers: list[asyncio.subprocess.Process]) -> None:
    for worker in workers:
        if worker.returncode is None:
            worker.terminate()
    for worker in workers:
        try:
            await asyncio.wait_for(worker.wait(), 15)
        except TimeoutError:
            worker.kill()
            await worker.wait()


def statuses(db: TestDatabase) -> Counter[str]:
    return Counter({status: int(n) for status, n in db.sql("SELECT status, count(*) FROM agent_queue.jobs GROUP BY status")})


async def enqueue_all(stub: agent_queue_pb2_grpc.AgentQueueServiceStub, size: Size, acked: list[str]) -> None:
    """Enqueues one job per new message, two messages per conversation, one at a time, retrying
    what the dead server could not answer (EnqueueJob is idempotent by message id)."""
    client = RetryingClient(retry_on=IDEMPOTENT_RETRY)
    conversation = ""
    for n in range(size.jobs):
        if n % 2 == 0:
            conversation = ids.CONVERSATION.format(ids.CONVERSATION.new())
        message = ids.MESSAGE.format(ids.MESSAGE.new())
        await client.call(
            lambda message=message, conversation=conversation: stub.EnqueueJob(
                pb.EnqueueJobRequest(message_id=message, conversation_id=conversation), metadata=service(), timeout=5
            )
        )
        acked.append(message)


async def settle(stub: agent_queue_pb2_grpc.AgentQueueServiceStub, db: TestDatabase, total: int) -> None:
    """Until every job is completed: what the stale-lease schedule and RetryWorkflow do for a
    claim whose answer was lost — requeue the expired lease, release the retry."""
    client = RetryingClient(retry_on=IDEMPOTENT_RETRY)
    async with asyncio.timeout(SETTLE_S):
        while statuses(db)["completed"] < total:
            if db.sql("SELECT 1 FROM agent_queue.jobs WHERE status = 'processing' AND locked_until < now() LIMIT 1"):
                await client.call(lambda: stub.RequeueStaleJobs(pb.RequeueStaleJobsRequest(), metadata=service(), timeout=5))
            for job_id, attempt in db.sql("SELECT id, attempt_count FROM agent_queue.jobs WHERE status = 'waiting_retry'"):
                request = pb.ReleaseJobRequest(job_id=ids.JOB.format(job_id), attempt_count=attempt)
                await client.call(lambda request=request: stub.ReleaseJob(request, metadata=service(), timeout=5))
            if statuses(db)["failed"]:
                return  # a job gave up: counted as stuck below
            await asyncio.sleep(0.1)


async def run_scenario(db: TestDatabase, tmp_path: Path, size: Size, record: Record, name: str) -> Tally:
    db.sql(CLAIM_LOG)
    server = ServiceProcess(
        ServiceName.AGENT_QUEUE, free_port(), service_env(ServiceName.AGENT_QUEUE, db), tmp_path / "agent_queue.log"
    )
    await server.start()
    workers = [await spawn_worker(server.address, f"worker-{n}", tmp_path / f"worker-{n}.log") for n in range(size.workers)]
    acked: list[str] = []
    try:
        async with open_channel(server.address, None) as channel:
            stub = agent_queue_pb2_grpc.AgentQueueServiceStub(channel)
            enqueuing = asyncio.create_task(enqueue_all(stub, size, acked))
            for kill in range(1, size.kills + 1):
                # Killed while enqueues, claims and completions are all in flight.
                async with asyncio.timeout(SETTLE_S):
                    while len(acked) < size.jobs * kill // (size.kills + 1) and not enqueuing.done():  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                await server.restart_after_kill()
            await asyncio.wait_for(enqueuing, SETTLE_S)
            await settle(stub, db, size.jobs)
    finally:
        await stop_workers(workers)
        await server.stop()

    jobs_per_message = Counter(
        ids.MESSAGE.format(m) for (m,) in db.sql("SELECT message_id FROM agent_queue.jobs")
    )
    log = db.sql("SELECT job_id, new_status FROM public.claim_log")
    completions = Counter(job for job, status in log if status == "completed")
    claims = Counter(job for job, status in log if status == "processing")
    final = statuses(db)
    tally = Tally(
        name,
        lost=sum(1 for m in acked if m not in jobs_per_message),
        duplicated=sum(n - 1 for n in jobs_per_message.values()) + sum(n - 1 for n in completions.values()),
        stuck=sum(final.values()) - final["completed"],
        details=(
            f"{size.jobs} jobs, {size.workers} workers, {size.kills} kills, "
            f"{sum(1 for n in claims.values() if n > 1)} re-run after a lost claim or lease"
        ),
    )
    record(tally)
    return tally


async def test_killed_agent_queue_server_loses_and_duplicates_no_job(
    db: TestDatabase, tmp_path: Path, record_tally: Record
) -> None:
    tally = await run_scenario(db, tmp_path, Size(jobs=60, workers=3, kills=1), record_tally, "agent_queue kill -9")
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, 0, 0)


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_soak_killed_agent_queue_server_loses_and_duplicates_no_job(
    db: TestDatabase, tmp_path: Path, record_tally: Record
) -> None:
    tally = await run_scenario(db, tmp_path, Size(jobs=600, workers=6, kills=5), record_tally, "agent_queue kill -9 (soak)")
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, 0, 0)
