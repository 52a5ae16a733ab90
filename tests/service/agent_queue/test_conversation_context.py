"""GetConversationContext over gRPC, composed from the real messages and identity
servers: one round trip for the runtime."""

from __future__ import annotations

import uuid

import grpc

from tests.service.agent_queue.conftest import AgentQueueFactory, WithMessages
from tests.service.conftest import Running
from tests.support.agent_queue_builders import conv, conv_id
from tests.support.builders import add_contact, alice
from tests.support.database import TestDatabase
from tests.support.grpc_client import bearer, rpc_error, service
from tests.support.messages_builders import web_conversation, whatsapp_conversation
from zenthor import ids
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as mpb


def add_skill(db: TestDatabase, name: str, *, owner: uuid.UUID | None, enabled: bool = True) -> str:
    skill_id = ids.SKILL.new()
    db.sql(
        "INSERT INTO agent_queue.skills (id, owner_user_id, name, description, enabled, config, created_at)"
        " VALUES (%s, %s, %s, 'd', %s, '{\"systemPrompt\": \"be brief\", \"toolPolicy\": {\"allow\": []}}', now())",
        (skill_id, owner, name, enabled),
    )
    return ids.SKILL.format(skill_id)


async def context_of(aq: Running, conversation_id: str, max_messages: int = 0) -> pb.GetConversationContextResponse:
    return await aq.stub.GetConversationContext(
        pb.GetConversationContextRequest(conversation_id=conversation_id, max_messages=max_messages), metadata=service()
    )


async def say(both: WithMessages, conversation_id: str, text: str) -> None:
    await both.messages.stub.SendMessageAsService(
        mpb.SendMessageAsServiceRequest(conversation_id=conversation_id, content=text), metadata=service()
    )


async def test_whatsapp_context_has_the_contact_the_owners_enabled_skills_and_no_user(with_messages: WithMessages) -> None:
    db = with_messages.messages.db
    alice_id = alice(db)
    k1 = add_contact(db, "5511999990000", user_id=alice_id)
    wa1 = await whatsapp_conversation(with_messages.messages.stub, k1)
    for text in ("one", "two", "three"):
        await say(with_messages, wa1.id, text)
    s1 = add_skill(db, "S1", owner=alice_id)
    add_skill(db, "S2", owner=alice_id, enabled=False)
    l1 = add_skill(db, "L1", owner=None)

    context = (await context_of(with_messages.agent_queue, wa1.id)).context
    assert context.conversation.id == wa1.id and context.conversation.title == "one"  # auto-titled
    assert not context.HasField("user")
    assert context.contact.id == ids.CONTACT.format(k1) and context.contact.phone == "5511999990000"
    assert [m.content for m in context.messages] == ["one", "two", "three"]
    assert [s.id for s in context.skills] == [s1]
    assert context.skills[0].config.system_prompt == "be brief"
    assert context.skills[0].config.tool_policy.HasField("allow")  # present and empty: nothing allowed
    assert not context.HasField("agent")

    db.sql("UPDATE agent_queue.skills SET enabled = false WHERE name = 'S1'")
    fallback = (await context_of(with_messages.agent_queue, wa1.id)).context
    assert [s.id for s in fallback.skills] == [l1]  # legacy fallback


async def test_web_context_has_the_user_the_agent_even_disabled_and_the_latest_messages(
    with_messages: WithMessages,
) -> None:
    db = with_messages.messages.db
    alice_id = alice(db)
    w1 = await web_conversation(with_messages.messages.stub, bearer(with_messages.messages.issuer.token("user_alice")))
    agent_id = ids.AGENT.new()
    db.sql(
        "INSERT INTO agent_queue.agents (id, name, description, system_prompt, model, enabled, created_at)"
        " VALUES (%s, 'helper', 'd', 'You help.', 'm1', false, now())",
        (agent_id,),
    )
    db.sql("UPDATE messages.conversations SET agent_id = %s", (agent_id,))
    for text in ("a", "b", "c"):
        await say(with_messages, w1.id, text)

    context = (await context_of(with_messages.agent_queue, w1.id, max_messages=2)).context
    assert context.user.id == ids.USER.format(alice_id) and context.user.name == "Alice A"
    assert not context.HasField("contact")
    assert [m.content for m in context.messages] == ["b", "c"]  # the latest two, oldest first
    assert context.agent.id == ids.AGENT.format(agent_id) and not context.agent.enabled
    assert context.agent.system_prompt == "You help." and context.agent.model == "m1"
    assert list(context.skills) == []  # no skills at all


async def test_missing_conversation_has_no_context(with_messages: WithMessages) -> None:
    reply = await context_of(with_messages.agent_queue, conv_id(conv()))
    assert not reply.HasField("context")


async def test_context_is_unavailable_while_messages_is_down(agent_queue_factory: AgentQueueFactory) -> None:
    from tests.support.ports import free_port

    aq = await agent_queue_factory(messages_addr=f"127.0.0.1:{free_port()}", rpc_deadline_s=0.5)
    error = await rpc_error(context_of(aq, conv_id(conv())))
    # UNAVAILABLE: the runtime classifies it as retryable, never INTERNAL.
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "messages" in (error.details() or "")
