"""A job's streaming placeholder never outlives the attempt that made it (docs/hardening.md #40):
when agent_queue requeues a stale job, moves it to WAITING_RETRY or fails it for good, its outbox
asks messages to fail the placeholders linked to the job that still stream. Real agent_queue and
messages servers, each pointed at the other; the owner watches the conversation as the web UI does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc

from tests.service.agent_queue.conftest import WithMessages
from tests.support.agent_queue_builders import ManualClock, job_id, lease, msg_id
from tests.support.builders import alice
from tests.support.grpc_client import bearer, service
from tests.support.waiting import eventually
from zenthor import ids
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as aq_pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as m_pb

TOPIC = "messages.fail_job_placeholders"


async def web_job(stack: WithMessages) -> tuple[str, uuid.UUID]:
    """A new web conversation of Alice's (in messages) and a pending job for a message of it."""
    conversation = (
        await stack.messages.stub.CreateConversation(
            m_pb.CreateConversationRequest(), metadata=bearer(stack.messages.issuer.token("user_alice"))
        )
    ).conversation
    job = (
        await stack.agent_queue.stub.EnqueueJob(
            aq_pb.EnqueueJobRequest(message_id=msg_id(), conversation_id=conversation.id), metadata=service()
        )
    ).job
    return conversation.id, ids.JOB.parse(job.id, "id")


async def claim(stack: WithMessages, processor: str, job: uuid.UUID) -> aq_pb.Job:
    reply = await stack.agent_queue.stub.ClaimJobs(
        aq_pb.ClaimJobsRequest(processor_id=processor, max_jobs=1, lease=lease(60), job_ids=[job_id(job)]),
        metadata=service(),
    )
    (claimed,) = reply.jobs
    return claimed


async def placeholder(stack: WithMessages, conversation_id: str, job: uuid.UUID, text: str = "") -> m_pb.Message:
    """The runtime's placeholder for the job it answers, with some streamed text."""
    message = (
        await stack.messages.stub.CreatePlaceholder(
            m_pb.CreatePlaceholderRequest(conversation_id=conversation_id, job_id=job_id(job)), metadata=service()
        )
    ).message
    if text:
        await stack.messages.stub.UpdateStreamingContent(
            m_pb.UpdateStreamingContentRequest(message_id=message.id, content=text), metadata=service()
        )
    return message


def stored(stack: WithMessages, message_id: str) -> tuple[Any, ...]:
    (found,) = stack.messages.db.sql(
        "SELECT content, streaming, status, revision FROM messages.messages WHERE id = %s",
        (ids.MESSAGE.parse(message_id, "id"),),
    )
    return tuple(found)


async def owner_sees(stack: WithMessages, conversation_id: str, done: Callable[[dict[str, m_pb.Message]], bool]) -> dict[str, m_pb.Message]:
    """Watches the conversation as Alice until `done` holds for the messages seen (bounded)."""
    stream = stack.messages.stub.WatchConversation(
        m_pb.WatchConversationRequest(conversation_id=conversation_id),
        metadata=bearer(stack.messages.issuer.token("user_alice")),
    )
    seen: dict[str, m_pb.Message] = {}
    try:
        async with asyncio.timeout(30):
            while not done(seen):
                update = await stream.read()
                assert update is not grpc.aio.EOF
                seen.update({m.id: m for m in update.messages})
    finally:
        stream.cancel()
    return seen


def failed(message_id: str) -> Callable[[dict[str, m_pb.Message]], bool]:
    def check(seen: dict[str, m_pb.Message]) -> bool:
        m = seen.get(message_id)
        return m is not None and not m.streaming and m.status == m_pb.MESSAGE_STATUS_FAILED

    return check


def events(stack: WithMessages) -> list[tuple[str, dict[str, Any], bool]]:
    return [
        (key, payload, delivered is not None)
        for key, payload, delivered in stack.agent_queue.db.sql(
            "SELECT key, payload, delivered_at FROM agent_queue.outbox WHERE topic = %s ORDER BY id",
            (TOPIC,),
        )
    ]


