"""Live watches (docs/architecture.md §7): subscribe to the change feed FIRST, then read the current
state, then re-read after every wake-up (and every `resync_s` as a safety net). A wake-up
carries no data; the tables are the truth, so a lost or coalesced notification costs a re-read,
never a change."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime

from services.messages.domain.conversations import Conversation, owned, owner_keys
from services.messages.domain.messages import Message
from services.messages.domain.recent import RecentConversation
from services.messages.domain.watch import WatchPosition
from services.messages.store import conversations as store
from services.messages.usecases.deps import CONVERSATION_CHANNEL, CONVERSATION_LIST_CHANNEL, Deps
from zenthor.auth.principal import ResolvedUser
from zenthor.notify import Subscription

# Messages per response while catching up; a large conversation's initial state spans several.
CATCH_UP_CHUNK = 200


@dataclass(frozen=True)
class ConversationChanges:
    """One WatchConversation response: changed messages in change order, the conversation
    when new to the watcher (first response, title/status change), and the resume point."""

    conversation: Conversation | None
    messages: Sequence[Message]
    position: WatchPosition
    caught_up: bool
    # Messages deleted since the previous response (a rolled-back reply), in change order.
    removed: Sequence[uuid.UUID] = ()


@dataclass(frozen=True)
class _Read:
    conversation: Conversation | None
    changed: list[Message]
    # The revision the read covers: the conversation's, or a full chunk's last row's.
    upto: int
    full: bool
    removed: list[uuid.UUID]


async def _read_changes(deps: Deps, conversation_id: uuid.UUID, after: int) -> _Read:
    """The conversation, then its messages changed after `after` up to the revision that
    conversation row showed, and the deletions up to the same revision: one snapshot, one round
    trip (store/conversations.py: watch_read)."""
    read = await store.watch_read(deps.db, conversation_id, after, CATCH_UP_CHUNK)
    if read.conversation is None:
        return _Read(None, [], after, False, [])
    # A full chunk may stop inside the backlog: resume right after its last row
    # (one message per revision, so no row shares that revision).
    full = len(read.changed) == CATCH_UP_CHUNK
    upto = read.changed[-1].revision if full else read.conversation.revision
    removed = [message_id for message_id, revision in read.removed if revision <= upto]
    return _Read(read.conversation, read.changed, upto, full, removed)


async def watch_conversation(
    deps: Deps, user: ResolvedUser, conversation_id: uuid.UUID, resume: WatchPosition | None
) -> AsyncIterator[ConversationChanges]:
    async with deps.feed.subscribe(CONVERSATION_CHANNEL, conversation_id.hex) as wakeups:
        seen = resume.revision if resume else 0
        first, caught_up = True, False
        while True:
            read = await _read_changes(deps, conversation_id, seen)
            conversation, changed, full, upto = read.conversation, read.changed, read.full, read.upto
            if first and owned(conversation, user) is None:
                # Missing and not owned look the same: one empty, caught-up answer.
                yield ConversationChanges(None, (), WatchPosition(conversation_id, seen), caught_up=True)
                return
            assert conversation is not None  # conversations are never deleted
            # A watcher starting afresh never saw what was deleted before it came.
            removed = read.removed if resume is not None or not first else []
            meta_changed = seen < conversation.meta_revision <= upto
            if first or changed or removed or meta_changed or (not full and not caught_up):
                yield ConversationChanges(
                    conversation if first or meta_changed else None,
                    changed,
                    WatchPosition(conversation_id, max(upto, seen)),
                    caught_up=not full,
                    removed=removed,
                )
            seen, first = max(upto, seen), False
            if not full:
                caught_up = True
                await wakeups.wait(deps.feed.resync_s)


async def _wait_any(subscriptions: Sequence[Subscription], timeout_s: float) -> None:
    if len(subscriptions) == 1:
        await subscriptions[0].wait(timeout_s)
        return
    waits = [asyncio.ensure_future(s.wait(timeout_s)) for s in subscriptions]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # A wake-up cleared here is not lost: the re-read that follows sees its commit.
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


@dataclass(frozen=True)
class ConversationListSnapshot:
    conversations: list[RecentConversation]
    taken_at: datetime


async def watch_conversation_list(deps: Deps, user: ResolvedUser, size: int) -> AsyncIterator[ConversationListSnapshot]:
    """The caller's recent list (first page), again whenever it changed."""
    async with AsyncExitStack() as stack:
        wakeups = [
            await stack.enter_async_context(deps.feed.subscribe(CONVERSATION_LIST_CHANNEL, key))
            for key in owner_keys(user.user_id, user.contact_id)
        ]
        previous: list[RecentConversation] | None = None
        while True:
            async with deps.uow() as uow:
                current = await store.recent_conversations(uow.conn, user.user_id, user.contact_id, None, size)
            if current != previous:
                yield ConversationListSnapshot(current, deps.clock())
                previous = current
            await _wait_any(wakeups, deps.feed.resync_s)
