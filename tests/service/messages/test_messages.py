"""Sending, the auto-title (docs/hardening.md #29), the conversation's channel
(docs/hardening.md #26), assistant and system messages, and the agent job's outbox event."""

from __future__ import annotations

import asyncio

import grpc

from tests.service.conftest import Running
from tests.service.messages.conftest import People
from tests.support.grpc_client import rpc_error, service
from tests.support.messages_builders import counts, web_conversation, whatsapp_conversation
from zenthor import ids
from zenthor.gen.zenthor.common.v1 import types_pb2 as common
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb


def outbox_events(messages: Running) -> list[tuple[str, str, dict]]:
    """The events for peers other than delivery's webhooks (tests/service/messages/test_webhook_events.py)."""
    return [
        tuple(r)
        for r in messages.db.sql(
            "SELECT topic, key, payload FROM messages.outbox WHERE topic <> 'delivery.publish_webhook_event'"
            " ORDER BY created_at"
        )
    ]


async def test_send_stores_the_message_sets_the_title_and_enqueues_the_job_in_one_commit(
    messages: Running, people: People
) -> None:
    # The channel argument no longer exists: the conversation's wins (docs/hardening.md #26).
    w1 = await web_conversation(messages.stub, people.alice)
    reply = await messages.stub.SendMessage(
        pb.SendMessageRequest(conversation_id=w1.id, content="a" * 60), metadata=people.alice
    )
    message = reply.message
    assert message.id.startswith("msg_")
    assert (message.role, message.channel, message.status) == (pb.MESSAGE_ROLE_USER, common.CHANNEL_WEB, pb.MESSAGE_STATUS_SENT)
    assert not message.streaming
    title = messages.db.sql("SELECT title FROM messages.conversations")[0][0]
    assert title == "a" * 50 + "\u2026"
    assert outbox_events(messages) == [
        (
            "agent_queue.enqueue_job",
            message.id,
            {
                "message_id": message.id,
                "conversation_id": w1.id,
                "conversation_user_id": ids.USER.format(people.alice_id),
                "conversation_contact_id": None,
            },
        )
    ]
    await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="second"), metadata=people.alice)
    assert messages.db.sql("SELECT title FROM messages.conversations")[0][0] == title
    assert len(outbox_events(messages)) == 2


async def test_a_short_message_becomes_the_title_whole(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="a" * 50), metadata=people.alice)
    assert messages.db.sql("SELECT title FROM messages.conversations")[0][0] == "a" * 50


async def test_title_counts_characters_and_never_splits_an_emoji(messages: Running, people: People) -> None:
    # docs/hardening.md #29: 49 letters then a family emoji (a ZWJ sequence); the original cut
    # UTF-16 units.
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    w1 = await web_conversation(messages.stub, people.alice)
    await messages.stub.SendMessage(
        pb.SendMessageRequest(conversation_id=w1.id, content="x" * 49 + family + " and more"), metadata=people.alice
    )
    assert messages.db.sql("SELECT title FROM messages.conversations")[0][0] == "x" * 49 + "\u2026"
    # 50 emoji (each one code point, two UTF-16 units) fit whole.
    w2 = await web_conversation(messages.stub, people.alice)
    await messages.stub.SendMessage(
        pb.SendMessageRequest(conversation_id=w2.id, content="\U0001f600" * 50), metadata=people.alice
    )
    assert messages.db.sql("SELECT title FROM messages.conversations WHERE id = %s", (ids.CONVERSATION.parse(w2.id, "id"),))[0][0] == "\U0001f600" * 50


async def test_a_custom_title_is_never_replaced(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice, title="Trip")
    await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="hello"), metadata=people.alice)
    assert messages.db.sql("SELECT title FROM messages.conversations")[0][0] == "Trip"


async def test_sending_to_someone_elses_conversation_writes_nothing(messages: Running, people: People) -> None:
    # Bob sending to Alice's conversations gets no message, and nothing is written.
    w1 = await web_conversation(messages.stub, people.alice)
    wa1 = await whatsapp_conversation(messages.stub, people.k1_id)
    before = counts(messages.db)
    revisions = messages.db.sql("SELECT id, revision FROM messages.conversations ORDER BY id")
    for conversation in (w1, wa1):
        reply = await messages.stub.SendMessage(
            pb.SendMessageRequest(conversation_id=conversation.id, content="hi"), metadata=people.bob
        )
        assert not reply.HasField("message")
    missing = await messages.stub.SendMessage(
        pb.SendMessageRequest(conversation_id=ids.CONVERSATION.format(ids.CONVERSATION.new()), content="hi"),
        metadata=people.bob,
    )
    assert not missing.HasField("message")
    assert counts(messages.db) == before
    assert messages.db.sql("SELECT id, revision FROM messages.conversations ORDER BY id") == revisions


