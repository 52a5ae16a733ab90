"""SQL of connections: one row per user (unique), upserted by user; the token is only ever
stored sealed (domain.tokens)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.todoist.domain.connections import Connection, Profile
from services.todoist.domain.oauth import TokenGrant
from services.todoist.store.tables import CHANGES
from services.todoist.store.tables import connections as c
from zenthor.notify import notify

# A transaction-scoped advisory lock keyed by the user.
USER_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


@dataclass(frozen=True)
class SealedToken:
    ciphertext: str
    key_id: str


def _connection(row: sa.Row[Any]) -> Connection:
    return Connection(
        id=row.id,
        user_id=row.user_id,
        token_ciphertext=row.token_ciphertext,
        token_key_id=row.token_key_id,
        token_type=row.token_type,
        scope=row.scope,
        account_email=row.account_email,
        account_name=row.account_name,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def get_for_user(conn: AsyncConnection, user_id: uuid.UUID) -> Connection | None:
    row = (await conn.execute(sa.select(c).where(c.c.user_id == user_id))).first()
    return _connection(row) if row else None


async def upsert(
    conn: AsyncConnection,
    *,
    connection_id: uuid.UUID,
    user_id: uuid.UUID,
    token: SealedToken,
    grant: TokenGrant,
    profile: Profile | None,
    now: datetime,
) -> tuple[Connection, str | None]:
    """Inserts the user's connection or replaces its token and account fields (absent values
    clear them, as the original's patch did); returns it and the sealed token it replaced,
    which the caller revokes."""
    # One upsert per user at a time, the first one included (no row to lock yet), so the token
    # read here is the one this upsert replaces and none is left unrevoked.
    await conn.execute(USER_LOCK, {"key": f"todoist.connection:{user_id}"})
    previous = (await conn.execute(sa.select(c.c.token_ciphertext).where(c.c.user_id == user_id))).scalar_one_or_none()
    fields = {
        "token_ciphertext": token.ciphertext,
        "token_key_id": token.key_id,
        "token_type": grant.token_type,
        "scope": grant.scope,
        "account_email": profile.email if profile else None,
        "account_name": profile.name if profile else None,
        "updated_at": now,
    }
    insert = pg.insert(c).values(id=connection_id, user_id=user_id, created_at=now, **fields)
    stmt = insert.on_conflict_do_update(constraint="connections_user_id_key", set_=fields).returning(c)
    row = (await conn.execute(stmt)).one()
    return _connection(row), previous


async def delete_for_user(conn: AsyncConnection, user_id: uuid.UUID) -> Connection | None:
    row = (await conn.execute(sa.delete(c).where(c.c.user_id == user_id).returning(c))).first()
    return _connection(row) if row else None


async def reseal(conn: AsyncConnection, connection: Connection, token: SealedToken) -> bool:
    """Swaps the sealed token for the same token under the primary key; guarded by the old
    ciphertext, so a concurrent reconnect is never overwritten."""
    result = await conn.execute(
        sa.update(c)
        .where(c.c.id == connection.id, c.c.token_ciphertext == connection.token_ciphertext)
        .values(token_ciphertext=token.ciphertext, token_key_id=token.key_id)
    )
    return result.rowcount == 1


async def notify_changed(conn: AsyncConnection, user_key: str) -> None:
    """Wakes the user's status watchers at commit (zenthor.notify)."""
    await notify(conn, CHANGES, user_key)
