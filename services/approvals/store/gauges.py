"""Approvals' domain gauge (zenthor.metrics.DomainGauges): tool calls waiting for a person."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from zenthor.metrics import DomainGauge, Sample

PENDING = DomainGauge("zenthor_approvals_pending", "Tool approvals waiting for the user's answer.")

# Matches the predicate of tool_approvals_pending_expiry_idx: reads only the pending rows.
READ = sa.text("SELECT count(*) FROM approvals.tool_approvals WHERE status = 'pending'")


async def read_approval_gauges(conn: AsyncConnection, now: datetime) -> list[Sample]:
    return [Sample(PENDING, (await conn.execute(READ)).scalar_one())]
