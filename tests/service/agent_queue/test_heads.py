"""Conversation heads (docs/architecture.md §6): a claim reads only pending heads, so its cost does
not grow with the backlog; the head passes from job to job in order without ever being lost to a
race; wake-ups go out only when a job becomes claimable or a conversation's activity changes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from services.agent_queue.store import jobs as store
from services.agent_queue.store.tables import JOBS_CHANNEL
from tests.service.conftest import Running
from tests.support.agent_queue_builders import (
    add_job,
    conv,
    conv_id,
    job_id,
    job_row,
    lease,
    msg_id,
)
from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from tests.support.migrations import alembic
from tests.support.notifications import notes_until_sentinel
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb


async def claim(aq: Running, processor: str, max_jobs: int = 10) -> list[pb.Job]:
    reply = await aq.stub.ClaimJobs(
        pb.ClaimJobsRequest(processor_id=processor, max_jobs=max_jobs, lease=lease(60)), metadata=service()
    )
    return list(reply.jobs)


async def complete(aq: Running, job: str, processor: str) -> None:
    await aq.stub.CompleteJob(pb.CompleteJobRequest(job_id=job, processor_id=processor), metadata=service())


async def enqueue(aq: Running, conversation: uuid.UUID) -> pb.Job:
    reply = await aq.stub.EnqueueJob(
        pb.EnqueueJobRequest(message_id=msg_id(), conversation_id=conv_id(conversation)), metadata=service()
    )
    return reply.job


def heads(db: TestDatabase, conversation: uuid.UUID) -> list[uuid.UUID]:
    return [r[0] for r in db.sql("SELECT id FROM agent_queue.jobs WHERE conversation_id = %s AND is_head", (conversation,))]


# --- the claim's cost ---

# Pending jobs written server-side, `per_conversation` to a conversation (ids in creation order).
LOAD = """
INSERT INTO agent_queue.jobs (id, message_id, conversation_id, status, attempt_count, created_at)
SELECT uuidv7(), uuidv7(), c.id, 'pending', 0, now()
FROM (SELECT uuidv7() AS id FROM generate_series(1, %(conversations)s)) AS c,
     generate_series(1, %(per_conversation)s)
