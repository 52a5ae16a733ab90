"""Scheduled task use cases: admin CRUD, the runtime's create, the firing of one run by the
task's workflow, and the due-task sweep. A fired run's trigger message reaches messages through
the outbox (on the conversation's own channel, chosen by messages: docs/hardening.md #19).

Each enabled task has a Temporal workflow (`scheduled-task-<id>`) that sleeps until the task's
next run and fires it (FireScheduledTask); every change to when a task runs stores an outbox
event that starts or wakes that workflow, which then re-reads the task
(docs/architecture.md §8, "Scheduled tasks"). The 5-minute sweep fires whatever a workflow did
not; a run fires once whoever comes first, because firing is guarded by the run's instant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.agent_queue.domain import tasks as rules
from services.agent_queue.domain.tasks import ScheduledTask, TaskFields
from services.agent_queue.store import tasks as store
from services.agent_queue.store.tables import outbox
from services.agent_queue.usecases.deps import Deps
from zenthor import ids
from zenthor.errors import NotFound
from zenthor.outbox import add_event
from zenthor.pagination import Page, PageRequest, check_size, next_token

TRIGGER_TOPIC = "messages.create_system_message"
# Starts or wakes a task's workflow (services/agent_queue/peers.py: task_workflow_signaller).
TASK_WORKFLOW_TOPIC = "temporal.scheduled_task"


async def list_tasks(deps: Deps, page: PageRequest) -> Page[ScheduledTask]:
    async with deps.uow() as uow:
        found = await store.list_tasks(uow.conn, page)
    return Page(found, next_token([t.id for t in found], page.size))


async def get_task(deps: Deps, task_id: uuid.UUID) -> ScheduledTask | None:
    async with deps.uow() as uow:
        return await store.get_task(uow.conn, task_id)


async def create_task(deps: Deps, fields: TaskFields) -> ScheduledTask:
    """The runtime's schedule_task tool: first run at now + interval, or the cron expression's
    first match after now."""
    fields.checked_new()
    schedule = fields.schedule_over(None)
    now = deps.clock()
    next_run = rules.first_run(schedule, now)
    async with deps.uow() as uow:
        task = await store.insert_task(uow.conn, ids.SCHEDULED_TASK.new(), fields, schedule, next_run, now)
        if task.enabled:
            await _wake_workflow(uow.conn, task, now)
        await uow.commit()
    if task.enabled:
        deps.kick_outbox()
    return task


async def update_task(deps: Deps, task_id: uuid.UUID, fields: TaskFields) -> ScheduledTask | None:
    """Patches the given fields. A new interval moves the next run to now + interval; a new
    cron expression or time zone to the expression's first match after now. None (not an
    error) for an unknown id, as in the original."""
    fields.checked()
    now = deps.clock()
    async with deps.uow() as uow:
        current = await store.lock_task(uow.conn, task_id)
        if current is None:
            return None
        schedule = fields.schedule_over(current.schedule) if fields.changes_schedule else None
        next_run = rules.first_run(schedule, now) if schedule is not None else None
        task = await store.update_task(uow.conn, task_id, fields, schedule, next_run)
        assert task is not None  # locked above
        if schedule is not None or fields.enabled is not None:
            await _wake_workflow(uow.conn, task, now)
        await uow.commit()
    deps.kick_outbox()
    return task


async def delete_task(deps: Deps, task_id: uuid.UUID) -> None:
    now = deps.clock()
    async with deps.uow() as uow:
        task = await store.lock_task(uow.conn, task_id)
        if task is None or not await store.delete_task(uow.conn, task_id):
            raise NotFound("Scheduled task not found")
        await _wake_workflow(uow.conn, task, now, start=False)
        await uow.commit()
    deps.kick_outbox()


async def get_task_next_run(deps: Deps, task_id: uuid.UUID) -> ScheduledTask:
    """The task as its workflow sees it: whether and when it runs next."""
    async with deps.uow() as uow:
        task = await store.get_task(uow.conn, task_id)
    if task is None:
        raise NotFound("Scheduled task not found")
    return task


@dataclass(frozen=True)
class FiredRun:
    fired: bool
    task: ScheduledTask


async def fire_task(deps: Deps, task_id: uuid.UUID, run_at: datetime) -> FiredRun:
    """The task's workflow, at the instant of a run: fires it only while it is still the
    task's next run (a repeated call, a run the sweep already fired, a run moved by an update
    fire nothing), exactly as the sweep fires a due task. Answers the task as it is after."""
    now = deps.clock()
    async with deps.uow() as uow:
        task = await store.lock_task_run(uow.conn, task_id, run_at)
        if task is None:
            current = await store.get_task(uow.conn, task_id)
            if current is None:
                raise NotFound("Scheduled task not found")
            return FiredRun(fired=False, task=current)
        fired = await _fire(uow.conn, task, run_at, now)
        await uow.commit()
    if task.conversation_id is not None:
        deps.kick_outbox()
    return FiredRun(fired=True, task=fired)


@dataclass(frozen=True)
class DueSweep:
    fired: int
    advanced: int
    more: bool


async def process_due_tasks(deps: Deps, batch_size: int) -> DueSweep:
    """The "process scheduled tasks" schedule: one batch of due tasks (0: the default size),
    one `now`. The safety net under the tasks' workflows: it fires what they have not (a task
    from before they existed, a workflow an operator ended, a worker that fell behind)."""
    limit = check_size(batch_size, rules.DUE_SWEEP, "batch_size")
    now = deps.clock()
    fired = advanced = 0
    async with deps.uow() as uow:
        due = await store.lock_due_tasks(uow.conn, now, limit)
        for task in due:
            assert task.next_run_at is not None  # due
            await _fire(uow.conn, task, task.next_run_at, now)
            if task.conversation_id is None:
                advanced += 1
            else:
                fired += 1
        await uow.commit()
    if fired:
        deps.kick_outbox()
    return DueSweep(fired=fired, advanced=advanced, more=len(due) == limit)


async def _fire(conn: AsyncConnection, task: ScheduledTask, run_at: datetime, now: datetime) -> ScheduledTask:
    """One run of a task whose row the caller holds: the last run is when it fired, the next
    counts from then (missed runs collapse into this one, as the original's did), and a task
    with a conversation gets its trigger message (and through messages, its job)."""
    fired_at = max(run_at, now)
    advanced = await store.mark_fired(conn, task.id, run_at, fired_at, rules.next_run(task.schedule, fired_at))
    assert advanced is not None  # the row is locked at this run
    if task.conversation_id is not None:
        key = rules.trigger_key(ids.SCHEDULED_TASK.format(task.id), run_at)
        await add_event(
            conn,
            outbox,
            TRIGGER_TOPIC,
            key,
            {
                "conversation_id": ids.CONVERSATION.format(task.conversation_id),
                "content": rules.trigger_content(task),
                "idempotency_key": key,
            },
            now,
        )
    return advanced


async def _wake_workflow(conn: AsyncConnection, task: ScheduledTask, now: datetime, *, start: bool | None = None) -> None:
    """Tells the task's workflow to re-read the task: started if needed while the task is
    enabled, only signalled (ending it if it runs) once disabled or deleted. Each change is its
    own event; the workflow reads the current row, so their order does not matter."""
    task_ref = ids.SCHEDULED_TASK.format(task.id)
    await add_event(
        conn,
        outbox,
        TASK_WORKFLOW_TOPIC,
        f"{task_ref}:{ids.OUTBOX_EVENT.format(ids.OUTBOX_EVENT.new())}",
        {"task_id": task_ref, "start": task.enabled if start is None else start},
        now,
    )
