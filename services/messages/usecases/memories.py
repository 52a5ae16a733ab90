"""Memory use cases (service callers only, docs/hardening.md #1)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.messages.domain import memories as rules
from services.messages.domain.memories import Memory, MemoryHit, MemorySource
from services.messages.domain.messages import check_content
from services.messages.store import memories as store
from services.messages.usecases.deps import Deps
from zenthor import ids
from zenthor.pagination import Page, PageRequest, next_token


async def store_memory(
    deps: Deps, conversation_id: uuid.UUID | None, content: str, embedding: Sequence[float], source: MemorySource
) -> Memory:
    content = check_content(content)
    vector = rules.check_embedding(embedding)
    async with deps.uow() as uow:
        memory = await store.insert_memory(
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
    vector = rules.check_embedding(embedding)
    limit = rules.check_search_limit(limit)
    async with deps.uow() as uow:
        return await store.search_memories(uow.conn, vector, limit, conversation_id, source)


async def list_memories(deps: Deps, conversation_id: uuid.UUID, page: PageRequest, with_embeddings: bool) -> Page[Memory]:
    async with deps.uow() as uow:
        found = await store.list_memories(uow.conn, conversation_id, page, with_embeddings=with_embeddings)
    return Page(found, next_token([m.id for m in found], page.size))


async def delete_memory(deps: Deps, memory_id: uuid.UUID) -> bool:
    """A missing id answers False instead of failing (docs/hardening.md #30)."""
    async with deps.uow() as uow:
        deleted = await store.delete_memory(uow.conn, memory_id)
        await uow.commit()
    return deleted
