"""agent_queue: the head hand-over once per statement, with one wake-up per channel

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = "agent_queue"

# Migration 0002 handed a finished head over row by row: a batch of ten acknowledgements ran the
# trigger ten times and sent ten notifications, which Postgres queued one by one and the
# service's listener read and parsed one by one (without them a drain used 12% less CPU:
# bench/results/2026-12-02-hand-over-without-notify-experiment.md; this trigger took 3% and 6% off
# in two paired runs, README's Performance section). This trigger does the same hand-over for the
# whole statement, from its transition tables, and lists the conversation keys of each channel in
# one payload (comma-separated, at most KEYS_PER_NOTE keys so a payload stays under Postgres's
# 8,000 bytes): zenthor.notify.ChangeFeed splits them.
#
# It fires after every UPDATE of jobs (a trigger with transition tables cannot name columns), so
# it returns at once when no head left; that also ends the recursion its own UPDATE starts (the
# promoted rows gain is_head, none loses it). The hand-over's statements still read a fresh
# snapshot after the client statement, so migration 0002's race argument holds unchanged.
KEYS_PER_NOTE = 200
HAND_OVER_HEADS = f"""
CREATE FUNCTION {SCHEMA}.jobs_hand_over_heads() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    left_heads uuid[];
    handed text[];
    idle text[];
BEGIN
    -- the conversations whose head this statement finished (cleared is_head)
    SELECT array_agg(n.conversation_id) INTO left_heads
      FROM after_rows AS n JOIN before_rows AS o ON o.id = n.id
     WHERE o.is_head AND NOT n.is_head;
    IF left_heads IS NULL THEN
        RETURN NULL;
    END IF;
    WITH gone AS (SELECT c AS conversation_id, replace(c::text, '-', '') AS key FROM unnest(left_heads) AS c),
    next_heads AS (
        SELECT oldest.id
          FROM gone AS g
         CROSS JOIN LATERAL (SELECT c.id FROM {SCHEMA}.jobs AS c
                              WHERE c.conversation_id = g.conversation_id AND c.status = 'pending'
                              ORDER BY c.id LIMIT 1) AS oldest
    ),
    promoted AS (
        UPDATE {SCHEMA}.jobs AS j SET is_head = true
          FROM next_heads AS h
         WHERE j.id = h.id
        RETURNING j.conversation_id
    )
    SELECT array_agg(g.key) FILTER (WHERE p.conversation_id IS NOT NULL),
           array_agg(g.key) FILTER (WHERE p.conversation_id IS NULL)
      INTO handed, idle
      FROM gone AS g LEFT JOIN promoted AS p ON p.conversation_id = g.conversation_id;
    -- WatchPendingJobs: a job became claimable; WatchConversationProcessing: the conversation fell idle.
    PERFORM pg_notify('agent_queue_pending', array_to_string(handed[i:i + {KEYS_PER_NOTE - 1}], ','))
       FROM generate_series(1, cardinality(handed), {KEYS_PER_NOTE}) AS i;
    PERFORM pg_notify('agent_queue_jobs', array_to_string(idle[i:i + {KEYS_PER_NOTE - 1}], ','))
       FROM generate_series(1, cardinality(idle), {KEYS_PER_NOTE}) AS i;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    # Migration 0002's row function stays, unused, so the downgrade re-attaches it as it was.
    op.execute(f"DROP TRIGGER jobs_hand_over_head ON {SCHEMA}.jobs")
    op.execute(HAND_OVER_HEADS)
    op.execute(
        f"CREATE TRIGGER jobs_hand_over_heads AFTER UPDATE ON {SCHEMA}.jobs"
        " REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.jobs_hand_over_heads()"
    )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER jobs_hand_over_heads ON {SCHEMA}.jobs")
    op.execute(f"DROP FUNCTION {SCHEMA}.jobs_hand_over_heads()")
    op.execute(
        f"CREATE TRIGGER jobs_hand_over_head AFTER UPDATE OF is_head ON {SCHEMA}.jobs"
        f" FOR EACH ROW WHEN (OLD.is_head AND NOT NEW.is_head) EXECUTE FUNCTION {SCHEMA}.jobs_hand_over_head()"
    )
