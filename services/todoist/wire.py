"""Proto ⇄ domain conversions of the todoist contract: ids, optional fields and page tokens
in; connection statuses and task summaries out. The rules live in domain/."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.todoist.domain import tasks as task_rules
from services.todoist.domain.connections import ConnectionStatus
from services.todoist.domain.oauth import StartedFlow
from services.todoist.domain.tasks import NewTask, TodoistTask
from zenthor import ids
from zenthor.convert import optional_str, timestamp
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2 as pb
from zenthor.pagination import check_size, decode_token, encode_token

# --- requests ---


def conversation_id(value: str, field: str = "conversation_id") -> uuid.UUID:
    return ids.CONVERSATION.parse(value, field)


def new_task(request: pb.CreateTodoistTaskRequest) -> NewTask:
    return NewTask(
        content=request.content,
        description=optional_str(request, "description"),
        project_id=optional_str(request, "project_id"),
        section_id=optional_str(request, "section_id"),
        labels=tuple(request.labels.labels) if request.HasField("labels") else None,
        priority=request.priority if request.HasField("priority") else None,
        due_string=optional_str(request, "due_string"),
        due_date_time=optional_str(request, "due_date_time"),
    )


@dataclass(frozen=True)
class TaskListRequest:
    filter_query: str | None
    size: int
    cursor: str | None


def task_list_request(request: pb.ListTodoistTasksRequest) -> TaskListRequest:
    """The filter, the page size (1..50, default 20) and Todoist's cursor from our token; a
    token is bound to its filter (domain.tasks.filter_digest)."""
    filter_query = task_rules.check_filter(optional_str(request, "filter"))
    size = check_size(request.page_size, task_rules.LIST_PAGE)
    fields = decode_token(request.page_token, {"cursor": str, "filter": str})
    if fields is None:
        return TaskListRequest(filter_query, size, None)
    if fields["filter"] != task_rules.filter_digest(filter_query):
        raise InvalidArgument("page_token", "was issued for another filter")
    return TaskListRequest(filter_query, size, str(fields["cursor"]))


def next_page_token(cursor: str | None, filter_query: str | None) -> str:
    if cursor is None:
        return ""
    return encode_token({"cursor": cursor, "filter": task_rules.filter_digest(filter_query)})


def request_id(value: str) -> str | None:
    return task_rules.check_request_id(value)


@dataclass(frozen=True)
class CallbackFields:
    state: str
    code: str | None
    error: str | None


def callback_fields(request: pb.SubmitTodoistOAuthCallbackRequest) -> CallbackFields:
    """The callback's query parameters; domain.oauth checks them."""
    return CallbackFields(request.state, optional_str(request, "code"), optional_str(request, "error"))


@dataclass(frozen=True)
class Due:
    due_string: str | None
    due_date_time: str | None


def due(request: pb.RescheduleTodoistTaskRequest) -> Due:
    return Due(optional_str(request, "due_string"), optional_str(request, "due_date_time"))


# --- responses ---


def status_pb(status: ConnectionStatus) -> pb.TodoistConnectionStatus:
    return pb.TodoistConnectionStatus(
        connected=status.connected,
        account_email=status.account_email,
        account_name=status.account_name,
        scope=status.scope,
        update_time=timestamp(status.updated_at) if status.updated_at else None,
    )


def started_pb(flow: StartedFlow) -> pb.StartTodoistOAuthResponse:
    return pb.StartTodoistOAuthResponse(authorization_url=flow.authorization_url, expire_time=timestamp(flow.expires_at))


def task_pb(task: TodoistTask) -> pb.TodoistTask:
    return pb.TodoistTask(
        id=task.id,
        content=task.content,
        description=task.description,
        url=task.url,
        priority=task.priority,
        project_id=task.project_id,
        section_id=task.section_id,
        labels=list(task.labels),
        due_date=task.due_date,
        due_date_time=task.due_date_time,
        due_string=task.due_string,
    )


def optional_task_pb(task: TodoistTask | None) -> pb.TodoistTask | None:
    return task_pb(task) if task is not None else None
