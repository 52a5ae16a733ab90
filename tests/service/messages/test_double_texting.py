"""Double texting (docs/double-texting.md): two messages sent 10 ms apart into one conversation,
with each strategy, answered by the reference runtime's real job loop; the jobs and the messages
that result. Real messages and agent_queue servers, each pointed at the other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from examples.runtime.responder import Turn, echo_text
from tests.service.agent_queue import conftest as agent_queue_fixtures
from tests.service.agent_queue.conftest import WithMessages
from tests.service.messages.conftest import People
from tests.support.grpc_client import rpc_error, service
from tests.support.runtime_loop import running_runtime
from tests.support.streams import read_until
from tests.support.waiting import eventually
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as aq_pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb

APART_S = 0.010  # the two sends of every scenario, 10 ms apart

# Both servers, each pointed at the other (the agent_queue tests' fixtures).
agent_queue_factory = agent_queue_fixtures.agent_queue_factory
with_messages = agent_queue_fixtures.with_messages


@pytest.fixture
async def runtime(with_messages: WithMessages) -> AsyncIterator[list[str]]:
    async with running_runtime(
        with_messages.agent_queue.server.port, with_messages.messages.server.port, chunk_delay_s=0.05
    ) as log:
        yield log


async def conversation(stack: WithMessages, people: People, strategy: int | None = None) -> str:
    created = (await stack.messages.stub.CreateConversation(pb.CreateConversationRequest(), metadata=people.alice)).conversation
    assert created.double_texting == pb.DOUBLE_TEXTING_ENQUEUE
    if strategy is not None:
        changed = await stack.messages.stub.SetConversationDoubleTexting(
            pb.SetConversationDoubleTextingRequest(id=created.id, double_texting=strategy), metadata=people.alice
        )
        assert changed.conversation.double_texting == strategy
    return created.id


async def send(stack: WithMessages, people: People, conversation_id: str, text: str, strategy: int = 0) -> pb.Message:
    reply = await stack.messages.stub.SendMessage(
        pb.SendMessageRequest(conversation_id=conversation_id, content=text, double_texting=strategy),
        metadata=people.alice,
    )
    return reply.message


async def two_sends(stack: WithMessages, people: People, conversation_id: str, strategy: int = 0) -> tuple[Any, Any]:
    """The first message, and 10 ms later the second (a message, or the error it got)."""
    first = await send(stack, people, conversation_id, "first")
    await asyncio.sleep(APART_S)
    try:
        second: Any = await send(stack, people, conversation_id, "second", strategy)
    except grpc.aio.AioRpcError as e:
        second = e
    return first, second


def jobs(stack: WithMessages, conversation_id: str) -> dict[str, str]:
    """message id → its job's status."""
    return {
        ids.MESSAGE.format(message_id): status
        for message_id, status in stack.agent_queue.db.sql(
            "SELECT message_id, status FROM agent_queue.jobs WHERE conversation_id = %s ORDER BY id",
            (ids.CONVERSATION.parse(conversation_id, "id"),),
        )
    }


def messages(stack: WithMessages, conversation_id: str) -> list[tuple[str, str, str, bool]]:
    """(role, status, content, streaming) oldest first."""
    return [
        (role, status, content, streaming)
        for role, status, content, streaming in stack.messages.db.sql(
            "SELECT role, status, content, streaming FROM messages.messages WHERE conversation_id = %s ORDER BY id",
            (ids.CONVERSATION.parse(conversation_id, "id"),),
        )
    ]


def replies(stack: WithMessages, conversation_id: str) -> list[tuple[str, str]]:
    return [(status, content) for role, status, content, _ in messages(stack, conversation_id) if role == "assistant"]


def echo(said: str, nth: int) -> str:
    """The runtime's whole reply to `said`, the conversation's `nth` user message."""
    return echo_text([Turn("user", "x")] * (nth - 1) + [Turn("user", said)])


def settled(stack: WithMessages, conversation_id: str, expected_jobs: int) -> bool:
    found = jobs(stack, conversation_id)
    return len(found) == expected_jobs and all(s in ("completed", "cancelled") for s in found.values())


async def test_enqueue_answers_both_messages_in_order(with_messages: WithMessages, people: People, runtime: list[str]) -> None:
    stack = with_messages
    c = await conversation(stack, people)
    first, second = await two_sends(stack, people, c)

    await eventually(lambda: settled(stack, c, 2))
    assert jobs(stack, c) == {first.id: "completed", second.id: "completed"}
    # Two runs, one per message, one after the other; the second saw both messages. (The echo
    # answers the conversation's last user message: the first run may already see the second.)
    first_reply, second_reply = replies(stack, c)
    assert first_reply in (("sent", echo("first", 1)), ("sent", echo("second", 2)))
    assert second_reply == ("sent", echo("second", 2))


