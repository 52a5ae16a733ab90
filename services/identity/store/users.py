"""SQL on identity.users: lookups, idempotent inserts, guarded role and phone writes. Every write
that can change what a user resolves to (status, role, email_verified, linked phone) notifies
PRINCIPAL_CHANGES in the same transaction, so every service's principal cache drops the user at
commit (zenthor.auth.resolver)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from psycopg import errors as pg_errors
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.identity.domain.phone import PHONE_TAKEN
from services.identity.domain.users import User
from services.identity.store.tables import users
from zenthor.auth.principal import Role, UserStatus
from zenthor.auth.resolver import PRINCIPAL_CHANGES
from zenthor.errors import AlreadyExists
from zenthor.notify import notify
from zenthor.pagination import PageRequest


def _user(row: sa.Row[tuple[object, ...]]) -> User:
    return User(
        id=row.id,
        external_id=row.external_id,
        name=row.name,
        email=row.email,
        role=Role(row.role) if row.role else None,
        email_verified=row.email_verified,
        image=row.image,
        phone=row.phone,
        status=UserStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def get_user_by_external_id(
    conn: AsyncConnection, external_id: str, *, for_update: bool = False
) -> User | None:
    """With `for_update`, the row stays locked until commit, so a read-modify-write upsert
    is not lost to a racing one."""
    query = sa.select(users).where(users.c.external_id == external_id)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _user(row) if row else None


async def get_user(conn: AsyncConnection, user_id: uuid.UUID) -> User | None:
    row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
    return _user(row) if row else None


async def get_users(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> list[User]:
    rows = (await conn.execute(sa.select(users).where(users.c.id.in_(list(ids))))).all()
    return [_user(r) for r in rows]


async def list_users(conn: AsyncConnection, page: PageRequest) -> list[User]:
    # Ids are UUIDv7, so id order is creation order (the list is ascending by creation).
    query = sa.select(users).order_by(users.c.id).limit(page.size)
    if page.after is not None:
        query = query.where(users.c.id > page.after)
    return [_user(r) for r in (await conn.execute(query)).all()]


async def insert_user_if_absent(
    conn: AsyncConnection,
    *,
    user_id: uuid.UUID,
    external_id: str,
    name: str,
    email: str,
    role: Role | None,
    email_verified: bool,
    image: str | None,
    now: datetime,
) -> User | None:
    """Inserts an active user; None when the external id already exists (a concurrent
    bootstrap or webhook won), leaving the caller to re-read."""
    stmt = (
        pg.insert(users)
        .values(
            id=user_id,
            external_id=external_id,
            name=name,
            email=email,
            role=role.value if role else None,
            email_verified=email_verified,
            image=image,
            status=UserStatus.ACTIVE.value,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[users.c.external_id])
        .returning(users)
    )
    row = (await conn.execute(stmt)).first()
    return _user(row) if row else None


async def _principal_changed(conn: AsyncConnection, external_id: str) -> None:
    # Sent by Postgres at commit, dropped on rollback (zenthor.notify).
    await notify(conn, PRINCIPAL_CHANGES, external_id)


async def set_role_if_absent(conn: AsyncConnection, user_id: uuid.UUID, role: Role, now: datetime) -> bool:
    # Guarded: a role stored meanwhile (webhook) is never overwritten.
    external_id = (
        await conn.execute(
            sa.update(users)
            .where(users.c.id == user_id, users.c.role.is_(None))
            .values(role=role.value, updated_at=now)
            .returning(users.c.external_id)
        )
    ).scalar_one_or_none()
    if external_id is None:
        return False
    await _principal_changed(conn, external_id)
    return True


async def update_clerk_profile(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    *,
    name: str,
    email: str,
    role: Role | None,
    email_verified: bool,
    image: str | None,
    now: datetime,
) -> None:
    external_id = (
        await conn.execute(
            sa.update(users)
            .where(users.c.id == user_id)
            .values(
                name=name,
                email=email,
                role=role.value if role else None,
                email_verified=email_verified,
                image=image,
                updated_at=now,
            )
            .returning(users.c.external_id)
        )
    ).scalar_one()
    await _principal_changed(conn, external_id)


async def deactivate_user(conn: AsyncConnection, external_id: str, now: datetime) -> bool:
    result = await conn.execute(
        sa.update(users)
        .where(users.c.external_id == external_id)
        .values(status=UserStatus.INACTIVE.value, updated_at=now)
    )
    if result.rowcount != 1:
        return False
    await _principal_changed(conn, external_id)
    return True


async def users_without_role(conn: AsyncConnection) -> list[User]:
    rows = (await conn.execute(sa.select(users).where(users.c.role.is_(None)).with_for_update())).all()
    return [_user(r) for r in rows]


async def count_users(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one())


async def user_with_phone(conn: AsyncConnection, phone: str) -> uuid.UUID | None:
    found: uuid.UUID | None = (
        await conn.execute(sa.select(users.c.id).where(users.c.phone == phone))
    ).scalar_one_or_none()
    return found


async def lock_user_row(conn: AsyncConnection, user_id: uuid.UUID) -> None:
    """Serializes one user's verification requests and confirmations (rate count, expiry)."""
    await conn.execute(sa.select(users.c.id).where(users.c.id == user_id).with_for_update())


async def set_user_phone(conn: AsyncConnection, user_id: uuid.UUID, phone: str | None, now: datetime) -> None:
    """The unique index on users.phone settles two confirmations racing for one number
    (docs/hardening.md #5): the loser gets AlreadyExists and its whole transaction rolls back."""
    try:
        async with conn.begin_nested():
            external_id = (
                await conn.execute(
                    sa.update(users)
                    .where(users.c.id == user_id)
                    .values(phone=phone, updated_at=now)
                    .returning(users.c.external_id)
                )
            ).scalar_one()
    except IntegrityError as e:
        if isinstance(e.orig, pg_errors.UniqueViolation):
            raise AlreadyExists(PHONE_TAKEN) from e
        raise
    # The linked contact is part of the principal (ResolvedUser.contact_id).
    await _principal_changed(conn, external_id)
