"""Scheduled task use cases: admin CRUD, the runtime's create, and the due-task sweep whose
trigger message reaches messages through the outbox (on the conversation's own channel, chosen
by messages: docs/hardening.md #19)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

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


async def list_tasks(deps: Deps, page: PageRequest) -> Page[ScheduledTask]:
    async with deps.uow() as uow:
        found = await store.list_tasks(uow.conn, page)
    return Page(found, next_token([t.id for t in found], page.size))


async def get_task(deps: Deps, task_id: uuid.UUID) -> ScheduledTask | None:
    async with deps.uow() as uow:
        return await store.get_task(uow.conn, task_id)


async def create_task(deps: Deps, fields: TaskFields) -> ScheduledTask:
    """The runtime's schedule_task tool: first run at now + interval."""
    fields.checked_new()
    assert fields.interval is not None  # checked_new requires it
    now = deps.clock()
    async with deps.uow() as uow:
        task = await store.insert_task(uow.conn, ids.SCHEDULED_TASK.new(), fields, rules.first_run(now, fields.interval), now)
        await uow.commit()
    return task


async def update_task(deps: Deps, task_id: uuid.UUID, fields: TaskFields) -> ScheduledTask | None:
    """Patches the given fields; a new interval also moves the next run to now + interval.
    None (not an error) for an unknown id, as in the original."""
    fields.checked()
    next_run = rules.first_run(deps.clock(), fields.interval) if fields.interval is not None else None
    async with deps.uow() as uow:
        task = await store.update_task(uow.conn, task_id, fields, next_run)
        await uow.commit()
    return task


async def delete_task(deps: Deps, task_id: uuid.UUID) -> None:
    async with deps.uow() as uow:
        if not await store.delete_task(uow.conn, task_id):
            raise NotFound("Scheduled task not found")
        await uow.commit()


@dataclass(frozen=True)
class DueSweep:
    fired: int
    advanced: int
    more: bool


async def process_due_tasks(deps: Deps, batch_size: int) -> DueSweep:
    """The "process scheduled tasks" schedule: one batch of due tasks (0: the default size),
    one `now`."""
    limit = check_size(batch_size, rules.DUE_SWEEP, "batch_size")
    now = deps.clock()
    fired = advanced = 0
    async with deps.uow() as uow:
        due = await store.lock_due_tasks(uow.conn, now, limit)
        for task in due:
            await store.mark_fired(uow.conn, task.id, now, rules.next_run_after_firing(now, task.interval))
            if task.conversation_id is None:
                advanced += 1
                continue
            key = rules.trigger_key(ids.SCHEDULED_TASK.format(task.id), now)
            await add_event(
                uow.conn,
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
            fired += 1
        await uow.commit()
    if fired:
        deps.kick_outbox()
    return DueSweep(fired=fired, advanced=advanced, more=len(due) == limit)
