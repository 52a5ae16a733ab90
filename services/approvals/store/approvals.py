"""SQL of tool approvals: insert, guarded resolve and expiry, the batched sweep, lists, wake-ups.
The runtime's hot pair (a resolve, the waiter's re-read) are single statements on the direct pool
(docs/architecture.md §6); the rest runs in the caller's unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.approvals.domain.approvals import Approval, ApprovalStatus, Channel, Owner
from services.approvals.store.tables import CHANGES, tool_approvals
from zenthor import ids
from zenthor.auth.principal import ResolvedUser
from zenthor.db import DirectPool
from zenthor.pagination import PageRequest

t = tool_approvals

# The batched sweep (docs/hardening.md #18): pending rows whose TTL has passed become EXPIRED,
# dated at the instant they expired (not at the sweep), oldest expiry first.
EXPIRE_DUE = sa.text(
    """
    WITH due AS (
        -- the next batch of overdue pending rows; rows a concurrent resolve holds are skipped
        -- (that resolve will find them expired itself)
        SELECT id FROM approvals.tool_approvals
         WHERE status = 'pending' AND expires_at <= :now
         ORDER BY expires_at
         LIMIT :batch
         FOR UPDATE SKIP LOCKED
    )
    UPDATE approvals.tool_approvals AS a
       SET status = 'expired', resolved_at = a.expires_at
      FROM due
     WHERE a.id = due.id
    RETURNING a.id, a.conversation_id
    """
)

# One statement for many wake-ups (Postgres folds duplicates within the transaction).
NOTIFY_MANY = sa.text("SELECT pg_notify(:channel, key) FROM unnest(CAST(:keys AS text[])) AS key")


# PENDING → resolved in one statement, its own transaction: the guard of the unit-of-work path
# (still pending, not yet expired: docs/hardening.md #18, and owned unless the service resolves),
# and the wake-ups of the approval's waiters and its conversation's watchers, sent at its commit.
# A concurrent resolve holding the row makes this one wait and re-check the guard against the
# committed row (READ COMMITTED), so exactly one of them wins.
RESOLVE_PENDING = f"""
WITH resolved AS (
    UPDATE approvals.tool_approvals
       SET status = %(status)s, resolved_at = %(now)s
     WHERE id = %(id)s AND status = 'pending' AND expires_at > %(now)s
       AND (%(as_service)s OR owner_user_id = %(user_id)s::uuid OR owner_contact_id = %(contact_id)s::uuid)
    RETURNING *
)
SELECT r.*,
       pg_notify('{CHANGES}', {ids.APPROVAL.sql("r.id")}) AS approval_woken,
       pg_notify('{CHANGES}', {ids.CONVERSATION.sql("r.conversation_id")}) AS conversation_woken
  FROM resolved AS r
"""
APPROVAL_BY_ID = "SELECT * FROM approvals.tool_approvals WHERE id = %(id)s"


def _approval(row: Any) -> Approval:
    """An approval from a row of the table: SQLAlchemy's, or psycopg's named tuple (direct pool)."""
    return Approval(
        id=row.id,
        conversation_id=row.conversation_id,
        job_id=row.job_id,
        owner=Owner(user_id=row.owner_user_id, contact_id=row.owner_contact_id),
        tool_name=row.tool_name,
        tool_input=row.tool_input,
        status=ApprovalStatus(row.status),
        channel=Channel(row.channel),
        created_at=row.created_at,
        expires_at=row.expires_at,
        resolved_at=row.resolved_at,
    )


def _owned_by(user: ResolvedUser) -> sa.ColumnElement[bool]:
    """The SQL form of `ResolvedUser.owns`, the one ownership rule, applied to the owner ids an
    approval carries: the row names the caller's user id, or the contact linked to the caller.
    A NULL id never matches (SQL equality with NULL is not true)."""
    mine = [t.c.owner_user_id == user.user_id]
    if user.contact_id is not None:
        mine.append(t.c.owner_contact_id == user.contact_id)
    return sa.or_(*mine)


def _in_status(status: ApprovalStatus, now: datetime) -> sa.ColumnElement[bool]:
    """Rows whose effective status (Approval.as_of) at `now` is `status`."""
    if status is ApprovalStatus.PENDING:
        return sa.and_(t.c.status == status.value, t.c.expires_at > now)
    if status is ApprovalStatus.EXPIRED:
        return sa.or_(t.c.status == status.value, sa.and_(t.c.status == "pending", t.c.expires_at <= now))
    return t.c.status == status.value


async def insert_approval(conn: AsyncConnection, approval: Approval) -> Approval:
    row = (
        await conn.execute(
            pg.insert(t)
            .values(
                id=approval.id,
                conversation_id=approval.conversation_id,
                job_id=approval.job_id,
                owner_user_id=approval.owner.user_id,
                owner_contact_id=approval.owner.contact_id,
                tool_name=approval.tool_name,
                tool_input=approval.tool_input,
                status=approval.status.value,
                channel=approval.channel.value,
                created_at=approval.created_at,
                expires_at=approval.expires_at,
                resolved_at=None,
            )
            .returning(t)
        )
    ).one()
    return _approval(row)


async def get_approval(conn: AsyncConnection, approval_id: uuid.UUID) -> Approval | None:
    row = (await conn.execute(sa.select(t).where(t.c.id == approval_id))).first()
    return _approval(row) if row else None


async def resolve_pending(
    db: DirectPool,
    approval_id: uuid.UUID,
    status: ApprovalStatus,
    now: datetime,
    owner: ResolvedUser | None,
) -> Approval | None:
    """PENDING → `status` in one guarded statement (RESOLVE_PENDING); `owner` None is the service,
    which may resolve any approval. No row back: one of the guards failed; the caller reads the
    row to say which."""
    rows = await db.fetch(
        RESOLVE_PENDING,
        {
            "id": approval_id,
            "status": status.value,
            "now": now,
            "as_service": owner is None,
            # The SQL form of `ResolvedUser.owns`: a NULL id (no linked contact) never matches.
            "user_id": owner.user_id if owner is not None else None,
            "contact_id": owner.contact_id if owner is not None else None,
        },
    )
    return _approval(rows[0]) if rows else None


async def read_approval(db: DirectPool, approval_id: uuid.UUID) -> Approval | None:
    """`get_approval` on the direct pool: the waiter's re-read after every wake-up."""
    rows = await db.fetch(APPROVAL_BY_ID, {"id": approval_id})
    return _approval(rows[0]) if rows else None


