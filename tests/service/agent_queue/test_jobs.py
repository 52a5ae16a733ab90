"""The job queue over gRPC, as the original behaved, with its fixes (docs/hardening.md #N):
claims return the job as claimed (#13), only the lease holder acts and only from PROCESSING
(#12), retries wait in WAITING_RETRY for their backoff (#14), cleanup goes by completion time
(#20)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from tests.service.conftest import Running
from tests.support.agent_queue_builders import (
    T0,
    ManualClock,
    add_job,
    conv,
    conv_id,
    job_id,
    job_row,
    lease,
    ms,
    msg_id,
)
from tests.support.builders import alice, bob
from tests.support.grpc_client import bearer, rpc_error, service
from tests.support.streams import next_message, read_until
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb

MINUTE = timedelta(minutes=1)


async def claim(
    aq: Running, processor: str, *jobs: uuid.UUID, max_jobs: int = 1, lease_s: float = 60
) -> list[pb.Job]:
    reply = await aq.stub.ClaimJobs(
        pb.ClaimJobsRequest(
            processor_id=processor, max_jobs=max_jobs, lease=lease(lease_s), job_ids=[job_id(j) for j in jobs]
        ),
        metadata=service(),
    )
    return list(reply.jobs)


async def heartbeat(aq: Running, job: uuid.UUID, processor: str, lease_s: float = 60) -> pb.HeartbeatJobResponse:
    return await aq.stub.HeartbeatJob(
        pb.HeartbeatJobRequest(job_id=job_id(job), processor_id=processor, lease=lease(lease_s)), metadata=service()
    )


async def complete(aq: Running, job: uuid.UUID, processor: str, model: str = "m") -> pb.CompleteJobResponse:
    return await aq.stub.CompleteJob(
        pb.CompleteJobRequest(job_id=job_id(job), processor_id=processor, model_used=model), metadata=service()
    )


async def fail(aq: Running, job: uuid.UUID, processor: str, reason: str = "auth", message: str = "401") -> Any:
    return await aq.stub.FailJob(
        pb.FailJobRequest(job_id=job_id(job), processor_id=processor, error_reason=reason, error_message=message),
        metadata=service(),
    )


async def retry(aq: Running, job: uuid.UUID, processor: str, reason: str = "rate_limit", message: str = "429") -> Any:
    return await aq.stub.RetryJob(
        pb.RetryJobRequest(job_id=job_id(job), processor_id=processor, error_reason=reason, error_message=message),
        metadata=service(),
    )


async def release(aq: Running, job: uuid.UUID, attempt: int) -> pb.ReleaseJobResponse:
    return await aq.stub.ReleaseJob(pb.ReleaseJobRequest(job_id=job_id(job), attempt_count=attempt), metadata=service())


async def sweep(aq: Running) -> pb.RequeueStaleJobsResponse:
    return await aq.stub.RequeueStaleJobs(pb.RequeueStaleJobsRequest(), metadata=service())


async def until(
    stream: Any, reached: Callable[[pb.WatchPendingJobsResponse], bool], timeout_s: float = 30
) -> pb.WatchPendingJobsResponse:
    """Reads WatchPendingJobs snapshots until one shows the awaited state (bounded)."""
    async with asyncio.timeout(timeout_s):
        while True:
            snapshot: pb.WatchPendingJobsResponse = await stream.read()
            if reached(snapshot):
                return snapshot


def retry_events(aq: Running) -> list[tuple[str, dict[str, Any]]]:
    return [(k, p) for k, p in aq.db.sql("SELECT key, payload FROM agent_queue.outbox WHERE topic = 'temporal.retry' ORDER BY created_at, key")]


# --- claims ---


async def test_claim_returns_the_job_as_claimed(agent_queue: Running, clock: ManualClock) -> None:
    job = add_job(agent_queue.db, conv())
    (claimed,) = await claim(agent_queue, "w1", job)
    # docs/hardening.md #13: the response carries the lease, not the pre-claim fields.
    assert claimed.id == job_id(job) and claimed.status == pb.JOB_STATUS_PROCESSING
    assert claimed.processor_id == "w1"
    assert claimed.lease_expire_time.ToDatetime().timestamp() == (T0 + MINUTE).timestamp()
    assert claimed.start_time.ToDatetime().timestamp() == T0.timestamp()
    assert claimed.last_heartbeat_time.ToDatetime().timestamp() == T0.timestamp()
    row = job_row(agent_queue.db, job)
    assert (row["status"], row["processor_id"], row["locked_until"], row["started_at"], row["last_heartbeat_at"]) == (
        "processing", "w1", T0 + MINUTE, T0, T0,
    )


async def test_claiming_a_job_that_is_not_pending_returns_nothing_and_changes_nothing(agent_queue: Running) -> None:
    job = add_job(agent_queue.db, conv())
    await claim(agent_queue, "w1", job)
    before = job_row(agent_queue.db, job)
    assert await claim(agent_queue, "w2", job) == []
    assert job_row(agent_queue.db, job) == before


async def test_concurrent_claims_of_one_job_have_exactly_one_winner(agent_queue: Running) -> None:
    job = add_job(agent_queue.db, conv())
    results = await asyncio.gather(*(claim(agent_queue, f"w{i}", job) for i in range(20)))
    winners = [f"w{i}" for i, r in enumerate(results) if r]
    assert len(winners) == 1
    assert job_row(agent_queue.db, job)["processor_id"] == winners[0]


async def test_claim_without_ids_takes_the_oldest_pending_job_of_each_idle_conversation(agent_queue: Running) -> None:
    a, b = conv(), conv()
    a1 = add_job(agent_queue.db, a)
    a2 = add_job(agent_queue.db, a)
    b1 = add_job(agent_queue.db, b)
    claimed = await claim(agent_queue, "w1", max_jobs=10)
    assert [c.id for c in claimed] == [job_id(a1), job_id(b1)]
    assert job_row(agent_queue.db, a2)["status"] == "pending"
    assert await claim(agent_queue, "w2", max_jobs=10) == []


# --- per-conversation serialization ---


async def test_a_conversation_with_an_active_lease_is_skipped_while_others_are_claimed(
    agent_queue: Running, clock: ManualClock
) -> None:
    w1, other = conv(), conv()
    add_job(agent_queue.db, w1, status="processing", processor_id="w1", locked_until=T0 + MINUTE, started_at=T0)
    j2 = add_job(agent_queue.db, w1)
    j3 = add_job(agent_queue.db, other)
    clock.advance(10)
    assert await claim(agent_queue, "w2", j2) == []
    assert job_row(agent_queue.db, j2)["status"] == "pending"
    (claimed,) = await claim(agent_queue, "w3", j3)
    assert claimed.id == job_id(j3)


async def test_a_legacy_processing_job_without_lease_blocks_until_stale_then_the_claim_frees_it(
    agent_queue: Running, clock: ManualClock
) -> None:
    w1 = conv()
    j1 = add_job(agent_queue.db, w1, status="processing", processor_id="old", started_at=T0)
    j2 = add_job(agent_queue.db, w1)
    clock.set(T0 + MINUTE)
    assert await claim(agent_queue, "w2", j2) == []
    clock.set(T0 + timedelta(minutes=5) + ms(1))
    # The claim's inline cleanup frees j1's lease and counts the attempt; the retry waits for its
    # backoff (docs/hardening.md #14) and holds the conversation meanwhile (docs/hardening.md #42).
    assert await claim(agent_queue, "w2", j2) == []
    row = job_row(agent_queue.db, j1)
    assert (row["status"], row["attempt_count"], row["processor_id"], row["error_reason"]) == (
        "waiting_retry", 1, None, "stale_lease",
    )
    await release(agent_queue, j1, 1)
    assert [c.id for c in await claim(agent_queue, "w2", max_jobs=10)] == [job_id(j1)]
    await complete(agent_queue, j1, "w2")
    (claimed,) = await claim(agent_queue, "w2", j2)
    assert claimed.id == job_id(j2)


async def test_a_job_waiting_for_its_retry_holds_its_conversation_and_goes_first(agent_queue: Running) -> None:
    # docs/hardening.md #42: two messages of one conversation; the first's job fails retryably.
    # The second's job is not claimable (its reply would come first); the first, released by its
    # RetryWorkflow, is claimed first, then the second. Other conversations are not held back.
    w1, other = conv(), conv()
    first = add_job(agent_queue.db, w1)
    second = add_job(agent_queue.db, w1)
    elsewhere = add_job(agent_queue.db, other)
    assert [c.id for c in await claim(agent_queue, "w1", max_jobs=10)] == [job_id(first), job_id(elsewhere)]
    assert (await retry(agent_queue, first, "w1")).retry_scheduled
    stream = agent_queue.stub.WatchPendingJobs(pb.WatchPendingJobsRequest(processor_id="observer"), metadata=service())
    try:
        # A job queued now in a third conversation: the snapshot that shows it was read after
        # the retry, and what it offers agrees with the claims below.
        third = (await agent_queue.stub.EnqueueJob(
            pb.EnqueueJobRequest(message_id=msg_id(), conversation_id=conv_id(conv())), metadata=service()
        )).job
        snapshot = await until(stream, lambda s: third.id in [j.id for j in s.jobs])
        assert ([j.id for j in snapshot.jobs], snapshot.pending_count) == ([third.id], 2)
        assert await claim(agent_queue, "w2", second) == []  # not even by name
        assert [c.id for c in await claim(agent_queue, "w2", max_jobs=10)] == [third.id]
        assert job_row(agent_queue.db, second)["status"] == "pending"

        await release(agent_queue, first, 1)
        snapshot = await until(stream, lambda s: job_id(first) in [j.id for j in s.jobs])
        assert ([j.id for j in snapshot.jobs], snapshot.pending_count) == ([job_id(first)], 2)  # not `second`
    finally:
        stream.cancel()
    assert [c.id for c in await claim(agent_queue, "w2", max_jobs=10)] == [job_id(first)]
    assert await claim(agent_queue, "w3", max_jobs=10) == []
    await complete(agent_queue, first, "w2")
    assert [c.id for c in await claim(agent_queue, "w3", max_jobs=10)] == [job_id(second)]


# --- heartbeat ---


async def test_heartbeat_extends_only_the_holders_unexpired_lease(agent_queue: Running, clock: ManualClock) -> None:
    job = add_job(agent_queue.db, conv())
    await claim(agent_queue, "w1", job)
    clock.set(T0 + timedelta(seconds=15))
    reply = await heartbeat(agent_queue, job, "w1")
    assert reply.job.lease_expire_time.ToDatetime().timestamp() == (T0 + timedelta(seconds=75)).timestamp()
    row = job_row(agent_queue.db, job)
    assert (row["locked_until"], row["last_heartbeat_at"]) == (T0 + timedelta(seconds=75), T0 + timedelta(seconds=15))

    other = await rpc_error(heartbeat(agent_queue, job, "w2"))
    assert other.code() == grpc.StatusCode.FAILED_PRECONDITION and "another processor" in (other.details() or "")

    clock.set(T0 + ms(75_001))
    before = job_row(agent_queue.db, job)
    expired = await rpc_error(heartbeat(agent_queue, job, "w1"))
    assert expired.code() == grpc.StatusCode.FAILED_PRECONDITION and "expired" in (expired.details() or "")
    assert job_row(agent_queue.db, job) == before


async def test_heartbeat_exactly_at_lease_expiry_is_still_valid(agent_queue: Running, clock: ManualClock) -> None:
    job = add_job(agent_queue.db, conv())
    await claim(agent_queue, "w1", job)
    clock.set(T0 + MINUTE)
    await heartbeat(agent_queue, job, "w1")


# --- stale leases ---


async def test_crashed_workers_job_waits_for_its_retry_then_is_claimable_again(
    agent_queue: Running, clock: ManualClock
) -> None:
    job = add_job(agent_queue.db, conv())
    await claim(agent_queue, "w1", job)
    clock.set(T0 + ms(61_000))
    swept = await sweep(agent_queue)
    assert (swept.requeued, swept.failed, swept.more) == (1, 0, False)
    row = job_row(agent_queue.db, job)
    assert (row["status"], row["attempt_count"]) == ("waiting_retry", 1)
    assert row["processor_id"] is row["locked_until"] is row["started_at"] is row["last_heartbeat_at"] is None
    assert row["next_attempt_at"] > clock.now
    # The RetryWorkflow start is in the outbox, keyed by the workflow id.
    ((key, payload),) = retry_events(agent_queue)
    assert key == f"retry-{job_id(job)}-1"
    assert payload["target"] == "agent_queue.ReleaseJob"
    assert payload["request"] == {"job_id": job_id(job), "attempt_count": 1}
    assert 0 < payload["delay_s"] <= 300

    assert await claim(agent_queue, "w2", job) == []  # not before the backoff
    released = await release(agent_queue, job, 1)
    assert released.released and released.job.status == pb.JOB_STATUS_PENDING
    again = await release(agent_queue, job, 1)
    assert not again.released  # the workflow's activity may run twice: a no-op
    (claimed,) = await claim(agent_queue, "w2", job)
    assert claimed.processor_id == "w2" and claimed.attempt_count == 1 and not claimed.HasField("error_reason")


async def test_stale_lease_with_attempts_exhausted_fails_with_stale_lease(agent_queue: Running, clock: ManualClock) -> None:
    job = add_job(
        agent_queue.db, conv(), status="processing", processor_id="w1", locked_until=T0, started_at=T0, attempt_count=2
    )
    clock.set(T0 + ms(1))
    swept = await sweep(agent_queue)
    assert (swept.requeued, swept.failed) == (0, 1)
    row = job_row(agent_queue.db, job)
    assert (row["status"], row["error_reason"], row["error_message"], row["attempt_count"]) == (
        "failed", "stale_lease", "Job exceeded max attempts after lease expiry", 2,
    )
    assert row["processor_id"] is row["locked_until"] is None
    assert row["started_at"] == T0 and row["finished_at"] == clock.now
    assert retry_events(agent_queue) == []


async def test_lease_exactly_at_expiry_is_not_stale(agent_queue: Running, clock: ManualClock) -> None:
    job = add_job(agent_queue.db, conv(), status="processing", processor_id="w1", locked_until=T0, started_at=T0)
    before = job_row(agent_queue.db, job)
    assert (await sweep(agent_queue)).requeued == 0
    assert job_row(agent_queue.db, job) == before
    clock.advance(ms(1))
    assert (await sweep(agent_queue)).requeued == 1


async def test_sweep_reports_more_when_a_batch_is_full(agent_queue: Running, clock: ManualClock) -> None:
    for _ in range(3):
        add_job(agent_queue.db, conv(), status="processing", processor_id="w", locked_until=T0, started_at=T0)
    clock.advance(1)
    first = await agent_queue.stub.RequeueStaleJobs(pb.RequeueStaleJobsRequest(batch_size=2), metadata=service())
    second = await agent_queue.stub.RequeueStaleJobs(pb.RequeueStaleJobsRequest(batch_size=2), metadata=service())
    assert (first.requeued, first.more, second.requeued, second.more) == (2, True, 1, False)


# --- retry, complete, fail ---


async def test_explicit_retry_budget_then_failure_with_the_workers_reason(agent_queue: Running) -> None:
    job = add_job(agent_queue.db, conv())
    for attempt in (1, 2):
        await claim(agent_queue, "w1", job)
        reply = await retry(agent_queue, job, "w1")
        assert reply.retry_scheduled and reply.job.status == pb.JOB_STATUS_WAITING_RETRY
        assert reply.job.attempt_count == attempt and reply.job.error_reason == "rate_limit"
        await release(agent_queue, job, attempt)
    await claim(agent_queue, "w1", job)
    last = await retry(agent_queue, job, "w1", reason="rate_limit", message="429")
    # The third attempt fails for good, with the worker's reason; no separate FailJob needed.
    assert not last.retry_scheduled
    assert (last.job.status, last.job.error_reason, last.job.error_message, last.job.attempt_count) == (
        pb.JOB_STATUS_FAILED, "rate_limit", "429", 2,
    )
    assert [k for k, _ in retry_events(agent_queue)] == [f"retry-{job_id(job)}-1", f"retry-{job_id(job)}-2"]
    late_fail = await rpc_error(fail(agent_queue, job, "w1", "rate_limit", "429"))
    assert late_fail.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_retry_of_a_completed_job_is_refused(agent_queue: Running) -> None:
    # Scenario 65 (fix): the original resurrected it with attempt 1.
    job = add_job(agent_queue.db, conv())
    await claim(agent_queue, "w1", job)
    await complete(agent_queue, job, "w1")
    error = await rpc_error(retry(agent_queue, job, "w1"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "completed" in (error.details() or "")
    assert job_row(agent_queue.db, job)["status"] == "completed"


async def test_complete_only_from_processing(agent_queue: Running, clock: ManualClock) -> None:
    job = add_job(agent_queue.db, conv())
    pending = await rpc_error(complete(agent_queue, job, "w1"))
    assert pending.code() == grpc.StatusCode.FAILED_PRECONDITION and "pending" in (pending.details() or "")
    await claim(agent_queue, "w1", job)
    clock.advance(30)
    done = (await complete(agent_queue, job, "w1", model="m")).job
    assert done.status == pb.JOB_STATUS_COMPLETED and done.model_used == "m"
    assert not done.HasField("processor_id") and not done.HasField("lease_expire_time")
    assert done.start_time.ToDatetime().timestamp() == T0.timestamp()
    assert done.finish_time.ToDatetime().timestamp() == clock.now.timestamp()
    assert (await rpc_error(complete(agent_queue, job, "w1"))).code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await rpc_error(fail(agent_queue, job, "w1"))).code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_fail_records_the_classification_and_truncates_long_messages(agent_queue: Running) -> None:
    job = add_job(agent_queue.db, conv())
    await claim(agent_queue, "w1", job)
    failed = (await fail(agent_queue, job, "w1", "content_filter", "x" * 5000)).job
    assert failed.status == pb.JOB_STATUS_FAILED and failed.error_reason == "content_filter"
    assert len(failed.error_message) == 2000


async def test_unknown_job_is_not_found(agent_queue: Running) -> None:
    missing = uuid.UUID(int=1)
    for call in (complete(agent_queue, missing, "w1"), heartbeat(agent_queue, missing, "w1"), retry(agent_queue, missing, "w1")):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND


# --- docs/hardening.md #12: a stale worker cannot touch a job another worker now holds ---


async def test_stale_worker_cannot_complete_fail_heartbeat_or_retry_a_job_held_by_another(
    agent_queue: Running, clock: ManualClock
) -> None:
    job = add_job(agent_queue.db, conv())
    await claim(agent_queue, "w1", job)
    clock.advance(61)
    await sweep(agent_queue)
    await release(agent_queue, job, 1)
    await claim(agent_queue, "w2", job)
    held = job_row(agent_queue.db, job)
    for call in (
        complete(agent_queue, job, "w1"),
        fail(agent_queue, job, "w1"),
        heartbeat(agent_queue, job, "w1"),
        retry(agent_queue, job, "w1"),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "held by another processor" in (error.details() or "")
    assert job_row(agent_queue.db, job) == held
    assert (await complete(agent_queue, job, "w2")).job.status == pb.JOB_STATUS_COMPLETED


# --- bad input ---


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"processor_id": "w", "max_jobs": 0}, "max_jobs"),
        ({"processor_id": "w", "max_jobs": -1}, "max_jobs"),
        ({"processor_id": "w", "max_jobs": 101}, "max_jobs"),
        ({"processor_id": "", "max_jobs": 1}, "processor_id"),
        ({"processor_id": "w" * 129, "max_jobs": 1}, "processor_id"),
        ({"processor_id": "w", "max_jobs": 1, "lease": lease(0.5)}, "lease"),
        ({"processor_id": "w", "max_jobs": 1, "lease": lease(601)}, "lease"),
        ({"processor_id": "w", "max_jobs": 1, "job_ids": ["msg_" + "0" * 32]}, "job_ids[0]"),
    ],
)
async def test_claim_rejects_out_of_bounds_input_naming_the_field(
    agent_queue: Running, request_kwargs: dict[str, Any], field: str
) -> None:
    error = await rpc_error(agent_queue.stub.ClaimJobs(pb.ClaimJobsRequest(**request_kwargs), metadata=service()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == [field]


async def test_heartbeat_rejects_a_lease_out_of_bounds(agent_queue: Running) -> None:
    job = add_job(agent_queue.db, conv())
    await claim(agent_queue, "w1", job)
    error = await rpc_error(heartbeat(agent_queue, job, "w1", lease_s=3600))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == ["lease"]


# --- is the conversation processing ---


async def test_is_processing_is_the_owners_typing_indicator(agent_queue: Running) -> None:
    alice_id = alice(agent_queue.db)
    bob(agent_queue.db)
    w1 = conv()
    job = add_job(agent_queue.db, w1, user_id=alice_id)
    request = pb.IsConversationProcessingRequest(conversation_id=conv_id(w1))
    as_alice = bearer(agent_queue.issuer.token("user_alice"))
    as_bob = bearer(agent_queue.issuer.token("user_bob"))
    assert (await agent_queue.stub.IsConversationProcessing(request, metadata=as_alice)).processing
    assert not (await agent_queue.stub.IsConversationProcessing(request, metadata=as_bob)).processing
    await claim(agent_queue, "w1", job)
    await complete(agent_queue, job, "w1")
    assert not (await agent_queue.stub.IsConversationProcessing(request, metadata=as_alice)).processing
    unknown = pb.IsConversationProcessingRequest(conversation_id=conv_id(conv()))
    assert not (await agent_queue.stub.IsConversationProcessing(unknown, metadata=as_alice)).processing


async def test_is_processing_through_the_linked_contact_counts_waiting_retries(agent_queue: Running, clock: ManualClock) -> None:
    from tests.support.builders import add_contact

    alice_id = alice(agent_queue.db)
    contact = add_contact(agent_queue.db, "5511999990000", user_id=alice_id)
    wa1 = conv()
    job = add_job(agent_queue.db, wa1, contact_id=contact)
    await claim(agent_queue, "w1", job)
    await retry(agent_queue, job, "w1")
    reply = await agent_queue.stub.IsConversationProcessing(
        pb.IsConversationProcessingRequest(conversation_id=conv_id(wa1)),
        metadata=bearer(agent_queue.issuer.token("user_alice")),
    )
    assert reply.processing


# --- cleanup (fixed: by completion time) ---


async def test_cleanup_deletes_jobs_finished_more_than_seven_days_ago(agent_queue: Running) -> None:
    db, eight_days, one_day = agent_queue.db, T0 - timedelta(days=8), T0 - timedelta(days=1)
    old_done = add_job(db, conv(), status="completed", created_at=eight_days, finished_at=eight_days)
    old_failed = add_job(db, conv(), status="failed", created_at=eight_days, finished_at=eight_days)
    old_pending = add_job(db, conv(), status="pending", created_at=eight_days)
    recent = add_job(db, conv(), status="completed", created_at=one_day, finished_at=one_day)
    # docs/hardening.md #20: created long ago but finished yesterday: kept (the original deleted it).
    long_running = add_job(db, conv(), status="completed", created_at=eight_days, finished_at=one_day)
    reply = await agent_queue.stub.CleanupOldJobs(pb.CleanupOldJobsRequest(), metadata=service())
    assert (reply.deleted, reply.more) == (2, False)
    left = {r[0] for r in db.sql("SELECT id FROM agent_queue.jobs")}
    assert left == {old_pending, recent, long_running}
    assert old_done not in left and old_failed not in left


async def test_cleanup_refuses_a_retention_of_ten_thousand_years_naming_the_field(agent_queue: Running) -> None:
    # It used to overflow the date arithmetic and answer INTERNAL.
    old_done = add_job(agent_queue.db, conv(), status="completed", created_at=T0 - timedelta(days=30), finished_at=T0 - timedelta(days=30))
    for older_than in (Duration(seconds=10_000 * 365 * 86_400), Duration(seconds=366 * 86_400), Duration(seconds=-1)):
        error = await rpc_error(
            agent_queue.stub.CleanupOldJobs(pb.CleanupOldJobsRequest(older_than=older_than), metadata=service())
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, older_than
        assert violated_fields(error) == ["older_than"]
    year = await agent_queue.stub.CleanupOldJobs(
        pb.CleanupOldJobsRequest(older_than=Duration(seconds=365 * 86_400)), metadata=service()
    )
    assert year.deleted == 0 and job_row(agent_queue.db, old_done)["status"] == "completed"


# --- pending list and watches ---


async def test_pending_jobs_are_listed_oldest_first_across_pages(agent_queue: Running) -> None:
    made = [add_job(agent_queue.db, conv()) for _ in range(5)]
    first = await agent_queue.stub.ListPendingJobs(pb.ListPendingJobsRequest(page_size=3), metadata=service())
    second = await agent_queue.stub.ListPendingJobs(
        pb.ListPendingJobsRequest(page_size=3, page_token=first.next_page_token), metadata=service()
    )
    assert [j.id for j in [*first.jobs, *second.jobs]] == [job_id(j) for j in made]
    assert second.next_page_token == ""


async def test_watch_pending_jobs_pushes_new_jobs_and_released_conversations(agent_queue: Running) -> None:
    from tests.support.agent_queue_builders import msg_id

    w1 = conv()
    stream = agent_queue.stub.WatchPendingJobs(pb.WatchPendingJobsRequest(processor_id="w1"), metadata=service())
    try:
        first = await next_message(stream)
        assert list(first.jobs) == [] and first.pending_count == 0
        j1 = (await agent_queue.stub.EnqueueJob(
            pb.EnqueueJobRequest(message_id=msg_id(), conversation_id=conv_id(w1)), metadata=service()
        )).job
        await read_until(stream, lambda r: [j.id for j in r.jobs] == [j1.id])
        await claim(agent_queue, "w1", uuid.UUID(hex=j1.id[4:]))
        j2 = (await agent_queue.stub.EnqueueJob(
            pb.EnqueueJobRequest(message_id=msg_id(), conversation_id=conv_id(w1)), metadata=service()
        )).job
        await read_until(stream, lambda r: list(r.jobs) == [] and r.pending_count == 1)  # its conversation is busy
        await complete(agent_queue, uuid.UUID(hex=j1.id[4:]), "w1")
        await read_until(stream, lambda r: [j.id for j in r.jobs] == [j2.id])
    finally:
        stream.cancel()


async def test_watch_conversation_processing_sends_each_change(agent_queue: Running) -> None:
    from tests.support.agent_queue_builders import msg_id

    alice_id = alice(agent_queue.db)
    w1 = conv()
    stream = agent_queue.stub.WatchConversationProcessing(
        pb.WatchConversationProcessingRequest(conversation_id=conv_id(w1)),
        metadata=bearer(agent_queue.issuer.token("user_alice")),
    )
    try:
        assert not (await next_message(stream)).processing
        job = (await agent_queue.stub.EnqueueJob(
            pb.EnqueueJobRequest(message_id=msg_id(), conversation_id=conv_id(w1), conversation_user_id=f"usr_{alice_id.hex}"),
            metadata=service(),
        )).job
        await read_until(stream, lambda r: r.processing)
        raw = uuid.UUID(hex=job.id[4:])
        await claim(agent_queue, "w1", raw)
        await complete(agent_queue, raw, "w1")
        await read_until(stream, lambda r: not r.processing)
    finally:
        stream.cancel()
