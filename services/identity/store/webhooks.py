"""SQL on identity.webhook_deliveries: record a delivery once, forget old ones."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.identity.store.tables import webhook_deliveries


async def record_delivery(conn: AsyncConnection, svix_id: str, now: datetime) -> bool:
    """True when this delivery is new. Recorded in the caller's transaction, so it counts only
    if the change it carries commits; a concurrent replay waits on the key until then, and then
    finds it."""
    stmt = (
        pg.insert(webhook_deliveries)
        .values(svix_id=svix_id, received_at=now)
        .on_conflict_do_nothing(index_elements=[webhook_deliveries.c.svix_id])
        .returning(webhook_deliveries.c.svix_id)
    )
    return (await conn.execute(stmt)).first() is not None


async def delete_old_deliveries(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Deletes up to `limit` deliveries received before `before`."""
    doomed = (
        sa.select(webhook_deliveries.c.svix_id)
        .where(webhook_deliveries.c.received_at < before)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await conn.execute(sa.delete(webhook_deliveries).where(webhook_deliveries.c.svix_id.in_(doomed)))
    return result.rowcount