async def expire_one(conn: AsyncConnection, approval_id: uuid.UUID, now: datetime) -> Approval | None:
    """Records the expiry of one overdue pending approval; None if it is not (or no longer) so."""
    row = (
        await conn.execute(
            sa.update(t)
            .where(t.c.id == approval_id, t.c.status == ApprovalStatus.PENDING.value, t.c.expires_at <= now)
            .values(status=ApprovalStatus.EXPIRED.value, resolved_at=t.c.expires_at)
            .returning(t)
        )
    ).first()
    return _approval(row) if row else None


async def expire_due(conn: AsyncConnection, now: datetime, batch: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(approval id, conversation id) of each row expired by this batch."""
    rows = (await conn.execute(EXPIRE_DUE, {"now": now, "batch": batch})).all()
    return [(r.id, r.conversation_id) for r in rows]


async def list_pending_in_conversation(
    conn: AsyncConnection, conversation_id: uuid.UUID, now: datetime, page: PageRequest, owner: ResolvedUser | None
) -> list[Approval]:
    """Pending (unexpired) approvals, oldest first (UUIDv7 ids are creation order); with
    `owner`, only the ones that user owns."""
    query = sa.select(t).where(t.c.conversation_id == conversation_id, _in_status(ApprovalStatus.PENDING, now))
    if owner is not None:
        query = query.where(_owned_by(owner))
    if page.after is not None:
        query = query.where(t.c.id > page.after)
    rows = (await conn.execute(query.order_by(t.c.id).limit(page.size))).all()
    return [_approval(r) for r in rows]


async def count_by_ownership(
    conn: AsyncConnection, conversation_id: uuid.UUID, user: ResolvedUser
) -> tuple[int, int]:
    """(approvals the user owns, approvals someone else owns) in the conversation, any status."""
    owned = _owned_by(user)
    row = (
        await conn.execute(
            sa.select(
                sa.func.count().filter(owned),
                sa.func.count().filter(sa.not_(sa.func.coalesce(owned, False))),
            ).where(t.c.conversation_id == conversation_id)
        )
    ).one()
    return int(row[0]), int(row[1])


async def list_job_approvals(
    conn: AsyncConnection, job_id: uuid.UUID, status: ApprovalStatus | None, now: datetime, page: PageRequest
) -> list[Approval]:
    query = sa.select(t).where(t.c.job_id == job_id)
    if status is not None:
        query = query.where(_in_status(status, now))
    if page.after is not None:
        query = query.where(t.c.id > page.after)
    rows = (await conn.execute(query.order_by(t.c.id).limit(page.size))).all()
    return [_approval(r) for r in rows]


async def notify_changed(conn: AsyncConnection, keys: Sequence[str]) -> None:
    """Wake-ups for watchers of these keys, delivered at commit (zenthor.notify)."""
    if keys:
        params: dict[str, Any] = {"channel": CHANGES, "keys": list(keys)}
        await conn.execute(NOTIFY_MANY, params)
