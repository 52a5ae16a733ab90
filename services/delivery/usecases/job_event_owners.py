"""At start and every few minutes, delivery tells agent_queue who listens for job events.

agent_queue writes a user's `job.completed` / `job.failed` events only when the user is
registered with it (AddJobEventListeners; why, in services/agent_queue/store/job_events.py), and
writes every owner's until delivery says it has registered them all. Creating or updating an
endpoint registers its owner before the endpoint is seen (usecases/webhooks.py); this registers
the owners of the endpoints that already exist (a database upgraded from a release without the
filter), a page per call, and then says they all are. An endpoint created while it runs registers
its owner itself, so the listing needs no lock. Until agent_queue answers, it retries with
backoff: agent_queue may start after delivery, and meanwhile no event is lost, only written
needlessly.

After that it runs again every few minutes. During a rolling upgrade, a pod of the release before
can still create an endpoint without registering its owner after a new pod said all are
registered; the next pass registers that owner (docs/webhooks.md). A pass is one indexed
query and one call per 1,000 owners."""

from __future__ import annotations

import asyncio
import uuid

from services.delivery.store import webhooks as store
from services.delivery.usecases.deps import JobEventListeners
from zenthor.backoff import backoff_delay_s
from zenthor.db import UnitOfWorkFactory
from zenthor.logs import get_logger
from zenthor.shutdown import cancel_and_wait

log = get_logger("delivery.job_event_owners")

PAGE = 1000  # AddJobEventListeners takes at most 1,000 users a call


async def register_job_event_owners(uow: UnitOfWorkFactory, register: JobEventListeners, page: int = PAGE) -> int:
    """One pass: every owner of an enabled endpoint for job events, then `all_registered`.
    Answers how many owners it listed."""
    after: uuid.UUID | None = None
    listed = 0
    while True:
        async with uow() as unit:
            owners = await store.job_event_owners(unit.conn, after, page)
        listed += len(owners)
        last = len(owners) < page
        # The flag rides on the last page (an empty one when the listing ends on a full page).
        await register(owners, last)
        if last:
            return listed
        after = owners[-1]


class JobEventOwnerSync:
    """Runs `register_job_event_owners` in the background: at start until a pass succeeds, then
    every `every_s`."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        register: JobEventListeners,
        *,
        every_s: float = 300.0,
        retry_base_s: float = 1.0,
        retry_cap_s: float = 60.0,
    ) -> None:
        self._uow = uow
        self._register = register
        self._every_s = every_s
        self._retry_base_s = retry_base_s
        self._retry_cap_s = retry_cap_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="delivery-job-event-owners")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task], what="job event owner sync")
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._pass()
            await asyncio.sleep(self._every_s)

    async def _pass(self) -> None:
        """One pass, retried with backoff until it succeeds."""
        attempt = 0
        while True:
            attempt += 1
            try:
                listed = await register_job_event_owners(self._uow, self._register)
            except Exception as e:  # agent_queue or the database not there yet: the next attempt retries
                delay = backoff_delay_s(attempt, base_s=self._retry_base_s, cap_s=self._retry_cap_s)
                log.warning(
                    "webhooks.job_event_owners_unregistered",
                    attempt=attempt,
                    retry_in_s=round(delay, 2),
                    error=f"{type(e).__name__}: {e}",
                )
                await asyncio.sleep(delay)
                continue
            log.info("webhooks.job_event_owners_registered", owners=listed, attempts=attempt)
            return