"""


def claim_buffers(db: TestDatabase) -> tuple[int, list[dict[str, Any]]]:
    """Shared buffers the claim statement touched, and every plan node, under EXPLAIN ANALYZE
    (rolled back)."""
    now = datetime.now(UTC)
    params = {
        "processor_id": "explain",
        "max_jobs": 10,
        "any_job": True,
        "job_ids": [],
        "now": now,
        "locked_until": now + timedelta(minutes=1),
    }
    with psycopg.connect(db.admin_dsn()) as conn:
        conn.execute("ANALYZE agent_queue.jobs")
        with conn.transaction(force_rollback=True):
            (plan,) = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {store.CLAIM_JOBS}", params).fetchone()  # type: ignore[misc]
    root = plan[0]["Plan"]
    nodes, todo = [], [root]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return int(root["Shared Hit Blocks"]) + int(root["Shared Read Blocks"]), nodes


def test_a_claim_touches_as_many_rows_at_twenty_thousand_pending_jobs_as_at_two_thousand(db: TestDatabase) -> None:
    # 20 conversations: with 100 pending jobs each, then with 1,000 each (the same index depths).
    # The claim takes the 10 oldest heads either way, and reads nothing else.
    db.sql(LOAD, {"conversations": 20, "per_conversation": 100})
    small, _ = claim_buffers(db)
    db.sql("TRUNCATE agent_queue.jobs")
    db.sql(LOAD, {"conversations": 20, "per_conversation": 1_000})
    large, nodes = claim_buffers(db)

    assert large <= small + 10, (small, large)
    assert all(n.get("Rows Removed by Filter", 0) == 0 for n in nodes)
    scans = [n for n in nodes if n["Node Type"] in ("Index Scan", "Index Only Scan", "Seq Scan", "Bitmap Heap Scan")]
    assert max(n["Actual Rows"] * n.get("Actual Loops", 1) for n in scans) <= 10


# --- the head moves on, and is never lost ---


async def test_a_conversations_jobs_are_claimed_one_at_a_time_in_order(agent_queue: Running) -> None:
    conversation = conv()
    made = [add_job(agent_queue.db, conversation) for _ in range(4)]
    assert heads(agent_queue.db, conversation) == [made[0]]
    for job in made:
        (claimed,) = await claim(agent_queue, "w1")
        assert claimed.id == job_id(job)
        assert await claim(agent_queue, "w2") == []
        await complete(agent_queue, claimed.id, "w1")
    assert heads(agent_queue.db, conversation) == []


async def test_jobs_queued_into_an_idle_conversation_at_the_same_instant_get_one_head(agent_queue: Running) -> None:
    conversation = conv()
    queued = await asyncio.gather(*(enqueue(agent_queue, conversation) for _ in range(8)))
    assert len(heads(agent_queue.db, conversation)) == 1
    done: list[str] = []
    while len(done) < len(queued):
        (claimed,) = await claim(agent_queue, "w1")
        done.append(claimed.id)
        await complete(agent_queue, claimed.id, "w1")
    assert sorted(done) == sorted(j.id for j in queued)


async def test_a_job_queued_while_its_conversations_head_finishes_is_never_stranded(agent_queue: Running) -> None:
    # The enqueue and the completion race: whichever commits first, the new job heads the
    # conversation afterwards and is claimable.
    for _ in range(20):
        conversation = conv()
        add_job(agent_queue.db, conversation)
        (head,) = await claim(agent_queue, "w1")
        queued, _ = await asyncio.gather(enqueue(agent_queue, conversation), complete(agent_queue, head.id, "w1"))
        assert heads(agent_queue.db, conversation) == [uuid.UUID(hex=queued.id[4:])]
        (next_job,) = await claim(agent_queue, "w1")
        assert next_job.id == queued.id
        await complete(agent_queue, next_job.id, "w1")


async def test_a_head_failed_for_good_hands_its_conversation_over(agent_queue: Running) -> None:
    conversation = conv()
    first, second = add_job(agent_queue.db, conversation), add_job(agent_queue.db, conversation)
    await claim(agent_queue, "w1")
    await agent_queue.stub.FailJob(pb.FailJobRequest(job_id=job_id(first), processor_id="w1"), metadata=service())
    assert (job_row(agent_queue.db, first)["is_head"], heads(agent_queue.db, conversation)) == (False, [second])
    assert [j.id for j in await claim(agent_queue, "w1")] == [job_id(second)]


# --- wake-ups ---


async def test_wake_ups_go_out_when_a_job_becomes_claimable_or_a_conversation_falls_idle(agent_queue: Running) -> None:
    idle, queued, busy = conv(), conv(), conv()
    add_job(agent_queue.db, idle)
    add_job(agent_queue.db, busy)
    add_job(agent_queue.db, busy)
    with psycopg.connect(agent_queue.db.admin_dsn(), autocommit=True) as listener:
        listener.execute("LISTEN agent_queue_pending")
        listener.execute("LISTEN agent_queue_jobs")
        # Claims wake nobody; a completion that leaves the conversation idle wakes its typing
        # indicator only; a queued job wakes WatchPendingJobs (and, heading an idle conversation,
        # the typing indicator); a completion handing over to a pending job wakes WatchPendingJobs.
        idle_job, busy_head = await claim(agent_queue, "w1")
        await complete(agent_queue, idle_job.id, "w1")
        await enqueue(agent_queue, queued)
        await complete(agent_queue, busy_head.id, "w1")
        notes = await asyncio.to_thread(notes_until_sentinel, listener, agent_queue.db, JOBS_CHANNEL)
    assert notes == [
        ("agent_queue_jobs", idle.hex),
        ("agent_queue_pending", queued.hex),
        ("agent_queue_jobs", queued.hex),
        ("agent_queue_pending", busy.hex),
    ]


async def test_a_batch_of_acknowledgements_sends_one_wake_up_per_channel_listing_its_conversations(
    agent_queue: Running,
) -> None:
    idle_a, idle_b, busy = conv(), conv(), conv()
    for conversation in (idle_a, idle_b, busy, busy):
        add_job(agent_queue.db, conversation)
    claimed = await claim(agent_queue, "w1")
    with psycopg.connect(agent_queue.db.admin_dsn(), autocommit=True) as listener:
        listener.execute("LISTEN agent_queue_pending")
        listener.execute("LISTEN agent_queue_jobs")
        await agent_queue.stub.CompleteJobs(
            pb.CompleteJobsRequest(
                processor_id="w1", completions=[pb.JobCompletion(job_id=j.id) for j in claimed]
            ),
            metadata=service(),
        )
        notes = await asyncio.to_thread(notes_until_sentinel, listener, agent_queue.db, JOBS_CHANNEL)
    assert len(claimed) == 3
    assert [(channel, sorted(payload.split(","))) for channel, payload in sorted(notes)] == [
        ("agent_queue_jobs", sorted([idle_a.hex, idle_b.hex])),
        ("agent_queue_pending", [busy.hex]),
    ]


def test_a_statement_finishing_hundreds_of_heads_splits_its_wake_up_under_the_payload_limit(db: TestDatabase) -> None:
    conversations = [conv() for _ in range(450)]
    for conversation in conversations:
        add_job(db, conversation)
    with psycopg.connect(db.admin_dsn(), autocommit=True) as listener:
        listener.execute("LISTEN agent_queue_jobs")
        db.sql(
            "UPDATE agent_queue.jobs SET status = 'cancelled', cancel_requested_at = now(), is_head = false"
            " WHERE conversation_id = ANY(%s)",
            (conversations,),
        )
        notes = notes_until_sentinel(listener, db, JOBS_CHANNEL)
    payloads = [payload for _, payload in notes]
    assert [len(p.split(",")) for p in payloads] == [200, 200, 50]
    assert max(len(p.encode()) for p in payloads) < 8000  # Postgres refuses a longer payload
    assert sorted(k for p in payloads for k in p.split(",")) == sorted(c.hex for c in conversations)


def test_the_hand_over_plans_its_statement_once_per_connection_not_per_call(db: TestDatabase) -> None:
    # Re-planning it per call cost more than running it (migration 0008).
    config = db.sql("SELECT proconfig FROM pg_proc WHERE oid = 'agent_queue.jobs_hand_over_heads'::regproc")
    assert config == [(["plan_cache_mode=force_generic_plan"],)]


# --- migration 0002 on existing rows ---


def test_migrating_gives_every_conversation_with_unfinished_jobs_its_head(db: TestDatabase) -> None:
    alembic(db, ServiceName.AGENT_QUEUE, "downgrade", "0001")
    rows: list[tuple[uuid.UUID, uuid.UUID, str]] = []
    a, b, c, d = (conv() for _ in range(4))
    # In creation order: a's processing job holds it though an older job of it is pending (rows
    # written before heads existed); b waits for a retry; c has only pending jobs; d is done.
    for conversation, status in [(a, "pending"), (a, "completed"), (a, "processing"), (a, "pending"),
                                 (b, "pending"), (b, "waiting_retry"), (c, "pending"), (c, "pending"), (d, "completed")]:
        job = uuid.UUID(int=(len(rows) + 1) << 80 | 0x7000 << 64)  # ascending, UUIDv7-shaped enough for order
        rows.append((job, conversation, status))
        db.sql(
            "INSERT INTO agent_queue.jobs (id, message_id, conversation_id, status, attempt_count, processor_id,"
            " locked_until, created_at) VALUES (%s, %s, %s, %s, 0, %s, %s, now())",
            (job, uuid.uuid4(), conversation, status, "w" if status == "processing" else None,
             datetime.now(UTC) if status == "processing" else None),
        )
    alembic(db, ServiceName.AGENT_QUEUE, "upgrade", "head")

    found = {r[0] for r in db.sql("SELECT id FROM agent_queue.jobs WHERE is_head")}
    assert found == {rows[2][0], rows[5][0], rows[6][0]}
