"""Rate limits on the real messages server (and identity): a person's sends and watch streams,
and the service key's budget, refused with RESOURCE_EXHAUSTED and RetryInfo; the token buckets
run on a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from services.identity.app import build_server as build_identity
from services.messages.app import build_server as build_messages
from tests.service.conftest import Running, start, stop
from tests.service.messages.conftest import People
from tests.support.database import TestDatabase
from tests.support.grpc_client import rpc_error, service
from tests.support.jwks import FakeClerkIssuer
from tests.support.messages_builders import web_conversation
from tests.support.ports import free_port
from tests.support.rate_limits import BucketClock, retry_delay_s
from zenthor.config import ServiceName
from zenthor.gen.zenthor.identity.v1 import identity_pb2, identity_pb2_grpc
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc

READ_TIMEOUT_S = 20.0
Factory = Callable[..., Awaitable[Running]]


@pytest.fixture
def bucket_clock() -> BucketClock:
    return BucketClock()


@pytest.fixture
async def limited_messages(
    identity: Running, settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, bucket_clock: BucketClock
) -> AsyncIterator[Factory]:
    """A messages server with the given rate-limit settings, its buckets on `bucket_clock`."""
    started: list[Running] = []

    async def make(identity_addr: str | None = None, **limits: Any) -> Running:
        settings = settings_for(
            ServiceName.MESSAGES,
            identity_addr=identity_addr or f"127.0.0.1:{identity.server.port}",
            agent_queue_addr=f"127.0.0.1:{free_port()}",  # nothing there: jobs wait in the outbox
            **limits,
        )
        server = await build_messages(settings)
        server.rate_limits.use_clock(bucket_clock)
        running = await start(server, messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer)
        started.append(running)
        return running

    yield make
    for running in started:
        await stop(running)


def send(messages: Running, who: Any, conversation_id: str, content: str) -> Any:
    """The SendMessage call, to await or to expect a refusal of."""
    return messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=conversation_id, content=content), metadata=who)


async def listed(messages: Running, who: Any, conversation_id: str) -> list[str]:
    reply = await messages.stub.ListMessages(pb.ListMessagesRequest(conversation_id=conversation_id), metadata=who)
    return [m.content for m in reply.messages]


async def first_of(call: Any) -> Any:
    """The first response of a stream (its current state), then the stream is closed."""
    try:
        response = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
        assert response is not grpc.aio.EOF, "the stream ended"
        return response
    finally:
        call.cancel()


async def test_a_flood_of_sends_is_refused_with_retry_info_until_a_token_returns(
    limited_messages: Factory, people: People, bucket_clock: BucketClock
) -> None:
    messages = await limited_messages(rate_limit_sends_per_minute=6, rate_limit_sends_burst=3)  # a token every 10 s
    w1 = await web_conversation(messages.stub, people.alice)
    for i in range(3):
        await await_send(messages, people.alice, w1.id, f"burst {i}")
    refused = await rpc_error(send(messages, people.alice, w1.id, "one too many"))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay_s(refused) == pytest.approx(10.0)
    assert "messages sent" in (refused.details() or "")
    assert await listed(messages, people.alice, w1.id) == ["burst 0", "burst 1", "burst 2"], "a refused send wrote nothing"

    # Another person has their own budget.
    w2 = await web_conversation(messages.stub, people.bob)
    await await_send(messages, people.bob, w2.id, "bob is fine")

    # Refill: 9 s later the wait is 1 s; at 10 s the send goes through, then the bucket is empty again.
    bucket_clock.advance(9)
    assert retry_delay_s(await rpc_error(send(messages, people.alice, w1.id, "too soon"))) == pytest.approx(1.0)
    bucket_clock.advance(1)
    await await_send(messages, people.alice, w1.id, "after the wait")
    assert retry_delay_s(await rpc_error(send(messages, people.alice, w1.id, "again"))) == pytest.approx(10.0)
    assert (await listed(messages, people.alice, w1.id))[-1] == "after the wait"


async def await_send(messages: Running, who: Any, conversation_id: str, content: str) -> None:
    await send(messages, who, conversation_id, content)


async def test_a_flood_of_watch_streams_is_refused_at_open_with_retry_info(
    limited_messages: Factory, people: People, bucket_clock: BucketClock
) -> None:
    messages = await limited_messages(rate_limit_watch_streams_per_minute=2, rate_limit_watch_streams_burst=2)
    w1 = await web_conversation(messages.stub, people.alice)
    await first_of(messages.stub.WatchConversationList(pb.WatchConversationListRequest(), metadata=people.alice))
    await first_of(messages.stub.WatchConversation(pb.WatchConversationRequest(conversation_id=w1.id), metadata=people.alice))
    # Every Watch… of the person spends the same budget, whichever stream it opens.
    for call in (
        messages.stub.WatchConversationList(pb.WatchConversationListRequest(), metadata=people.alice),
        messages.stub.WatchConversation(pb.WatchConversationRequest(conversation_id=w1.id), metadata=people.alice),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await first_of(call)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_delay_s(refused.value) == pytest.approx(30.0)
        assert "watch streams" in (refused.value.details() or "")
    # Opening streams is limited, not using them: the sends path is untouched.
    await await_send(messages, people.alice, w1.id, "still sending")
    await first_of(messages.stub.WatchConversationList(pb.WatchConversationListRequest(), metadata=people.bob))
    bucket_clock.advance(30)
    reply = await first_of(messages.stub.WatchConversation(pb.WatchConversationRequest(conversation_id=w1.id), metadata=people.alice))
    assert [m.content for m in reply.messages] == ["still sending"]


async def test_with_the_limits_off_nothing_is_limited(limited_messages: Factory, people: People) -> None:
    messages = await limited_messages()  # the defaults: every limit off
    assert not messages.server.rate_limits.any_enabled
    w1 = await web_conversation(messages.stub, people.alice)
    await asyncio.gather(*(await_send(messages, people.alice, w1.id, f"m{i}") for i in range(40)))
    for _ in range(40):
        await first_of(messages.stub.WatchConversation(pb.WatchConversationRequest(conversation_id=w1.id), metadata=people.alice))
    assert len(await listed(messages, people.alice, w1.id)) == 40


async def test_the_service_key_budget_refuses_a_flood_of_service_calls(
    limited_messages: Factory, people: People, bucket_clock: BucketClock
) -> None:
    messages = await limited_messages(rate_limit_service_calls_per_s=5, rate_limit_service_burst=5)
    request = pb.BatchGetConversationsRequest(ids=[])
    for _ in range(5):
        await messages.stub.BatchGetConversations(request, metadata=service())
    refused = await rpc_error(messages.stub.BatchGetConversations(request, metadata=service()))
    assert retry_delay_s(refused) == pytest.approx(0.2)
    # People are not charged for the key's budget.
    await web_conversation(messages.stub, people.alice)
    bucket_clock.advance(0.2)
    await messages.stub.BatchGetConversations(request, metadata=service())


async def test_principal_resolution_is_not_charged_to_the_service_key(
    limited_messages: Factory,
    people: People,
    settings_for: Any,
    db: TestDatabase,
    clerk_issuer: FakeClerkIssuer,
    bucket_clock: BucketClock,
) -> None:
    # An identity server whose service-key budget is one call, spent at once.
    settings = settings_for(ServiceName.IDENTITY, rate_limit_service_calls_per_s=1, rate_limit_service_burst=1)
    server = await build_identity(settings)
    server.rate_limits.use_clock(bucket_clock)
    identity = await start(server, identity_pb2_grpc.IdentityServiceStub, settings, db, clerk_issuer)
    try:
        batch = identity_pb2.BatchGetUsersRequest(ids=[])
        await identity.stub.BatchGetUsers(batch, metadata=service())
        assert retry_delay_s(await rpc_error(identity.stub.BatchGetUsers(batch, metadata=service()))) == pytest.approx(1.0)
        # Every user call on messages resolves its caller through identity (no principal cache
        # here): those calls go on, because resolution is charged to the call it serves.
        messages = await limited_messages(identity_addr=f"127.0.0.1:{identity.server.port}")
        for i in range(5):
            await web_conversation(messages.stub, people.alice, title=f"t{i}")
    finally:
        await stop(identity)
