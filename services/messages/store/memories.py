"""SQL of memories: pgvector `vector(1536)` with an HNSW cosine index."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pgvector import Vector as VectorValue
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messages.domain.memories import Memory, MemoryHit, MemorySource
from services.messages.store.tables import memories
from zenthor.pagination import PageRequest


def _memory(row: Any, *, with_embedding: bool = False) -> Memory:
    return Memory(
        id=row.id,
        conversation_id=row.conversation_id,
        content=row.content,
        source=MemorySource(row.source),
        created_at=row.created_at,
        embedding=tuple(float(v) for v in row.embedding) if with_embedding else None,
    )


async def insert_memory(
    conn: AsyncConnection,
    *,
    memory_id: uuid.UUID,
    conversation_id: uuid.UUID | None,
    content: str,
    embedding: Sequence[float],
    source: MemorySource,
    now: datetime,
) -> Memory:
    row = (
        await conn.execute(
            sa.insert(memories)
            .values(
                id=memory_id,
                conversation_id=conversation_id,
                content=content,
                embedding=list(embedding),
                source=source.value,
                created_at=now,
            )
            .returning(memories.c.id, memories.c.conversation_id, memories.c.content, memories.c.source, memories.c.created_at)
        )
    ).one()
    return _memory(row)


# Exact cosine search inside one conversation. The conversation's rows come from the btree
# index; MATERIALIZED keeps the planner from using the approximate HNSW scan, which filters
# after searching and could return fewer or other rows than the true nearest neighbours. A
# conversation holds few memories (compaction summaries, `memory_store` calls), so this is cheap.
SEARCH_IN_CONVERSATION = sa.text(
    """
    WITH candidates AS MATERIALIZED (
        SELECT id, conversation_id, content, source, created_at,
               embedding <=> CAST(:query AS vector) AS distance
          FROM messages.memories
         WHERE conversation_id = :conversation_id
           AND (CAST(:source AS text) IS NULL OR source = CAST(:source AS text))
    )
    SELECT * FROM candidates ORDER BY distance, id LIMIT :limit
    """
)

# Global search (service callers only): the HNSW index (vector_cosine_ops). ef_search 200 keeps
# recall high at the contract's largest limit (256 is clamped by pgvector's own candidate list),
# and strict-order iterative scans keep returning rows when the source filter discards many.
SET_HNSW_SEARCH = (
    sa.text("SET LOCAL hnsw.ef_search = 200"),
    sa.text("SET LOCAL hnsw.iterative_scan = strict_order"),
)
SEARCH_ALL = sa.text(
    """
    SELECT id, conversation_id, content, source, created_at,
           embedding <=> CAST(:query AS vector) AS distance
      FROM messages.memories
     WHERE CAST(:source AS text) IS NULL OR source = CAST(:source AS text)
     ORDER BY embedding <=> CAST(:query AS vector)
     LIMIT :limit
    """
)


async def search_memories(
    conn: AsyncConnection,
    query: Sequence[float],
    limit: int,
    conversation_id: uuid.UUID | None,
    source: MemorySource | None,
) -> list[MemoryHit]:
    """Nearest neighbours by cosine, best first; each score is computed on its own row in the
    same statement (docs/hardening.md #23), so a deleted memory can never shift scores."""
    params: dict[str, Any] = {
        "query": VectorValue(list(query)).to_text(),
        "limit": limit,
        "source": source.value if source else None,
    }
    if conversation_id is not None:
        rows = (await conn.execute(SEARCH_IN_CONVERSATION, {**params, "conversation_id": conversation_id})).all()
    else:
        for setting in SET_HNSW_SEARCH:
            await conn.execute(setting)
        rows = (await conn.execute(SEARCH_ALL, params)).all()
    # pgvector's cosine distance is 1 - cosine similarity.
    return [MemoryHit(_memory(r), 1.0 - float(r.distance)) for r in rows]


async def list_memories(
    conn: AsyncConnection, conversation_id: uuid.UUID, page: PageRequest, *, with_embeddings: bool
) -> list[Memory]:
    columns = [memories.c.id, memories.c.conversation_id, memories.c.content, memories.c.source, memories.c.created_at]
    if with_embeddings:
        columns.append(memories.c.embedding)
    query = sa.select(*columns).where(memories.c.conversation_id == conversation_id).order_by(memories.c.id).limit(page.size)
    if page.after is not None:
        query = query.where(memories.c.id > page.after)
    return [_memory(r, with_embedding=with_embeddings) for r in (await conn.execute(query)).all()]


async def delete_memory(conn: AsyncConnection, memory_id: uuid.UUID) -> bool:
    return (await conn.execute(sa.delete(memories).where(memories.c.id == memory_id))).rowcount == 1
