"""SQL of OAuth states: single use is one guarded UPDATE (OPEN → CLAIMED), expiry a batched
delete. A state row is the key of one TodoistOAuthWorkflow."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.todoist.domain.oauth import OAuthState, StateStatus
from services.todoist.store.tables import oauth_states as s

DELETE_EXPIRED = sa.text(
    """
    WITH due AS (
        -- the next batch past their expiry, whatever their status (a flow whose workflow
        -- died); rows another transaction holds are left to the next batch
        SELECT state FROM todoist.oauth_states
         WHERE expires_at < :now
         ORDER BY expires_at
         LIMIT :batch
         FOR UPDATE SKIP LOCKED
    )
    DELETE FROM todoist.oauth_states AS o USING due WHERE o.state = due.state
    """
)


def _state(row: sa.Row[Any]) -> OAuthState:
    return OAuthState(
        state=row.state,
        user_id=row.user_id,
        status=StateStatus(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


async def get(conn: AsyncConnection, state: str) -> OAuthState | None:
    row = (await conn.execute(sa.select(s).where(s.c.state == state))).first()
    return _state(row) if row else None


async def delete_for_user(conn: AsyncConnection, user_id: uuid.UUID) -> list[str]:
    """Every state of the user (one flow per user at a time); returns them."""
    rows = await conn.execute(sa.delete(s).where(s.c.user_id == user_id).returning(s.c.state))
    return [r.state for r in rows]


async def insert_starting(conn: AsyncConnection, state: OAuthState) -> None:
    await conn.execute(
        sa.insert(s).values(
            state=state.state,
            user_id=state.user_id,
            status=StateStatus.STARTING.value,
            created_at=state.created_at,
            expires_at=state.expires_at,
        )
    )


async def mark_open(conn: AsyncConnection, state: str) -> bool:
    """STARTING → OPEN once its workflow runs; False when the state is gone meanwhile."""
    result = await conn.execute(
        sa.update(s)
        .where(s.c.state == state, s.c.status == StateStatus.STARTING.value)
        .values(status=StateStatus.OPEN.value)
    )
    return result.rowcount == 1


async def claim(conn: AsyncConnection, state: str, now: datetime, user_id: uuid.UUID | None) -> uuid.UUID | None:
    """OPEN → CLAIMED for exactly one callback: open, not expired (a state at exactly its
    expiry is still valid) and, for a user's call, that user's. Returns the owner; None when
    any of that failed (the caller reads the row to say which)."""
    conditions = [s.c.state == state, s.c.status == StateStatus.OPEN.value, s.c.expires_at >= now]
    if user_id is not None:
        conditions.append(s.c.user_id == user_id)
    row = (
        await conn.execute(
            sa.update(s).where(*conditions).values(status=StateStatus.CLAIMED.value, claimed_at=now).returning(s.c.user_id)
        )
    ).first()
    return row.user_id if row else None


async def mark_exchanged(conn: AsyncConnection, state: str) -> bool:
    """CLAIMED → EXCHANGED in the transaction that stores the connection."""
    result = await conn.execute(
        sa.update(s)
        .where(s.c.state == state, s.c.status == StateStatus.CLAIMED.value)
        .values(status=StateStatus.EXCHANGED.value)
    )
    return result.rowcount == 1


async def delete(conn: AsyncConnection, state: str) -> bool:
    result = await conn.execute(sa.delete(s).where(s.c.state == state))
    return result.rowcount == 1


async def delete_expired(conn: AsyncConnection, now: datetime, batch: int) -> int:
    """Deletes up to `batch` states strictly past their expiry; the count deleted."""
    result = await conn.execute(DELETE_EXPIRED, {"now": now, "batch": batch})
    return result.rowcount
