"""SQL on identity.phone_verifications: requests, their guarded status changes, the sweep."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.identity.domain.phone import PhoneVerification, VerificationStatus
from services.identity.store.tables import phone_verifications


def _verification(row: sa.Row[tuple[object, ...]]) -> PhoneVerification:
    return PhoneVerification(
        id=row.id,
        user_id=row.user_id,
        phone=row.phone,
        code_hash=row.code_hash,
        status=VerificationStatus(row.status),
        attempts=row.attempts,
        created_at=row.created_at,
    )


async def recent_request_counts(
    conn: AsyncConnection, user_id: uuid.UUID, phone: str, since: datetime
) -> tuple[int, int]:
    """Requests made since `since` by this user, and for this phone by anyone."""
    recent = phone_verifications.c.created_at >= since
    by_user = sa.select(sa.func.count()).where(recent, phone_verifications.c.user_id == user_id)
    by_phone = sa.select(sa.func.count()).where(recent, phone_verifications.c.phone == phone)
    row = (await conn.execute(sa.select(by_user.scalar_subquery(), by_phone.scalar_subquery()))).one()
    return int(row[0]), int(row[1])


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
    """The user's current request: the newest pending or locked one (a new request expires
    the pending ones, so normally at most one is pending)."""
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


async def delete_stale_verifications(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Deletes up to `limit` rows created before `before` that are not verified (verified
    rows stay as the audit trail, docs/hardening.md #21)."""
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
