"""Inbound dedupe and memory use cases (service callers only; finding 1)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from services.messages import domain, store_memories
from services.messages.domain import Channel, Memory, MemoryHit, MemorySource
from services.messages.usecases import Deps
from zenthor import ids
from zenthor.errors import InvalidArgument
from zenthor.pagination import Page, PageRequest, next_token

# spec inboundDedupe.cleanup: olderThanMs defaults to 86 400 000 (24 h).
DEFAULT_DEDUPE_RETENTION = timedelta(hours=24)
DEFAULT_CLEANUP_BATCH = 1_000
MAX_CLEANUP_BATCH = 10_000


async def check_and_register_inbound(deps: Deps, channel: Channel, channel_message_id: str, account_id: str) -> bool:
    """True when the provider message was seen before (nothing written)."""
    channel_message_id = domain.check_channel_message_id(channel_message_id)
    account = domain.check_account_id(account_id)
    async with deps.uow() as uow:
        registered = await store_memories.register_inbound(
            uow.conn,
            channel=channel,
            account_id=account,
            channel_message_id=channel_message_id,
            now=deps.clock(),
        )
        await uow.commit()
    return not registered


async def cleanup_inbound_dedupe(deps: Deps, older_than: timedelta | None, batch_size: int) -> tuple[int, bool]:
    """One batch of the daily sweep: (deleted, more due)."""
    retention = DEFAULT_DEDUPE_RETENTION if older_than is None else older_than
    if retention < timedelta(0):
        raise InvalidArgument("older_than", "must not be negative")
    batch = domain.check_page_size(batch_size, "batch_size", default=DEFAULT_CLEANUP_BATCH, maximum=MAX_CLEANUP_BATCH)
    async with deps.uow() as uow:
        deleted, more = await store_memories.delete_inbound_before(uow.conn, deps.clock() - retention, batch)
        await uow.commit()
    return deleted, more


async def store_memory(
    deps: Deps, conversation_id: uuid.UUID | None, content: str, embedding: Sequence[float], source: MemorySource
) -> Memory:
    content = domain.check_content(content)
    vector = domain.check_embedding(embedding)
    async with deps.uow() as uow:
        memory = await store_memories.insert_memory(
            uow.conn,
            memory_id=ids.MEMORY.new(),
            conversation_id=conversation_id,
            content=content,
            embedding=vector,
            source=source,
            now=deps.clock(),
        )
        await uow.commit()
    return memory


async def search_memories(
    deps: Deps, embedding: Sequence[float], limit: int, conversation_id: uuid.UUID | None, source: MemorySource | None
) -> list[MemoryHit]:
    vector = domain.check_embedding(embedding)
    limit = domain.check_search_limit(limit)
    async with deps.uow() as uow:
        return await store_memories.search_memories(uow.conn, vector, limit, conversation_id, source)


async def list_memories(deps: Deps, conversation_id: uuid.UUID, page: PageRequest, with_embeddings: bool) -> Page[Memory]:
    async with deps.uow() as uow:
        found = await store_memories.list_memories(uow.conn, conversation_id, page, with_embeddings=with_embeddings)
    return Page(found, next_token([m.id for m in found], page.size))


async def delete_memory(deps: Deps, memory_id: uuid.UUID) -> bool:
    """Finding 30: a missing id answers False instead of failing."""
    async with deps.uow() as uow:
        deleted = await store_memories.delete_memory(uow.conn, memory_id)
        await uow.commit()
    return deleted
