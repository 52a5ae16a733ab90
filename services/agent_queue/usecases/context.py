"""GetConversationContext: everything the runtime needs for one job in one round trip,
composed from messages (conversation + history) and identity (user, contact), read through
the ConversationDirectory port, plus this service's skills and agent."""

from __future__ import annotations

import asyncio
import uuid
from typing import Protocol

from services.agent_queue.domain.context import (
    Contact,
    ConversationContext,
    History,
    User,
    check_max_messages,
)
from services.agent_queue.store import agents as agent_store
from services.agent_queue.store import skills as skill_store
from services.agent_queue.usecases.deps import Deps


class ConversationDirectory(Protocol):
    """The peers GetConversationContext reads (implemented over gRPC in peers.py)."""

    async def history(self, conversation_id: uuid.UUID, max_messages: int) -> History | None: ...

    async def user(self, user_id: uuid.UUID) -> User | None: ...

    async def contact(self, contact_id: uuid.UUID) -> Contact | None: ...


async def get_conversation_context(
    deps: Deps, directory: ConversationDirectory, conversation_id: uuid.UUID, max_messages: int
) -> ConversationContext | None:
    history = await directory.history(conversation_id, check_max_messages(max_messages))
    if history is None:
        return None
    conversation = history.conversation

    async def none() -> None:
        return None

    # The peers' records at once, then this service's rows in one unit of work.
    user, contact = await asyncio.gather(
        directory.user(conversation.user_id) if conversation.user_id else none(),
        directory.contact(conversation.contact_id) if conversation.contact_id else none(),
    )
    async with deps.uow() as uow:
        agent = await agent_store.get_agent(uow.conn, conversation.agent_id) if conversation.agent_id else None
        # The owner's enabled skills (the owner is the conversation's user, else the contact's
        # linked user) when it has any, else the enabled unowned skills.
        owner = conversation.user_id or (contact.user_id if contact is not None else None)
        skills = await skill_store.enabled_skills(uow.conn, owner) if owner is not None else []
        if not skills:
            skills = await skill_store.enabled_skills(uow.conn, None)
    return ConversationContext(
        conversation=conversation,
        user=user,
        contact=contact,
        messages=history.messages,
        skills=skills,
        agent=agent,
    )
