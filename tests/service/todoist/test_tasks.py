"""Scenarios K.105–K.108 with the fixes: the four task tools over gRPC against the fake Todoist,
API v1 pages and its filter endpoint (docs/hardening.md #9), task ids as one path segment
(docs/hardening.md #6), bounded retries honouring `Retry-After`."""

from __future__ import annotations

import uuid

import grpc
import pytest

from tests.service.todoist.builders import connect
from tests.service.todoist.conftest import TodoistStack, alice_user
from tests.support.builders import add_contact, alice
from tests.support.fake_clock import T0
from tests.support.grpc_client import rpc_error, service
from tests.support.messages_builders import web_conversation, whatsapp_conversation
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2 as pb

NEEDS_DUE = "Either dueString or dueDateTime is required."


async def alice_connected(stack: TodoistStack, token: str = "tok1") -> str:
    """Alice, connected to a Todoist account with `token`; her web conversation W1's id."""
    alice_id = alice(stack.db)
    stack.fake.add_account(email="alice@todo.com", full_name="Alice T", token=token)
    connect(stack.db, alice_id, token, now=T0)
    return (await web_conversation(stack.messages.stub, alice_user(stack.issuer))).id


async def list_page(stack: TodoistStack, conversation_id: str, **fields: object) -> pb.ListTodoistTasksResponse:
    reply: pb.ListTodoistTasksResponse = await stack.stub.ListTodoistTasks(
        pb.ListTodoistTasksRequest(conversation_id=conversation_id, **fields), metadata=service()
    )
    return reply


async def complete(stack: TodoistStack, conversation_id: str, task_id: str, request_id: str = "") -> bool:
    reply = await stack.stub.CompleteTodoistTask(
        pb.CompleteTodoistTaskRequest(conversation_id=conversation_id, task_id=task_id, request_id=request_id),
        metadata=service(),
    )
    return bool(reply.completed)


async def test_k105_no_owner_or_no_connection_is_an_absent_answer_without_any_call(todoist: TodoistStack) -> None:
    loner = add_contact(todoist.db, "5511999990000", user_id=None)
    wa = await whatsapp_conversation(todoist.messages.stub, loner)
    created = await todoist.stub.CreateTodoistTask(
        pb.CreateTodoistTaskRequest(conversation_id=wa.id, content="Buy milk"), metadata=service()
    )
    assert not created.HasField("task")

    alice(todoist.db)
    w1 = await web_conversation(todoist.messages.stub, alice_user(todoist.issuer))
    listed = await list_page(todoist, w1.id)
    assert not listed.connected and list(listed.tasks) == []
    assert await complete(todoist, w1.id, "t1") is False
    assert todoist.fake.requests == []


async def test_a_whatsapp_conversation_uses_its_contacts_user(todoist: TodoistStack) -> None:
    alice_id = alice(todoist.db)
    todoist.fake.add_account(token="tok1")
    todoist.fake.add_task("tok1", "Buy milk")
    connect(todoist.db, alice_id, "tok1", now=T0)
    k1 = add_contact(todoist.db, "5511999990000", user_id=alice_id)
    wa1 = await whatsapp_conversation(todoist.messages.stub, k1)
    listed = await list_page(todoist, wa1.id)
    assert listed.connected and [t.content for t in listed.tasks] == ["Buy milk"]


async def test_an_unknown_conversation_has_no_owner(todoist: TodoistStack) -> None:
    listed = await list_page(todoist, "conv_" + uuid.uuid4().hex)
    assert not listed.connected


async def test_k106_create_sends_the_originals_request_and_maps_the_task(todoist: TodoistStack) -> None:
    w1 = await alice_connected(todoist)
    todoist.fake.script(
        "POST",
        "/api/v1/tasks",
        200,
        {
            "id": "t1",
            "content": "Pay rent",
            "priority": 4,
            "due": {"date": "2024-01-02", "datetime": "2024-01-02T09:00:00", "string": "tomorrow 9am"},
        },
    )
    reply = await todoist.stub.CreateTodoistTask(
        pb.CreateTodoistTaskRequest(
            conversation_id=w1, content="Pay rent", priority=4, due_string="tomorrow 9am", labels=pb.TodoistLabels()
        ),
        metadata=service(),
    )

    (sent,) = todoist.fake.requests_to("POST", "/api/v1/tasks")
    assert sent.headers["authorization"] == "Bearer tok1"
    assert sent.headers["content-type"] == "application/json"
    uuid.UUID(sent.headers["x-request-id"])
    assert sent.json() == {"content": "Pay rent", "labels": [], "priority": 4, "due_string": "tomorrow 9am", "due_lang": "en"}
    assert reply.task == pb.TodoistTask(
        id="t1", content="Pay rent", priority=4, due_date="2024-01-02", due_date_time="2024-01-02T09:00:00",
        due_string="tomorrow 9am",
    )


