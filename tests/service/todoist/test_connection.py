"""Scenario K.104 with the fix (docs/hardening.md #36): disconnect deletes the connection and
its token is revoked at Todoist through the outbox; tokens are sealed at rest, under a key that
can be rotated; the status is also a live watch."""

from __future__ import annotations

from datetime import timedelta

import grpc
from cryptography.fernet import Fernet

from services.todoist.domain.tokens import key_id
from tests.service.todoist.builders import (
    complete_oauth,
    connect,
    connection_row,
    start_oauth,
    state_of,
    status,
)
from tests.service.todoist.conftest import TOKEN_KEY, TodoistFactory, TodoistStack, alice_user
from tests.support.builders import alice
from tests.support.fake_clock import T0
from tests.support.grpc_client import service
from tests.support.messages_builders import web_conversation
from tests.support.streams import next_message, read_until
from tests.support.waiting import eventually
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2 as pb


async def disconnect(stack: TodoistStack) -> bool:
    reply = await stack.stub.DisconnectTodoist(pb.DisconnectTodoistRequest(), metadata=alice_user(stack.issuer))
    return bool(reply.disconnected)


async def test_status_of_a_user_without_connection_is_not_connected(todoist: TodoistStack) -> None:
    alice(todoist.db)
    assert await status(todoist) == pb.TodoistConnectionStatus(connected=False)


async def test_k104_disconnect_deletes_the_connection_and_revokes_the_token_at_todoist(todoist: TodoistStack) -> None:
    alice_id = alice(todoist.db)
    token = todoist.fake.add_account(token="tok1")
    connect(todoist.db, alice_id, token, now=T0)
    assert (await status(todoist)).connected

    assert await disconnect(todoist) is True

    assert await status(todoist) == pb.TodoistConnectionStatus(connected=False)
    assert connection_row(todoist.db, alice_id) is None
    await eventually(lambda: todoist.fake.revoked == ["tok1"], timeout_s=10)
    (revoke,) = todoist.fake.requests_to("POST", "/api/v1/access_tokens/revoke")
    # The token travels in the body, never in a URL a proxy or access log could keep.
    assert revoke.json() == {"client_id": "tdcid", "client_secret": "tdsec", "access_token": "tok1"}
    assert "tok1" not in revoke.raw_path and not revoke.query
    assert await disconnect(todoist) is False


async def test_a_revocation_todoist_cannot_take_now_is_redriven_until_it_can(todoist: TodoistStack) -> None:
    alice_id = alice(todoist.db)
    connect(todoist.db, alice_id, todoist.fake.add_account(token="tok1"), now=T0)
    # Two rounds of four 503s: the first two deliveries fail, the outbox's third revokes it.
    todoist.fake.script("POST", "/api/v1/access_tokens/revoke", 503, "down", times=8)

    assert await disconnect(todoist) is True

    def delivered_once_time_passes() -> bool:
        todoist.clock.advance(minutes=5)  # past any backoff of the relay (the service's clock)
        return todoist.db.sql(
            "SELECT attempts FROM todoist.outbox WHERE topic = 'todoist.revoke_token' AND delivered_at IS NOT NULL"
        ) == [(3,)]

    await eventually(delivered_once_time_passes, timeout_s=30)
    assert todoist.fake.revoked == ["tok1"]
    assert len(todoist.fake.requests_to("POST", "/api/v1/access_tokens/revoke")) == 9


async def test_reconnecting_revokes_the_token_it_replaces(oauth: TodoistStack) -> None:
    alice_id = alice(oauth.db)
    connect(oauth.db, alice_id, oauth.fake.add_account(token="old-token"), now=T0)
    oauth.fake.issue_code(oauth.fake.add_account(token="new-token"), "c0de")

    await complete_oauth(oauth, "c0de", state_of(await start_oauth(oauth)))

    await eventually(lambda: oauth.fake.revoked == ["old-token"], timeout_s=10)
    row = connection_row(oauth.db, alice_id)
    assert row is not None
    assert Fernet(TOKEN_KEY.encode()).decrypt(row["token_ciphertext"].encode()) == b"new-token"


async def test_the_token_is_sealed_in_every_table_of_the_service(oauth: TodoistStack) -> None:
    alice(oauth.db)
    oauth.fake.issue_code(oauth.fake.add_account(token="plain-token-7f3a"), "c0de")
    await complete_oauth(oauth, "c0de", state_of(await start_oauth(oauth)))
    await disconnect(oauth)  # puts the sealed token in the outbox too
    await eventually(lambda: oauth.fake.revoked == ["plain-token-7f3a"], timeout_s=10)

    dump = oauth.db.sql(
        "SELECT string_agg(t::text, ' ') FROM ("
        " SELECT row_to_json(c)::text AS t FROM todoist.connections c"
        " UNION ALL SELECT row_to_json(s)::text FROM todoist.oauth_states s"
        " UNION ALL SELECT row_to_json(o)::text FROM todoist.outbox o) AS rows"
    )[0][0]
    assert "plain-token" not in dump and "todoist.revoke_token" in dump


async def test_a_token_sealed_under_a_retired_key_is_resealed_under_the_new_one(
    todoist_factory: TodoistFactory,
) -> None:
    new_key = Fernet.generate_key().decode()
    stack = await todoist_factory(todoist_token_key=f"{new_key},{TOKEN_KEY}")  # rotated: new key first
    alice_id = alice(stack.db)
    connect(stack.db, alice_id, stack.fake.add_account(token="tok1"), key=TOKEN_KEY, now=T0)
    w1 = await web_conversation(stack.messages.stub, alice_user(stack.issuer))

    reply = await stack.stub.ListTodoistTasks(pb.ListTodoistTasksRequest(conversation_id=w1.id), metadata=service())

    assert reply.connected
    row = connection_row(stack.db, alice_id)
    assert row is not None and row["token_key_id"] == key_id(new_key)
    assert Fernet(new_key.encode()).decrypt(row["token_ciphertext"].encode()) == b"tok1"


async def test_status_watch_sees_the_connection_arrive_and_leave(oauth: TodoistStack) -> None:
    alice(oauth.db)
    oauth.fake.issue_code(oauth.fake.add_account(email="alice@todo.com"), "c0de")
    stream = oauth.stub.WatchTodoistConnectionStatus(
        pb.WatchTodoistConnectionStatusRequest(), metadata=alice_user(oauth.issuer)
    )
    try:
        first = await next_message(stream)
        assert not first.status.connected
        oauth.clock.advance(seconds=1)
        await complete_oauth(oauth, "c0de", state_of(await start_oauth(oauth)))
        second = await read_until(stream, lambda r: r.status.connected)
        assert second.status.account_email == "alice@todo.com"
        await disconnect(oauth)
        await read_until(stream, lambda r: not r.status.connected)
    finally:
        stream.cancel()


async def test_an_unreadable_token_is_a_failed_precondition_not_a_crash(todoist_factory: TodoistFactory) -> None:
    stack = await todoist_factory()
    alice_id = alice(stack.db)
    connect(stack.db, alice_id, "tok1", key=Fernet.generate_key().decode(), now=T0 - timedelta(days=1))
    w1 = await web_conversation(stack.messages.stub, alice_user(stack.issuer))
    try:
        await stack.stub.ListTodoistTasks(pb.ListTodoistTasksRequest(conversation_id=w1.id), metadata=service())
    except grpc.aio.AioRpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "reconnect Todoist" in (e.details() or "")
    else:
        raise AssertionError("a token no configured key can open was used")
