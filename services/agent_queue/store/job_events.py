"""The `job.completed` / `job.failed` webhook events (docs/webhooks.md) as outbox rows, written by
SQL in the statement or transaction that finishes the job: the acknowledgements are single
statements on the direct pool (store/jobs.py), so the events are one more CTE there, built from
the rows the UPDATE returns; the failures in a unit of work insert them from the stored rows.
The events of one statement are one bundle row (zenthor.outbox.add_bundle): a batch of ten acks
costs one outbox insert, lease and mark, not ten.

The payload has the shape `zenthor.webhooks.webhook_event` gives every other emitter (event id
`<type>:job_…`, ISO times, typed ids), which the relay hands to delivery's PublishWebhookEvents.
A job whose conversation has no owner on record is not an event anyone could receive."""

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
       AND (s.conversation_user_id IS NOT NULL OR s.conversation_contact_id IS NOT NULL)
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
