"""Memories on pgvector: cosine search equals brute force, filtered by conversation and source,
scores belong to their own rows (docs/hardening.md #23), 1536 dimensions enforced, service key required
(docs/hardening.md #1)."""

from __future__ import annotations

import asyncio
import math
import random
import struct
from typing import Any

import grpc

from tests.service.conftest import Running
from tests.service.messages.conftest import People
from tests.support.grpc_client import rpc_error, service
from tests.support.messages_builders import count
from zenthor import ids
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb

DIM = 1536


def as_float32(values: list[float]) -> list[float]:
    """What a proto `float` (and pgvector) keeps of each value."""
    return list(struct.unpack(f"{len(values)}f", struct.pack(f"{len(values)}f", *values)))


def random_vector(rng: random.Random) -> list[float]:
    return as_float32([rng.gauss(0.0, 1.0) for _ in range(DIM)])


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def brute_force(query: list[float], stored: dict[str, list[float]], limit: int) -> list[tuple[str, float]]:
    scored = sorted(((cosine(query, v), memory_id) for memory_id, v in stored.items()), reverse=True)
    return [(memory_id, score) for score, memory_id in scored[:limit]]


async def store(messages: Running, embedding: list[float], conversation_id: str | None, source: Any, content: str) -> str:
    reply = await messages.stub.StoreMemory(
        pb.StoreMemoryRequest(conversation_id=conversation_id, content=content, embedding=embedding, source=source),
        metadata=service(),
    )
    return reply.memory.id


async def search(messages: Running, query: list[float], limit: int = 0, conversation_id: str | None = None, source: Any = None) -> list[pb.MemoryHit]:
    request = pb.SearchMemoriesRequest(embedding=query, limit=limit, conversation_id=conversation_id, source=source)
    return list((await messages.stub.SearchMemories(request, metadata=service())).hits)


async def test_search_returns_the_true_nearest_neighbours_of_a_conversation_among_1000(messages: Running) -> None:
    # At 1000 rows the planner would answer the unfiltered search with an exact sequential
    # scan; forbid that in this test's database so the HNSW index path is what gets checked.
    messages.db.sql(f'ALTER DATABASE "{messages.db.name}" SET enable_seqscan = off')
    rng = random.Random(1536)
    conversations = [ids.CONVERSATION.format(ids.CONVERSATION.new()) for _ in range(4)]
    plan = []
    for i in range(1000):
        source = pb.MEMORY_SOURCE_MANUAL if i % 3 else pb.MEMORY_SOURCE_CONVERSATION
        plan.append((random_vector(rng), conversations[i % 4], source))
    stored: dict[str, tuple[list[float], str, int]] = {}
    for start in range(0, len(plan), 50):
        chunk = plan[start : start + 50]
        made = await asyncio.gather(*(store(messages, v, c, s, f"memory {start + j}") for j, (v, c, s) in enumerate(chunk)))
        stored.update({memory_id: item for memory_id, item in zip(made, chunk, strict=True)})
    assert count(messages.db, "memories") == 1000

    for q in range(5):
        query = random_vector(rng)
        conversation = conversations[q % 4]
        mine = {m: v for m, (v, c, _) in stored.items() if c == conversation}
        hits = await search(messages, query, limit=10, conversation_id=conversation)
        expected = brute_force(query, mine, 10)
        assert [h.memory_id for h in hits] == [m for m, _ in expected]
        for hit, (_, score) in zip(hits, expected, strict=True):
            assert math.isclose(hit.score, score, abs_tol=1e-5)
            assert hit.conversation_id == conversation
        # Default limit 5, and the source filter.
        assert [h.memory_id for h in await search(messages, query, conversation_id=conversation)] == [m for m, _ in expected[:5]]
        manual = {m: v for m, (v, c, s) in stored.items() if c == conversation and s == pb.MEMORY_SOURCE_MANUAL}
        filtered = await search(messages, query, limit=10, conversation_id=conversation, source=pb.MEMORY_SOURCE_MANUAL)
        assert [h.memory_id for h in filtered] == [m for m, _ in brute_force(query, manual, 10)]
        assert {h.source for h in filtered} == {pb.MEMORY_SOURCE_MANUAL}

    # Unfiltered (global) search goes through the HNSW index (ef_search 200): random queries
    # (the hardest case: all 1000 nearly equidistant) and queries near a stored memory get
    # exactly the brute-force top results over all 1000.
    everything = {m: v for m, (v, _, _) in stored.items()}
    for _ in range(5):
        query = random_vector(rng)
        hits = await search(messages, query)
        assert [h.memory_id for h in hits] == [m for m, _ in brute_force(query, everything, 5)]
    for target in list(stored)[:3]:
        query = as_float32([x + rng.gauss(0.0, 0.3) for x in stored[target][0]])
        hits = await search(messages, query, limit=10)
        assert hits[0].memory_id == target
        assert [h.memory_id for h in hits] == [m for m, _ in brute_force(query, everything, 10)]


