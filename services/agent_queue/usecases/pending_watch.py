"""One reader of the claimable-jobs snapshot per process, shared by every WatchPendingJobs
stream: a wake-up costs one query however many workers watch, and a slow stream skips
straight to the newest snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.agent_queue.domain.jobs import WATCH_PENDING
from services.agent_queue.store.tables import PENDING_CHANNEL
from services.agent_queue.usecases.deps import Deps
from services.agent_queue.usecases.jobs import (
    PendingSnapshot,
    feed_of,
    pending_snapshot,
)
from zenthor.logs import get_logger
from zenthor.pagination import check_size
from zenthor.shutdown import cancel_and_wait

log = get_logger("agent_queue.pending_watch")


class PendingJobsBroadcast:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._changed = asyncio.Condition()
        self._version = 0
        self._snapshot: PendingSnapshot | None = None
        self._limits: dict[int, int] = {}  # stream id → max_jobs it asked for
        self._next_stream = 0
        self._task: asyncio.Task[None] | None = None

    async def watch(self, max_jobs: int) -> AsyncIterator[PendingSnapshot]:
        """The current snapshot, then the newest one after each change (at most `max_jobs`
        jobs each; 0 asks for the default)."""
        max_jobs = check_size(max_jobs, WATCH_PENDING, "max_jobs")
        stream = self._next_stream
        self._next_stream += 1
        self._limits[stream] = max_jobs
        seen = 0
        try:
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="pending-jobs-broadcast")
            elif max_jobs > self._limit_in_use:
                self._task.cancel()  # restart reading with the larger limit
                self._task = asyncio.create_task(self._run(), name="pending-jobs-broadcast")
            while True:
                async with self._changed:
                    while self._version <= seen or self._snapshot is None:
                        await self._changed.wait()
                    seen, snapshot = self._version, self._snapshot
                assert snapshot is not None
                yield PendingSnapshot(snapshot.claimable[:max_jobs], snapshot.pending_count, snapshot.cancel_requested)
        finally:
            del self._limits[stream]
            if not self._limits and self._task is not None:
                self._task.cancel()
                self._task = None

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task], what="pending-jobs broadcast")
            self._task = None

    async def _run(self) -> None:
        feed = feed_of(self._deps)
        self._limit_in_use = max(self._limits.values(), default=1)
        async with feed.subscribe(PENDING_CHANNEL) as subscription:
            while True:
                try:
                    snapshot = await pending_snapshot(self._deps, self._limit_in_use)
                except Exception:  # a DB hiccup: streams keep the last snapshot; retry at resync
                    log.exception("pending_watch.read_failed")
                else:
                    async with self._changed:
                        self._snapshot, self._version = snapshot, self._version + 1
                        self._changed.notify_all()
                await subscription.wait(feed.resync_s)

    _limit_in_use: int = 0
