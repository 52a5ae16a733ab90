"""Turns a verified JWT subject into the user it acts for, with a short TTL cache."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from zenthor.auth.principal import ResolvedUser


class PrincipalResolver(Protocol):
    async def resolve(self, external_id: str) -> ResolvedUser | None: ...


class CachingResolver:
    """Caches answers (misses too) for `ttl_s`: user-mode calls need no identity round trip
    per request, and a role or status change is seen within the TTL."""

    def __init__(
        self,
        inner: PrincipalResolver,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self._inner = inner
        self._ttl = ttl_s
        self._clock = clock
        self._max = max_entries
        self._entries: dict[str, tuple[float, ResolvedUser | None]] = {}

    async def resolve(self, external_id: str) -> ResolvedUser | None:
        now = self._clock()
        hit = self._entries.get(external_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        user = await self._inner.resolve(external_id)
        if self._ttl > 0:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[external_id] = (now + self._ttl, user)
        return user
