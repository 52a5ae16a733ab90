"""Job queue use cases: enqueue, claim, heartbeat, complete, fail, retry, release, sweeps."""

from __future__ import annotations

import uuid

from services.agent_queue.domain.jobs import Job
from services.agent_queue.store import jobs as store
from services.agent_queue.usecases.deps import Deps
from zenthor import ids
from zenthor.notify import notify

# One channel for every job change that matters to a watcher, keyed by conversation
# (hex): a pending-jobs watcher listens to every key, a conversation watcher to its own.
JOBS_CHANNEL = "agent_queue_jobs"


async def enqueue_job(
    deps: Deps,
    *,
    message_id: uuid.UUID,
    conversation_id: uuid.UUID,
    conversation_user_id: uuid.UUID | None,
    conversation_contact_id: uuid.UUID | None,
) -> tuple[Job, bool]:
    """Idempotent on the message id: a replay returns the existing job unchanged."""
    async with deps.uow() as uow:
        job = await store.insert_job_if_absent(
            uow.conn,
            job_id=ids.JOB.new(),
            message_id=message_id,
            conversation_id=conversation_id,
            conversation_user_id=conversation_user_id,
            conversation_contact_id=conversation_contact_id,
            now=deps.clock(),
        )
        if job is not None:
            await notify(uow.conn, JOBS_CHANNEL, conversation_id.hex)
            await uow.commit()
            return job, True
        existing = await store.get_job_by_message(uow.conn, message_id)
    assert existing is not None  # the unique message id matched a committed row
    return existing, False


async def get_job(deps: Deps, job_id: uuid.UUID) -> Job | None:
    async with deps.uow() as uow:
        return await store.get_job(uow.conn, job_id)
