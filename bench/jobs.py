"""The job-queue drain, ours against its peers: figures (a), (b), (c), (d) and the CPU split (e).

Ours: N pending jobs are written straight into `agent_queue.jobs` (untimed), then `workers`
workers, each with its own channel to the agent_queue server, drain them with a *worker
strategy*. The drain is timed from the first claim to the last acknowledgement; CPU is read
off the client (this process), the server and Postgres for the same interval.

To measure a new way of working the queue (batched acks, acks carried on ClaimJobs, a worker
stream), write one strategy function and add it to JOB_STRATEGIES:

    async def claim_then_complete_batch(w: JobWorker) -> None:
        while not w.drain.done:
            reply = await w.stub.ClaimJobs(w.claim_request(), metadata=w.metadata)
            if not reply.jobs:
                await w.drain.wait_for_progress()
                continue
            await w.stub.CompleteJobs(pb.CompleteJobsRequest(...), metadata=w.metadata)
            w.drain.completed(len(reply.jobs))

    JOB_STRATEGIES["claim10+complete-batch"] = claim_then_complete_batch

Every strategy is run in figures (a) and (b), and the goals use the best of them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import grpc
import psycopg
from google.protobuf.duration_pb2 import Duration

from bench.core import Bench, Case, Metrics
from bench.stack import PGQUEUER_DATABASE, Measurement, service_metadata
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc

# A drain that runs longer than this failed (a stuck worker), whatever N was.
DRAIN_LIMIT_S = 900.0
# A worker whose claim came back empty while others still hold jobs waits at most this long
# for a completion anywhere (in-process signal) before claiming again.
IDLE_WAIT_S = 0.02
LEASE_S = 120


class DrainState:
    """Shared by the workers of one drain: how many are done, and a wake-up on progress."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self._progress = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.count >= self.total

    def completed(self, n: int) -> None:
        self.count += n
        self._progress.set()
        self._progress = asyncio.Event()

    async def wait_for_progress(self) -> None:
        try:
            await asyncio.wait_for(self._progress.wait(), IDLE_WAIT_S)
        except TimeoutError:
            pass


@dataclass
class JobWorker:
    """One agent worker: its own channel and processor id, the drain it works on."""

    stub: agent_queue_pb2_grpc.AgentQueueServiceAsyncStub
    processor_id: str
    drain: DrainState
    batch: int
    metadata: tuple[tuple[str, str], ...] = field(default_factory=service_metadata)

    def claim_request(self) -> pb.ClaimJobsRequest:
        lease = Duration()
        lease.FromSeconds(LEASE_S)
        return pb.ClaimJobsRequest(processor_id=self.processor_id, max_jobs=self.batch, lease=lease)


JobStrategy = Callable[[JobWorker], Awaitable[None]]


async def claim_then_complete_each(w: JobWorker) -> None:
    """Today's runtime: ClaimJobs(max batch), then one CompleteJob per job, concurrently."""
    while not w.drain.done:
        reply = await w.stub.ClaimJobs(w.claim_request(), metadata=w.metadata)
        if not reply.jobs:
            await w.drain.wait_for_progress()
            continue
        await asyncio.gather(
            *(
                w.stub.CompleteJob(
                    pb.CompleteJobRequest(job_id=job.id, processor_id=w.processor_id, model_used="bench"),
                    metadata=w.metadata,
                )
                for job in reply.jobs
            )
        )
        w.drain.completed(len(reply.jobs))


JOB_STRATEGIES: dict[str, JobStrategy] = {
    "claim+complete-each": claim_then_complete_each,
}


# --- arranging the backlog (untimed) ---

# Server-side so 10⁶ rows take seconds: ids are Postgres 18's uuidv7() (time-ordered like
# zenthor.ids), conversations drawn round-robin from `conversations` ids (0: one per job). Every
# job has an owner, as a real one does, so each completion decides about its `job.completed`
# webhook event for real: like most users, this owner has no endpoint for job events, so none is
# written once delivery has said so at start (bench/stack.py waits for it; docs/webhooks.md).
LOAD_JOBS = """
WITH conv AS (SELECT array_agg(uuidv7()) AS ids FROM generate_series(1, GREATEST(%(conversations)s, 1)))
INSERT INTO agent_queue.jobs (id, message_id, conversation_id, conversation_user_id, status, attempt_count, created_at)
SELECT uuidv7(), uuidv7(),
       CASE WHEN %(conversations)s = 0 THEN uuidv7() ELSE conv.ids[1 + g %% %(conversations)s] END,
       %(owner)s, 'pending', 0, now()
FROM conv, generate_series(1, %(n)s) AS g
"""
# The owner of every bench job (a user id nobody else uses).
JOB_OWNER = uuid.UUID("0190f000-0000-7000-8000-00000000b0b0")


