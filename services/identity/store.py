"""All SQL of the identity service (schema `identity`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from psycopg import errors as pg_errors
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.identity.domain import (
    PHONE_TAKEN,
    Contact,
    PhoneVerification,
    User,
    VerificationStatus,
)
from zenthor.auth.principal import Role, UserStatus
from zenthor.errors import AlreadyExists
from zenthor.outbox import outbox_table
from zenthor.pagination import PageRequest

SCHEMA = "identity"
metadata = sa.MetaData(schema=SCHEMA)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("external_id", sa.Text, nullable=False, unique=True),  # finding 24
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("role", sa.Text),
    sa.Column("email_verified", sa.Boolean),
    sa.Column("image", sa.Text),
    sa.Column("phone", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("phone", sa.Text, nullable=False, unique=True),  # finding 24
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("is_allowed", sa.Boolean, nullable=False),
    sa.Column("user_id", pg.UUID(as_uuid=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

phone_verifications = sa.Table(
    "phone_verifications",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("phone", sa.Text, nullable=False),
    sa.Column("code_hash", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("verified_at", sa.DateTime(timezone=True)),
)

outbox = outbox_table(metadata, SCHEMA)


def _user(row: sa.Row) -> User:
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


def _contact(row: sa.Row) -> Contact:
    return Contact(
        id=row.id,
        phone=row.phone,
        name=row.name,
        is_allowed=row.is_allowed,
        user_id=row.user_id,
        created_at=row.created_at,
    )


# --- users ---


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
    # ids are UUIDv7, so id order is creation order (spec §3.4: ascending by creation).
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


async def set_role_if_absent(conn: AsyncConnection, user_id: uuid.UUID, role: Role, now: datetime) -> bool:
    # Guarded: a role stored meanwhile (webhook) is never overwritten.
    result = await conn.execute(
        sa.update(users)
        .where(users.c.id == user_id, users.c.role.is_(None))
        .values(role=role.value, updated_at=now)
    )
    return result.rowcount == 1


async def update_clerk_profile(
    conn: AsyncConnection, user_id: uuid.UUID, *, name: str, email: str, role: Role, image: str | None, now: datetime
) -> None:
    await conn.execute(
        sa.update(users)
        .where(users.c.id == user_id)
        .values(name=name, email=email, role=role.value, email_verified=True, image=image, updated_at=now)
    )


async def deactivate_user(conn: AsyncConnection, external_id: str, now: datetime) -> bool:
    result = await conn.execute(
        sa.update(users)
        .where(users.c.external_id == external_id)
        .values(status=UserStatus.INACTIVE.value, updated_at=now)
    )
    return result.rowcount == 1


async def users_without_role(conn: AsyncConnection) -> list[User]:
    rows = (await conn.execute(sa.select(users).where(users.c.role.is_(None)).with_for_update())).all()
    return [_user(r) for r in rows]


async def count_users(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one())


# --- contacts ---


async def get_contact_by_phone(conn: AsyncConnection, phone: str) -> Contact | None:
    row = (await conn.execute(sa.select(contacts).where(contacts.c.phone == phone))).first()
    return _contact(row) if row else None


async def get_contacts(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> list[Contact]:
    rows = (await conn.execute(sa.select(contacts).where(contacts.c.id.in_(list(ids))))).all()
    return [_contact(r) for r in rows]


async def linked_contact_id(conn: AsyncConnection, user_id: uuid.UUID) -> uuid.UUID | None:
    """The oldest contact linked to the user (phone verification links at most one)."""
    return (
        await conn.execute(
            sa.select(contacts.c.id).where(contacts.c.user_id == user_id).order_by(contacts.c.id).limit(1)
        )
    ).scalar_one_or_none()


async def insert_contact_if_absent(
    conn: AsyncConnection, *, contact_id: uuid.UUID, phone: str, name: str, is_allowed: bool, now: datetime
) -> Contact | None:
    """None when the phone already has a contact (unique, finding 24)."""
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


# --- phone verification ---


def _verification(row: sa.Row) -> PhoneVerification:
    return PhoneVerification(
        id=row.id,
        user_id=row.user_id,
        phone=row.phone,
        code_hash=row.code_hash,
        status=VerificationStatus(row.status),
        attempts=row.attempts,
        created_at=row.created_at,
    )


async def user_with_phone(conn: AsyncConnection, phone: str) -> uuid.UUID | None:
    return (await conn.execute(sa.select(users.c.id).where(users.c.phone == phone))).scalar_one_or_none()


async def recent_request_counts(
    conn: AsyncConnection, user_id: uuid.UUID, phone: str, since: datetime
) -> tuple[int, int]:
    """Requests made since `since` by this user, and for this phone by anyone."""
    recent = phone_verifications.c.created_at >= since
    by_user = sa.select(sa.func.count()).where(recent, phone_verifications.c.user_id == user_id)
    by_phone = sa.select(sa.func.count()).where(recent, phone_verifications.c.phone == phone)
    row = (await conn.execute(sa.select(by_user.scalar_subquery(), by_phone.scalar_subquery()))).one()
    return int(row[0]), int(row[1])


async def lock_user_row(conn: AsyncConnection, user_id: uuid.UUID) -> None:
    """Serializes one user's verification requests and confirmations (rate count, expiry)."""
    await conn.execute(sa.select(users.c.id).where(users.c.id == user_id).with_for_update())


