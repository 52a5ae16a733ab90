"""A client that retries what a restarting server answers (UNAVAILABLE, and DEADLINE_EXCEEDED
for idempotent calls), as the runtime does, and counts every failed attempt by status."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

T = TypeVar("T")

UNAVAILABLE_ONLY = frozenset({grpc.StatusCode.UNAVAILABLE})
# A call that timed out may have been applied: only an idempotent call may repeat it.
IDEMPOTENT_RETRY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
RETRY_PAUSE_S = 0.05


@dataclass
class RetryingClient:
    retry_on: frozenset[grpc.StatusCode] = UNAVAILABLE_ONLY
    give_up_s: float = 120.0
    failures: Counter[str] = field(default_factory=Counter)  # status name → failed attempts
    retried_calls: int = 0  # calls that needed more than one attempt

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Runs `attempt` until it answers; a status outside `retry_on` is raised."""
        retried = False
        async with asyncio.timeout(self.give_up_s):
            while True:
                try:
                    result = await attempt()
                except grpc.aio.AioRpcError as e:
                    self.failures[e.code().name] += 1
                    if e.code() not in self.retry_on:
                        raise
                    retried = True
                    await asyncio.sleep(RETRY_PAUSE_S)
                    continue
                self.retried_calls += retried
                return result