async def test_a_crashed_workers_placeholder_fails_when_the_stale_sweep_requeues_its_job(
    with_messages: WithMessages, clock: ManualClock
) -> None:
    stack = with_messages
    alice(stack.messages.db)
    conversation_id, job = await web_job(stack)
    await claim(stack, "w1", job)
    typing = await placeholder(stack, conversation_id, job, "Half an ans")
    # w1 dies mid-reply: no heartbeat, no finalize. The sweep requeues the job...
    clock.advance(61)
    swept = await stack.agent_queue.stub.RequeueStaleJobs(aq_pb.RequeueStaleJobsRequest(), metadata=service())
    assert swept.requeued == 1
    # ...and the owner sees the placeholder end failed, its partial text kept: no endless "typing".
    seen = await owner_sees(stack, conversation_id, failed(typing.id))
    assert seen[typing.id].content == "Half an ans"
    content, streaming, status, revision = stored(stack, typing.id)
    assert (content, streaming, status) == ("Half an ans", False, "failed")
    ((key, payload, _),) = events(stack)
    assert key == f"{job_id(job)}:waiting_retry:1" and payload["reason"] == "stale_lease"

    # The retry runs: a new placeholder for the same job streams, and a replay of the old event
    # (the relay is at-least-once) fails nothing more: the new attempt's reply is after its fence.
    released = await stack.agent_queue.stub.ReleaseJob(
        aq_pb.ReleaseJobRequest(job_id=job_id(job), attempt_count=1), metadata=service()
    )
    assert released.released
    clock.advance(timedelta(minutes=5))  # past the backoff, as RetryWorkflow releases it
    await claim(stack, "w2", job)
    retry_reply = await placeholder(stack, conversation_id, job, "A whole")
    stack.agent_queue.db.sql(
        "UPDATE agent_queue.outbox SET delivered_at = NULL, attempts = 0, next_attempt_at = %s WHERE topic = %s",
        (clock.now - timedelta(seconds=1), TOPIC),
    )
    await eventually(lambda: all(delivered for _, _, delivered in events(stack)))
    assert stored(stack, retry_reply.id)[:3] == ("A whole", True, "pending")
    assert stored(stack, typing.id) == (content, streaming, status, revision)


async def test_fail_job_fails_its_open_placeholder_and_leaves_a_finalized_one_alone(
    with_messages: WithMessages,
) -> None:
    stack = with_messages
    alice(stack.messages.db)
    conversation_id, job = await web_job(stack)
    await claim(stack, "w1", job)
    done = await placeholder(stack, conversation_id, job)
    await stack.messages.stub.FinalizeMessage(
        m_pb.FinalizeMessageRequest(message_id=done.id, content="First part, sent"), metadata=service()
    )
    finalized = stored(stack, done.id)
    typing = await placeholder(stack, conversation_id, job, "Second pa")
    other_conversation, other_job = await web_job(stack)
    await claim(stack, "w1", other_job)
    unrelated = await placeholder(stack, other_conversation, other_job, "Not this one")

    await stack.agent_queue.stub.FailJob(
        aq_pb.FailJobRequest(job_id=job_id(job), processor_id="w1", error_reason="content_filter"), metadata=service()
    )
    await owner_sees(stack, conversation_id, failed(typing.id))
    assert stored(stack, typing.id)[:3] == ("Second pa", False, "failed")
    assert stored(stack, done.id) == finalized  # finalized: untouched, not even its revision
    assert stored(stack, unrelated.id)[:3] == ("Not this one", True, "pending")
    ((key, payload, _),) = events(stack)
    assert key == f"{job_id(job)}:failed:0"
    assert payload == {"job_id": job_id(job), "reason": "content_filter", "created_before": None}


async def test_a_retry_and_the_retry_cap_fail_the_attempts_placeholders(with_messages: WithMessages) -> None:
    stack = with_messages
    alice(stack.messages.db)
    conversation_id, job = await web_job(stack)
    ended: list[str] = []
    for attempt in (1, 2, 3):
        await claim(stack, "w1", job)
        typing = await placeholder(stack, conversation_id, job, f"attempt {attempt}")
        reply = await stack.agent_queue.stub.RetryJob(
            aq_pb.RetryJobRequest(job_id=job_id(job), processor_id="w1", error_reason="rate_limit"), metadata=service()
        )
        await owner_sees(stack, conversation_id, failed(typing.id))
        ended.append(typing.id)
        if attempt < 3:
            assert reply.retry_scheduled  # WAITING_RETRY; its release makes the next attempt
            await stack.agent_queue.stub.ReleaseJob(
                aq_pb.ReleaseJobRequest(job_id=job_id(job), attempt_count=attempt), metadata=service()
            )
        else:
            assert not reply.retry_scheduled and reply.job.status == aq_pb.JOB_STATUS_FAILED  # the cap
    assert [stored(stack, m)[:3] for m in ended] == [(f"attempt {n}", False, "failed") for n in (1, 2, 3)]
    assert [key for key, _, _ in events(stack)] == [
        f"{job_id(job)}:waiting_retry:1",
        f"{job_id(job)}:waiting_retry:2",
        f"{job_id(job)}:failed:2",
    ]
