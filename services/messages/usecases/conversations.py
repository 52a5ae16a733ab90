"""Conversation use cases, and the steps every write to a conversation starts with."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from services.messages.domain import conversations as rules
from services.messages.domain.conversations import (
    Channel,
    Conversation,
    ConversationStatus,
    DoubleTexting,
    owned,
)
from services.messages.domain.messages import Message
from services.messages.domain.recent import RecentConversation, RecentPageRequest, next_recent_token
from services.messages.domain.titles import DEFAULT_TITLE
from services.messages.store import conversations as store
from services.messages.store import messages as message_store
from services.messages.usecases.deps import CONVERSATION_CHANNEL, CONVERSATION_LIST_CHANNEL, Deps
from zenthor import ids
from zenthor.auth.principal import ResolvedUser
from zenthor.db import UnitOfWork
from zenthor.errors import NotFound
from zenthor.notify import notify
from zenthor.pagination import Page, PageRequest, next_token

CONVERSATION_NOT_FOUND = "Conversation not found"  # the original backend's exact text


async def announce(conn: AsyncConnection, conversation: Conversation) -> None:
    """Wakes the conversation's watchers and its owners' list watchers at commit."""
    await notify(conn, CONVERSATION_CHANNEL, conversation.id.hex)
    for key in rules.owner_keys(conversation.user_id, conversation.contact_id):
        await notify(conn, CONVERSATION_LIST_CHANNEL, key)


async def lock_conversation(uow: UnitOfWork, conversation_id: uuid.UUID) -> Conversation:
    """The conversation, locked with its next revision allocated; NotFound when missing."""
    conversation = await store.bump_conversation(uow.conn, conversation_id)
    if conversation is None:
        raise NotFound(CONVERSATION_NOT_FOUND)
    return conversation


async def owned_locked(uow: UnitOfWork, user: ResolvedUser, conversation_id: uuid.UUID) -> Conversation | None:
    """The caller's conversation, locked for a change; None (caller rolls back) otherwise."""
    current = owned(await store.get_conversation(uow.conn, conversation_id), user)
    if current is None:
        return None
    return await store.bump_conversation(uow.conn, conversation_id)


@dataclass(frozen=True)
class GetOrCreated:
    conversation: Conversation
    created: bool


async def get_or_create_conversation(
    deps: Deps, channel: Channel, user_id: uuid.UUID | None, contact_id: uuid.UUID | None, agent_id: uuid.UUID | None
) -> GetOrCreated:
    """The owner's first active conversation of the channel, else a new one (agent only on
    creation). One per owner even under concurrent calls."""
    owner = rules.getorcreate_owner(channel, user_id, contact_id)
    async with deps.uow() as uow:
        await store.lock_owner(uow.conn, channel, owner)
        existing = await store.first_active_conversation(uow.conn, channel, owner)
        if existing is not None:
            return GetOrCreated(existing, created=False)
        conversation = await store.insert_conversation(
            uow.conn,
            conversation_id=ids.CONVERSATION.new(),
            channel=channel,
            user_id=owner if channel is Channel.WEB else None,
            contact_id=owner if channel is Channel.WHATSAPP else None,
            agent_id=agent_id,
            title=None,
            now=deps.clock(),
        )
        await announce(uow.conn, conversation)
        await uow.commit()
    return GetOrCreated(conversation, created=True)


async def list_conversations(deps: Deps, user: ResolvedUser, page: PageRequest) -> Page[Conversation]:
    """By user id only: the linked contact's WhatsApp conversation is not included."""
    async with deps.uow() as uow:
        found = await store.list_conversations_of_user(uow.conn, user.user_id, page)
    return Page(found, next_token([c.id for c in found], page.size))


async def get_conversation(deps: Deps, user: ResolvedUser, conversation_id: uuid.UUID) -> Conversation | None:
    async with deps.uow() as uow:
        return owned(await store.get_conversation(uow.conn, conversation_id), user)


async def create_conversation(deps: Deps, user: ResolvedUser, title: str | None) -> Conversation:
    title = rules.check_title(title)
    async with deps.uow() as uow:
        conversation = await store.insert_conversation(
            uow.conn,
            conversation_id=ids.CONVERSATION.new(),
            channel=Channel.WEB,
            user_id=user.user_id,
            contact_id=None,
            agent_id=None,
            title=DEFAULT_TITLE if title is None else title,
            now=deps.clock(),
        )
        await announce(uow.conn, conversation)
        await uow.commit()
    return conversation


async def archive_conversation(deps: Deps, user: ResolvedUser, conversation_id: uuid.UUID) -> Conversation | None:
    """Owned web conversations only; anything else is a silent no-op (None)."""
    async with deps.uow() as uow:
        conversation = await owned_locked(uow, user, conversation_id)
        if conversation is None or not rules.can_archive(conversation):
            return None
        archived = await store.set_conversation_meta(
            uow.conn, conversation.id, conversation.revision, deps.clock(), status=ConversationStatus.ARCHIVED
        )
        await announce(uow.conn, archived)
        await uow.commit()
    return archived


async def update_conversation_title(
    deps: Deps, user: ResolvedUser, conversation_id: uuid.UUID, title: str
) -> Conversation | None:
    title = rules.check_title(title) or ""
    async with deps.uow() as uow:
        conversation = await owned_locked(uow, user, conversation_id)
        if conversation is None:
            return None
        renamed = await store.set_conversation_meta(uow.conn, conversation.id, conversation.revision, deps.clock(), title=title)
        await announce(uow.conn, renamed)
        await uow.commit()
    return renamed


async def set_conversation_double_texting(
    deps: Deps, user: ResolvedUser, conversation_id: uuid.UUID, strategy: DoubleTexting | None
) -> Conversation | None:
    """The conversation's double-texting strategy (docs/double-texting.md); None (a no-op) when
    not owned or missing."""
    strategy = rules.check_double_texting(strategy)
    async with deps.uow() as uow:
        conversation = await owned_locked(uow, user, conversation_id)
        if conversation is None:
            return None
        changed = await store.set_conversation_meta(
            uow.conn, conversation.id, conversation.revision, deps.clock(), double_texting=strategy
        )
        await announce(uow.conn, changed)
        await uow.commit()
    return changed


async def list_recent_conversations(
    deps: Deps, user: ResolvedUser, page: RecentPageRequest
) -> Page[RecentConversation]:
    """The caller's active conversations and those of their linked contact, newest activity
    first, each with its last message."""
    async with deps.uow() as uow:
        items = await store.recent_conversations(uow.conn, user.user_id, user.contact_id, page.after, page.size)
    return Page(items, next_recent_token(items, page.size))


async def batch_get_conversations(deps: Deps, conversation_ids: Sequence[uuid.UUID]) -> list[Conversation]:
    async with deps.uow() as uow:
        found = {c.id: c for c in await store.get_conversations(uow.conn, conversation_ids)}
    return [found[i] for i in conversation_ids if i in found]


@dataclass(frozen=True)
class History:
    conversation: Conversation | None
    messages: list[Message]


async def get_conversation_history(deps: Deps, conversation_id: uuid.UUID, max_messages: int) -> History:
    """The conversation with all its messages, or only the newest `max_messages` (0: all)."""
    last = rules.check_max_messages(max_messages)
    async with deps.uow() as uow:
        conversation = await store.get_conversation(uow.conn, conversation_id)
        if conversation is None:
            return History(None, [])
        return History(conversation, await message_store.history(uow.conn, conversation_id, last))