async def test_service_send_to_a_missing_conversation_fails_not_found(messages: Running, people: People) -> None:
    # A service send to a missing conversation is NOT_FOUND.
    error = await rpc_error(
        messages.stub.SendMessageAsService(
            pb.SendMessageAsServiceRequest(conversation_id=ids.CONVERSATION.format(ids.CONVERSATION.new()), content="hi"),
            metadata=service(),
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Conversation not found"
    assert counts(messages.db)["outbox"] == 0


async def test_service_send_uses_the_whatsapp_channel_and_the_contact_owner(messages: Running, people: People) -> None:
    wa1 = await whatsapp_conversation(messages.stub, people.k1_id)
    reply = await messages.stub.SendMessageAsService(
        pb.SendMessageAsServiceRequest(conversation_id=wa1.id, content="oi"), metadata=service()
    )
    assert reply.message.channel == common.CHANNEL_WHATSAPP
    (payload,) = [e[2] for e in outbox_events(messages)]
    assert payload["conversation_contact_id"] == ids.CONTACT.format(people.k1_id)
    assert payload["conversation_user_id"] is None
    # Untitled WhatsApp conversations get the auto-title too.
    assert messages.db.sql("SELECT title FROM messages.conversations")[0][0] == "oi"


async def test_messages_are_visible_to_the_owner_through_the_linked_contact_and_empty_for_bob(
    messages: Running, people: People
) -> None:
    # Alice sees her linked contact's WhatsApp messages in order; Bob sees none.
    wa1 = await whatsapp_conversation(messages.stub, people.k1_id)
    sent = []
    for text in ("one", "two", "three"):
        reply = await messages.stub.SendMessageAsService(
            pb.SendMessageAsServiceRequest(conversation_id=wa1.id, content=text), metadata=service()
        )
        sent.append(reply.message.id)
    listed = await messages.stub.ListMessages(pb.ListMessagesRequest(conversation_id=wa1.id), metadata=people.alice)
    assert [m.id for m in listed.messages] == sent
    assert [m.content for m in listed.messages] == ["one", "two", "three"]
    bobs = await messages.stub.ListMessages(pb.ListMessagesRequest(conversation_id=wa1.id), metadata=people.bob)
    assert list(bobs.messages) == []
    got = await messages.stub.GetMessage(pb.GetMessageRequest(id=sent[0]), metadata=people.alice)
    assert got.message.content == "one"
    not_bobs = await messages.stub.GetMessage(pb.GetMessageRequest(id=sent[0]), metadata=people.bob)
    assert not not_bobs.HasField("message")
    # Paged, oldest first.
    first = await messages.stub.ListMessages(
        pb.ListMessagesRequest(conversation_id=wa1.id, page_size=2), metadata=people.alice
    )
    rest = await messages.stub.ListMessages(
        pb.ListMessagesRequest(conversation_id=wa1.id, page_size=2, page_token=first.next_page_token), metadata=people.alice
    )
    assert [m.id for m in [*first.messages, *rest.messages]] == sent
    assert rest.next_page_token == ""


async def test_archived_conversations_still_accept_messages(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    await messages.stub.ArchiveConversation(pb.ArchiveConversationRequest(id=w1.id), metadata=people.alice)
    reply = await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="still here"), metadata=people.alice)
    assert reply.HasField("message")


async def test_assistant_message_records_tool_calls_on_the_conversations_channel_without_a_job(
    messages: Running, people: People
) -> None:
    wa1 = await whatsapp_conversation(messages.stub, people.k1_id)
    call = pb.ToolCall(name="get_current_time")
    call.input.struct_value.update({"tz": "UTC"})
    call.output.string_value = "12:00"
    no_output = pb.ToolCall(name="calculate")
    no_output.input.struct_value.update({"expr": "1+1"})
    reply = await messages.stub.CreateAssistantMessage(
        pb.CreateAssistantMessageRequest(conversation_id=wa1.id, content="It is noon", tool_calls=[call, no_output]),
        metadata=service(),
    )
    message = reply.message
    assert (message.role, message.channel, message.status) == (
        pb.MESSAGE_ROLE_ASSISTANT, common.CHANNEL_WHATSAPP, pb.MESSAGE_STATUS_SENT
    )
    assert list(message.tool_calls) == [call, no_output]
    assert not message.tool_calls[1].HasField("output")
    assert messages.db.sql("SELECT tool_calls FROM messages.messages") == [
        ([{"name": "get_current_time", "input": {"tz": "UTC"}, "output": "12:00"}, {"name": "calculate", "input": {"expr": "1+1"}}],)
    ]
    assert outbox_events(messages) == []
    error = await rpc_error(
        messages.stub.CreateAssistantMessage(
            pb.CreateAssistantMessageRequest(conversation_id=ids.CONVERSATION.format(ids.CONVERSATION.new()), content="x"),
            metadata=service(),
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_system_message_is_idempotent_by_key_and_can_enqueue_a_job(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    summary = await messages.stub.CreateSystemMessage(
        pb.CreateSystemMessageRequest(conversation_id=w1.id, content="summary"), metadata=service()
    )
    assert summary.created and summary.message.role == pb.MESSAGE_ROLE_SYSTEM
    assert summary.message.channel == common.CHANNEL_WEB
    request = pb.CreateSystemMessageRequest(
        conversation_id=w1.id, content="[Scheduled Task: t] go", idempotency_key="task_1:2026", enqueue_job=True
    )
    first = await messages.stub.CreateSystemMessage(request, metadata=service())
    repeat = await messages.stub.CreateSystemMessage(request, metadata=service())
    assert first.created and not repeat.created
    assert repeat.message.id == first.message.id
    assert [e[1] for e in outbox_events(messages)] == [first.message.id]
    assert counts(messages.db)["messages"] == 2
    # System messages never set the title.
    assert messages.db.sql("SELECT title FROM messages.conversations")[0][0] == "New chat"


async def test_concurrent_sends_to_one_conversation_each_get_their_own_revision_and_one_sets_the_title(
    messages: Running, people: People
) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    texts = [f"message {i}" for i in range(20)]
    replies = await asyncio.gather(
        *(messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content=t), metadata=people.alice) for t in texts)
    )
    assert len({r.message.id for r in replies}) == 20
    revisions = [r[0] for r in messages.db.sql("SELECT revision FROM messages.messages")]
    assert len(set(revisions)) == 20
    (title, revision), = messages.db.sql("SELECT title, revision FROM messages.conversations")
    assert title in texts  # the first committed message titled it; later ones left it
    assert revision == max(revisions)
    assert len(outbox_events(messages)) == 20  # one job each
