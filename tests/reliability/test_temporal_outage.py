"""The Temporal server stopped during retries: agent jobs fail retryably, each starting a
RetryWorkflow through the agent_queue outbox. Half of them start while Temporal is up (their
workflows are sleeping their backoff when it stops), the other half fail while it is down
(their starts wait in the outbox). Temporal comes back on the same port and data: every
retry goes through exactly once — every job is released once, none is left waiting."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from services.agent_queue.app import build_server
from tests.reliability.conftest import Record, Tally
from tests.service.agent_queue.test_claim_storm import CLAIM_LOG
from tests.service.conftest import Running, start, stop
from tests.support.agent_queue_builders import add_job, conv
from tests.support.agent_queue_retries import fail_retryably, releases
from tests.support.database import TestDatabase
from tests.support.jwks import FakeClerkIssuer
from tests.support.ports import free_port
from tests.support.temporal_worker import production_worker
from zenthor.config import ServiceName
from zenthor.devstack.temporal import LocalTemporal
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc

RETRY_BASE_S = 6.0  # the first retry sleeps 3-6 s: Temporal stops while they sleep


@dataclass(frozen=True)
class Size:
    retries: int
    outage_s: float


@pytest.fixture
async def temporal(tmp_path: Path) -> AsyncIterator[LocalTemporal]:
    """A Temporal dev server of this test's own, persisting to a file so a restart keeps its
    workflows."""
    server = LocalTemporal(tmp_path / "temporal.db", free_port(), free_port(), tmp_path / "temporal.log")
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


@pytest.fixture
async def agent_queue(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, temporal: LocalTemporal, task_queue: str
) -> AsyncIterator[Running]:
    settings = settings_for(
        ServiceName.AGENT_QUEUE, temporal_address=temporal.address, temporal_task_queue=task_queue, db_pool_size=20
    )
    server = await build_server(settings, outbox_poll_s=0.05, retry_base_s=RETRY_BASE_S)
    running = await start(server, agent_queue_pb2_grpc.AgentQueueServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)


async def run_scenario(
    db: TestDatabase, aq: Running, temporal: LocalTemporal, task_queue: str, size: Size, record: Record, name: str
) -> Tally:
    db.sql(CLAIM_LOG)
    jobs = [add_job(db, conv()) for _ in range(size.retries)]
    before, during = jobs[: size.retries // 2], jobs[size.retries // 2 :]
    worker_client = await Client.connect(temporal.address)
    async with production_worker(worker_client, task_queue, agent_queue_addr=f"127.0.0.1:{aq.server.port}"):
        await fail_retryably(aq, before)
        # Every start of the first half is in Temporal (their workflows sleep their backoff).
        async with asyncio.timeout(60):
            while db.sql(  # noqa: ASYNC110
                "SELECT 1 FROM agent_queue.outbox WHERE topic = 'temporal.retry' AND delivered_at IS NULL LIMIT 1"
            ):
                await asyncio.sleep(0.05)
        sleeping = len(before) - len(releases(db))
        await asyncio.to_thread(temporal.stop)
        await fail_retryably(aq, during)
        await asyncio.sleep(size.outage_s)  # the outage itself, not a wait for a state
        await asyncio.to_thread(temporal.start)
        # The relay re-drives the waiting starts with its capped backoff (zenthor.outbox).
        try:
            async with asyncio.timeout(size.outage_s * 2 + 120):
                while len(releases(db)) < size.retries:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        except TimeoutError:
            pass  # counted as stuck below
    counts = releases(db)
    statuses = Counter(s for (s,) in db.sql("SELECT status FROM agent_queue.jobs"))
    tally = Tally(
        name,
        lost=sum(1 for job in jobs if counts[job] == 0),
        duplicated=sum(n - 1 for n in counts.values()),
        stuck=sum(statuses.values()) - statuses["pending"],
        details=(
            f"{size.retries} retries, Temporal down {size.outage_s:.0f} s with {sleeping} workflows sleeping"
            f" and {len(during)} starts queued behind it"
        ),
    )
    record(tally)
    return tally


async def test_retries_go_through_once_temporal_is_back(
    db: TestDatabase, agent_queue: Running, temporal: LocalTemporal, task_queue: str, record_tally: Record
) -> None:
    tally = await run_scenario(db, agent_queue, temporal, task_queue, Size(retries=20, outage_s=5), record_tally, "Temporal outage")
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, 0, 0)


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_soak_200_retries_go_through_once_temporal_is_back_after_60_s(
    db: TestDatabase, agent_queue: Running, temporal: LocalTemporal, task_queue: str, record_tally: Record
) -> None:
    tally = await run_scenario(
        db, agent_queue, temporal, task_queue, Size(retries=200, outage_s=60), record_tally, "Temporal outage (soak)"
    )
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, 0, 0)
