"""Todoist tasks as the agent's tools see them: input checks, the request bodies the original
sent, the summary of a Todoist task, and the one-segment task path (docs/hardening.md #6)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from zenthor.errors import InvalidArgument
from zenthor.pagination import PageLimits
from zenthor.validate import optional_text, required_text

# The original's default of 20; the runtime's tool allows 1..50.
LIST_PAGE = PageLimits(default=20, maximum=50)
# Todoist answers at most 200 tasks per request.
TODOIST_MAX_LIMIT = 200
# Sent whenever a natural-language due string is.
DUE_LANG = "en"
# Bounds on what we forward; Todoist enforces its own limits and answers 400 beyond them.
MAX_CONTENT = 2_000
MAX_DESCRIPTION = 16_384
MAX_ID = 200
MAX_LABELS = 100
MAX_DUE_STRING = 500
MAX_FILTER = 1_024
MAX_REQUEST_ID = 100
RESCHEDULE_NEEDS_DUE = "Either dueString or dueDateTime is required."
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class TodoistTask:
    """Summary of a Todoist task; fields Todoist left out stay None."""

    id: str
    content: str | None = None
    description: str | None = None
    url: str | None = None
    priority: int | None = None
    project_id: str | None = None
    section_id: str | None = None
    labels: tuple[str, ...] = ()
    due_date: str | None = None
    due_date_time: str | None = None
    due_string: str | None = None


@dataclass(frozen=True)
class NewTask:
    content: str
    description: str | None = None
    project_id: str | None = None
    section_id: str | None = None
    # None: not sent; an empty tuple is sent as `[]` (presence matters, as in the original).
    labels: tuple[str, ...] | None = None
    priority: int | None = None
    due_string: str | None = None
    due_date_time: str | None = None


@dataclass(frozen=True)
class TaskPage:
    tasks: list[TodoistTask]
    # Todoist's `next_cursor`; None after the last page.
    next_cursor: str | None


def check_new_task(task: NewTask) -> NewTask:
    required_text(task.content, "content", max_chars=MAX_CONTENT)
    optional_text(task.description, "description", max_chars=MAX_DESCRIPTION)
    optional_text(task.project_id, "project_id", max_chars=MAX_ID)
    optional_text(task.section_id, "section_id", max_chars=MAX_ID)
    if task.labels is not None:
        if len(task.labels) > MAX_LABELS:
            raise InvalidArgument("labels", f"must hold at most {MAX_LABELS} labels")
        for label in task.labels:
            required_text(label, "labels", max_chars=MAX_ID)
    if task.priority is not None and not 0 <= task.priority <= 4:
        raise InvalidArgument("priority", "must be 1 (normal) to 4 (urgent), or 0 for none")
    optional_text(task.due_string, "due_string", max_chars=MAX_DUE_STRING)
    check_due_date_time(task.due_date_time)
    return task


def check_due_date_time(value: str | None, field: str = "due_date_time") -> str | None:
    if value:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise InvalidArgument(field, "must be an RFC 3339 date-time") from None
    return value


def check_task_id(value: str, field: str = "task_id") -> str:
    """Any Todoist id is accepted; characters that could bend a URL are encoded later
    (task_path), control characters are refused here."""
    required_text(value, field, max_chars=MAX_ID)
    if _CONTROL.search(value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def check_filter(value: str | None) -> str | None:
    """An empty filter lists every active task."""
    return optional_text(value, "filter", max_chars=MAX_FILTER) or None


def check_request_id(value: str, field: str = "request_id") -> str | None:
    """The caller's idempotency key for Todoist's `X-Request-Id`; empty: we mint one."""
    if not value:
        return None
    required_text(value, field, max_chars=MAX_REQUEST_ID)
    if _CONTROL.search(value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def check_reschedule(due_string: str | None, due_date_time: str | None) -> dict[str, str]:
    """The update body; neither due field is the original's error, raised before any lookup."""
    if not due_string and not due_date_time:
        raise InvalidArgument("due_string", RESCHEDULE_NEEDS_DUE)
    optional_text(due_string, "due_string", max_chars=MAX_DUE_STRING)
    check_due_date_time(due_date_time)
    body: dict[str, str] = {}
    if due_string:
        body |= {"due_string": due_string, "due_lang": DUE_LANG}
    if due_date_time:
        body["due_datetime"] = due_date_time
    return body


def new_task_body(task: NewTask) -> dict[str, Any]:
    """The original's body: content always; the rest only when non-empty (labels whenever
    given, priority when non-zero, `due_lang` with `due_string`)."""
    body: dict[str, Any] = {"content": task.content}
    if task.description:
        body["description"] = task.description
    if task.project_id:
        body["project_id"] = task.project_id
    if task.section_id:
        body["section_id"] = task.section_id
    if task.labels is not None:
        body["labels"] = list(task.labels)
    if task.priority:
        body["priority"] = task.priority
    if task.due_string:
        body |= {"due_string": task.due_string, "due_lang": DUE_LANG}
    if task.due_date_time:
        body["due_datetime"] = task.due_date_time
    return body


def task_segment(task_id: str) -> str:
    """The id as ONE path segment (docs/hardening.md #6): every reserved character encoded,
    `/`, `?` and `#` included, and dots too, so `.` or `..` cannot be read as a dot segment."""
    return quote(task_id, safe="").replace(".", "%2E")


def task_path(task_id: str) -> str:
    return f"/tasks/{task_segment(task_id)}"


def close_path(task_id: str) -> str:
    return f"{task_path(task_id)}/close"


def filter_digest(filter_query: str | None) -> str:
    """Binds a page token to its filter, so a cursor is never replayed under another one."""
    return hashlib.sha256((filter_query or "").encode()).hexdigest()[:16]


def task_of(data: Any) -> TodoistTask | None:
    """The summary of a Todoist task object (§ task mapping of the original); None when the
    answer is not a task."""
    if not isinstance(data, dict) or data.get("id") in (None, ""):
        return None
    raw_due = data.get("due")
    due: dict[str, Any] = raw_due if isinstance(raw_due, dict) else {}
    labels = data.get("labels")
    priority = data.get("priority")
    return TodoistTask(
        id=str(data["id"]),
        content=_str(data.get("content")),
        description=_str(data.get("description")),
        url=_str(data.get("url")),
        priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else None,
        project_id=_id(data.get("project_id")),
        section_id=_id(data.get("section_id")),
        labels=tuple(str(label) for label in labels) if isinstance(labels, list) else (),
        due_date=_str(due.get("date")),
        due_date_time=_str(due.get("datetime")),
        due_string=_str(due.get("string")),
    )


def task_page_of(data: Any) -> TaskPage | None:
    """API v1's page object `{results, next_cursor}` (docs/hardening.md #9); None when the
    answer is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        return None
    tasks = [task for task in (task_of(item) for item in data["results"]) if task is not None]
    cursor = data.get("next_cursor")
    return TaskPage(tasks=tasks, next_cursor=cursor if isinstance(cursor, str) and cursor else None)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    return str(value) if isinstance(value, str | int) else None
