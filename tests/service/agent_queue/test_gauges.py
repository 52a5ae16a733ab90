"""The queue's domain gauges (services/agent_queue/store/gauges.py through zenthor.metrics.
DomainGauges): jobs by unfinished status, the oldest pending job's age on the service's clock,
and the outbox's backlog, oldest event and dead letters, as one refresh reads them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from services.agent_queue.store.gauges import read_job_gauges
from services.agent_queue.store.tables import outbox
from tests.support.agent_queue_builders import T0, ManualClock, add_job, conv
from tests.support.database import TestDatabase
from zenthor.config import ServiceName
from zenthor.db import create_engine
from zenthor.metrics import DomainGauges, outbox_reading


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture
async def engine(db: TestDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db.dsn_for(ServiceName.AGENT_QUEUE), 2)
    yield engine
    await engine.dispose()


def add_outbox_event(db: TestDatabase, *, created_at: datetime, delivered: bool = False, dead: bool = False) -> None:
    db.sql(
        "INSERT INTO agent_queue.outbox (id, topic, key, payload, created_at, attempts, next_attempt_at,"
        " delivered_at, dead_at, last_error) VALUES (%s, 't', %s, %s, %s, 1, %s, %s, %s, %s)",
        (
            uuid.uuid4(), uuid.uuid4().hex, json.dumps({}), created_at, created_at,
            created_at if delivered else None, created_at if dead else None, "refused" if dead else None,
        ),
    )


async def test_the_gauges_show_the_jobs_and_outbox_rows_in_the_tables(db: TestDatabase, engine: AsyncEngine) -> None:
    clock = ManualClock(T0 + timedelta(minutes=10))
    gauges = DomainGauges(
        "agent_queue", engine, [read_job_gauges, outbox_reading(outbox, "agent_queue")], interval_s=60, clock=clock
    )
    # Oldest first: the queue's order is id order (UUIDv7), the order these are inserted in.
    add_job(db, conv(), created_at=T0)
    add_job(db, conv(), created_at=T0 + timedelta(minutes=1))
    add_job(db, conv(), created_at=T0 + timedelta(minutes=2))
    add_job(db, conv(), status="processing", processor_id="rt-1", locked_until=T0 + timedelta(hours=1), started_at=T0)
    add_job(db, conv(), status="completed", finished_at=T0)
    add_outbox_event(db, created_at=T0 + timedelta(minutes=4))
    add_outbox_event(db, created_at=T0 + timedelta(minutes=5))
    add_outbox_event(db, created_at=T0, delivered=True)
    add_outbox_event(db, created_at=T0, dead=True)

    await gauges.refresh()

    assert gauge("zenthor_agent_queue_jobs", status="pending") == 3
    assert gauge("zenthor_agent_queue_jobs", status="processing") == 1
    assert gauge("zenthor_agent_queue_jobs", status="waiting_retry") == 0
    assert gauge("zenthor_agent_queue_oldest_pending_job_age_seconds") == 600
    assert gauge("zenthor_outbox_backlog", service="agent_queue") == 2
    assert gauge("zenthor_outbox_dead_letters", service="agent_queue") == 1
    assert gauge("zenthor_outbox_oldest_pending_age_seconds", service="agent_queue") == 360
    assert (gauge("zenthor_domain_gauges_refreshed_timestamp_seconds", service="agent_queue") or 0) > 0


async def test_an_empty_queue_reads_zero_and_the_next_refresh_follows_the_tables(
    db: TestDatabase, engine: AsyncEngine
) -> None:
    clock = ManualClock(T0 + timedelta(minutes=10))
    gauges = DomainGauges("agent_queue", engine, [read_job_gauges], interval_s=60, clock=clock)
    await gauges.refresh()
    assert gauge("zenthor_agent_queue_jobs", status="pending") == 0
    assert gauge("zenthor_agent_queue_oldest_pending_job_age_seconds") == 0

    add_job(db, conv(), created_at=T0 + timedelta(minutes=9))
    await gauges.refresh()
    assert gauge("zenthor_agent_queue_jobs", status="pending") == 1
    assert gauge("zenthor_agent_queue_oldest_pending_job_age_seconds") == 60


async def test_a_failed_refresh_keeps_the_last_values(db: TestDatabase, engine: AsyncEngine) -> None:
    add_job(db, conv(), created_at=T0)
    await DomainGauges("agent_queue", engine, [read_job_gauges], interval_s=60, clock=ManualClock()).refresh()
    assert gauge("zenthor_agent_queue_jobs", status="pending") == 1

    broken = create_engine(db.dsn_for(ServiceName.AGENT_QUEUE).replace(f"/{db.name}", "/no_such_database"), 1)
    try:
        with pytest.raises(Exception, match="no_such_database"):
            await DomainGauges("agent_queue", broken, [read_job_gauges], interval_s=60).refresh()
    finally:
        await broken.dispose()
    assert gauge("zenthor_agent_queue_jobs", status="pending") == 1
