"""SQL on identity.contacts: lookups, the idempotent insert, edits and the link to a user."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.identity.domain.contacts import Contact
from services.identity.store.tables import contacts
from zenthor.pagination import PageRequest


def _contact(row: sa.Row[tuple[object, ...]]) -> Contact:
    return Contact(
        id=row.id,
        phone=row.phone,
        name=row.name,
        is_allowed=row.is_allowed,
        user_id=row.user_id,
        created_at=row.created_at,
    )


async def get_contact_by_phone(conn: AsyncConnection, phone: str) -> Contact | None:
    row = (await conn.execute(sa.select(contacts).where(contacts.c.phone == phone))).first()
    return _contact(row) if row else None


async def get_contacts(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> list[Contact]:
    rows = (await conn.execute(sa.select(contacts).where(contacts.c.id.in_(list(ids))))).all()
    return [_contact(r) for r in rows]


async def linked_contact_id(conn: AsyncConnection, user_id: uuid.UUID) -> uuid.UUID | None:
    """The oldest contact linked to the user (phone verification links at most one)."""
    found: uuid.UUID | None = (
        await conn.execute(
            sa.select(contacts.c.id).where(contacts.c.user_id == user_id).order_by(contacts.c.id).limit(1)
        )
    ).scalar_one_or_none()
    return found


async def insert_contact_if_absent(
    conn: AsyncConnection, *, contact_id: uuid.UUID, phone: str, name: str, is_allowed: bool, now: datetime
) -> Contact | None:
    """None when the phone already has a contact (unique, docs/hardening.md #24)."""
    stmt = (
        pg.insert(contacts)
        .values(id=contact_id, phone=phone, name=name, is_allowed=is_allowed, created_at=now)
        .on_conflict_do_nothing(index_elements=[contacts.c.phone])
        .returning(contacts)
    )
    row = (await conn.execute(stmt)).first()
    return _contact(row) if row else None


async def update_contact(
    conn: AsyncConnection, contact_id: uuid.UUID, *, name: str | None, is_allowed: bool | None
) -> Contact | None:
    values: dict[str, object] = {}
    if name is not None:
        values["name"] = name
    if is_allowed is not None:
        values["is_allowed"] = is_allowed
    if not values:
        row = (await conn.execute(sa.select(contacts).where(contacts.c.id == contact_id))).first()
    else:
        row = (
            await conn.execute(
                sa.update(contacts).where(contacts.c.id == contact_id).values(**values).returning(contacts)
            )
        ).first()
    return _contact(row) if row else None


async def list_contacts(conn: AsyncConnection, page: PageRequest) -> list[Contact]:
    query = sa.select(contacts).order_by(contacts.c.id).limit(page.size)
    if page.after is not None:
        query = query.where(contacts.c.id > page.after)
    return [_contact(r) for r in (await conn.execute(query)).all()]


async def link_contact(conn: AsyncConnection, phone: str, user_id: uuid.UUID | None) -> None:
    await conn.execute(sa.update(contacts).where(contacts.c.phone == phone).values(user_id=user_id))
