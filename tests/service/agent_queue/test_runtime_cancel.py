"""The reference runtime (examples/runtime, its real job loop) honours a cancel: a job cancelled
mid-reply, or while it waits for a tool approval, reaches the worker within one heartbeat (its
reply, or the job watch before it), which stops, fails its placeholder and acknowledges; the job
ends CANCELLED and is never retried. Real agent_queue, messages and approvals servers; the
runtime in-process over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from examples.runtime.jobs import APPROVE_COMMAND
from examples.runtime.responder import Turn, echo_text
from tests.service.agent_queue.conftest import WithMessages
from tests.service.conftest import Running, start_approvals, stop
from tests.support.builders import alice
from tests.support.database import TestDatabase
from tests.support.grpc_client import bearer
from tests.support.jwks import FakeClerkIssuer
from tests.support.runtime_loop import running_runtime
from tests.support.waiting import eventually
from zenthor import ids
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as aq_pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as m_pb
from zenthor.retries import RETRY_TOPIC


@pytest.fixture
async def approvals(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, identity: Running
) -> AsyncIterator[Running]:
    running = await start_approvals(settings_for, db, clerk_issuer, identity)
    yield running
    await stop(running)


@pytest.fixture
async def runtime(with_messages: WithMessages, approvals: Running) -> AsyncIterator[list[str]]:
    # Half a second per word: the reply is still streaming when the test cancels it.
    async with running_runtime(
        with_messages.agent_queue.server.port, with_messages.messages.server.port, chunk_delay_s=0.5,
        approvals_port=approvals.server.port,
    ) as log:
        yield log


def job_of(stack: WithMessages, message_id: str) -> dict[str, Any]:
    rows = stack.agent_queue.db.sql(
        "SELECT id, status, cancel_requested_at FROM agent_queue.jobs WHERE message_id = %s",
        (ids.MESSAGE.parse(message_id, "id"),),
    )
    return {"id": rows[0][0], "status": rows[0][1], "requested": rows[0][2]} if rows else {}


def replies(stack: WithMessages, conversation_id: str) -> list[tuple[str, bool, str]]:
    return [
        (content, streaming, status)
        for content, streaming, status in stack.messages.db.sql(
            "SELECT content, streaming, status FROM messages.messages WHERE conversation_id = %s AND role = 'assistant'",
            (ids.CONVERSATION.parse(conversation_id, "id"),),
        )
    ]


async def alice_sends(stack: WithMessages, content: str) -> tuple[str, str]:
    """Alice's new conversation and the message she sent in it (which queues a job)."""
    alice(stack.messages.db)
    ana = bearer(stack.messages.issuer.token("user_alice"))
    conversation = (await stack.messages.stub.CreateConversation(m_pb.CreateConversationRequest(), metadata=ana)).conversation
    sent = (await stack.messages.stub.SendMessage(
        m_pb.SendMessageRequest(conversation_id=conversation.id, content=content), metadata=ana
    )).message
    return conversation.id, sent.id


async def cancel_as_alice(stack: WithMessages, runtime: list[str], message_id: str) -> aq_pb.Job:
    """Cancels the running job of the message, marking the moment in the runtime's call log."""
    job = job_of(stack, message_id)
    assert job["status"] == "processing"
    runtime.append("cancel")
    reply = await stack.agent_queue.stub.CancelJob(
        aq_pb.CancelJobRequest(job_id=ids.JOB.format(job["id"])), metadata=bearer(stack.agent_queue.issuer.token("user_alice"))
    )
    cancelled: aq_pb.Job = reply.job
    return cancelled


async def acknowledged_as_cancelled(stack: WithMessages, runtime: list[str], message_id: str) -> None:
    """The job ends CANCELLED: the worker acknowledged with FailJob("cancelled") after at most
    one heartbeat (none when its job watch told it first), and never completed it."""
    await eventually(lambda: job_of(stack, message_id)["status"] == "cancelled")
    after_cancel = runtime[runtime.index("cancel") + 1:]
    assert after_cancel[-1] == "fail:cancelled", runtime
    assert sum(1 for e in after_cancel if e.startswith("heartbeat")) <= 1, runtime
    assert "complete" not in runtime


async def test_a_processing_cancel_reaches_the_runtime_within_one_heartbeat(
    with_messages: WithMessages, runtime: list[str]
) -> None:
    stack = with_messages
    conversation_id, sent_id = await alice_sends(stack, "tell me a long story about the sea")
    # The runtime claimed the job and is mid-reply: its placeholder has text and still streams.
    await eventually(lambda: any(streaming and content for content, streaming, _ in replies(stack, conversation_id)))

    cancelled = await cancel_as_alice(stack, runtime, sent_id)
    assert cancelled.status == aq_pb.JOB_STATUS_PROCESSING

    await acknowledged_as_cancelled(stack, runtime, sent_id)
    # Its placeholder stopped where it was: failed, partial text kept; the echo's whole reply
    # ("You said: …") was never written.
    ((content, streaming, status),) = replies(stack, conversation_id)
    whole = echo_text([Turn("user", "tell me a long story about the sea")])
    assert (streaming, status) == (False, "failed")
    assert content and whole.startswith(content) and content != whole
    # And no retry is started for it.
    assert stack.agent_queue.db.sql("SELECT count(*) FROM agent_queue.outbox WHERE topic = %s", (RETRY_TOPIC,)) == [(0,)]


async def test_a_cancel_stops_a_runtime_waiting_for_a_tool_approval(
    with_messages: WithMessages, approvals: Running, runtime: list[str]
) -> None:
    stack = with_messages
    conversation_id, sent_id = await alice_sends(stack, f"{APPROVE_COMMAND} then go on")
    # The runtime asked for the approval and waits for the user's answer, which never comes.
    await eventually(lambda: approvals.db.sql("SELECT status FROM approvals.tool_approvals") == [("pending",)])

    await cancel_as_alice(stack, runtime, sent_id)
    # The wait ends with the cancel, not with the approval.
    await acknowledged_as_cancelled(stack, runtime, sent_id)
    ((_, streaming, status),) = replies(stack, conversation_id)
    assert (streaming, status) == (False, "failed")
