"""The outbox end to end (docs/architecture.md §7): a user message and its agent job travel through the outbox
to the REAL agent_queue server; nothing is lost while it is down, nothing is applied twice."""

from __future__ import annotations

import time
from typing import Any

from services.agent_queue.app import build_server as build_agent_queue
from tests.service.conftest import Running
from tests.service.messages.conftest import People
from tests.support.messages_builders import web_conversation
from tests.support.waiting import eventually
from zenthor import ids
from zenthor.config import ServiceName
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb

NO_TEMPORAL = "127.0.0.1:1"


def outbox_row(messages: Running, key: str) -> tuple[int, bool]:
    (row,) = messages.db.sql("SELECT attempts, delivered_at IS NOT NULL FROM messages.outbox WHERE key = %s", (key,))
    return row


def jobs(messages: Running) -> list[tuple[Any, ...]]:
    return messages.db.sql(
        "SELECT message_id, conversation_id, conversation_user_id, status FROM agent_queue.jobs ORDER BY created_at"
    )


async def test_a_message_sent_while_agent_queue_is_down_becomes_exactly_one_job_once_it_is_up(
    messages: Running, identity: Running, people: People, settings_for: Any
) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    sent = (
        await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="hello"), metadata=people.alice)
    ).message
    # agent_queue is down: the relay's first attempt (kicked at commit) fails and is rescheduled.
    await eventually(lambda: outbox_row(messages, sent.id)[0] >= 1)
    assert outbox_row(messages, sent.id)[1] is False
    assert jobs(messages) == []

    port = int(messages.settings.agent_queue_addr.rsplit(":", 1)[1])
    settings = settings_for(
        ServiceName.AGENT_QUEUE, identity_addr=f"127.0.0.1:{identity.server.port}", temporal_address=NO_TEMPORAL
    )
    agent_queue = await build_agent_queue(settings)
    await agent_queue.start(port)
    try:
        started = time.monotonic()
        await eventually(lambda: outbox_row(messages, sent.id)[1])
        print(f"\ndelivered {time.monotonic() - started:.2f} s after agent_queue started, attempts {outbox_row(messages, sent.id)[0]}")
        conversation_id = ids.CONVERSATION.parse(w1.id, "id")
        assert jobs(messages) == [(ids.MESSAGE.parse(sent.id, "id"), conversation_id, people.alice_id, "pending")]

        # With agent_queue up, the next message's job arrives right after its commit.
        second = (
            await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="again"), metadata=people.alice)
        ).message
        await eventually(lambda: outbox_row(messages, second.id)[1])
        assert outbox_row(messages, second.id) == (1, True)

        # A re-delivery (the relay crashed after EnqueueJob but before recording it) is harmless.
        messages.db.sql("UPDATE messages.outbox SET delivered_at = NULL, next_attempt_at = now() WHERE key = %s", (sent.id,))
        await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="kick"), metadata=people.alice)
        await eventually(lambda: outbox_row(messages, sent.id)[1] and len(jobs(messages)) == 3)
        assert [j[0] for j in jobs(messages)].count(ids.MESSAGE.parse(sent.id, "id")) == 1
    finally:
        await agent_queue.stop(0)
