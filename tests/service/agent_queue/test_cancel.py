"""Cancelling a job (docs/double-texting.md): a pending job is cancelled at once and its
conversation moves on; a processing one has its cancellation requested, which the holder sees in
its heartbeat reply and its job watch, and whatever it acknowledges with ends the job CANCELLED,
never retried. Real agent_queue server, real PostgreSQL, real concurrency for the race."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import grpc

from tests.service.agent_queue.test_jobs import claim, complete, fail, heartbeat, release, retry
from tests.service.conftest import Running
from tests.support.agent_queue_builders import (
    ManualClock,
    add_job,
    conv,
    conv_id,
    job_id,
    job_row,
    msg_id,
)
from tests.support.builders import alice, bob, boss
from tests.support.grpc_client import bearer, rpc_error, service
from tests.support.streams import read_until
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.retries import RETRY_TOPIC


async def cancel(aq: Running, job: uuid.UUID, who: str = "user_alice") -> pb.Job:
    reply = await aq.stub.CancelJob(pb.CancelJobRequest(job_id=job_id(job)), metadata=bearer(aq.issuer.token(who)))
    return reply.job


def retry_events(aq: Running) -> int:
    ((count,),) = aq.db.sql("SELECT count(*) FROM agent_queue.outbox WHERE topic = %s", (RETRY_TOPIC,))
    return int(count)


async def test_a_pending_job_is_cancelled_at_once_and_the_conversation_moves_on(agent_queue: Running) -> None:
    owner = alice(agent_queue.db)
    c = conv()
    first = add_job(agent_queue.db, c, user_id=owner)
    second = add_job(agent_queue.db, c, user_id=owner)

    cancelled = await cancel(agent_queue, first)

    assert cancelled.status == pb.JOB_STATUS_CANCELLED
    assert cancelled.HasField("cancel_request_time") and cancelled.HasField("finish_time")
    row = job_row(agent_queue.db, first)
    assert (row["status"], row["is_head"], row["processor_id"]) == ("cancelled", False, None)
    # The head went to the next message's job: it is claimable now.
    assert [j.id for j in await claim(agent_queue, "w1")] == [job_id(second)]
    # Cancelled is final.
    error = await rpc_error(cancel(agent_queue, first))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already cancelled" in (error.details() or "")


async def test_a_processing_cancel_is_seen_in_the_holders_next_heartbeat_and_its_ack_ends_it_cancelled(
    agent_queue: Running,
) -> None:
    owner = alice(agent_queue.db)
    job = add_job(agent_queue.db, conv(), user_id=owner)
    await claim(agent_queue, "w1", job)
    assert not (await heartbeat(agent_queue, job, "w1")).cancel_requested

    requested = await cancel(agent_queue, job)

    assert requested.status == pb.JOB_STATUS_PROCESSING and requested.HasField("cancel_request_time")
    beat = await heartbeat(agent_queue, job, "w1")
    assert beat.cancel_requested and beat.job.status == pb.JOB_STATUS_PROCESSING
    # Asking again changes nothing.
    again = await cancel(agent_queue, job)
    assert again.cancel_request_time == requested.cancel_request_time
    # The holder stops and acknowledges; even a CompleteJob ends the job cancelled.
    done = (await complete(agent_queue, job, "w1")).job
    assert done.status == pb.JOB_STATUS_CANCELLED and not done.processor_id
    assert job_row(agent_queue.db, job)["status"] == "cancelled"


async def test_the_holder_sees_the_cancel_in_its_job_watch_and_no_other_worker_does(agent_queue: Running) -> None:
    owner = alice(agent_queue.db)
    job = add_job(agent_queue.db, conv(), user_id=owner)
    await claim(agent_queue, "w1", job)
    holder = agent_queue.stub.WatchPendingJobs(pb.WatchPendingJobsRequest(processor_id="w1"), metadata=service())
    other = agent_queue.stub.WatchPendingJobs(pb.WatchPendingJobsRequest(processor_id="w2"), metadata=service())
    try:
        first = await read_until(holder, lambda _: True)
        assert list(first.cancel_requested_job_ids) == []

        await cancel(agent_queue, job)

        seen = await read_until(holder, lambda s: len(s.cancel_requested_job_ids) > 0)
        assert list(seen.cancel_requested_job_ids) == [job_id(job)]
        # w2's stream wakes for the same change and names nothing of w1's.
        snapshot = await read_until(other, lambda _: True)
        assert list(snapshot.cancel_requested_job_ids) == []
        await fail(agent_queue, job, "w1", "cancelled", "stopped")
        cleared = await read_until(holder, lambda s: len(s.cancel_requested_job_ids) == 0, timeout_s=30)
        assert list(cleared.cancel_requested_job_ids) == []
    finally:
        holder.cancel()
        other.cancel()
    assert job_row(agent_queue.db, job)["status"] == "cancelled"


async def test_a_cancelled_job_is_never_retried(agent_queue: Running, clock: ManualClock) -> None:
    owner = alice(agent_queue.db)
    # 1. The holder asks for a retry after the cancel: cancelled, and no RetryWorkflow is started.
    held = add_job(agent_queue.db, conv(), user_id=owner)
    await claim(agent_queue, "w1", held)
    await cancel(agent_queue, held)
    retried = await retry(agent_queue, held, "w1")
    assert (retried.job.status, retried.retry_scheduled) == (pb.JOB_STATUS_CANCELLED, False)
    assert retry_events(agent_queue) == 0

    # 2. The holder died after the cancel: the stale sweep cancels the job, it does not requeue it.
    crashed = add_job(agent_queue.db, conv(), user_id=owner)
    await claim(agent_queue, "w2", crashed)
    await cancel(agent_queue, crashed)
    clock.advance(timedelta(seconds=61))
    swept = await agent_queue.stub.RequeueStaleJobs(pb.RequeueStaleJobsRequest(), metadata=service())
    assert (swept.requeued, swept.failed) == (0, 1)
    assert job_row(agent_queue.db, crashed)["status"] == "cancelled"
    assert retry_events(agent_queue) == 0

    # 3. A job already waiting for its retry is cancelled at once; the retry's release then
    # finds nothing to release.
    waiting = add_job(agent_queue.db, conv(), user_id=owner)
    await claim(agent_queue, "w3", waiting)
    assert (await retry(agent_queue, waiting, "w3")).retry_scheduled
    assert retry_events(agent_queue) == 1
    assert (await cancel(agent_queue, waiting)).status == pb.JOB_STATUS_CANCELLED
    released = await release(agent_queue, waiting, 1)
    assert not released.released and released.job.status == pb.JOB_STATUS_CANCELLED
    assert job_row(agent_queue.db, waiting)["status"] == "cancelled"


async def test_acks_of_cancelled_jobs_are_not_refused_and_end_them_cancelled(agent_queue: Running) -> None:
    owner = alice(agent_queue.db)
    a, b = add_job(agent_queue.db, conv(), user_id=owner), add_job(agent_queue.db, conv(), user_id=owner)
    await claim(agent_queue, "w1", a, b, max_jobs=2)
    await cancel(agent_queue, a)
    reply = await agent_queue.stub.CompleteJobs(
        pb.CompleteJobsRequest(processor_id="w1", completions=[pb.JobCompletion(job_id=job_id(a)),
                                                                pb.JobCompletion(job_id=job_id(b))]),
        metadata=service(),
    )
    assert list(reply.refused_job_ids) == []
    assert (job_row(agent_queue.db, a)["status"], job_row(agent_queue.db, b)["status"]) == ("cancelled", "completed")

    # The same on acks carried by a claim; another worker's ack of it stays refused.
    c = add_job(agent_queue.db, conv(), user_id=owner)
    await claim(agent_queue, "w1", c)
    await cancel(agent_queue, c)
    stranger = await agent_queue.stub.CompleteJobs(
        pb.CompleteJobsRequest(processor_id="w9", completions=[pb.JobCompletion(job_id=job_id(c))]), metadata=service()
    )
    assert list(stranger.refused_job_ids) == [job_id(c)]
    carried = await agent_queue.stub.ClaimJobs(
        pb.ClaimJobsRequest(processor_id="w1", max_jobs=1, completed=[pb.JobCompletion(job_id=job_id(c))]),
        metadata=service(),
    )
    assert list(carried.refused_job_ids) == []
    assert job_row(agent_queue.db, c)["status"] == "cancelled"


async def test_cancel_racing_claims_either_cancels_a_pending_job_or_flags_the_claimed_one(agent_queue: Running) -> None:
    """Real concurrency: for every job a cancel and claims from two workers are in flight at
    once. Each job ends exactly one way: cancelled and never handed to a worker, or handed to one
    worker and flagged for it to stop. Never both, never neither."""
    owner = alice(agent_queue.db)
    rounds, per_round = 6, 10
    shuffle = random.Random(16)
    outcomes = {"cancelled": 0, "claimed": 0}
    for _ in range(rounds):
        jobs = [add_job(agent_queue.db, conv(), user_id=owner) for _ in range(per_round)]
        # Per job: two workers claim it and its owner cancels it, all three in flight at once, in
        # an order shuffled per job.
        calls: list[tuple[str, Coroutine[Any, Any, Any]]] = []
        for job in jobs:
            mine = [("claim", claim(agent_queue, f"w{i}", job)) for i in range(2)] + [("cancel", cancel(agent_queue, job))]
            shuffle.shuffle(mine)
            calls += mine
        results = await asyncio.gather(*(c for _, c in calls))
        claimed = {j.id: j.processor_id for (kind, _), r in zip(calls, results, strict=True) if kind == "claim" for j in r}
        for job in jobs:
            row = job_row(agent_queue.db, job)
            if job_id(job) in claimed:
                assert row["status"] == "processing", row
                assert row["processor_id"] == claimed[job_id(job)]
                assert row["cancel_requested_at"] is not None
                assert (await heartbeat(agent_queue, job, row["processor_id"])).cancel_requested
                outcomes["claimed"] += 1
            else:
                assert row["status"] == "cancelled" and row["processor_id"] is None, row
                outcomes["cancelled"] += 1
    print(f"\ncancel vs claim over {rounds * per_round} jobs: {outcomes}")
    # Both orders happened, so both sides of the guard were exercised.
    assert outcomes["cancelled"] > 0 and outcomes["claimed"] > 0


async def test_who_may_cancel_and_bad_input(agent_queue: Running) -> None:
    owner = alice(agent_queue.db)
    bob(agent_queue.db)
    boss(agent_queue.db)
    mine = add_job(agent_queue.db, conv(), user_id=owner)

    # Someone else's job looks missing (docs/architecture.md §4); nothing changes.
    error = await rpc_error(cancel(agent_queue, mine, "user_bob"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert job_row(agent_queue.db, mine)["status"] == "pending"
    unknown = await rpc_error(cancel(agent_queue, ids.JOB.new()))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    for bad in ("", "nope", msg_id()):
        invalid = await rpc_error(
            agent_queue.stub.CancelJob(pb.CancelJobRequest(job_id=bad), metadata=bearer(agent_queue.issuer.token("user_alice")))
        )
        assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(invalid) == ["job_id"]
    # Without a token, or with only the service key: refused before anything is read.
    anonymous = await rpc_error(agent_queue.stub.CancelJob(pb.CancelJobRequest(job_id=job_id(mine)), metadata=service()))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED

    # An admin cancels anyone's job; a service too, through CancelJobAsService.
    assert (await cancel(agent_queue, mine, "user_boss")).status == pb.JOB_STATUS_CANCELLED
    theirs = add_job(agent_queue.db, conv(), user_id=owner)
    by_service = await agent_queue.stub.CancelJobAsService(
        pb.CancelJobAsServiceRequest(job_id=job_id(theirs)), metadata=service()
    )
    assert by_service.job.status == pb.JOB_STATUS_CANCELLED
    finished = add_job(agent_queue.db, conv(), user_id=owner, status="completed")
    done = await rpc_error(agent_queue.stub.CancelJobAsService(
        pb.CancelJobAsServiceRequest(job_id=job_id(finished)), metadata=service()))
    assert done.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancel_conversation_jobs_covers_jobs_whose_enqueue_has_not_arrived_yet(agent_queue: Running) -> None:
    owner = alice(agent_queue.db)
    c = conv()
    running = add_job(agent_queue.db, c, user_id=owner)
    await claim(agent_queue, "w1", running)
    queued = add_job(agent_queue.db, c, user_id=owner)
    late_message = ids.MESSAGE.new()  # its EnqueueJob is still in the messages outbox
    interrupting = ids.MESSAGE.new()  # the new message: its own job must survive
    survivor = (await agent_queue.stub.EnqueueJob(
        pb.EnqueueJobRequest(message_id=ids.MESSAGE.format(interrupting), conversation_id=conv_id(c)), metadata=service()
    )).job

    request = pb.CancelConversationJobsRequest(
        conversation_id=conv_id(c),
        before_message_id=ids.MESSAGE.format(interrupting),
        message_ids=[ids.MESSAGE.format(late_message)],
        conversation_user_id=ids.USER.format(owner),
        discard_reply=True,
    )
    reply = await agent_queue.stub.CancelConversationJobs(request, metadata=service())

    by_status = sorted((j.status, j.cancel_discards_reply) for j in reply.jobs)
    assert by_status == [(pb.JOB_STATUS_PROCESSING, True), (pb.JOB_STATUS_CANCELLED, True), (pb.JOB_STATUS_CANCELLED, True)]
    assert job_row(agent_queue.db, queued)["status"] == "cancelled"
    assert job_row(agent_queue.db, running)["cancel_requested_at"] is not None
    assert job_row(agent_queue.db, survivor.id)["status"] == "pending"
    # The late EnqueueJob finds its job cancelled already and queues nothing.
    late = await agent_queue.stub.EnqueueJob(
        pb.EnqueueJobRequest(message_id=ids.MESSAGE.format(late_message), conversation_id=conv_id(c)), metadata=service()
    )
    assert (late.created, late.job.status) == (False, pb.JOB_STATUS_CANCELLED)
    # A repeat (the outbox delivers at least once) changes nothing more.
    again = await agent_queue.stub.CancelConversationJobs(request, metadata=service())
    assert [j.id for j in again.jobs] == [job_id(running)]
    active = await agent_queue.stub.ListActiveJobs(pb.ListActiveJobsRequest(conversation_id=conv_id(c)), metadata=service())
    assert [j.id for j in active.jobs] == [job_id(running), survivor.id]
    too_many = await rpc_error(agent_queue.stub.CancelConversationJobs(
        pb.CancelConversationJobsRequest(conversation_id=conv_id(c), before_message_id=ids.MESSAGE.format(interrupting),
                                         message_ids=[msg_id() for _ in range(101)]), metadata=service()))
    assert too_many.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(too_many) == ["message_ids"]


async def test_the_owner_finds_the_jobs_to_cancel_through_is_conversation_processing(agent_queue: Running) -> None:
    """A web user has only the conversation: IsConversationProcessing names its unfinished jobs,
    oldest first, so the owner can cancel the running one; others see nothing."""
    owner = alice(agent_queue.db)
    bob(agent_queue.db)
    c = conv()
    first = add_job(agent_queue.db, c, user_id=owner)
    second = add_job(agent_queue.db, c, user_id=owner)
    await claim(agent_queue, "w1", first)
    request = pb.IsConversationProcessingRequest(conversation_id=conv_id(c))

    seen = await agent_queue.stub.IsConversationProcessing(request, metadata=bearer(agent_queue.issuer.token("user_alice")))
    assert seen.processing and list(seen.active_job_ids) == [job_id(first), job_id(second)]
    other = await agent_queue.stub.IsConversationProcessing(request, metadata=bearer(agent_queue.issuer.token("user_bob")))
    assert not other.processing and list(other.active_job_ids) == []

    requested = await agent_queue.stub.CancelJob(
        pb.CancelJobRequest(job_id=seen.active_job_ids[0]), metadata=bearer(agent_queue.issuer.token("user_alice"))
    )
    assert requested.job.HasField("cancel_request_time")
