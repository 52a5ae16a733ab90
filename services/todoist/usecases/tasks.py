"""The agent's Todoist tools, scoped to a conversation: the owner is the conversation's user,
else its contact's user (messages and identity over gRPC); no owner or no connection is an
absent answer, never an error. Inputs are checked before any lookup; Todoist is called with no
transaction open (docs/hardening.md #7)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.todoist.domain import tasks as domain
from services.todoist.domain.tasks import NewTask, TodoistTask
from services.todoist.usecases.connections import access_token_of
from services.todoist.usecases.deps import Deps

# One page of ours follows Todoist's `next_cursor` until it is full; Todoist returns what it is
# asked for, so this bound only stops a misbehaving server from holding the call forever.
MAX_TODOIST_REQUESTS_PER_PAGE = 10


@dataclass(frozen=True)
class TaskListing:
    connected: bool
    tasks: list[TodoistTask]
    next_cursor: str | None


async def _token_for(deps: Deps, conversation_id: uuid.UUID) -> str | None:
    owner = await deps.owners.owner_of(conversation_id)
    if owner is None:
        return None
    return await access_token_of(deps, owner)


def _request_id(deps: Deps, request_id: str | None) -> str:
    """The caller's key, else a fresh one: Todoist's `X-Request-Id` makes our own retries of
    one call a single change."""
    return request_id or str(deps.new_uuid())


async def create_task(
    deps: Deps, conversation_id: uuid.UUID, task: NewTask, request_id: str | None
) -> TodoistTask | None:
    body = domain.new_task_body(domain.check_new_task(task))
    token = await _token_for(deps, conversation_id)
    if token is None:
        return None
    return await deps.todoist.create_task(token, body, _request_id(deps, request_id))


async def list_tasks(
    deps: Deps, conversation_id: uuid.UUID, filter_query: str | None, size: int, cursor: str | None
) -> TaskListing:
    """One page of the owner's active tasks (or of a filter's), following Todoist's cursor
    (docs/hardening.md #9); `next_cursor` continues where this page stopped."""
    token = await _token_for(deps, conversation_id)
    if token is None:
        return TaskListing(connected=False, tasks=[], next_cursor=None)
    tasks: list[TodoistTask] = []
    for _ in range(MAX_TODOIST_REQUESTS_PER_PAGE):
        limit = min(size - len(tasks), domain.TODOIST_MAX_LIMIT)
        page = await deps.todoist.list_tasks(token, filter_query, cursor, limit)
        tasks += page.tasks
        cursor = page.next_cursor
        if cursor is None or len(tasks) >= size:
            break
    return TaskListing(connected=True, tasks=tasks, next_cursor=cursor)


async def complete_task(deps: Deps, conversation_id: uuid.UUID, task_id: str, request_id: str | None) -> bool:
    task_id = domain.check_task_id(task_id)
    token = await _token_for(deps, conversation_id)
    if token is None:
        return False
    await deps.todoist.close_task(token, task_id, _request_id(deps, request_id))
    return True


async def reschedule_task(
    deps: Deps,
    conversation_id: uuid.UUID,
    task_id: str,
    due_string: str | None,
    due_date_time: str | None,
    request_id: str | None,
) -> TodoistTask | None:
    body = domain.check_reschedule(due_string, due_date_time)
    task_id = domain.check_task_id(task_id)
    token = await _token_for(deps, conversation_id)
    if token is None:
        return None
    return await deps.todoist.update_task(token, task_id, body, _request_id(deps, request_id))
