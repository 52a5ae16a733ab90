"""Scenarios K.97–K.103 over gRPC with the fixes (docs/hardening.md #7, #8): the OAuth flow runs
as TodoistOAuthWorkflow on the Temporal dev server, the exchange reaches the fake Todoist over
HTTP, and a state is single-use whether the flow succeeds or fails."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from cryptography.fernet import Fernet
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.worker import Replayer

from tests.service.todoist.builders import (
    add_state,
    callback,
    complete_oauth,
    connection_row,
    start_oauth,
    state_of,
    states,
    status,
)
from tests.service.todoist.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    TOKEN_KEY,
    TodoistFactory,
    TodoistStack,
    alice_user,
)
from tests.support.builders import alice, bob
from tests.support.fake_clock import T0
from tests.support.grpc_client import rpc_error
from workflows.todoist_oauth import TodoistOAuthWorkflow
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2 as pb

NOT_CONFIGURED = (
    "Todoist OAuth is not configured. Missing TODOIST_CLIENT_ID, TODOIST_CLIENT_SECRET, or TODOIST_OAUTH_REDIRECT_URI."
)
INVALID = "Invalid Todoist OAuth state."
EXPIRED = "Todoist OAuth state expired. Please try connecting again."


def workflow_client(stack: TodoistStack) -> Client:
    client: Client = stack.extra["client"]
    return client


async def test_k97_start_without_oauth_configuration_fails_and_writes_nothing(todoist_factory: TodoistFactory) -> None:
    stack = await todoist_factory(todoist_client_secret=None)
    alice(stack.db)
    error = await rpc_error(start_oauth(stack))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == NOT_CONFIGURED
    assert states(stack.db) == []


async def test_k98_start_replaces_the_old_state_and_builds_the_authorize_url(oauth: TodoistStack) -> None:
    alice_id = alice(oauth.db)
    old = add_state(oauth.db, alice_id, created_at=T0 - timedelta(minutes=1))

    started = await start_oauth(oauth)

    state = state_of(started)
    assert state.startswith("todoist_") and state != old
    assert started.authorization_url == (
        f"https://todoist.com/oauth/authorize?client_id={CLIENT_ID}&scope=data%3Aread_write&state={state}"
        "&redirect_uri=https%3A%2F%2Fapp.example.com%2Fsettings"
    )
    assert started.expire_time.ToDatetime().replace(tzinfo=T0.tzinfo) == T0 + timedelta(minutes=10)
    assert states(oauth.db) == [(state, alice_id, "open", T0, T0 + timedelta(minutes=10))]
    # Its workflow runs under a readable id, visible in the Temporal UI.
    described = await workflow_client(oauth).get_workflow_handle(f"todoist-oauth-{state}").describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    assert described.workflow_type == "TodoistOAuthWorkflow"


async def test_k99_happy_path_connects_through_the_workflow_and_consumes_the_state(oauth: TodoistStack) -> None:
    alice_id = alice(oauth.db)
    token = oauth.fake.add_account(email="alice@todo.com", full_name="Alice T", token="tok1")
    oauth.fake.issue_code(token, "c0de")
    state = state_of(await start_oauth(oauth))
    oauth.clock.advance(minutes=2)

    reply = await complete_oauth(oauth, "c0de", state)

    (exchange,) = oauth.fake.requests_to("POST", "/oauth/access_token")
    assert exchange.headers["content-type"] == "application/x-www-form-urlencoded"
    assert exchange.form() == {
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "code": "c0de", "redirect_uri": REDIRECT_URI,
    }
    assert reply.status.connected
    assert (reply.status.account_email, reply.status.account_name, reply.status.scope) == (
        "alice@todo.com", "Alice T", "data:read_write",
    )
    assert reply.status.update_time.ToDatetime().replace(tzinfo=T0.tzinfo) == T0 + timedelta(minutes=2)
    assert await status(oauth) == reply.status
    assert states(oauth.db) == []  # consumed
    row = connection_row(oauth.db, alice_id)
    assert row is not None and row["token_type"] == "Bearer"
    # Sealed at rest (docs/hardening.md #36): not the token, but the token under TODOIST_TOKEN_KEY.
    assert "tok1" not in row["token_ciphertext"]
    assert Fernet(TOKEN_KEY.encode()).decrypt(row["token_ciphertext"].encode()) == b"tok1"
    history = await workflow_client(oauth).get_workflow_handle(f"todoist-oauth-{state}").fetch_history()
    await Replayer(workflows=[TodoistOAuthWorkflow]).replay_workflow(history)


async def test_k99_a_second_completion_with_the_same_state_fails(oauth: TodoistStack) -> None:
    alice(oauth.db)
    oauth.fake.issue_code(oauth.fake.add_account(), "c0de")
    state = state_of(await start_oauth(oauth))
    await complete_oauth(oauth, "c0de", state)

    error = await rpc_error(complete_oauth(oauth, "c0de", state))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, INVALID)
    assert len(oauth.fake.requests_to("POST", "/oauth/access_token")) == 1


async def test_two_simultaneous_callbacks_with_one_state_connect_once(oauth: TodoistStack) -> None:
    alice(oauth.db)
    oauth.fake.issue_code(oauth.fake.add_account(), "c0de")
    state = state_of(await start_oauth(oauth))

    results = await asyncio.gather(
        *(complete_oauth(oauth, "c0de", state) for _ in range(3)), return_exceptions=True
    )

    connected = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(connected) == 1 and len(refused) == 2
    assert all((e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, INVALID) for e in refused)
    assert len(oauth.fake.requests_to("POST", "/oauth/access_token")) == 1


async def test_k100_unknown_or_another_users_state_is_invalid_and_calls_nothing(oauth: TodoistStack) -> None:
    alice(oauth.db)
    bob_id = bob(oauth.db)
    error = await rpc_error(complete_oauth(oauth, "c", "todoist_bogus"))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, INVALID)

    bobs = add_state(oauth.db, bob_id, created_at=T0)
    error = await rpc_error(complete_oauth(oauth, "c", bobs))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, INVALID)
    assert oauth.fake.requests == []
    assert [s[2] for s in states(oauth.db)] == ["open"]  # Bob's flow is untouched


async def test_k101_expired_state_fails_is_gone_and_then_is_invalid(oauth: TodoistStack) -> None:
    alice(oauth.db)
    state = state_of(await start_oauth(oauth))
    oauth.clock.advance(minutes=10, milliseconds=1)

    error = await rpc_error(complete_oauth(oauth, "c0de", state))
    assert (error.code(), error.details()) == (grpc.StatusCode.FAILED_PRECONDITION, EXPIRED)
    assert oauth.fake.requests == []
    assert states(oauth.db) == []  # the fix: consumed durably, not left for the cleanup
    again = await rpc_error(complete_oauth(oauth, "c0de", state))
    assert (again.code(), again.details()) == (grpc.StatusCode.NOT_FOUND, INVALID)


async def test_a_state_at_exactly_its_expiry_is_still_valid(oauth: TodoistStack) -> None:
    alice(oauth.db)
    oauth.fake.issue_code(oauth.fake.add_account(), "c0de")
    state = state_of(await start_oauth(oauth))
    oauth.clock.advance(minutes=10)
    assert (await complete_oauth(oauth, "c0de", state)).status.connected


async def test_k102_refused_exchange_keeps_the_original_message_and_consumes_the_state(oauth: TodoistStack) -> None:
    alice_id = alice(oauth.db)
    oauth.fake.script("POST", "/oauth/access_token", 400, "x" * 350)
    state = state_of(await start_oauth(oauth))

    error = await rpc_error(complete_oauth(oauth, "c0de", state))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "Failed to exchange Todoist OAuth code: " + "x" * 300 + "..."
    assert connection_row(oauth.db, alice_id) is None
    assert states(oauth.db) == []
    again = await rpc_error(complete_oauth(oauth, "c0de", state))
    assert (again.code(), again.details()) == (grpc.StatusCode.NOT_FOUND, INVALID)
    assert len(oauth.fake.requests_to("POST", "/oauth/access_token")) == 1  # a refusal is not retried


async def test_invalid_grant_is_not_retried_and_consumes_the_state(oauth: TodoistStack) -> None:
    alice(oauth.db)
    state = state_of(await start_oauth(oauth))
    error = await rpc_error(complete_oauth(oauth, "never-issued", state))  # the fake answers invalid_grant
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "invalid_grant" in (error.details() or "")
    assert len(oauth.fake.requests_to("POST", "/oauth/access_token")) == 1
    assert states(oauth.db) == []


async def test_k102_a_token_response_without_access_token_fails(oauth: TodoistStack) -> None:
    alice_id = alice(oauth.db)
    oauth.fake.script("POST", "/oauth/access_token", 200, {})
    state = state_of(await start_oauth(oauth))
    error = await rpc_error(complete_oauth(oauth, "c0de", state))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION, "Todoist OAuth did not return an access token.",
    )
    assert connection_row(oauth.db, alice_id) is None and states(oauth.db) == []


async def test_k103_a_failing_profile_still_connects_without_account_fields(oauth: TodoistStack) -> None:
    alice(oauth.db)
    oauth.fake.issue_code(oauth.fake.add_account(), "c0de")
    oauth.fake.script("GET", "/api/v1/user", 500, "boom", times=4)
    state = state_of(await start_oauth(oauth))

    reply = await complete_oauth(oauth, "c0de", state)

    assert reply.status.connected and reply.status.scope == "data:read_write"
    assert not reply.status.HasField("account_email") and not reply.status.HasField("account_name")


async def test_todoist_down_during_the_exchange_is_retried_by_the_workflow(oauth: TodoistStack) -> None:
    alice(oauth.db)
    oauth.fake.issue_code(oauth.fake.add_account(), "c0de")
    # Four 503s spend one activity attempt's HTTP retries; the activity's retry then succeeds.
    oauth.fake.script("POST", "/oauth/access_token", 503, "down", times=4)
    state = state_of(await start_oauth(oauth))

    reply = await complete_oauth(oauth, "c0de", state)

    assert reply.status.connected
    assert len(oauth.fake.requests_to("POST", "/oauth/access_token")) == 5
    history = await workflow_client(oauth).get_workflow_handle(f"todoist-oauth-{state}").fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt for e in history.events if e.HasField("activity_task_started_event_attributes")
    ]
    assert attempts[0] == 2  # exchange_code needed its second attempt; the discard its first
    assert len(oauth.sleeps.waits) == 3  # the first attempt's own HTTP retries


async def test_a_denied_callback_ends_the_flow_and_consumes_the_state(oauth: TodoistStack) -> None:
    alice_id = alice(oauth.db)
    state = state_of(await start_oauth(oauth))
    reply = await callback(oauth, state, error="access_denied")
    assert not reply.status.connected
    assert reply.user_id.startswith("usr_")
    assert states(oauth.db) == [] and connection_row(oauth.db, alice_id) is None
    assert oauth.fake.requests == []


async def test_a_new_start_ends_the_previous_flow(oauth: TodoistStack) -> None:
    alice(oauth.db)
    first = state_of(await start_oauth(oauth))
    second = state_of(await start_oauth(oauth))
    handle = workflow_client(oauth).get_workflow_handle(f"todoist-oauth-{first}")
    async with asyncio.timeout(30):
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    error = await rpc_error(complete_oauth(oauth, "c0de", first))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, INVALID)
    assert [s[0] for s in states(oauth.db)] == [second]


async def test_without_temporal_a_start_fails_and_leaves_no_usable_state(todoist_factory: TodoistFactory) -> None:
    stack = await todoist_factory()  # Temporal unreachable
    alice(stack.db)
    error = await rpc_error(start_oauth(stack))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert states(stack.db) == []


async def test_users_calls_need_a_user_and_service_calls_the_key(oauth: TodoistStack) -> None:
    alice(oauth.db)
    anonymous = await rpc_error(start_oauth(oauth, user=()))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    # The callback and the workflow's RPCs are the service key's alone.
    for call in (
        oauth.stub.SubmitTodoistOAuthCallback(pb.SubmitTodoistOAuthCallbackRequest(state="todoist_x", code="c"), metadata=alice_user(oauth.issuer)),
        oauth.stub.ExchangeTodoistOAuthCode(pb.ExchangeTodoistOAuthCodeRequest(state="todoist_x", code="c"), metadata=alice_user(oauth.issuer)),
        oauth.stub.DiscardTodoistOAuthState(pb.DiscardTodoistOAuthStateRequest(state="todoist_x"), metadata=alice_user(oauth.issuer)),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.UNAUTHENTICATED
