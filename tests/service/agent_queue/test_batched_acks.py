"""Batched acknowledgements over gRPC: CompleteJobs, and acks carried on ClaimJobs. Each ack is
the guarded CompleteJob (only the lease holder, only from PROCESSING, docs/hardening.md #12); a
refused one is named in the answer and changes nothing, the call itself succeeds."""

from __future__ import annotations

import uuid

import grpc

from tests.service.conftest import Running
from tests.support.agent_queue_builders import ManualClock, add_job, conv, job_id, job_row, lease
from tests.support.grpc_client import rpc_error, service
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb


def acks(*jobs: uuid.UUID, model: str = "m") -> list[pb.JobCompletion]:
    return [pb.JobCompletion(job_id=job_id(j), model_used=model) for j in jobs]


async def claim(
    aq: Running, processor: str, *, max_jobs: int = 10, completed: list[pb.JobCompletion] | None = None, view: int = 0
) -> pb.ClaimJobsResponse:
    request = pb.ClaimJobsRequest(processor_id=processor, max_jobs=max_jobs, lease=lease(60), view=view)
    request.completed.extend(completed or [])
    return await aq.stub.ClaimJobs(request, metadata=service())


async def complete_jobs(aq: Running, processor: str, completions: list[pb.JobCompletion]) -> pb.CompleteJobsResponse:
    return await aq.stub.CompleteJobs(
        pb.CompleteJobsRequest(processor_id=processor, completions=completions), metadata=service()
    )


async def test_complete_jobs_acknowledges_the_holders_jobs_and_names_the_refused_ones(agent_queue: Running) -> None:
    mine = [add_job(agent_queue.db, conv()) for _ in range(3)]
    theirs = add_job(agent_queue.db, conv())
    pending = add_job(agent_queue.db, conv())
    await claim(agent_queue, "w1", max_jobs=3)
    await agent_queue.stub.ClaimJobs(
        pb.ClaimJobsRequest(processor_id="w2", max_jobs=1, lease=lease(60), job_ids=[job_id(theirs)]), metadata=service()
    )
    unknown = ids.JOB.new()

    reply = await complete_jobs(agent_queue, "w1", acks(*mine, theirs, pending, unknown, model="gpt"))

    assert list(reply.refused_job_ids) == [job_id(theirs), job_id(pending), job_id(unknown)]
    for job in mine:
        row = job_row(agent_queue.db, job)
        assert (row["status"], row["model_used"], row["processor_id"], row["is_head"]) == ("completed", "gpt", None, False)
    assert (job_row(agent_queue.db, theirs)["status"], job_row(agent_queue.db, theirs)["processor_id"]) == ("processing", "w2")
    assert job_row(agent_queue.db, pending)["status"] == "pending"


async def test_an_ack_after_the_lease_was_swept_is_refused_and_changes_nothing(
    agent_queue: Running, clock: ManualClock
) -> None:
    job = add_job(agent_queue.db, conv())
    await claim(agent_queue, "w1", max_jobs=1)
    clock.advance(61)
    await agent_queue.stub.RequeueStaleJobs(pb.RequeueStaleJobsRequest(), metadata=service())
    before = job_row(agent_queue.db, job)
    assert before["status"] == "waiting_retry"

    reply = await complete_jobs(agent_queue, "w1", acks(job))

    assert list(reply.refused_job_ids) == [job_id(job)]
    assert job_row(agent_queue.db, job) == before


async def test_acks_carried_on_a_claim_free_the_conversations_next_job_for_that_same_claim(agent_queue: Running) -> None:
    a, b = conv(), conv()
    a1, a2 = add_job(agent_queue.db, a), add_job(agent_queue.db, a)
    b1 = add_job(agent_queue.db, b)
    first = await claim(agent_queue, "w1")
    assert [j.id for j in first.jobs] == [job_id(a1), job_id(b1)]

    # One call: a1 and b1 acknowledged, then a2 (a's next job, claimable only once a1 is done) claimed.
    second = await claim(agent_queue, "w1", completed=acks(a1, b1))

    assert list(second.refused_job_ids) == []
    assert [j.id for j in second.jobs] == [job_id(a2)]
    assert [job_row(agent_queue.db, j)["status"] for j in (a1, b1, a2)] == ["completed", "completed", "processing"]


async def test_acks_on_a_claim_that_are_not_the_callers_are_refused_and_the_claim_still_runs(agent_queue: Running) -> None:
    held = add_job(agent_queue.db, conv())
    await claim(agent_queue, "w1", max_jobs=1)
    free = add_job(agent_queue.db, conv())

    reply = await claim(agent_queue, "w2", completed=acks(held))

    assert list(reply.refused_job_ids) == [job_id(held)]
    assert [j.id for j in reply.jobs] == [job_id(free)]
    assert job_row(agent_queue.db, held)["status"] == "processing"


async def test_the_basic_view_answers_what_a_worker_reads(agent_queue: Running) -> None:
    job = add_job(agent_queue.db, conv())
    (claimed,) = (await claim(agent_queue, "w1", view=pb.JOB_VIEW_BASIC)).jobs
    assert claimed.id == job_id(job) and claimed.status == pb.JOB_STATUS_PROCESSING
    assert claimed.message_id.startswith("msg_") and claimed.conversation_id.startswith("conv_")
    assert claimed.processor_id == "w1" and claimed.HasField("lease_expire_time")
    # Not in the basic view: what the worker never reads.
    assert not claimed.HasField("create_time") and not claimed.HasField("start_time")
    assert not claimed.HasField("last_heartbeat_time")


async def test_the_full_view_is_the_default(agent_queue: Running) -> None:
    add_job(agent_queue.db, conv())
    (claimed,) = (await claim(agent_queue, "w1")).jobs
    assert claimed.HasField("create_time") and claimed.HasField("start_time") and claimed.HasField("last_heartbeat_time")


async def test_bad_acks_are_refused_naming_the_field(agent_queue: Running) -> None:
    empty = await rpc_error(complete_jobs(agent_queue, "w1", []))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(empty) == ["completions"]

    malformed = await rpc_error(complete_jobs(agent_queue, "w1", [pb.JobCompletion(job_id="msg_nope")]))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(malformed) == ["completions[0].job_id"]

    too_many = await rpc_error(claim(agent_queue, "w1", completed=acks(*(ids.JOB.new() for _ in range(101)))))
    assert too_many.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(too_many) == ["completed"]

    long_model = await rpc_error(complete_jobs(agent_queue, "w1", acks(add_job(agent_queue.db, conv()), model="m" * 201)))
    assert violated_fields(long_model) == ["completions[0].model_used"]
