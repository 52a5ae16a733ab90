"""Delivery's domain gauges (zenthor.metrics.DomainGauges): outbound messages by unfinished
status and channel, the oldest pending one's age, and who holds each WhatsApp account's lease."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from zenthor.metrics import DomainGauge, Sample, age_s

UNFINISHED = ("pending", "processing", "waiting_retry")
CHANNELS = ("web", "whatsapp")

OUTBOUND = DomainGauge(
    "zenthor_delivery_outbound_messages",
    "Outbound messages by unfinished status and channel (sent and failed ones are history).",
    ("status", "channel"),
)
OLDEST_PENDING_AGE = DomainGauge(
    "zenthor_delivery_oldest_pending_outbound_age_seconds",
    "Age of the oldest pending outbound message (0 when none is pending).",
)
LEASE_HOLDERS = DomainGauge(
    "zenthor_delivery_whatsapp_lease_holders",
    "Unexpired WhatsApp leases per account (1: an egress holds it; 0: nobody sends for it). Accounts: "
    "the enabled ones, and any with a lease.",
    ("account_id",),
)

# The predicate is the unfinished partial indexes' own, so only unfinished rows are read.
READ_OUTBOUND = sa.text(
    """
    SELECT status, channel, count(*) AS n, min(created_at) FILTER (WHERE status = 'pending') AS oldest
      FROM delivery.outbound_messages
     WHERE status IN ('pending', 'processing', 'waiting_retry')
     GROUP BY status, channel
    """
)
# A lease is held iff it expires after now (the same rule as AcquireLease's).
READ_LEASES = sa.text(
    """
    SELECT a.account_id, count(l.account_id) FILTER (WHERE l.expires_at > :now) AS holders
      FROM (SELECT account_id FROM delivery.whatsapp_accounts WHERE enabled
            UNION SELECT account_id FROM delivery.whatsapp_leases) AS a
      LEFT JOIN delivery.whatsapp_leases AS l USING (account_id)
     GROUP BY a.account_id
    """
)


async def read_delivery_gauges(conn: AsyncConnection, now: datetime) -> list[Sample]:
    counts = {(status, channel): 0 for status in UNFINISHED for channel in CHANNELS}
    oldest: datetime | None = None
    for row in await conn.execute(READ_OUTBOUND):
        counts[(row.status, row.channel)] = row.n
        if row.oldest is not None and (oldest is None or row.oldest < oldest):
            oldest = row.oldest
    samples = [Sample(OUTBOUND, n, key) for key, n in counts.items()]
    samples.append(Sample(OLDEST_PENDING_AGE, age_s(now, oldest)))
    for row in await conn.execute(READ_LEASES, {"now": now}):
        samples.append(Sample(LEASE_HOLDERS, row.holders, (row.account_id,)))
    return samples
