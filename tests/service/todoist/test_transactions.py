"""No Todoist call runs inside a database transaction (docs/hardening.md #7): while the fake
Todoist holds a request unanswered, the service has no transaction open. One connection per
user holds under concurrent exchanges (docs/hardening.md #24)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.service.todoist.builders import add_state, connect, connection_row
from tests.service.todoist.conftest import TodoistFactory, TodoistStack, alice_user
from tests.support.builders import alice
from tests.support.database import TestDatabase
from tests.support.fake_clock import T0
from tests.support.grpc_client import service
from tests.support.messages_builders import web_conversation
from tests.support.waiting import eventually
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2 as pb


def open_transactions(db: TestDatabase) -> list[tuple[Any, ...]]:
    """Sessions of the todoist role inside a transaction, other than this query's."""
    return db.sql(
        "SELECT pid, state, query FROM pg_stat_activity"
        " WHERE datname = %s AND usename = 'zenthor_todoist' AND xact_start IS NOT NULL AND pid <> pg_backend_pid()",
        (db.name,),
    )


@pytest.fixture
async def quiet(todoist_factory: TodoistFactory) -> TodoistStack:
    """The service with its outbox relay idle unless kicked: its own short transactions would
    otherwise show up beside the one under test."""
    return await todoist_factory(outbox_poll_s=3600)


async def test_no_transaction_is_open_while_todoist_answers_a_task_call(quiet: TodoistStack) -> None:
    todoist = quiet
    alice_id = alice(todoist.db)
    todoist.fake.add_account(token="tok1")
    connect(todoist.db, alice_id, "tok1", now=T0)
    w1 = await web_conversation(todoist.messages.stub, alice_user(todoist.issuer))
    todoist.fake.hold("POST", "/api/v1/tasks")

    call = asyncio.ensure_future(
        todoist.stub.CreateTodoistTask(pb.CreateTodoistTaskRequest(conversation_id=w1.id, content="Buy milk"), metadata=service())
    )
    try:
        await eventually(lambda: bool(todoist.fake.requests_to("POST", "/api/v1/tasks")), timeout_s=10)
        assert open_transactions(todoist.db) == []
    finally:
        todoist.fake.release("POST", "/api/v1/tasks")
    assert (await call).task.content == "Buy milk"


async def test_no_transaction_is_open_while_todoist_exchanges_a_code(quiet: TodoistStack) -> None:
    todoist = quiet
    alice_id = alice(todoist.db)
    state = add_state(todoist.db, alice_id, created_at=T0, status="claimed")
    todoist.fake.issue_code(todoist.fake.add_account(token="tok1"), "c0de")
    todoist.fake.hold("POST", "/oauth/access_token")

    call = asyncio.ensure_future(
        todoist.stub.ExchangeTodoistOAuthCode(pb.ExchangeTodoistOAuthCodeRequest(state=state, code="c0de"), metadata=service())
    )
    try:
        await eventually(lambda: bool(todoist.fake.requests_to("POST", "/oauth/access_token")), timeout_s=10)
        assert open_transactions(todoist.db) == []
    finally:
        todoist.fake.release("POST", "/oauth/access_token")
    assert (await call).status.connected
    # The workflow's activity may run again (a lost reply): it answers from the database.
    again = await todoist.stub.ExchangeTodoistOAuthCode(
        pb.ExchangeTodoistOAuthCodeRequest(state=state, code="c0de"), metadata=service()
    )
    assert again.status.connected and len(todoist.fake.requests_to("POST", "/oauth/access_token")) == 1


async def test_concurrent_exchanges_for_one_user_leave_one_connection_and_revoke_the_other_token(
    todoist: TodoistStack,
) -> None:
    alice_id = alice(todoist.db)
    tokens = [f"tok{i}" for i in range(4)]
    requests = []
    for token in tokens:
        state = add_state(todoist.db, alice_id, created_at=T0, status="claimed")
        todoist.fake.issue_code(todoist.fake.add_account(token=token), f"code-{token}")
        requests.append(pb.ExchangeTodoistOAuthCodeRequest(state=state, code=f"code-{token}"))

    replies = await asyncio.gather(*(todoist.stub.ExchangeTodoistOAuthCode(r, metadata=service()) for r in requests))

    assert all(r.status.connected for r in replies)
    assert todoist.db.sql("SELECT count(*) FROM todoist.connections") == [(1,)]
    row = connection_row(todoist.db, alice_id)
    assert row is not None
    # Every token but the stored one is revoked: none is left live and unknown to us.
    await eventually(lambda: len(todoist.fake.revoked) == 3, timeout_s=15)
    assert sorted([*todoist.fake.revoked, *todoist.fake.accounts]) == sorted(tokens)
