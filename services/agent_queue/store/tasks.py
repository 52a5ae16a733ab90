"""SQL of scheduled tasks."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agent_queue.domain.tasks import ScheduledTask, TaskFields, TaskSchedule
from services.agent_queue.store.tables import scheduled_tasks as tasks
from zenthor.pagination import PageRequest


def _task(row: sa.Row[Any]) -> ScheduledTask:
    return ScheduledTask(
        id=row.id,
        name=row.name,
        description=row.description,
        schedule=TaskSchedule(
            interval=timedelta(milliseconds=row.interval_ms) if row.interval_ms is not None else None,
            cron=row.cron,
            time_zone=row.time_zone,
        ),
        payload=row.payload,
        enabled=row.enabled,
        last_run_at=row.last_run_at,
        next_run_at=row.next_run_at,
        conversation_id=row.conversation_id,
        created_at=row.created_at,
    )


def _values(fields: TaskFields) -> dict[str, Any]:
    """The plain fields given (the schedule's columns are written whole, by _schedule)."""
    values: dict[str, Any] = {
        "name": fields.name,
        "description": fields.description,
        "payload": fields.payload,
        "enabled": fields.enabled,
        "conversation_id": fields.conversation_id,
    }
    return {k: v for k, v in values.items() if v is not None}


def _schedule(schedule: TaskSchedule) -> dict[str, Any]:
    # Both kinds' columns every time, so switching kinds clears the other one (the CHECK
    # constraint allows exactly one).
    return {
        "interval_ms": schedule.interval // timedelta(milliseconds=1) if schedule.interval is not None else None,
        "cron": schedule.cron,
        "time_zone": schedule.time_zone,
    }


async def insert_task(
    conn: AsyncConnection,
    task_id: uuid.UUID,
    fields: TaskFields,
    schedule: TaskSchedule,
    next_run_at: datetime | None,
    now: datetime,
) -> ScheduledTask:
    stmt = (
        sa.insert(tasks)
        .values(id=task_id, created_at=now, next_run_at=next_run_at, **_values(fields), **_schedule(schedule))
        .returning(tasks)
    )
    return _task((await conn.execute(stmt)).one())


async def lock_task(conn: AsyncConnection, task_id: uuid.UUID) -> ScheduledTask | None:
    """The task, locked until the transaction ends: an update computing its next run from the
    stored schedule cannot interleave with a firing."""
    row = (await conn.execute(sa.select(tasks).where(tasks.c.id == task_id).with_for_update())).first()
    return _task(row) if row else None


async def update_task(
    conn: AsyncConnection,
    task_id: uuid.UUID,
    fields: TaskFields,
    schedule: TaskSchedule | None,
    next_run_at: datetime | None,
) -> ScheduledTask | None:
    """Patches the given fields; a new schedule comes with its next run (None: no more runs)."""
    values = _values(fields)
    if schedule is not None:
        values |= _schedule(schedule) | {"next_run_at": next_run_at}
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
    (or a task's workflow firing it) holds are skipped."""
    query = (
        sa.select(tasks)
        .where(tasks.c.enabled.is_(True), tasks.c.next_run_at.is_not(None), tasks.c.next_run_at <= now)
        .order_by(tasks.c.next_run_at, tasks.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_task(r) for r in (await conn.execute(query)).all()]


async def lock_task_run(conn: AsyncConnection, task_id: uuid.UUID, run_at: datetime) -> ScheduledTask | None:
    """The task, locked, only while the run at `run_at` is still its next one and it is
    enabled: a run already fired (by the sweep, or by an earlier attempt of the same call) or
    moved by an update matches nothing. Waits for a sweep holding the row, then re-checks."""
    query = (
        sa.select(tasks)
        .where(tasks.c.id == task_id, tasks.c.enabled.is_(True), tasks.c.next_run_at == run_at)
        .with_for_update()
    )
    row = (await conn.execute(query)).first()
    return _task(row) if row else None


async def mark_fired(
    conn: AsyncConnection, task_id: uuid.UUID, run_at: datetime, last_run_at: datetime, next_run_at: datetime | None
) -> ScheduledTask | None:
    """Advances a task whose run at `run_at` fired (the caller holds the row's lock); None
    when that run is no longer the task's next."""
    stmt = (
        sa.update(tasks)
        .where(tasks.c.id == task_id, tasks.c.next_run_at == run_at)
        .values(last_run_at=last_run_at, next_run_at=next_run_at)
        .returning(tasks)
    )
    row = (await conn.execute(stmt)).first()
    return _task(row) if row else None
