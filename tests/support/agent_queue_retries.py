"""Jobs sent to a Temporal retry, and the releases that bring them back, for the retry outage
scenarios (the transition log is tests/service/agent_queue/test_claim_storm.CLAIM_LOG)."""

from __future__ import annotations

import uuid
from collections import Counter

from tests.service.conftest import Running
from tests.support.agent_queue_builders import job_id, lease
from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb

CLAIM_MAX = 100  # ClaimJobs' largest batch


async def fail_retryably(aq: Running, jobs: list[uuid.UUID]) -> None:
    """Claims the jobs and fails each retryably, as a runtime hit by a rate limit would: each
    goes to WAITING_RETRY with a RetryWorkflow start in the outbox."""
    for n in range(0, len(jobs), CLAIM_MAX):
        batch = [job_id(j) for j in jobs[n : n + CLAIM_MAX]]
        claimed = await aq.stub.ClaimJobs(
            pb.ClaimJobsRequest(processor_id="runtime", max_jobs=len(batch), lease=lease(600), job_ids=batch), metadata=service()
        )
        assert len(claimed.jobs) == len(batch)
    for job in jobs:
        await aq.stub.RetryJob(
            pb.RetryJobRequest(job_id=job_id(job), processor_id="runtime", error_reason="rate_limit"), metadata=service()
        )


def releases(db: TestDatabase) -> Counter[uuid.UUID]:
    """Per job, how many times it went from waiting_retry back to pending (from the log)."""
    return Counter(
        job for (job,) in db.sql("SELECT job_id FROM public.claim_log WHERE old_status = 'waiting_retry' AND new_status = 'pending'")
    )