async def expire_pending(conn: AsyncConnection, user_id: uuid.UUID) -> None:
    await conn.execute(
        sa.update(phone_verifications)
        .where(
            phone_verifications.c.user_id == user_id,
            phone_verifications.c.status == VerificationStatus.PENDING.value,
        )
        .values(status=VerificationStatus.EXPIRED.value)
    )


async def insert_verification(
    conn: AsyncConnection, verification_id: uuid.UUID, user_id: uuid.UUID, phone: str, code_hash: str, now: datetime
) -> None:
    await conn.execute(
        sa.insert(phone_verifications).values(
            id=verification_id,
            user_id=user_id,
            phone=phone,
            code_hash=code_hash,
            status=VerificationStatus.PENDING.value,
            attempts=0,
            created_at=now,
        )
    )


async def open_verification(conn: AsyncConnection, user_id: uuid.UUID, *, for_update: bool = False) -> PhoneVerification | None:
    """The user's current request: the newest pending or locked one (spec: normally at most
    one pending)."""
    query = (
        sa.select(phone_verifications)
        .where(
            phone_verifications.c.user_id == user_id,
            phone_verifications.c.status.in_([VerificationStatus.PENDING.value, VerificationStatus.LOCKED.value]),
        )
        .order_by(phone_verifications.c.created_at.desc())
        .limit(1)
    )
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _verification(row) if row else None


async def set_verification_status(
    conn: AsyncConnection, verification_id: uuid.UUID, status: VerificationStatus, *, verified_at: datetime | None = None
) -> None:
    await conn.execute(
        sa.update(phone_verifications)
        .where(phone_verifications.c.id == verification_id)
        .values(status=status.value, verified_at=verified_at)
    )


async def count_wrong_code(conn: AsyncConnection, verification_id: uuid.UUID, max_attempts: int) -> None:
    """One more wrong code; the request locks on reaching `max_attempts` (one statement)."""
    attempts = phone_verifications.c.attempts + 1
    await conn.execute(
        sa.update(phone_verifications)
        .where(phone_verifications.c.id == verification_id)
        .values(
            attempts=attempts,
            status=sa.case(
                (attempts >= max_attempts, VerificationStatus.LOCKED.value),
                else_=phone_verifications.c.status,
            ),
        )
    )


async def set_user_phone(conn: AsyncConnection, user_id: uuid.UUID, phone: str | None, now: datetime) -> None:
    """The unique index on users.phone settles two confirmations racing for one number
    (finding 5): the loser gets AlreadyExists and its whole transaction rolls back."""
    try:
        async with conn.begin_nested():
            await conn.execute(sa.update(users).where(users.c.id == user_id).values(phone=phone, updated_at=now))
    except IntegrityError as e:
        if isinstance(e.orig, pg_errors.UniqueViolation):
            raise AlreadyExists(PHONE_TAKEN) from e
        raise


async def link_contact(conn: AsyncConnection, phone: str, user_id: uuid.UUID | None) -> None:
    await conn.execute(sa.update(contacts).where(contacts.c.phone == phone).values(user_id=user_id))


async def delete_stale_verifications(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Deletes up to `limit` rows created before `before` that are not verified (finding 21:
    verified rows stay as the audit trail)."""
    doomed = (
        sa.select(phone_verifications.c.id)
        .where(
            phone_verifications.c.created_at < before,
            phone_verifications.c.status != VerificationStatus.VERIFIED.value,
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await conn.execute(sa.delete(phone_verifications).where(phone_verifications.c.id.in_(doomed)))
    return result.rowcount
