"""The streaming placeholder lifecycle with its guards (docs/hardening.md #11, #28, #30), the
placeholders of a job that ended its attempt (docs/hardening.md #40), and delivery outcomes on
messages (docs/hardening.md #27)."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tests.service.conftest import Running
from tests.service.messages.conftest import People
from tests.support.grpc_client import rpc_error, service
from tests.support.messages_builders import T0, TestClock, web_conversation
from zenthor import ids
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb


async def placeholder(messages: Running, conversation_id: str) -> pb.Message:
    reply = await messages.stub.CreatePlaceholder(pb.CreatePlaceholderRequest(conversation_id=conversation_id), metadata=service())
    return reply.message


async def update(messages: Running, message_id: str, content: str, sequence: int = 0) -> bool:
    reply = await messages.stub.UpdateStreamingContent(
        pb.UpdateStreamingContentRequest(message_id=message_id, content=content, sequence=sequence), metadata=service()
    )
    return reply.applied


def row(messages: Running, message_id: str) -> tuple:
    return messages.db.sql(
        "SELECT role, content, streaming, status, tool_calls FROM messages.messages WHERE id = %s",
        (ids.MESSAGE.parse(message_id, "id"),),
    )[0]


async def listed(messages: Running, people: People, conversation_id: str) -> list[tuple]:
    reply = await messages.stub.ListMessages(pb.ListMessagesRequest(conversation_id=conversation_id), metadata=people.alice)
    return [(m.content, m.streaming, m.status) for m in reply.messages]


async def test_placeholder_streams_then_finalizes_and_the_owner_sees_each_state(messages: Running, people: People) -> None:
    # Placeholder (empty, streaming, PENDING) → growing content → finalized (SENT).
    w1 = await web_conversation(messages.stub, people.alice)
    m = await placeholder(messages, w1.id)
    assert (m.role, m.content, m.streaming, m.status) == (pb.MESSAGE_ROLE_ASSISTANT, "", True, pb.MESSAGE_STATUS_PENDING)
    assert await listed(messages, people, w1.id) == [("", True, pb.MESSAGE_STATUS_PENDING)]
    for text in ("Hel", "Hello wor"):
        assert await update(messages, m.id, text)
        assert row(messages, m.id)[1] == text  # replaced, not appended
        assert await listed(messages, people, w1.id) == [(text, True, pb.MESSAGE_STATUS_PENDING)]
    call = pb.ToolCall(name="get_current_time")
    call.input.struct_value.SetInParent()  # `{}`
    call.output.string_value = "12:00"
    final = await messages.stub.FinalizeMessage(
        pb.FinalizeMessageRequest(message_id=m.id, content="Hello world", tool_calls=[call]), metadata=service()
    )
    assert (final.message.content, final.message.streaming, final.message.status) == ("Hello world", False, pb.MESSAGE_STATUS_SENT)
    assert list(final.message.tool_calls) == [call]
    assert row(messages, m.id) == (
        "assistant", "Hello world", False, "sent", [{"name": "get_current_time", "input": {}, "output": "12:00"}]
    )
    assert await listed(messages, people, w1.id) == [("Hello world", False, pb.MESSAGE_STATUS_SENT)]


async def test_a_finalized_message_can_no_longer_change(messages: Running, people: People) -> None:
    # docs/hardening.md #28: the original could "un-finalize" content.
    w1 = await web_conversation(messages.stub, people.alice)
    m = await placeholder(messages, w1.id)
    await messages.stub.FinalizeMessage(pb.FinalizeMessageRequest(message_id=m.id, content="done"), metadata=service())
    before = row(messages, m.id)
    for call in (
        messages.stub.UpdateStreamingContent(pb.UpdateStreamingContentRequest(message_id=m.id, content="changed"), metadata=service()),
        messages.stub.FinalizeMessage(pb.FinalizeMessageRequest(message_id=m.id, content="changed"), metadata=service()),
        messages.stub.FailPlaceholder(pb.FailPlaceholderRequest(message_id=m.id), metadata=service()),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "finalized" in error.details()
    assert row(messages, m.id) == before


async def test_only_assistant_placeholders_stream(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    sent = await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="mine"), metadata=people.alice)
    for call in (
        messages.stub.UpdateStreamingContent(
            pb.UpdateStreamingContentRequest(message_id=sent.message.id, content="rewritten"), metadata=service()
        ),
        messages.stub.FinalizeMessage(pb.FinalizeMessageRequest(message_id=sent.message.id, content="rewritten"), metadata=service()),
        messages.stub.FailPlaceholder(pb.FailPlaceholderRequest(message_id=sent.message.id), metadata=service()),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "user message" in error.details()
    assert row(messages, sent.message.id)[1] == "mine"


async def test_out_of_order_updates_are_dropped_by_sequence(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    m = await placeholder(messages, w1.id)
    assert await update(messages, m.id, "Hello", sequence=2)
    assert not await update(messages, m.id, "He", sequence=1)  # arrived late
    assert not await update(messages, m.id, "Hel", sequence=2)  # repeated
    assert row(messages, m.id)[1] == "Hello"
    assert await update(messages, m.id, "Hello there", sequence=3)
    assert await update(messages, m.id, "restart", sequence=0)  # unsequenced: always applied
    assert row(messages, m.id)[1] == "restart"


async def test_failed_generation_fails_the_placeholder_and_keeps_partial_content(messages: Running, people: People) -> None:
    # docs/hardening.md #11: a failed generation no longer leaves a placeholder streaming forever.
    w1 = await web_conversation(messages.stub, people.alice)
    m = await placeholder(messages, w1.id)
    await update(messages, m.id, "Hel")
    failed = await messages.stub.FailPlaceholder(pb.FailPlaceholderRequest(message_id=m.id), metadata=service())
    assert (failed.message.content, failed.message.streaming, failed.message.status) == ("Hel", False, pb.MESSAGE_STATUS_FAILED)
    assert row(messages, m.id)[1:4] == ("Hel", False, "failed")
    again = await messages.stub.FailPlaceholder(pb.FailPlaceholderRequest(message_id=m.id), metadata=service())
    assert again.message == failed.message  # repeating is a no-op
    error = await rpc_error(
        messages.stub.FinalizeMessage(pb.FinalizeMessageRequest(message_id=m.id, content="late"), metadata=service())
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "failed" in error.details()


async def test_missing_messages_are_not_found_not_a_crash(messages: Running, people: People) -> None:
    # docs/hardening.md #30
    missing = ids.MESSAGE.format(ids.MESSAGE.new())
    for call in (
        messages.stub.UpdateStreamingContent(pb.UpdateStreamingContentRequest(message_id=missing, content="x"), metadata=service()),
        messages.stub.FinalizeMessage(pb.FinalizeMessageRequest(message_id=missing, content="x"), metadata=service()),
        messages.stub.FailPlaceholder(pb.FailPlaceholderRequest(message_id=missing), metadata=service()),
        messages.stub.MarkMessageDelivery(
            pb.MarkMessageDeliveryRequest(message_id=missing, status=pb.MESSAGE_STATUS_DELIVERED), metadata=service()
        ),
        messages.stub.CreatePlaceholder(
            pb.CreatePlaceholderRequest(conversation_id=ids.CONVERSATION.format(ids.CONVERSATION.new())), metadata=service()
        ),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_delivery_outcome_is_recorded_on_the_message(messages: Running, people: People) -> None:
    # docs/hardening.md #27: DELIVERED / FAILED are written by the delivery service.
    w1 = await web_conversation(messages.stub, people.alice)
    reply = await messages.stub.CreateAssistantMessage(
        pb.CreateAssistantMessageRequest(conversation_id=w1.id, content="hi"), metadata=service()
    )
    deliver = pb.MarkMessageDeliveryRequest(message_id=reply.message.id, status=pb.MESSAGE_STATUS_DELIVERED)
    delivered = await messages.stub.MarkMessageDelivery(deliver, metadata=service())
    assert delivered.message.status == pb.MESSAGE_STATUS_DELIVERED
    assert (await messages.stub.MarkMessageDelivery(deliver, metadata=service())).message == delivered.message
    error = await rpc_error(
        messages.stub.MarkMessageDelivery(
            pb.MarkMessageDeliveryRequest(message_id=reply.message.id, status=pb.MESSAGE_STATUS_FAILED), metadata=service()
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert row(messages, reply.message.id)[3] == "delivered"
    # A placeholder still streaming has nothing delivered yet.
    m = await placeholder(messages, w1.id)
    error = await rpc_error(
        messages.stub.MarkMessageDelivery(
            pb.MarkMessageDeliveryRequest(message_id=m.id, status=pb.MESSAGE_STATUS_FAILED), metadata=service()
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "streaming" in error.details()


# --- placeholders of a job that ended its attempt (docs/hardening.md #40) ---


async def job_placeholder(messages: Running, conversation_id: str, job: str, text: str = "") -> pb.Message:
    reply = await messages.stub.CreatePlaceholder(
        pb.CreatePlaceholderRequest(conversation_id=conversation_id, job_id=job), metadata=service()
    )
    if text:
        await update(messages, reply.message.id, text)
    return reply.message


def state(messages: Running) -> list[tuple]:
    return messages.db.sql(
        "SELECT id, content, streaming, status, revision, job_id FROM messages.messages ORDER BY id"
    ) + messages.db.sql("SELECT id, revision FROM messages.conversations ORDER BY id")


async def test_a_jobs_open_placeholders_fail_once_and_nothing_else_changes(
    messages: Running, people: People, clock: TestClock
) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    job, other_job = ids.JOB.format(ids.JOB.new()), ids.JOB.format(ids.JOB.new())
    typing = await job_placeholder(messages, w1.id, job, "Half an ans")
    finalized = await job_placeholder(messages, w1.id, job)
    await messages.stub.FinalizeMessage(pb.FinalizeMessageRequest(message_id=finalized.id, content="done"), metadata=service())
    others = [await job_placeholder(messages, w1.id, other_job, "other job"), await placeholder(messages, w1.id)]
    untouched = [row(messages, m.id) for m in (finalized, *others)]
    assert messages.db.sql("SELECT job_id FROM messages.messages WHERE id = %s", (ids.MESSAGE.parse(typing.id, "id"),)) == [
        (ids.JOB.parse(job, "job_id"),)
    ]

    reply = await messages.stub.FailJobPlaceholders(pb.FailJobPlaceholdersRequest(job_id=job, reason="stale_lease"), metadata=service())
    assert [(m.id, m.content, m.streaming, m.status) for m in reply.messages] == [
        (typing.id, "Half an ans", False, pb.MESSAGE_STATUS_FAILED)
    ]
    assert row(messages, typing.id)[1:4] == ("Half an ans", False, "failed")
    assert [row(messages, m.id) for m in (finalized, *others)] == untouched
    assert ("Half an ans", False, pb.MESSAGE_STATUS_FAILED) in await listed(messages, people, w1.id)
    # A replayed delivery fails nothing and spends no revision (watchers see no change).
    before = state(messages)
    again = await messages.stub.FailJobPlaceholders(pb.FailJobPlaceholdersRequest(job_id=job, reason="stale_lease"), metadata=service())
    assert list(again.messages) == []
    assert state(messages) == before
    # A job nobody linked a placeholder to: nothing to do.
    unknown = ids.JOB.format(ids.JOB.new())
    assert list((await messages.stub.FailJobPlaceholders(pb.FailJobPlaceholdersRequest(job_id=unknown), metadata=service())).messages) == []


async def test_a_requeued_jobs_fence_spares_the_placeholder_of_its_next_attempt(
    messages: Running, people: People, clock: TestClock
) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    job = ids.JOB.format(ids.JOB.new())
    clock.set(T0)
    ended = await job_placeholder(messages, w1.id, job, "first try")
    clock.set(T0 + timedelta(seconds=10))
    next_attempt = await job_placeholder(messages, w1.id, job, "second try")
    fence = Timestamp()
    fence.FromDatetime(T0 + timedelta(seconds=5))
    reply = await messages.stub.FailJobPlaceholders(
        pb.FailJobPlaceholdersRequest(job_id=job, reason="stale_lease", created_before=fence), metadata=service()
    )
    assert [m.id for m in reply.messages] == [ended.id]
    assert row(messages, next_attempt.id)[1:4] == ("second try", True, "pending")