async def test_each_score_belongs_to_its_own_memory_even_after_a_delete(messages: Running) -> None:
    # docs/hardening.md #23: the original paired scores by position after dropping deleted rows.
    rng = random.Random(23)
    conversation = ids.CONVERSATION.format(ids.CONVERSATION.new())
    vectors = [random_vector(rng) for _ in range(4)]
    made = [await store(messages, v, conversation, pb.MEMORY_SOURCE_MANUAL, f"m{i}") for i, v in enumerate(vectors)]
    query = as_float32([a + b for a, b in zip(vectors[0], vectors[1], strict=True)])
    before = await search(messages, query, limit=4, conversation_id=conversation)
    deleted = await messages.stub.DeleteMemory(pb.DeleteMemoryRequest(id=before[0].memory_id), metadata=service())
    assert deleted.deleted
    after = await search(messages, query, limit=4, conversation_id=conversation)
    assert [h.memory_id for h in after] == [h.memory_id for h in before[1:]]
    by_id = dict(zip(made, vectors, strict=True))
    for hit in after:
        assert math.isclose(hit.score, cosine(query, by_id[hit.memory_id]), abs_tol=1e-5)
        assert hit.content == f"m{made.index(hit.memory_id)}"
    again = await messages.stub.DeleteMemory(pb.DeleteMemoryRequest(id=before[0].memory_id), metadata=service())
    assert not again.deleted  # docs/hardening.md #30: a missing id is an answer, not a crash


async def test_list_memories_of_a_conversation_pages_with_optional_embeddings(messages: Running) -> None:
    rng = random.Random(7)
    conversation = ids.CONVERSATION.format(ids.CONVERSATION.new())
    vectors = [random_vector(rng) for _ in range(3)]
    made = [await store(messages, v, conversation, pb.MEMORY_SOURCE_CONVERSATION, f"m{i}") for i, v in enumerate(vectors)]
    await store(messages, random_vector(rng), None, pb.MEMORY_SOURCE_MANUAL, "global")
    first = await messages.stub.ListMemories(pb.ListMemoriesRequest(conversation_id=conversation, page_size=2), metadata=service())
    rest = await messages.stub.ListMemories(
        pb.ListMemoriesRequest(conversation_id=conversation, page_size=2, page_token=first.next_page_token, include_embeddings=True),
        metadata=service(),
    )
    assert [m.id for m in [*first.memories, *rest.memories]] == made
    assert list(first.memories[0].embedding) == []
    assert list(rest.memories[0].embedding) == vectors[2]
    assert rest.memories[0].source == pb.MEMORY_SOURCE_CONVERSATION


async def test_embeddings_must_have_1536_finite_dimensions(messages: Running) -> None:
    for bad, why in (([0.1] * 1535, "1536"), ([0.1] * 1537, "1536"), ([math.nan] + [0.1] * 1535, "finite"), ([0.0] * 1536, "zero")):
        for call in (
            messages.stub.StoreMemory(
                pb.StoreMemoryRequest(content="x", embedding=bad, source=pb.MEMORY_SOURCE_MANUAL), metadata=service()
            ),
            messages.stub.SearchMemories(pb.SearchMemoriesRequest(embedding=bad), metadata=service()),
        ):
            error = await rpc_error(call)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert why in error.details() and "embedding" in error.details()
    assert count(messages.db, "memories") == 0


async def test_memories_refuse_calls_without_the_service_key(messages: Running, people: People) -> None:
    # docs/hardening.md #1: the original store/search were public actions.
    vector = random_vector(random.Random(1))
    calls = {
        "no key": (),
        "a user's token": people.alice,
        "a wrong key": service("not-the-key"),
    }
    for who, metadata in calls.items():
        for call in (
            messages.stub.StoreMemory(
                pb.StoreMemoryRequest(content="x", embedding=vector, source=pb.MEMORY_SOURCE_MANUAL), metadata=metadata
            ),
            messages.stub.SearchMemories(pb.SearchMemoriesRequest(embedding=vector), metadata=metadata),
            messages.stub.ListMemories(
                pb.ListMemoriesRequest(conversation_id=ids.CONVERSATION.format(ids.CONVERSATION.new())), metadata=metadata
            ),
            messages.stub.DeleteMemory(pb.DeleteMemoryRequest(id=ids.MEMORY.format(ids.MEMORY.new())), metadata=metadata),
        ):
            error = await rpc_error(call)
            assert error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), who
    assert count(messages.db, "memories") == 0
