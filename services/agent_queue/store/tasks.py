"""SQL of scheduled tasks."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agent_queue.domain.tasks import ScheduledTask, TaskFields
from services.agent_queue.store.tables import scheduled_tasks as tasks
from zenthor.pagination import PageRequest


def _task(row: sa.Row[Any]) -> ScheduledTask:
    return ScheduledTask(
        id=row.id,
        name=row.name,
        description=row.description,
        interval=timedelta(milliseconds=row.interval_ms),
        payload=row.payload,
        enabled=row.enabled,
        last_run_at=row.last_run_at,
        next_run_at=row.next_run_at,
        conversation_id=row.conversation_id,
        created_at=row.created_at,
    )


def _values(fields: TaskFields) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": fields.name,
        "description": fields.description,
        "interval_ms": fields.interval // timedelta(milliseconds=1) if fields.interval is not None else None,
        "payload": fields.payload,
        "enabled": fields.enabled,
        "conversation_id": fields.conversation_id,
    }
    return {k: v for k, v in values.items() if v is not None}


async def insert_task(
    conn: AsyncConnection, task_id: uuid.UUID, fields: TaskFields, next_run_at: datetime, now: datetime
) -> ScheduledTask:
    stmt = sa.insert(tasks).values(id=task_id, created_at=now, next_run_at=next_run_at, **_values(fields)).returning(tasks)
    return _task((await conn.execute(stmt)).one())


async def update_task(
    conn: AsyncConnection, task_id: uuid.UUID, fields: TaskFields, next_run_at: datetime | None
) -> ScheduledTask | None:
    values = _values(fields)
    if next_run_at is not None:
        values["next_run_at"] = next_run_at
    if not values:
        return await get_task(conn, task_id)
    row = (await conn.execute(sa.update(tasks).where(tasks.c.id == task_id).values(**values).returning(tasks))).first()
    return _task(row) if row else None


async def delete_task(conn: AsyncConnection, task_id: uuid.UUID) -> bool:
    return bool((await conn.execute(sa.delete(tasks).where(tasks.c.id == task_id))).rowcount)


async def get_task(conn: AsyncConnection, task_id: uuid.UUID) -> ScheduledTask | None:
    row = (await conn.execute(sa.select(tasks).where(tasks.c.id == task_id))).first()
    return _task(row) if row else None


async def list_tasks(conn: AsyncConnection, page: PageRequest) -> list[ScheduledTask]:
    query = sa.select(tasks).order_by(tasks.c.id).limit(page.size)
    if page.after is not None:
        query = query.where(tasks.c.id > page.after)
    return [_task(r) for r in (await conn.execute(query)).all()]


async def lock_due_tasks(conn: AsyncConnection, now: datetime, limit: int) -> list[ScheduledTask]:
    """Enabled tasks whose next run is at or before now, earliest first; rows another sweep
    holds are skipped."""
    query = (
        sa.select(tasks)
        .where(tasks.c.enabled.is_(True), tasks.c.next_run_at.is_not(None), tasks.c.next_run_at <= now)
        .order_by(tasks.c.next_run_at, tasks.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_task(r) for r in (await conn.execute(query)).all()]


async def mark_fired(conn: AsyncConnection, task_id: uuid.UUID, now: datetime, next_run_at: datetime | None) -> None:
    await conn.execute(sa.update(tasks).where(tasks.c.id == task_id).values(last_run_at=now, next_run_at=next_run_at))
