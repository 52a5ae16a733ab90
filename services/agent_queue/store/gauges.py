"""The queue's domain gauges (zenthor.metrics.DomainGauges): jobs by unfinished status and the
age of the oldest pending one, each read through the partial index of its status."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from zenthor.metrics import DomainGauge, Sample, age_s

JOBS = DomainGauge(
    "zenthor_agent_queue_jobs",
    "Agent jobs by unfinished status (finished ones are history: count them from the RPC counters).",
    ("status",),
)
OLDEST_PENDING_AGE = DomainGauge(
    "zenthor_agent_queue_oldest_pending_job_age_seconds",
    "Age of the oldest pending agent job (0 when none is pending).",
)

# One scalar subquery per status, each matching a partial index's predicate exactly
# (jobs_pending_idx, jobs_processing_lease_idx, jobs_waiting_retry_idx), so the count reads the
# unfinished rows only, never the finished history. The oldest pending job is the first in id
# order (ids are UUIDv7: creation order, the claim's order too).
READ = sa.text(
    """
    SELECT (SELECT count(*) FROM agent_queue.jobs WHERE status = 'pending')       AS pending,
           (SELECT count(*) FROM agent_queue.jobs WHERE status = 'processing')    AS processing,
           (SELECT count(*) FROM agent_queue.jobs WHERE status = 'waiting_retry') AS waiting_retry,
           (SELECT created_at FROM agent_queue.jobs WHERE status = 'pending' ORDER BY id LIMIT 1) AS oldest
    """
)


async def read_job_gauges(conn: AsyncConnection, now: datetime) -> list[Sample]:
    row = (await conn.execute(READ)).one()
    return [
        Sample(JOBS, row.pending, ("pending",)),
        Sample(JOBS, row.processing, ("processing",)),
        Sample(JOBS, row.waiting_retry, ("waiting_retry",)),
        Sample(OLDEST_PENDING_AGE, age_s(now, row.oldest)),
    ]
