"""`python -m zenthor backup` / `restore`: per-schema pg_dump archives that bring back every row,
and every pending job claimable again through a real agent_queue server."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tests.service.agent_queue.conftest import AgentQueueFactory
from tests.support.agent_queue_builders import lease
from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from zenthor import backup, ids
from zenthor.__main__ import main
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb

SCHEMAS = [s.value for s in ServiceName]


def arrange(db: TestDatabase, messages: int, pending_jobs: int, conversations: int) -> set[str]:
    """Inserts conversations, messages and one pending job per conversation as the superuser;
    returns the pending jobs' wire ids."""
    now = datetime.now(UTC)
    conversation_ids = [ids.CONVERSATION.new() for _ in range(conversations)]
    job_ids = [ids.JOB.new() for _ in range(pending_jobs)]
    with psycopg.connect(db.admin_dsn()) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY messages.conversations (id, channel, user_id, status, created_at, updated_at) FROM STDIN"
        ) as copy:
            for c in conversation_ids:
                copy.write_row((c, "web", ids.USER.new(), "active", now, now))
        with cur.copy(
            "COPY messages.messages (id, conversation_id, role, content, channel, status, revision, "
            "created_at, updated_at) FROM STDIN"
        ) as copy:
            for n in range(messages):
                copy.write_row(
                    (ids.MESSAGE.new(), conversation_ids[n % conversations], "user", f"message {n} ✓",
                     "web", "sent", n + 1, now, now)
                )
        # Row by row through the insert trigger that makes each its conversation's head.
        with cur.copy(
            "COPY agent_queue.jobs (id, message_id, conversation_id, status, attempt_count, created_at) FROM STDIN"
        ) as copy:
            for n, job in enumerate(job_ids):
                copy.write_row((job, ids.MESSAGE.new(), conversation_ids[n % conversations], "pending", 0, now))
    return {ids.JOB.format(j) for j in job_ids}


def fingerprint(db: TestDatabase) -> dict[str, tuple[int, str]]:
    """Rows and an md5 over every row's text, per table of every service schema."""
    tables = db.sql(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY(%s) ORDER BY 1, 2", (SCHEMAS,)
    )
    out: dict[str, tuple[int, str]] = {}
    for schema, table in tables:
        [(count, digest)] = db.sql(
            f'SELECT count(*), coalesce(md5(string_agg(t::text, \'|\' ORDER BY t::text)), \'\') '
            f'FROM "{schema}"."{table}" t'
        )
        out[f"{schema}.{table}"] = (count, digest)
    return out


def wipe(db: TestDatabase) -> None:
    for schema in SCHEMAS:
        db.sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert db.sql("SELECT count(*) FROM pg_tables WHERE schemaname = ANY(%s)", (SCHEMAS,)) == [(0,)]


async def claim_all(factory: AgentQueueFactory, expected: int) -> set[str]:
    agent_queue = await factory()
    claimed: set[str] = set()
    async with asyncio.timeout(60):
        while len(claimed) < expected:
            reply = await agent_queue.stub.ClaimJobs(
                pb.ClaimJobsRequest(processor_id="restored", max_jobs=100, lease=lease(300)),
                metadata=service(),
                timeout=10,
            )
            if not reply.jobs:
                break  # nothing more is claimable
            claimed |= {job.id for job in reply.jobs}
    return claimed


@pytest.mark.slow
@pytest.mark.timeout(120)  # the acceptance bound: the whole round trip on 2 cores
async def test_a_full_stack_survives_backup_wipe_and_restore(
    db: TestDatabase, agent_queue_factory: AgentQueueFactory, tmp_path: Path
) -> None:
    started = time.monotonic()
    pending = await asyncio.to_thread(arrange, db, 10_000, 1_000, 1_000)
    before = await asyncio.to_thread(fingerprint, db)
    assert before["messages.messages"][0] == 10_000 and before["agent_queue.jobs"][0] == 1_000

    lines: list[str] = []
    out = tmp_path / "backup"
    await asyncio.to_thread(backup.backup, db.admin_dsn(), out, progress=lines.append)
    assert sorted(p.name for p in out.glob("*.dump")) == sorted(f"{s}.dump" for s in SCHEMAS)
    assert any("messages: " in line and "rows" in line for line in lines), lines

    await asyncio.to_thread(wipe, db)
    await asyncio.to_thread(backup.restore, db.admin_dsn(), out, progress=lines.append)
    assert await asyncio.to_thread(fingerprint, db) == before

    assert await claim_all(agent_queue_factory, len(pending)) == pending
    print(f"backup, wipe, restore and claim of 10,000 messages + 1,000 jobs: {time.monotonic() - started:.1f}s")


async def test_the_cli_backs_up_and_restores_with_progress_and_refuses_to_overwrite(
    db: TestDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await asyncio.to_thread(arrange, db, 20, 3, 3)
    before = await asyncio.to_thread(fingerprint, db)
    out = tmp_path / "b"
    assert await asyncio.to_thread(main, ["backup", "--out", str(out), "--dsn", db.admin_dsn()]) == 0
    printed = capsys.readouterr().out
    assert "[7/7]" in printed and "backup done" in printed

    # Restoring over live data is refused unless asked for.
    assert await asyncio.to_thread(main, ["restore", "--from", str(out), "--dsn", db.admin_dsn()]) == 1
    assert "--replace" in capsys.readouterr().err
    db.sql("DELETE FROM messages.messages")
    assert await asyncio.to_thread(
        main, ["restore", "--from", str(out), "--dsn", db.admin_dsn(), "--replace"]
    ) == 0
    assert "restore done" in capsys.readouterr().out
    assert await asyncio.to_thread(fingerprint, db) == before

    # A directory that holds a backup is never overwritten; one without a manifest is no backup.
    assert await asyncio.to_thread(main, ["backup", "--out", str(out), "--dsn", db.admin_dsn()]) == 1
    assert await asyncio.to_thread(main, ["restore", "--from", str(tmp_path), "--dsn", db.admin_dsn()]) == 1
