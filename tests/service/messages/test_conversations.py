"""Conversations over gRPC: create, archive, the recent list, get-or-create, and ownership
(docs/architecture.md §4)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc

from tests.service.conftest import Running
from tests.service.messages.conftest import People
from tests.support.grpc_client import rpc_error, service
from tests.support.messages_builders import (
    T0,
    TestClock,
    count,
    web_conversation,
    whatsapp_conversation,
)
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.common.v1 import types_pb2 as common
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb


async def test_create_makes_an_active_web_conversation_titled_new_chat(messages: Running, people: People) -> None:
    # An untitled web conversation is active and titled "New chat".
    conversation = await web_conversation(messages.stub, people.alice)
    assert conversation.id.startswith("conv_")
    assert conversation.channel == common.CHANNEL_WEB
    assert conversation.user_id == ids.USER.format(people.alice_id)
    assert not conversation.HasField("contact_id")
    assert conversation.status == pb.CONVERSATION_STATUS_ACTIVE
    assert conversation.title == "New chat"
    row = messages.db.sql("SELECT channel, user_id, status, title FROM messages.conversations")
    assert row == [("web", people.alice_id, "active", "New chat")]


async def test_create_keeps_a_given_title_even_empty_and_always_makes_a_new_one(messages: Running, people: People) -> None:
    first = await web_conversation(messages.stub, people.alice, title="")
    second = await web_conversation(messages.stub, people.alice, title="Plans")
    assert (first.title, second.title) == ("", "Plans")
    assert first.id != second.id


async def test_archive_applies_to_web_only_and_hides_from_recent_not_from_list(messages: Running, people: People) -> None:
    # Only web conversations are archived; archived ones leave the recent list, not the list.
    w1 = await web_conversation(messages.stub, people.alice)
    wa1 = await whatsapp_conversation(messages.stub, people.k1_id)
    archived = await messages.stub.ArchiveConversation(pb.ArchiveConversationRequest(id=w1.id), metadata=people.alice)
    assert archived.conversation.status == pb.CONVERSATION_STATUS_ARCHIVED
    not_archived = await messages.stub.ArchiveConversation(pb.ArchiveConversationRequest(id=wa1.id), metadata=people.alice)
    assert not not_archived.HasField("conversation")
    # Archiving an already archived conversation is allowed and answers it again.
    again = await messages.stub.ArchiveConversation(pb.ArchiveConversationRequest(id=w1.id), metadata=people.alice)
    assert again.conversation.status == pb.CONVERSATION_STATUS_ARCHIVED
    assert messages.db.sql("SELECT channel, status FROM messages.conversations ORDER BY channel") == [
        ("web", "archived"),
        ("whatsapp", "active"),
    ]
    recent = await messages.stub.ListRecentConversations(pb.ListRecentConversationsRequest(), metadata=people.alice)
    assert [r.conversation.id for r in recent.conversations] == [wa1.id]
    listed = await messages.stub.ListConversations(pb.ListConversationsRequest(), metadata=people.alice)
    assert [c.id for c in listed.conversations] == [w1.id]  # by user id only: WA1 is not listed


async def test_recent_conversations_order_by_last_activity_with_last_message(
    messages: Running, people: People, clock: TestClock
) -> None:
    # W1 at T0 (last message T0+10s), W2 at T0+5s (none), WA1 last message T0+20s.
    clock.set(T0)
    w1 = await web_conversation(messages.stub, people.alice)
    clock.set(T0 + timedelta(seconds=1))
    wa1 = await whatsapp_conversation(messages.stub, people.k1_id)
    clock.set(T0 + timedelta(seconds=5))
    w2 = await web_conversation(messages.stub, people.alice)
    clock.set(T0 + timedelta(seconds=10))
    await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="hello"), metadata=people.alice)
    clock.set(T0 + timedelta(seconds=20))
    await messages.stub.SendMessageAsService(
        pb.SendMessageAsServiceRequest(conversation_id=wa1.id, content="from whatsapp"), metadata=service()
    )
    recent = await messages.stub.ListRecentConversations(pb.ListRecentConversationsRequest(), metadata=people.alice)
    assert [r.conversation.id for r in recent.conversations] == [wa1.id, w1.id, w2.id]
    wa1_last = recent.conversations[0].last_message
    assert (wa1_last.content, wa1_last.role) == ("from whatsapp", pb.MESSAGE_ROLE_USER)
    assert wa1_last.create_time.ToDatetime().replace(tzinfo=T0.tzinfo) == T0 + timedelta(seconds=20)
    assert not recent.conversations[2].HasField("last_message")
    # Paginated: the same order one at a time.
    seen, token = [], ""
    while True:
        page = await messages.stub.ListRecentConversations(
            pb.ListRecentConversationsRequest(page_size=1, page_token=token), metadata=people.alice
        )
        seen += [r.conversation.id for r in page.conversations]
        token = page.next_page_token
        if not token:
            break
    assert seen == [wa1.id, w1.id, w2.id]
    # Bob sees none of it.
    bobs = await messages.stub.ListRecentConversations(pb.ListRecentConversationsRequest(), metadata=people.bob)
    assert list(bobs.conversations) == []


async def test_get_or_create_reuses_the_active_web_conversation_and_ignores_the_agent(
    messages: Running, people: People
) -> None:
    # Get-or-create returns the active web conversation, ignoring the agent; once that one is
    # archived it makes a new one, untitled, with the agent.
    w1 = await web_conversation(messages.stub, people.alice)
    agent = ids.AGENT.format(ids.AGENT.new())
    request = pb.GetOrCreateConversationRequest(
        channel=common.CHANNEL_WEB, user_id=ids.USER.format(people.alice_id), agent_id=agent
    )
    reply = await messages.stub.GetOrCreateConversation(request, metadata=service())
    assert (reply.conversation.id, reply.created) == (w1.id, False)
    assert not reply.conversation.HasField("agent_id")
    await messages.stub.ArchiveConversation(pb.ArchiveConversationRequest(id=w1.id), metadata=people.alice)
    created = await messages.stub.GetOrCreateConversation(request, metadata=service())
    assert created.created and created.conversation.id != w1.id
    assert created.conversation.agent_id == agent
    assert not created.conversation.HasField("title")
    assert created.conversation.status == pb.CONVERSATION_STATUS_ACTIVE


async def test_get_or_create_without_the_channels_owner_fails_with_the_original_message(messages: Running, people: People) -> None:
    # WhatsApp with a user id but no contact id is INVALID_ARGUMENT with the original backend's text.
    error = await rpc_error(
        messages.stub.GetOrCreateConversation(
            pb.GetOrCreateConversationRequest(channel=common.CHANNEL_WHATSAPP, user_id=ids.USER.format(people.alice_id)),
            metadata=service(),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Must provide userId for web or contactId for whatsapp" in error.details()
    assert violated_fields(error) == ["contact_id"]
    assert count(messages.db, "conversations") == 0


async def test_concurrent_first_messages_of_a_contact_make_one_conversation(messages: Running, people: People) -> None:
    contact = ids.CONTACT.format(ids.CONTACT.new())
    request = pb.GetOrCreateConversationRequest(channel=common.CHANNEL_WHATSAPP, contact_id=contact)
    replies = await asyncio.gather(*(messages.stub.GetOrCreateConversation(request, metadata=service()) for _ in range(20)))
    assert len({r.conversation.id for r in replies}) == 1
    assert sum(r.created for r in replies) == 1
    web = pb.GetOrCreateConversationRequest(channel=common.CHANNEL_WEB, user_id=ids.USER.format(people.bob_id))
    replies = await asyncio.gather(*(messages.stub.GetOrCreateConversation(web, metadata=service()) for _ in range(20)))
    assert len({r.conversation.id for r in replies}) == 1
    assert count(messages.db, "conversations") == 2


async def test_owner_reads_and_renames_own_conversations_including_via_linked_contact(
    messages: Running, people: People
) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    wa1 = await whatsapp_conversation(messages.stub, people.k1_id)
    for conversation in (w1, wa1):
        got = await messages.stub.GetConversation(pb.GetConversationRequest(id=conversation.id), metadata=people.alice)
        assert got.conversation.id == conversation.id
        renamed = await messages.stub.UpdateConversationTitle(
            pb.UpdateConversationTitleRequest(id=conversation.id, title="Mine"), metadata=people.alice
        )
        assert renamed.conversation.title == "Mine"
    # Empty titles are allowed.
    cleared = await messages.stub.UpdateConversationTitle(
        pb.UpdateConversationTitleRequest(id=w1.id, title=""), metadata=people.alice
    )
    assert cleared.conversation.title == ""


async def test_bob_cannot_read_archive_rename_or_list_alices_conversations(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    wa1 = await whatsapp_conversation(messages.stub, people.k1_id)
    before = messages.db.sql("SELECT id, title, status, revision FROM messages.conversations ORDER BY id")
    for conversation in (w1, wa1):
        got = await messages.stub.GetConversation(pb.GetConversationRequest(id=conversation.id), metadata=people.bob)
        assert not got.HasField("conversation")
        archived = await messages.stub.ArchiveConversation(pb.ArchiveConversationRequest(id=conversation.id), metadata=people.bob)
        assert not archived.HasField("conversation")
        renamed = await messages.stub.UpdateConversationTitle(
            pb.UpdateConversationTitleRequest(id=conversation.id, title="pwned"), metadata=people.bob
        )
        assert not renamed.HasField("conversation")
    listed = await messages.stub.ListConversations(pb.ListConversationsRequest(), metadata=people.bob)
    assert list(listed.conversations) == []
    # A missing id answers the same as someone else's.
    missing = await messages.stub.GetConversation(
        pb.GetConversationRequest(id=ids.CONVERSATION.format(ids.CONVERSATION.new())), metadata=people.bob
    )
    assert not missing.HasField("conversation")
    assert messages.db.sql("SELECT id, title, status, revision FROM messages.conversations ORDER BY id") == before


async def test_list_conversations_pages_oldest_first(messages: Running, people: People) -> None:
    made = [(await web_conversation(messages.stub, people.alice, title=str(i))).id for i in range(5)]
    seen, token = [], ""
    while True:
        page = await messages.stub.ListConversations(
            pb.ListConversationsRequest(page_size=2, page_token=token), metadata=people.alice
        )
        seen += [c.id for c in page.conversations]
        token = page.next_page_token
        if not token:
            break
    assert seen == made


async def test_service_peers_batch_get_conversations_and_history(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    missing = ids.CONVERSATION.format(ids.CONVERSATION.new())
    batch = await messages.stub.BatchGetConversations(
        pb.BatchGetConversationsRequest(ids=[missing, w1.id]), metadata=service()
    )
    assert [c.id for c in batch.conversations] == [w1.id]
    for text in ("one", "two", "three"):
        await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content=text), metadata=people.alice)
    everything = await messages.stub.GetConversationHistory(
        pb.GetConversationHistoryRequest(conversation_id=w1.id), metadata=service()
    )
    assert [m.content for m in everything.messages] == ["one", "two", "three"]
    recent = await messages.stub.GetConversationHistory(
        pb.GetConversationHistoryRequest(conversation_id=w1.id, max_messages=2), metadata=service()
    )
    assert [m.content for m in recent.messages] == ["two", "three"]
    absent = await messages.stub.GetConversationHistory(
        pb.GetConversationHistoryRequest(conversation_id=missing), metadata=service()
    )
    assert not absent.HasField("conversation") and list(absent.messages) == []
    # User tokens cannot call service RPCs.
    error = await rpc_error(
        messages.stub.BatchGetConversations(pb.BatchGetConversationsRequest(ids=[w1.id]), metadata=people.alice)
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
