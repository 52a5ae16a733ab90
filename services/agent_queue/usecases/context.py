"""GetConversationContext: everything the runtime needs for one job in one round trip,
composed from messages (conversation + history) and identity (user, contact) over gRPC with
deadlines, plus this service's skills and agent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.agent_queue.domain.agents import Agent
from services.agent_queue.domain.skills import Skill
from services.agent_queue.store import agents as agent_store
from services.agent_queue.store import skills as skill_store
from services.agent_queue.usecases.deps import Deps


@dataclass(frozen=True)
class ConversationRecord:
    """A peer's conversation: the ids this service reads, and the record passed through."""

    record: Any
    user_id: uuid.UUID | None
    contact_id: uuid.UUID | None
    agent_id: uuid.UUID | None


@dataclass(frozen=True)
class ContactRecord:
    record: Any
    user_id: uuid.UUID | None


@dataclass(frozen=True)
class History:
    conversation: ConversationRecord
    messages: Sequence[Any]


class ConversationDirectory(Protocol):
    """The peers GetConversationContext reads (services/agent_queue/peers.py over gRPC)."""

    async def history(self, conversation_id: uuid.UUID, max_messages: int) -> History | None: ...

    async def user(self, user_id: uuid.UUID) -> Any | None: ...

    async def contact(self, contact_id: uuid.UUID) -> ContactRecord | None: ...


@dataclass(frozen=True)
class ConversationContext:
    conversation: Any
    user: Any | None
    contact: Any | None
    messages: Sequence[Any]
    skills: list[Skill]
    agent: Agent | None


async def get_conversation_context(
    deps: Deps, directory: ConversationDirectory, conversation_id: uuid.UUID, max_messages: int
) -> ConversationContext | None:
    history = await directory.history(conversation_id, max_messages)
    if history is None:
        return None
    conversation = history.conversation

    async def none() -> None:
        return None

    # Everything that depends only on the conversation, at once.
    user, contact, agent, user_skills = await asyncio.gather(
        directory.user(conversation.user_id) if conversation.user_id else none(),
        directory.contact(conversation.contact_id) if conversation.contact_id else none(),
        _agent(deps, conversation.agent_id) if conversation.agent_id else none(),
        _enabled_skills(deps, conversation.user_id) if conversation.user_id else none(),
    )
    # spec: skills of the owner (the conversation's user, else the contact's user) when it has
    # enabled ones, else the enabled unowned skills.
    skills: list[Skill] = user_skills or []
    if not skills and conversation.user_id is None and contact is not None and contact.user_id is not None:
        skills = await _enabled_skills(deps, contact.user_id)
    if not skills:
        skills = await _enabled_skills(deps, None)
    return ConversationContext(
        conversation=conversation.record,
        user=user,
        contact=contact.record if contact else None,
        messages=history.messages,
        skills=skills,
        agent=agent,
    )


async def _enabled_skills(deps: Deps, owner: uuid.UUID | None) -> list[Skill]:
    async with deps.uow() as uow:
        return await skill_store.enabled_skills(uow.conn, owner)


async def _agent(deps: Deps, agent_id: uuid.UUID) -> Agent | None:
    async with deps.uow() as uow:
        return await agent_store.get_agent(uow.conn, agent_id)