async def test_reject_refuses_the_second_message_while_the_first_is_answered(
    with_messages: WithMessages, people: People
) -> None:
    stack = with_messages
    c = await conversation(stack, people, pb.DOUBLE_TEXTING_REJECT)
    first, second = await two_sends(stack, people, c)

    # Refused while the first's job is queued (its EnqueueJob may still be in the outbox).
    assert isinstance(second, grpc.aio.AioRpcError) and second.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [m[2] for m in messages(stack, c)] == ["first"]  # nothing of the second was written
    # Still refused once agent_queue holds the job (the other source of "busy").
    await eventually(lambda: jobs(stack, c) == {first.id: "pending"})
    again = await rpc_error(send(stack, people, c, "third"))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A per-send ENQUEUE overrides the setting.
    queued = await send(stack, people, c, "fourth", pb.DOUBLE_TEXTING_ENQUEUE)
    await eventually(lambda: len(jobs(stack, c)) == 2)

    # Once the agent is done, a message is accepted again.
    async with running_runtime(stack.agent_queue.server.port, stack.messages.server.port, chunk_delay_s=0.01):
        await eventually(lambda: settled(stack, c, 2))
    assert jobs(stack, c) == {first.id: "completed", queued.id: "completed"}
    accepted = await send(stack, people, c, "fifth")
    assert accepted.content == "fifth"


async def test_interrupt_cancels_the_first_run_and_answers_the_second_on_the_conversation_as_it_is(
    with_messages: WithMessages, people: People, runtime: list[str]
) -> None:
    stack = with_messages
    c = await conversation(stack, people)
    first, second = await two_sends(stack, people, c, pb.DOUBLE_TEXTING_INTERRUPT)

    await eventually(lambda: settled(stack, c, 2))
    # The first job was cancelled (pending or mid-reply, whichever the 10 ms allowed), the second
    # answered; its reply sees both user messages.
    assert jobs(stack, c) == {first.id: "cancelled", second.id: "completed"}
    finished = replies(stack, c)
    assert finished[-1] == ("sent", echo("second", 2))
    # If the first run had started, its partial reply stays, failed.
    assert all(status == "failed" for status, _ in finished[:-1])
    assert "fail:backend_" not in " ".join(runtime)


async def test_rollback_deletes_the_interrupted_runs_partial_reply(
    with_messages: WithMessages, people: People
) -> None:
    stack = with_messages
    c = await conversation(stack, people, pb.DOUBLE_TEXTING_ROLLBACK)
    watch = stack.messages.stub.WatchConversation(pb.WatchConversationRequest(conversation_id=c), metadata=people.alice)
    try:
        # A slow runtime, so the first reply is mid-stream when the second message comes.
        async with running_runtime(stack.agent_queue.server.port, stack.messages.server.port, chunk_delay_s=0.3):
            first = await send(stack, people, c, "first")
            partial = await read_until(watch, lambda r: any(m.streaming and m.content for m in r.messages))
            (placeholder,) = [m.id for m in partial.messages if m.streaming]
            await asyncio.sleep(APART_S)
            second = await send(stack, people, c, "second")

            # The watcher is told the partial reply is gone, in change order.
            gone = await read_until(watch, lambda r: placeholder in r.removed_message_ids)
            assert list(gone.removed_message_ids) == [placeholder]
            await eventually(lambda: settled(stack, c, 2))
    finally:
        watch.cancel()
    assert jobs(stack, c) == {first.id: "cancelled", second.id: "completed"}
    # Only the second run's reply is left; the first run's is gone, even the part it wrote after.
    assert [(role, status) for role, status, _, _ in messages(stack, c)] == [("user", "sent"), ("user", "sent"), ("assistant", "sent")]
    assert replies(stack, c) == [("sent", echo("second", 2))]
    # The job record says the cancel deleted its reply; no retry was started.
    (row,) = stack.agent_queue.db.sql(
        "SELECT cancel_discards_reply FROM agent_queue.jobs WHERE message_id = %s", (ids.MESSAGE.parse(first.id, "id"),)
    )
    assert row == (True,)


async def test_rollback_sent_10_ms_apart(with_messages: WithMessages, people: People, runtime: list[str]) -> None:
    stack = with_messages
    c = await conversation(stack, people)
    first, second = await two_sends(stack, people, c, pb.DOUBLE_TEXTING_ROLLBACK)

    await eventually(lambda: settled(stack, c, 2))
    assert jobs(stack, c) == {first.id: "cancelled", second.id: "completed"}
    await eventually(lambda: len(replies(stack, c)) == 1)  # a started first reply is deleted too
    assert replies(stack, c) == [("sent", echo("second", 2))]


async def test_bad_strategies_are_invalid_arguments(with_messages: WithMessages, people: People) -> None:
    stack = with_messages
    c = await conversation(stack, people)
    unset = await rpc_error(stack.messages.stub.SetConversationDoubleTexting(
        pb.SetConversationDoubleTextingRequest(id=c), metadata=people.alice))
    assert unset.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(unset) == ["double_texting"]
    unknown = await rpc_error(stack.messages.stub.SendMessage(
        pb.SendMessageRequest(conversation_id=c, content="hi", double_texting=99), metadata=people.alice))
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(unknown) == ["double_texting"]
    # Someone else's conversation: a no-op, as every owner-scoped change.
    other = await stack.messages.stub.SetConversationDoubleTexting(
        pb.SetConversationDoubleTextingRequest(id=c, double_texting=pb.DOUBLE_TEXTING_REJECT), metadata=people.bob)
    assert not other.HasField("conversation")
    assert messages(stack, c) == []
    # agent_queue is asked with the service key only.
    assert (await stack.agent_queue.stub.ListActiveJobs(
        aq_pb.ListActiveJobsRequest(conversation_id=c), metadata=service())).jobs == []