async def test_a_create_retried_with_its_request_id_makes_one_task(todoist: TodoistStack) -> None:
    w1 = await alice_connected(todoist)
    request = pb.CreateTodoistTaskRequest(conversation_id=w1, content="Buy milk", request_id="run-7-call-2")
    first = await todoist.stub.CreateTodoistTask(request, metadata=service())
    second = await todoist.stub.CreateTodoistTask(request, metadata=service())
    assert first.task.id == second.task.id
    assert [t["content"] for t in todoist.fake.active_tasks("tok1")] == ["Buy milk"]


@pytest.mark.parametrize(("due_string", "due_date_time"), [(None, None), ("", "")])
async def test_k107_reschedule_without_a_due_field_fails_before_any_lookup(
    todoist: TodoistStack, due_string: str | None, due_date_time: str | None
) -> None:
    alice(todoist.db)
    w1 = await web_conversation(todoist.messages.stub, alice_user(todoist.issuer))  # not connected
    error = await rpc_error(
        todoist.stub.RescheduleTodoistTask(
            pb.RescheduleTodoistTaskRequest(
                conversation_id=w1.id, task_id="t1", due_string=due_string, due_date_time=due_date_time
            ),
            metadata=service(),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert NEEDS_DUE in (error.details() or "") and violated_fields(error) == ["due_string"]


async def test_k108_a_todoist_error_keeps_the_originals_message(todoist: TodoistStack) -> None:
    w1 = await alice_connected(todoist)
    todoist.fake.script("POST", "/api/v1/tasks/t1/close", 404, "Task not found")
    error = await rpc_error(complete(todoist, w1, "t1"))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "Todoist request failed (404): Task not found")


async def test_complete_and_reschedule_change_the_task_at_todoist(todoist: TodoistStack) -> None:
    w1 = await alice_connected(todoist)
    task = todoist.fake.add_task("tok1", "Call the bank")
    moved = await todoist.stub.RescheduleTodoistTask(
        pb.RescheduleTodoistTaskRequest(conversation_id=w1, task_id=task["id"], due_date_time="2030-01-02T09:00:00Z"),
        metadata=service(),
    )
    assert moved.task.id == task["id"] and moved.task.due_date_time == "2030-01-02T09:00:00Z"
    (update,) = todoist.fake.requests_to("POST", f"/api/v1/tasks/{task['id']}")
    assert update.json() == {"due_datetime": "2030-01-02T09:00:00Z"}

    assert await complete(todoist, w1, task["id"]) is True
    assert todoist.fake.active_tasks("tok1") == []


async def test_listing_120_tasks_takes_three_pages_following_todoists_cursor(todoist: TodoistStack) -> None:
    w1 = await alice_connected(todoist)
    created = [todoist.fake.add_task("tok1", f"task {i}")["id"] for i in range(120)]
    todoist.fake.max_page_size = 30  # so one of our pages spans two of Todoist's

    pages: list[pb.ListTodoistTasksResponse] = []
    token = ""
    while True:
        page = await list_page(todoist, w1, page_size=50, page_token=token)
        pages.append(page)
        token = page.next_page_token
        if not token:
            break

    assert [len(p.tasks) for p in pages] == [50, 50, 20]
    assert [t.id for p in pages for t in p.tasks] == created
    sent = todoist.fake.requests_to("GET", "/api/v1/tasks")
    assert [r.query.get("limit") for r in sent] == [["50"], ["20"], ["50"], ["20"], ["50"]]
    assert "cursor" not in sent[0].query and all("cursor" in r.query for r in sent[1:])


async def test_the_default_page_is_twenty_and_at_most_fifty(todoist: TodoistStack) -> None:
    w1 = await alice_connected(todoist)
    for i in range(25):
        todoist.fake.add_task("tok1", f"task {i}")
    assert len((await list_page(todoist, w1)).tasks) == 20
    error = await rpc_error(list_page(todoist, w1, page_size=51))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == ["page_size"]


async def test_a_filter_lists_through_todoists_filter_endpoint(todoist: TodoistStack) -> None:
    w1 = await alice_connected(todoist)
    for content in ("Buy milk", "Call the bank", "Buy bread"):
        todoist.fake.add_task("tok1", content)
    todoist.fake.max_page_size = 1

    first = await list_page(todoist, w1, filter="search: buy", page_size=1)
    second = await list_page(todoist, w1, filter="search: buy", page_size=1, page_token=first.next_page_token)

    assert [t.content for t in (*first.tasks, *second.tasks)] == ["Buy milk", "Buy bread"]
    assert not second.next_page_token
    sent = todoist.fake.requests_to("GET", "/api/v1/tasks/filter")
    assert [r.query["query"] for r in sent] == [["search: buy"], ["search: buy"]]
    assert todoist.fake.requests_to("GET", "/api/v1/tasks") == []
    # A page token belongs to its filter.
    error = await rpc_error(list_page(todoist, w1, filter="p1", page_token=first.next_page_token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == ["page_token"]


@pytest.mark.parametrize(
    ("task_id", "raw_segment"),
    [
        ("../projects", "%2E%2E%2Fprojects"),
        ("..", "%2E%2E"),
        ("a/b", "a%2Fb"),
        ("x?y=1", "x%3Fy%3D1"),
        ("7#frag", "7%23frag"),
        ("%2E%2E", "%252E%252E"),
    ],
)
async def test_a_task_id_cannot_change_the_request_path(todoist: TodoistStack, task_id: str, raw_segment: str) -> None:
    w1 = await alice_connected(todoist)
    todoist.fake.add_task("tok1", "keep me")

    error = await rpc_error(complete(todoist, w1, task_id))

    assert error.code() == grpc.StatusCode.NOT_FOUND  # no task has that id
    (sent,) = todoist.fake.requests
    assert sent.method == "POST" and sent.raw_path == f"/api/v1/tasks/{raw_segment}/close"
    assert sent.segments == ["api", "v1", "tasks", task_id, "close"] and sent.query == {}
    error = await rpc_error(
        todoist.stub.RescheduleTodoistTask(
            pb.RescheduleTodoistTaskRequest(conversation_id=w1, task_id=task_id, due_string="tomorrow"),
            metadata=service(),
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert todoist.fake.requests[-1].raw_path == f"/api/v1/tasks/{raw_segment}"
    assert len(todoist.fake.active_tasks("tok1")) == 1


async def test_a_429_with_retry_after_is_waited_out_and_then_succeeds(todoist: TodoistStack) -> None:
    w1 = await alice_connected(todoist)
    task = todoist.fake.add_task("tok1", "Pay rent")
    path = f"/api/v1/tasks/{task['id']}/close"
    todoist.fake.script("POST", path, 429, {"error": "Too many requests"}, headers={"Retry-After": "2"})

    assert await complete(todoist, w1, task["id"], request_id="close-1") is True

    assert todoist.sleeps.waits == [2.0]
    sent = todoist.fake.requests_to("POST", path)
    assert [r.headers["x-request-id"] for r in sent] == ["close-1", "close-1"]  # one change at Todoist
    assert todoist.fake.active_tasks("tok1") == []


async def test_a_retry_after_too_long_to_wait_is_resource_exhausted_at_once(todoist: TodoistStack) -> None:
    w1 = await alice_connected(todoist)
    todoist.fake.script("POST", "/api/v1/tasks/t1/close", 429, {"error": "Too many requests"}, headers={"Retry-After": "120"})
    error = await rpc_error(complete(todoist, w1, "t1"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (error.details() or "").startswith("Todoist request failed (429): ")
    assert todoist.sleeps.waits == []


async def test_todoist_failing_on_every_attempt_is_unavailable_after_bounded_retries(todoist: TodoistStack) -> None:
    w1 = await alice_connected(todoist)
    todoist.fake.script("GET", "/api/v1/tasks", 502, "bad gateway", times=10)
    error = await rpc_error(list_page(todoist, w1))
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE, "Todoist request failed (502): bad gateway")
    assert len(todoist.fake.requests_to("GET", "/api/v1/tasks")) == 4
    assert len(todoist.sleeps.waits) == 3 and all(0 < w <= 8 for w in todoist.sleeps.waits)


async def test_a_revoked_token_is_a_failed_precondition(todoist: TodoistStack) -> None:
    w1 = await alice_connected(todoist)
    todoist.fake.accounts.pop("tok1")  # revoked in Todoist's settings
    error = await rpc_error(list_page(todoist, w1))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (error.details() or "").startswith("Todoist request failed (401): ")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"content": ""}, "content"),
        ({"content": "x", "priority": 5}, "priority"),
        ({"content": "x", "due_date_time": "tomorrow"}, "due_date_time"),
        ({"content": "x", "labels": pb.TodoistLabels(labels=[""])}, "labels"),
        ({"content": "x", "conversation_id": "usr_x"}, "conversation_id"),
    ],
)
async def test_bad_task_input_is_invalid_argument_naming_the_field(
    todoist: TodoistStack, fields: dict[str, object], field: str
) -> None:
    w1 = await alice_connected(todoist)
    error = await rpc_error(
        todoist.stub.CreateTodoistTask(pb.CreateTodoistTaskRequest(**{"conversation_id": w1, **fields}), metadata=service())
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == [field]
    assert todoist.fake.requests == []
