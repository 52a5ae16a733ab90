"""The `job.completed` / `job.failed` webhook events (docs/webhooks.md) as outbox rows, written by
SQL in the statement or transaction that finishes the job: the acknowledgements are single
statements on the direct pool (store/jobs.py), so the events are one more CTE there, built from
the rows the UPDATE returns; the failures in a unit of work insert them from the stored rows.
The events of one statement are one bundle row (zenthor.outbox.add_bundle): a batch of ten acks
costs one outbox insert, lease and mark, not ten.

The payload has the shape `zenthor.webhooks.webhook_event` gives every other emitter (event id
`<type>:job_…`, ISO times, typed ids), which the relay hands to delivery's PublishWebhookEvents.
A job whose conversation has no owner on record is not an event anyone could receive.

Nor is a user's job whose owner has no endpoint for job events, and most users register none:
writing, relaying and storing their events was a third of a busy queue's CPU
(bench/results/2026-12-02-job-events-experiment-none.md). So an event of a user-owned job is
written only when the user is in `job_event_listeners`, where delivery registers each owner of
such an endpoint before the endpoint can be seen enabled (AddJobEventListeners,
services/delivery/usecases/job_event_owners.py), or while the EVERYONE row is there (until
delivery says it has registered them all). A registration commits before the endpoint does, and an acknowledging
statement reads the table in its own snapshot, so a job finished after an endpoint was created is
an event for it. A contact-owned job's event is always written: the user its contact is linked to
is identity's to know, and may change at any time."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agent_queue.domain.jobs import Job, JobStatus
from zenthor import ids
from zenthor.outbox import BUNDLE_KEY_SQL, bundle_sql
from zenthor.webhooks import WEBHOOK_EVENT_TOPIC

# The row that stands for every user (migration 0007): each owner's events are written while it
# is there, and delivery removes it once it has registered every owner of an endpoint.
EVERYONE = uuid.UUID(int=0)
# Users in one AddJobEventListeners call.
MAX_LISTENERS_PER_CALL = 1000


def _iso(column: str) -> str:
    """datetime.isoformat() of a UTC timestamp (what the event's readers parse back)."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""


def insert_job_events(source: str, now: str) -> str:
    """An INSERT of one bundle row holding an event per completed or failed row of `source` (a
    jobs row set: the table, or a CTE returning `jobs.*`), none when there is no such row; `now`
    is the statement's placeholder for the current time. Each job finishes once (its transitions
    are guarded), so each event is written once."""
    event_type = "CASE s.status WHEN 'completed' THEN 'job.completed' ELSE 'job.failed' END"
    event_id = f"({event_type}) || ':' || {ids.JOB.sql('s.id')}"
    event = f"""jsonb_build_object(
               'event_id', {event_id},
               'type', {event_type},
               'occurred_at', {_iso('s.finished_at')},
               'owner_user_id', CASE WHEN s.conversation_user_id IS NOT NULL THEN {ids.USER.sql('s.conversation_user_id')} END,
               'owner_contact_id', CASE WHEN s.conversation_contact_id IS NOT NULL
                                        THEN {ids.CONTACT.sql('s.conversation_contact_id')} END,
               'data', jsonb_build_object(
                   'job_id', {ids.JOB.sql('s.id')},
                   'conversation_id', {ids.CONVERSATION.sql('s.conversation_id')},
                   'message_id', {ids.MESSAGE.sql('s.message_id')},
                   'status', s.status,
                   'attempt_count', s.attempt_count,
                   'model_used', s.model_used,
                   'error_reason', s.error_reason,
                   'error_message', s.error_message,
                   'create_time', {_iso('s.created_at')},
                   'finish_time', {_iso('s.finished_at')}
               )
           )"""
    return f"""
    INSERT INTO agent_queue.outbox (id, topic, key, payload, created_at, attempts, next_attempt_at)
    SELECT gen_random_uuid(), '{WEBHOOK_EVENT_TOPIC}', {BUNDLE_KEY_SQL}, {bundle_sql(event, "s.id")}, {now}, 0, {now}
      FROM {source} AS s
     WHERE s.status IN ('completed', 'failed')
       AND (s.conversation_contact_id IS NOT NULL
            OR (s.conversation_user_id IS NOT NULL
                AND EXISTS (SELECT FROM agent_queue.job_event_listeners AS l
                             WHERE l.user_id IN (s.conversation_user_id, '{EVERYONE}'))))
    HAVING count(*) > 0
    """


FINAL_JOB_EVENTS = sa.text(
    insert_job_events("(SELECT * FROM agent_queue.jobs WHERE id = ANY(CAST(:ids AS uuid[])))", ":now")
)


async def add_final_job_events(conn: AsyncConnection, finished: Sequence[Job], now: datetime) -> None:
    """In the caller's transaction: the events of these jobs that ended COMPLETED or FAILED (for
    good), read back from their stored rows."""
    ids: list[uuid.UUID] = [j.id for j in finished if j.status in (JobStatus.COMPLETED, JobStatus.FAILED)]
    if ids:
        await conn.execute(FINAL_JOB_EVENTS, {"ids": ids, "now": now})


ADD_LISTENERS = sa.text("""
    INSERT INTO agent_queue.job_event_listeners (user_id, created_at)
    SELECT DISTINCT u, :now FROM unnest(CAST(:users AS uuid[])) AS u
    ON CONFLICT (user_id) DO NOTHING
    RETURNING user_id
""")
FORGET_EVERYONE = sa.text("DELETE FROM agent_queue.job_event_listeners WHERE user_id = :everyone")


async def add_listeners(conn: AsyncConnection, users: Sequence[uuid.UUID], now: datetime, all_registered: bool) -> int:
    """Registers `users` (those already there stay as they are); with `all_registered`, drops the
    EVERYONE row too. Answers how many were new."""
    added = len((await conn.execute(ADD_LISTENERS, {"users": list(users), "now": now})).all()) if users else 0
    if all_registered:
        await conn.execute(FORGET_EVERYONE, {"everyone": EVERYONE})
    return added
