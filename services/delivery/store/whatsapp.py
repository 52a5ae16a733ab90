"""SQL of WhatsApp accounts, account leases and the session key/value store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.delivery.domain.whatsapp import Account, Lease, SessionEntry
from services.delivery.store.tables import whatsapp_accounts as accounts
from services.delivery.store.tables import whatsapp_leases as leases
from services.delivery.store.tables import whatsapp_session as session
from zenthor.pagination import KeyPageRequest

# Acquire in one guarded statement: insert the lease, or take over the existing row only when
# it is the caller's own or has expired. Racing acquirers serialize on the row lock and each
# re-checks the guard against the winner's version, so exactly one takes an expired lease.
ACQUIRE = sa.text(
    """
    INSERT INTO delivery.whatsapp_leases AS l (account_id, owner_id, expires_at, heartbeat_at)
    VALUES (:account_id, :owner_id, :expires_at, :now)
    ON CONFLICT (account_id) DO UPDATE
       SET owner_id = EXCLUDED.owner_id, expires_at = EXCLUDED.expires_at, heartbeat_at = EXCLUDED.heartbeat_at
     WHERE l.owner_id = EXCLUDED.owner_id   -- the holder renews, even if unexpired
        OR l.expires_at <= :now             -- an expired lease is free (held iff expiresAt > now)
    RETURNING l.*
    """
)


def _account(row: Any) -> Account:
    return Account(
        account_id=row.account_id,
        phone=row.phone,
        enabled=row.enabled,
        meta=row.meta,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _lease(row: Any) -> Lease:
    return Lease(account_id=row.account_id, owner_id=row.owner_id, expires_at=row.expires_at, heartbeat_at=row.heartbeat_at)


def _entry(row: Any) -> SessionEntry:
    return SessionEntry(key=row.key, data=row.data, created_at=row.created_at, updated_at=row.updated_at)


# --- accounts ---


async def upsert_account(
    conn: AsyncConnection, account_id: str, phone: str, enabled: bool, meta: dict[str, Any] | None, now: datetime
) -> tuple[Account, bool]:
    """The account after the write and whether it was created (`xmax = 0`: no prior version)."""
    stmt = pg.insert(accounts).values(
        account_id=account_id, phone=phone, enabled=enabled, meta=meta, created_at=now, updated_at=now
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[accounts.c.account_id],
        # patch phone, enabled, meta (omitted → removed) and the update time
        set_={"phone": phone, "enabled": enabled, "meta": meta, "updated_at": now},
    ).returning(accounts, sa.literal_column("xmax = 0").label("created"))
    row = (await conn.execute(upsert)).one()
    return _account(row), bool(row.created)


async def get_account(conn: AsyncConnection, account_id: str, *, for_share: bool = False) -> Account | None:
    """With `for_share`, the account cannot be disabled until this transaction ends."""
    query = sa.select(accounts).where(accounts.c.account_id == account_id)
    if for_share:
        query = query.with_for_update(read=True)
    row = (await conn.execute(query)).first()
    return _account(row) if row else None


async def list_accounts(conn: AsyncConnection, include_disabled: bool, page: KeyPageRequest) -> list[Account]:
    query = sa.select(accounts).order_by(accounts.c.account_id).limit(page.size)
    if not include_disabled:
        query = query.where(accounts.c.enabled.is_(True))
    if page.after is not None:
        query = query.where(accounts.c.account_id > page.after)
    return [_account(r) for r in (await conn.execute(query)).all()]


# --- leases ---


async def acquire_lease(
    conn: AsyncConnection, account_id: str, owner_id: str, now: datetime, expires_at: datetime
) -> Lease | None:
    """The caller's lease, or None when another owner holds it unexpired."""
    params = {"account_id": account_id, "owner_id": owner_id, "now": now, "expires_at": expires_at}
    row = (await conn.execute(ACQUIRE, params)).first()
    return _lease(row) if row else None


async def get_lease(conn: AsyncConnection, account_id: str) -> Lease | None:
    row = (await conn.execute(sa.select(leases).where(leases.c.account_id == account_id))).first()
    return _lease(row) if row else None


async def heartbeat_lease(
    conn: AsyncConnection, account_id: str, owner_id: str, now: datetime, expires_at: datetime
) -> Lease | None:
    """Extends a lease the owner still holds (a lapsed lease cannot be revived; it must
    be re-acquired) on an enabled account (docs/hardening.md #34); None otherwise."""
    enabled = sa.exists().where(accounts.c.account_id == leases.c.account_id, accounts.c.enabled.is_(True))
    row = (
        await conn.execute(
            sa.update(leases)
            .where(leases.c.account_id == account_id, leases.c.owner_id == owner_id, leases.c.expires_at > now, enabled)
            .values(heartbeat_at=now, expires_at=expires_at)
            .returning(leases)
        )
    ).first()
    return _lease(row) if row else None


async def release_lease(conn: AsyncConnection, account_id: str, owner_id: str) -> bool:
    """Deletes the owner's lease, expired or not."""
    result = await conn.execute(
        sa.delete(leases).where(leases.c.account_id == account_id, leases.c.owner_id == owner_id)
    )
    return result.rowcount == 1


async def owned_account_ids(conn: AsyncConnection, owner_id: str, now: datetime, page: KeyPageRequest) -> list[str]:
    query = (
        sa.select(leases.c.account_id)
        .where(leases.c.owner_id == owner_id, leases.c.expires_at > now)
        .order_by(leases.c.account_id)
        .limit(page.size)
    )
    if page.after is not None:
        query = query.where(leases.c.account_id > page.after)
    return list((await conn.execute(query)).scalars().all())


# --- session store ---


async def get_session_value(conn: AsyncConnection, key: str) -> str | None:
    value: str | None = (await conn.execute(sa.select(session.c.data).where(session.c.key == key))).scalar_one_or_none()
    return value


async def set_session_value(conn: AsyncConnection, key: str, data: str, now: datetime) -> None:
    """Upsert on the unique key (docs/hardening.md #24: one row per key, even under concurrent sets)."""
    stmt = pg.insert(session).values(key=key, data=data, created_at=now, updated_at=now)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=[session.c.key], set_={"data": data, "updated_at": now})
    )


async def delete_session_value(conn: AsyncConnection, key: str) -> bool:
    return (await conn.execute(sa.delete(session).where(session.c.key == key))).rowcount == 1


async def list_session_values(conn: AsyncConnection, page: KeyPageRequest) -> list[SessionEntry]:
    query = sa.select(session).order_by(session.c.key).limit(page.size)
    if page.after is not None:
        query = query.where(session.c.key > page.after)
    return [_entry(r) for r in (await conn.execute(query)).all()]


async def clear_session_values(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.delete(session))).rowcount)
