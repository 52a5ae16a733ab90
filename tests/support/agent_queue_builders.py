"""Builders and helpers for agent_queue tests: a settable clock, jobs, agents and skills
written as the superuser, and typed ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.database import TestDatabase
from zenthor import ids

T0 = datetime.fromtimestamp(1_700_000_000, UTC)  # scenarios' shared fixture


@dataclass
class ManualClock:
    """The service's clock in tests: moves only when told to."""

    now: datetime = field(default_factory=lambda: T0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | float) -> datetime:
        self.now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        return self.now

    def set(self, value: datetime) -> None:
        self.now = value


def job_row(db: TestDatabase, job_id: str | uuid.UUID) -> dict[str, Any]:
    """The stored job as a dict (column → value)."""
    raw = job_id if isinstance(job_id, uuid.UUID) else ids.JOB.parse(job_id, "id")
    with __import__("psycopg").connect(db.admin_dsn(), autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM agent_queue.jobs WHERE id = %s", (raw,))
        row = cur.fetchone()
        assert row is not None, f"no job {job_id}"
        return dict(zip([d.name for d in cur.description or ()], row, strict=True))


def add_job(
    db: TestDatabase,
    conversation_id: uuid.UUID,
    *,
    status: str = "pending",
    created_at: datetime = T0,
    processor_id: str | None = None,
    locked_until: datetime | None = None,
    started_at: datetime | None = None,
    attempt_count: int = 0,
    finished_at: datetime | None = None,
    user_id: uuid.UUID | None = None,
    contact_id: uuid.UUID | None = None,
) -> uuid.UUID:
    job_id = ids.JOB.new()
    db.sql(
        "INSERT INTO agent_queue.jobs (id, message_id, conversation_id, conversation_user_id,"
        " conversation_contact_id, status, attempt_count, processor_id, locked_until, started_at,"
        " last_heartbeat_at, finished_at, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            job_id, ids.MESSAGE.new(), conversation_id, user_id, contact_id, status, attempt_count,
            processor_id, locked_until, started_at, started_at, finished_at, created_at,
        ),
    )
    return job_id


def conv() -> uuid.UUID:
    return ids.CONVERSATION.new()


def conv_id(value: uuid.UUID) -> str:
    return ids.CONVERSATION.format(value)


def job_id(value: uuid.UUID) -> str:
    return ids.JOB.format(value)


def msg_id(value: uuid.UUID | None = None) -> str:
    return ids.MESSAGE.format(value or ids.MESSAGE.new())


def lease(seconds: float) -> Any:
    from google.protobuf.duration_pb2 import Duration

    d = Duration()
    d.FromTimedelta(timedelta(seconds=seconds))
    return d


def ms(value: int) -> timedelta:
    return timedelta(milliseconds=value)
