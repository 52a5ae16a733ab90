"""Memories: embeddings and their search (service callers only, docs/hardening.md #1)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from zenthor.errors import InvalidArgument
from zenthor.pagination import PageLimits

EMBEDDING_DIMENSIONS = 1536  # text-embedding-3-small, the agent runtime's default model
DEFAULT_SEARCH_LIMIT = 5
MAX_SEARCH_LIMIT = 256  # the original platform's vector-search range is 1..256
# ListMemories page sizes as the contract documents them.
MEMORIES_PAGE = PageLimits(default=100, maximum=500)


class MemorySource(StrEnum):
    CONVERSATION = "conversation"
    MANUAL = "manual"


@dataclass(frozen=True)
class Memory:
    id: uuid.UUID
    conversation_id: uuid.UUID | None
    content: str
    source: MemorySource
    created_at: datetime
    embedding: tuple[float, ...] | None = None


@dataclass(frozen=True)
class MemoryHit:
    """A search result; the score was computed on this very row (docs/hardening.md #23)."""

    memory: Memory
    score: float


def check_source(value: MemorySource | None, field: str = "source") -> MemorySource:
    if value is None:
        raise InvalidArgument(field, "must be MEMORY_SOURCE_CONVERSATION or MEMORY_SOURCE_MANUAL")
    return value


def check_embedding(values: Sequence[float], field: str = "embedding") -> tuple[float, ...]:
    if len(values) != EMBEDDING_DIMENSIONS:
        raise InvalidArgument(field, f"must have exactly {EMBEDDING_DIMENSIONS} dimensions, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise InvalidArgument(field, "must hold finite numbers only")
    if not any(values):
        raise InvalidArgument(field, "must not be the zero vector (cosine similarity is undefined)")
    return tuple(values)


def check_search_limit(value: int, field: str = "limit") -> int:
    if value < 0 or value > MAX_SEARCH_LIMIT:
        raise InvalidArgument(field, f"must be between 1 and {MAX_SEARCH_LIMIT} (0 means {DEFAULT_SEARCH_LIMIT})")
    return value or DEFAULT_SEARCH_LIMIT