def load_jobs(dsn: str, n: int, conversations: int) -> None:
    """An empty queue, then `n` pending jobs (conversations=0: each job its own)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE agent_queue.jobs")
        conn.execute(LOAD_JOBS, {"n": n, "conversations": conversations, "owner": JOB_OWNER})
        conn.execute("VACUUM ANALYZE agent_queue.jobs")


def count_jobs(dsn: str, status: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM agent_queue.jobs WHERE status = %s", (status,)).fetchone()
        return int(row[0]) if row else 0


@asynccontextmanager
async def measured(bench: Bench, items: int, server: str | None) -> AsyncIterator[Metrics]:
    """Times the block and fills `rate`, the CPU split per 1,000 items and the peak RSS."""
    metrics: Metrics = {}
    if bench.statements is not None:
        await asyncio.to_thread(bench.stack.reset_statement_stats)
    measurement = Measurement(bench.stack, items, server)
    async with bench.profiled():  # a profile run's recordings, over the window and what it leaves behind
        measurement.start()
        try:
            yield metrics
        finally:
            measurement.stop()
        if not await asyncio.to_thread(bench.stack.wait_quiet):
            bench.say("the stack still had outbox events due 60 s after the drain; CPU counted up to then")
        measurement.settled()
    if bench.statements is not None:
        bench.statements[:] = await asyncio.to_thread(bench.stack.statement_stats, items)
    metrics.update(measurement.metrics())
    bench.note_rss(measurement.rss_peak_mb)


# --- ours ---


async def drain_ours(bench: Bench, strategy: JobStrategy, conversations: int) -> Metrics:
    opts, stack = bench.options, bench.stack
    await asyncio.to_thread(load_jobs, stack.admin_dsn(), opts.jobs, conversations)
    state = DrainState(opts.jobs)
    channels = [grpc.aio.insecure_channel(stack.address("agent_queue")) for _ in range(opts.workers)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 10)
        workers = [
            JobWorker(agent_queue_pb2_grpc.AgentQueueServiceStub(c), f"bench-worker-{i}", state, opts.claim_batch)
            for i, c in enumerate(channels)
        ]
        async with measured(bench, opts.jobs, "agent_queue") as metrics, asyncio.timeout(DRAIN_LIMIT_S):
            await asyncio.gather(*(strategy(w) for w in workers))
    finally:
        for channel in channels:
            await channel.close()
    completed = await asyncio.to_thread(count_jobs, stack.admin_dsn(), "completed")
    if completed != opts.jobs:
        raise RuntimeError(f"drain ended with {completed} of {opts.jobs} jobs completed")
    return metrics


# --- raw-SQL floor ---

# The least a correct SKIP LOCKED queue does, on the same table and indexes: no per-
# conversation exclusivity (with one conversation per job it has nothing to exclude).
RAW_CLAIM = """
WITH picked AS (
    SELECT id FROM agent_queue.jobs WHERE status = 'pending' ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED
)
UPDATE agent_queue.jobs AS j
SET status = 'processing', processor_id = %(p)s, locked_until = now() + interval '120 seconds',
    started_at = now(), last_heartbeat_at = now()
