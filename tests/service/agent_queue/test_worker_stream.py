"""WorkJobs: a worker's ClaimJobs calls as one long-lived stream. Each message is answered as the
ClaimJobs call would be (acks first, guarded as CompleteJob, then the claim), in order; the stream
is authenticated once with the service key; a bad message ends the stream with INVALID_ARGUMENT
naming the field. A storm of stream workers completes every job exactly once, one per
conversation at a time (the database's log of transitions, as in test_claim_storm.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest

from tests.service.agent_queue.conftest import AgentQueueFactory
from tests.service.agent_queue.test_claim_storm import arrange, check_log
from tests.service.conftest import Running
from tests.support.agent_queue_builders import add_job, conv, job_id, job_row, lease
from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from tests.support.streams import exchange, next_message, refusal
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.convert import utc_now
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc


def work(processor: str, *, done: Sequence[str] = (), max_jobs: int = 10) -> pb.WorkJobsRequest:
    claim = pb.ClaimJobsRequest(processor_id=processor, max_jobs=max_jobs, lease=lease(60), view=pb.JOB_VIEW_BASIC)
    claim.completed.extend(pb.JobCompletion(job_id=j, model_used="m") for j in done)
    return pb.WorkJobsRequest(claim=claim)


async def test_each_message_acknowledges_then_claims_and_is_answered_in_order(agent_queue: Running) -> None:
    a, b = conv(), conv()
    a1, a2 = add_job(agent_queue.db, a), add_job(agent_queue.db, a)
    b1 = add_job(agent_queue.db, b)
    stream = agent_queue.stub.WorkJobs(metadata=service())
    try:
        first = await exchange(stream, work("w1"))
        assert [j.id for j in first.claim.jobs] == [job_id(a1), job_id(b1)]

        # a2 is claimable only once a1 is done: the acks of a message run before its claim.
        second = await exchange(stream, work("w1", done=[job_id(a1), job_id(b1)]))
        assert list(second.claim.refused_job_ids) == []
        assert [j.id for j in second.claim.jobs] == [job_id(a2)]

        last = await exchange(stream, work("w1", done=[job_id(a2)]))
        assert list(last.claim.jobs) == [] and list(last.claim.refused_job_ids) == []
        await stream.done_writing()
        assert await asyncio.wait_for(stream.read(), 10) is grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK
    finally:
        stream.cancel()
    rows = [job_row(agent_queue.db, j) for j in (a1, b1, a2)]
    assert [(r["status"], r["model_used"], r["processor_id"]) for r in rows] == [("completed", "m", None)] * 3


async def test_acks_for_jobs_the_worker_does_not_hold_are_refused_and_change_nothing(agent_queue: Running) -> None:
    held = add_job(agent_queue.db, conv())
    await agent_queue.stub.ClaimJobs(
        pb.ClaimJobsRequest(processor_id="w1", max_jobs=1, lease=lease(60)), metadata=service()
    )
    free = add_job(agent_queue.db, conv())
    stream = agent_queue.stub.WorkJobs(metadata=service())
    try:
        reply = await exchange(stream, work("w2", done=[job_id(held)]))
    finally:
        stream.cancel()
    assert list(reply.claim.refused_job_ids) == [job_id(held)]
    assert [j.id for j in reply.claim.jobs] == [job_id(free)]
    assert (job_row(agent_queue.db, held)["status"], job_row(agent_queue.db, held)["processor_id"]) == ("processing", "w1")


@pytest.mark.parametrize(
    ("metadata", "code"),
    [((), grpc.StatusCode.UNAUTHENTICATED), ((("x-service-key", "wrong"),), grpc.StatusCode.PERMISSION_DENIED)],
)
async def test_the_stream_needs_the_service_key(
    agent_queue: Running, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode
) -> None:
    job = add_job(agent_queue.db, conv())
    stream = agent_queue.stub.WorkJobs(metadata=metadata)
    try:
        refused = await refusal(stream, work("w1"), 10)
    finally:
        stream.cancel()
    assert refused.code() == code
    assert job_row(agent_queue.db, job)["status"] == "pending"


async def test_a_bad_message_ends_the_stream_naming_the_field(agent_queue: Running) -> None:
    stream = agent_queue.stub.WorkJobs(metadata=service())
    try:
        ok = await exchange(stream, work("w1"))
        assert list(ok.claim.jobs) == []
        await stream.write(work("w1", done=[job_id(ids.JOB.new()) for _ in range(101)]))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(stream.read(), 10)
    finally:
        stream.cancel()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(refused.value) == ["completed"]


async def test_stream_workers_complete_every_job_once_one_per_conversation(
    agent_queue_factory: AgentQueueFactory, db: TestDatabase
) -> None:
    aq = await agent_queue_factory(clock=utc_now, db_pool_size=32)
    arrange(db, 400, 40)
    acknowledged: list[str] = []
    refused: list[str] = []

    async def worker(n: int) -> None:
        processor = f"stream-{n}"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{aq.server.port}") as channel:
            stub = agent_queue_pb2_grpc.AgentQueueServiceStub(channel)
            watch = stub.WatchPendingJobs(pb.WatchPendingJobsRequest(processor_id=processor, max_jobs=1), metadata=service())
            stream = stub.WorkJobs(metadata=service())
            held: list[str] = []
            try:
                while len(acknowledged) < 400 or held:
                    reply = await exchange(stream, work(processor, done=held, max_jobs=8))
                    refused.extend(reply.claim.refused_job_ids)
                    acknowledged.extend(j for j in held if j not in reply.claim.refused_job_ids)
                    held = [j.id for j in reply.claim.jobs]
                    if not held:
                        while not (await next_message(watch)).jobs and len(acknowledged) < 400:
                            pass
            finally:
                stream.cancel()
                watch.cancel()

    await asyncio.gather(*(worker(n) for n in range(12)))
    assert refused == []
    assert len(acknowledged) == 400 and len(set(acknowledged)) == 400
    check_log(db, 400)
