"""SQL of inbound dedupe: the key includes the account, and NULL accounts are one value
(docs/hardening.md #35)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messages.domain.conversations import Channel
from services.messages.store.tables import inbound_dedupe


async def register_inbound(
    conn: AsyncConnection,
    *,
    channel: Channel,
    account_id: str | None,
    channel_message_id: str,
    now: datetime,
) -> bool:
    """True when this call registered the key; False when it already existed. Atomic under
    any concurrency: the unique index (NULLS NOT DISTINCT) decides, not a prior read."""
    stmt = (
        pg.insert(inbound_dedupe)
        .values(channel=channel.value, account_id=account_id, channel_message_id=channel_message_id, created_at=now)
        .on_conflict_do_nothing(index_elements=["channel", "account_id", "channel_message_id"])
        .returning(inbound_dedupe.c.id)
    )
    return (await conn.execute(stmt)).first() is not None


# One batch of the cleanup sweep: the oldest due rows, skipping rows a concurrent sweep holds.
DELETE_INBOUND_BATCH = sa.text(
    """
    WITH due AS (
        SELECT id FROM messages.inbound_dedupe
         WHERE created_at < :cutoff
         ORDER BY created_at
         LIMIT :batch
         FOR UPDATE SKIP LOCKED
    )
    DELETE FROM messages.inbound_dedupe d USING due WHERE d.id = due.id
    """
)
# Whether another batch is due (the schedule then calls again).
MORE_INBOUND_DUE = sa.text("SELECT EXISTS (SELECT 1 FROM messages.inbound_dedupe WHERE created_at < :cutoff)")


async def delete_inbound_before(conn: AsyncConnection, cutoff: datetime, batch: int) -> tuple[int, bool]:
    deleted = (await conn.execute(DELETE_INBOUND_BATCH, {"cutoff": cutoff, "batch": batch})).rowcount
    more = bool((await conn.execute(MORE_INBOUND_DUE, {"cutoff": cutoff})).scalar_one())
    return deleted, more