FROM picked WHERE j.id = picked.id
RETURNING j.id
"""
# Guarded like ours: only the lease holder, only from processing; one statement per batch.
RAW_COMPLETE = """
UPDATE agent_queue.jobs
SET status = 'completed', model_used = 'bench', processor_id = NULL, locked_until = NULL, finished_at = now()
WHERE id = ANY(%(ids)s) AND status = 'processing' AND processor_id = %(p)s
"""


async def drain_raw_sql(bench: Bench, batch: int) -> Metrics:
    opts, stack = bench.options, bench.stack
    await asyncio.to_thread(load_jobs, stack.admin_dsn(), opts.jobs, 0)
    state = DrainState(opts.jobs)
    conns = [await psycopg.AsyncConnection.connect(stack.admin_dsn(), autocommit=True) for _ in range(opts.workers)]

    async def worker(conn: psycopg.AsyncConnection[tuple[object, ...]], name: str) -> None:
        while not state.done:
            async with conn.transaction():
                rows = await (await conn.execute(RAW_CLAIM, {"n": batch, "p": name})).fetchall()
            if not rows:
                await state.wait_for_progress()
                continue
            await conn.execute(RAW_COMPLETE, {"ids": [r[0] for r in rows], "p": name})
            state.completed(len(rows))

    try:
        async with measured(bench, opts.jobs, None) as metrics, asyncio.timeout(DRAIN_LIMIT_S):
            await asyncio.gather(*(worker(c, f"raw-{i}") for i, c in enumerate(conns)))
    finally:
        for conn in conns:
            await conn.close()
    completed = await asyncio.to_thread(count_jobs, stack.admin_dsn(), "completed")
    if completed != opts.jobs:
        raise RuntimeError(f"raw drain ended with {completed} of {opts.jobs} jobs completed")
    return metrics


# --- pgqueuer, through its public API ---

PGQ_ENTRYPOINT = "bench_noop"


async def install_pgqueuer(dsn: str) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        if not await queries.schema_is_installed():
            await queries.install()
    finally:
        await conn.close()


async def drain_pgqueuer(bench: Bench, driver: str, n: int) -> Metrics:
    """Enqueue n (one batched call, untimed), then `workers` QueueManagers, each on its own
    connection, drain with batch `claim_batch`. Timed from the first job handed to an
    entrypoint to the last one acknowledged in the database (`log_jobs`, which moves jobs out
    of the queue table): like ours, worker start-up and shutdown stay outside the interval."""
    import asyncpg
    from pgqueuer import AsyncpgDriver, PsycopgDriver, Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    opts = bench.options
    dsn = bench.stack.admin_dsn(PGQUEUER_DATABASE)
    measurement = Measurement(bench.stack, n, None)
    all_acked = asyncio.Event()
    acked = 0

    class AckCountingQueries(Queries):
        async def log_jobs(self, job_status: Any) -> None:
            nonlocal acked
            await super().log_jobs(job_status)
            acked += sum(1 for _, status, _ in job_status if status == "successful")
            if acked >= n:
                measurement.stop()
                all_acked.set()

    async def noop(job: object) -> None:
        measurement.start()

    admin = await asyncpg.connect(dsn)
    conns: list[Any] = []
    try:
        await admin.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")
        await Queries(AsyncpgDriver(admin)).enqueue([PGQ_ENTRYPOINT] * n, [None] * n, [0] * n)
        await admin.execute("VACUUM ANALYZE pgqueuer")
        managers: list[QueueManager] = []
        for _ in range(opts.workers):
            if driver == "asyncpg":
                conn: Any = await asyncpg.connect(dsn)
                queries = AckCountingQueries(AsyncpgDriver(conn))
            else:
                conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
                queries = AckCountingQueries(PsycopgDriver(conn))
            conns.append(conn)
            manager = QueueManager(queries)
            manager.entrypoint(PGQ_ENTRYPOINT)(noop)
            managers.append(manager)
        runs = asyncio.gather(
            *(
                m.run(batch_size=opts.claim_batch, mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1))
                for m in managers
            )
        )
        try:
            await asyncio.wait_for(all_acked.wait(), DRAIN_LIMIT_S)
        finally:
            for manager in managers:
                manager.shutdown.set()
            await asyncio.wait_for(runs, 60)
        left = await admin.fetchval("SELECT count(*) FROM pgqueuer")
        if left:
            raise RuntimeError(f"pgqueuer drain left {left} jobs")
    finally:
        for conn in conns:
            await conn.close()
        await admin.close()
    bench.note_rss(measurement.rss_peak_mb)
    return measurement.metrics()


def job_cases(bench: Bench) -> list[Case]:
    batch = bench.options.claim_batch
    cases: list[Case] = []
    for name, strategy in JOB_STRATEGIES.items():
        cases.append(Case("a", f"ours {name}, 1 conversation/job", partial(drain_ours, strategy=strategy, conversations=0), windowed=True))
        cases.append(Case("b", f"ours {name}, 50 conversations", partial(drain_ours, strategy=strategy, conversations=50), windowed=True))
    cases += [
        Case("c", "pgqueuer asyncpg", lambda b: drain_pgqueuer(b, "asyncpg", b.options.jobs)),
        Case("c", "pgqueuer psycopg", lambda b: drain_pgqueuer(b, "psycopg", b.options.jobs)),
        Case("d", f"raw SQL batch {batch}", lambda b: drain_raw_sql(b, batch), windowed=True),
        Case("d", "raw SQL batch 1", lambda b: drain_raw_sql(b, 1), windowed=True),
    ]
    return cases
