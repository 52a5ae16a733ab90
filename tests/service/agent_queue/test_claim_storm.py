"""Claim storm: many workers, each with its own channel, claim and complete every job over
gRPC at once. Every job is completed exactly once, two jobs of one conversation are never
processing at the same time (checked from a log the database writes at each transition),
and no claim ever surfaces an error (no deadlock, no unique violation)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
import pytest

from tests.service.agent_queue.conftest import AgentQueueFactory
from tests.support.agent_queue_builders import lease
from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from tests.support.streams import next_message
from zenthor import ids
from zenthor.convert import utc_now
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc

# Every change of a job's status, stamped by the database at the statement that made it.
CLAIM_LOG = """
CREATE TABLE public.claim_log (
    seq bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    conversation_id uuid NOT NULL,
    old_status text NOT NULL,
    new_status text NOT NULL,
    processor_id text,
    at timestamptz NOT NULL
);
CREATE FUNCTION public.log_job_status() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO public.claim_log (job_id, conversation_id, old_status, new_status, processor_id, at)
        VALUES (NEW.id, NEW.conversation_id, OLD.status, NEW.status, COALESCE(NEW.processor_id, OLD.processor_id),
                clock_timestamp());
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_status_log AFTER UPDATE ON agent_queue.jobs
    FOR EACH ROW EXECUTE FUNCTION public.log_job_status();
"""


def arrange(db: TestDatabase, jobs: int, conversations: int) -> None:
    db.sql(CLAIM_LOG)
    conversation_ids = [ids.CONVERSATION.new() for _ in range(conversations)]
    now = datetime.now(UTC)
    with psycopg.connect(db.admin_dsn()) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY agent_queue.jobs (id, message_id, conversation_id, status, attempt_count, created_at) FROM STDIN"
        ) as copy:
            for n in range(jobs):
                copy.write_row((ids.JOB.new(), ids.MESSAGE.new(), conversation_ids[n % conversations], "pending", 0, now))


async def storm(address: str, workers: int, total: int, claim_batch: int) -> tuple[list[str], list[BaseException]]:
    """Runs the workers to the end; returns the job ids each completion acknowledged and
    any RPC error a worker saw."""
    completed: list[str] = []
    errors: list[BaseException] = []

    async def worker(n: int) -> None:
        processor = f"storm-{n}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = agent_queue_pb2_grpc.AgentQueueServiceStub(channel)
            # Wake-ups when nothing is claimable: the worker never polls.
            watch = stub.WatchPendingJobs(pb.WatchPendingJobsRequest(processor_id=processor, max_jobs=1), metadata=service())
            try:
                while len(completed) < total:
                    reply = await stub.ClaimJobs(
                        pb.ClaimJobsRequest(processor_id=processor, max_jobs=claim_batch, lease=lease(60)),
                        metadata=service(),
                    )
                    if not reply.jobs:
                        # Sleep until the service says something is claimable (or all is done).
                        while not (await next_message(watch)).jobs and len(completed) < total:
                            pass
                        continue
                    done = await asyncio.gather(
                        *(
                            stub.CompleteJob(
                                pb.CompleteJobRequest(job_id=j.id, processor_id=processor, model_used="m"),
                                metadata=service(),
                            )
                            for j in reply.jobs
                        )
                    )
                    completed.extend(d.job.id for d in done)
            except grpc.aio.AioRpcError as e:
                errors.append(e)
            finally:
                watch.cancel()

    await asyncio.gather(*(worker(n) for n in range(workers)))
    return completed, errors


def check_log(db: TestDatabase, total: int) -> None:
    rows = db.sql("SELECT job_id, conversation_id, old_status, new_status, at FROM public.claim_log ORDER BY at, seq")
    claims = Counter(r[0] for r in rows if r[3] == "processing")
    completions = Counter(r[0] for r in rows if r[3] == "completed")
    assert len(claims) == total and set(claims.values()) == {1}, "every job claimed exactly once"
    assert len(completions) == total and set(completions.values()) == {1}, "every job completed exactly once"
    # Per conversation, walk the transitions in database time: never two processing at once.
    processing: dict[Any, set[Any]] = defaultdict(set)
    for job, conversation, old, new, _at in rows:
        if new == "processing":
            assert not processing[conversation], f"conversation {conversation} had two jobs processing"
            processing[conversation].add(job)
        elif old == "processing":
            processing[conversation].discard(job)
    assert db.sql("SELECT status, count(*) FROM agent_queue.jobs GROUP BY status") == [("completed", total)]


async def run_storm(
    agent_queue_factory: AgentQueueFactory, db: TestDatabase, *, workers: int, jobs: int, conversations: int
) -> float:
    aq = await agent_queue_factory(clock=utc_now, db_pool_size=workers * 2)
    arrange(db, jobs, conversations)
    started = time.perf_counter()
    completed, errors = await storm(f"127.0.0.1:{aq.server.port}", workers, jobs, claim_batch=8)
    elapsed = time.perf_counter() - started
    assert errors == []
    assert len(completed) == jobs and len(set(completed)) == jobs
    check_log(db, jobs)
    rate = jobs / elapsed
    print(f"\nclaim storm: {workers} workers, {jobs} jobs over {conversations} conversations: "
          f"{elapsed:.2f} s, {rate:.0f} jobs/s (claim + complete, each over gRPC)")
    return rate


async def test_claim_storm_completes_every_job_once_one_per_conversation(
    agent_queue_factory: AgentQueueFactory, db: TestDatabase
) -> None:
    await run_storm(agent_queue_factory, db, workers=16, jobs=300, conversations=30)


@pytest.mark.slow
async def test_claim_storm_full_size(agent_queue_factory: AgentQueueFactory, db: TestDatabase) -> None:
    await run_storm(agent_queue_factory, db, workers=16, jobs=2_000, conversations=200)


