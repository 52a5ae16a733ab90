"""The Temporal worker killed while retries slept: agent jobs fail retryably, their
RetryWorkflows start and sleep their backoff on the worker process (`python -m workflows`, as
operators run it); the worker is killed with SIGKILL. A new worker process picks the sleeping
workflows up and every retry completes exactly once: every job released once, none waiting."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from services.agent_queue.app import build_server
from tests.reliability.conftest import Record, Tally
from tests.service.agent_queue.test_claim_storm import CLAIM_LOG
from tests.service.conftest import Running, start, stop
from tests.support.agent_queue_builders import add_job, conv, job_id
from tests.support.agent_queue_retries import fail_retryably, releases
from tests.support.database import TestDatabase
from tests.support.grpc_client import SERVICE_KEY
from tests.support.jwks import FakeClerkIssuer
from tests.support.service_process import REPO
from tests.workflows.conftest import PROCESS_NAMESPACE
from workflows.schedules import SCHEDULES
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc

# The first start of a worker hashes every loaded module for its build id: slow when loaded.
WORKER_START_S = 120.0
WAIT_S = 120.0


@dataclass(frozen=True)
class Size:
    retries: int
    retry_base_s: float  # the first retry sleeps between half of it and all of it


class WorkerProcess:
    """`python -m workflows`; its JSON log goes to a file the test reads."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        offset = self._log.stat().st_size if self._log.exists() else 0
        with self._log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "workflows", cwd=REPO, env=self._env, stdout=out, stderr=out
            )
        async with asyncio.timeout(WORKER_START_S):
            while b'"event": "worker.started"' not in self._log.read_bytes()[offset:]:
                assert self.proc.returncode is None, self._log.read_text(errors="replace")[-2000:]
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 30)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def agent_queue_factory(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, temporal_address: str, task_queue: str
) -> AsyncIterator[Any]:
    started: list[Running] = []

    async def make(retry_base_s: float) -> Running:
        settings = settings_for(
            ServiceName.AGENT_QUEUE, temporal_address=temporal_address, temporal_namespace=PROCESS_NAMESPACE,
            temporal_task_queue=task_queue, db_pool_size=20,
        )
        server = await build_server(settings, outbox_poll_s=0.05, retry_base_s=retry_base_s)
        started.append(await start(server, agent_queue_pb2_grpc.AgentQueueServiceStub, settings, db, clerk_issuer))
        return started[-1]

    yield make
    for running in started:
        await stop(running)


async def sleeping(client: Client, workflow_id: str) -> bool:
    """The workflow exists and a worker has started its backoff timer."""
    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError:
        return False
    return any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)


async def run_scenario(
    agent_queue_factory: Any, db: TestDatabase, temporal_address: str, task_queue: str, tmp_path: Path,
    size: Size, record: Record, name: str,
) -> Tally:
    db.sql(CLAIM_LOG)
    aq = await agent_queue_factory(size.retry_base_s)
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_address,
        "TEMPORAL_NAMESPACE": PROCESS_NAMESPACE,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "SERVICE_KEY": SERVICE_KEY,
        "ZENTHOR_AGENT_QUEUE_ADDR": f"127.0.0.1:{aq.server.port}",
        "ZENTHOR_LOG_FORMAT": "json",
        "ZENTHOR_SHUTDOWN_GRACE_S": "1",
    }
    client = await Client.connect(temporal_address, namespace=PROCESS_NAMESPACE)
    jobs = [add_job(db, conv()) for _ in range(size.retries)]
    first, second = WorkerProcess(env, tmp_path / "worker.log"), WorkerProcess(env, tmp_path / "worker.log")
    try:
        await first.start()
        await fail_retryably(aq, jobs)
        async with asyncio.timeout(WAIT_S):
            for job in jobs:
                while not await sleeping(client, f"retry-{job_id(job)}-1"):  # noqa: ASYNC110 - state in Temporal
                    await asyncio.sleep(0.1)
        await first.kill()
        slept_through_kill = size.retries - len(releases(db))
        await second.start()
        try:
            async with asyncio.timeout(size.retry_base_s + WAIT_S):
                while len(releases(db)) < size.retries:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        except TimeoutError:
            pass  # counted as stuck below
    finally:
        await first.stop()
        await second.stop()
        for job_spec in SCHEDULES:  # the worker upserted the cron schedules into this namespace
            try:
                await client.get_schedule_handle(job_spec.name).delete()
            except RPCError:
                pass
    counts = releases(db)
    statuses = Counter(s for (s,) in db.sql("SELECT status FROM agent_queue.jobs"))
    tally = Tally(
        name,
        lost=sum(1 for job in jobs if counts[job] == 0),
        duplicated=sum(n - 1 for n in counts.values()),
        stuck=sum(statuses.values()) - statuses["pending"],
        details=f"{size.retries} retries, {slept_through_kill} still sleeping when the worker was killed",
    )
    record(tally)
    return tally


async def test_retries_sleeping_on_a_killed_worker_complete_on_the_next_one(
    agent_queue_factory: Any, db: TestDatabase, temporal_address: str, task_queue: str, tmp_path: Path, record_tally: Record
) -> None:
    tally = await run_scenario(
        agent_queue_factory, db, temporal_address, task_queue, tmp_path, Size(retries=10, retry_base_s=12),
        record_tally, "Temporal worker kill -9",
    )
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, 0, 0)


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_soak_retries_sleeping_on_a_killed_worker_complete_on_the_next_one(
    agent_queue_factory: Any, db: TestDatabase, temporal_address: str, task_queue: str, tmp_path: Path, record_tally: Record
) -> None:
    tally = await run_scenario(
        agent_queue_factory, db, temporal_address, task_queue, tmp_path, Size(retries=100, retry_base_s=60),
        record_tally, "Temporal worker kill -9 (soak)",
    )
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, 0, 0)
