"""Claim storm with batched acknowledgements: many workers, each acknowledging its whole batch on
its next ClaimJobs (the last batch with CompleteJobs). Every job is completed exactly once, no ack
is refused, and two jobs of one conversation are never processing at the same time (the
database's own log of transitions, as in test_claim_storm.py)."""

from __future__ import annotations

import asyncio

import grpc

from tests.service.agent_queue.conftest import AgentQueueFactory
from tests.service.agent_queue.test_claim_storm import arrange, check_log
from tests.support.agent_queue_builders import lease
from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from tests.support.streams import next_message
from zenthor.convert import utc_now
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc


async def storm(address: str, workers: int, total: int, claim_batch: int) -> tuple[list[str], list[str]]:
    """The job ids acknowledged, and the ones refused."""
    acknowledged: list[str] = []
    refused: list[str] = []

    async def worker(n: int) -> None:
        processor = f"acks-{n}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = agent_queue_pb2_grpc.AgentQueueServiceStub(channel)
            watch = stub.WatchPendingJobs(pb.WatchPendingJobsRequest(processor_id=processor, max_jobs=1), metadata=service())
            held: list[str] = []
            try:
                while len(acknowledged) < total:
                    request = pb.ClaimJobsRequest(
                        processor_id=processor, max_jobs=claim_batch, lease=lease(60), view=pb.JOB_VIEW_BASIC
                    )
                    request.completed.extend(pb.JobCompletion(job_id=j, model_used="m") for j in held)
                    reply = await stub.ClaimJobs(request, metadata=service())
                    refused.extend(reply.refused_job_ids)
                    acknowledged.extend(j for j in held if j not in reply.refused_job_ids)
                    held = [j.id for j in reply.jobs]
                    if not held:
                        while not (await next_message(watch)).jobs and len(acknowledged) < total:
                            pass
                if held:
                    done = await stub.CompleteJobs(
                        pb.CompleteJobsRequest(
                            processor_id=processor, completions=[pb.JobCompletion(job_id=j) for j in held]
                        ),
                        metadata=service(),
                    )
                    refused.extend(done.refused_job_ids)
                    acknowledged.extend(j for j in held if j not in done.refused_job_ids)
            finally:
                watch.cancel()

    await asyncio.gather(*(worker(n) for n in range(workers)))
    return acknowledged, refused


async def test_batched_acks_complete_every_job_once_one_per_conversation(
    agent_queue_factory: AgentQueueFactory, db: TestDatabase
) -> None:
    aq = await agent_queue_factory(clock=utc_now, db_pool_size=32)
    arrange(db, 400, 40)
    acknowledged, refused = await storm(f"127.0.0.1:{aq.server.port}", workers=12, total=400, claim_batch=8)
    assert refused == []
    assert len(acknowledged) == 400 and len(set(acknowledged)) == 400
    check_log(db, 400)
