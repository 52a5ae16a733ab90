"""agent_queue: conversation heads (is_head) so a claim reads only claimable rows

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "agent_queue"
UNFINISHED = "status IN ('pending', 'processing', 'waiting_retry')"

# The head of a conversation's queue is its one job that may be claimed, be processing or wait for
# its retry: the oldest unfinished job. Claims read only pending heads (an index of at most one
# row per conversation) instead of checking every pending row against its conversation's older
# ones, so a claim costs the same at 10³ or 10⁶ pending jobs (docs/architecture.md §6).
#
# Two triggers keep the head: whatever inserts a job (EnqueueJob, a test's builder, a bulk load)
# gets the head right without knowing of it, and a statement that finishes a head (complete, fail,
# the stale-lease sweep: each clears is_head with the status) hands it over by clearing it. Each statement inside a trigger function reads a fresh
# snapshot (READ COMMITTED), which a single client statement cannot: that is what makes the
# hand-over race-free in one round trip.

# An inserted unfinished job heads its conversation when the conversation has no head. FOR SHARE
# on the current head: a head leaving for good (its UPDATE) waits until this insert commits, and
# its hand-over then sees the new row; a head leaving right now makes this wait for it, and the
# second look (a fresh snapshot, after the wait) sees the job it handed over to. Two inserts into
# an idle conversation at the same instant both find no head: the unique index refuses the
# second, which EnqueueJob retries.
TAKE_HEAD = f"""
CREATE FUNCTION {SCHEMA}.jobs_take_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status NOT IN ('pending', 'processing', 'waiting_retry') THEN
        NEW.is_head := false;
        RETURN NEW;
    END IF;
    PERFORM 1 FROM {SCHEMA}.jobs WHERE conversation_id = NEW.conversation_id AND is_head FOR SHARE;
    IF NOT FOUND THEN
        PERFORM 1 FROM {SCHEMA}.jobs WHERE conversation_id = NEW.conversation_id AND is_head FOR SHARE;
    END IF;
    NEW.is_head := NOT FOUND;
    RETURN NEW;
END $$
"""

# A head that left for good hands the conversation to its oldest
# pending job, and wakes who cares: WatchPendingJobs when a job became claimable
# (agent_queue_pending), WatchConversationProcessing when the conversation fell idle
# (agent_queue_jobs). Keys are the conversation id in hex, as services/agent_queue/usecases/jobs.py
# sends them.
HAND_OVER = f"""
CREATE FUNCTION {SCHEMA}.jobs_hand_over_head() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next_id uuid;
BEGIN
    UPDATE {SCHEMA}.jobs SET is_head = true
     WHERE id = (SELECT n.id FROM {SCHEMA}.jobs AS n
                  WHERE n.conversation_id = NEW.conversation_id AND n.status = 'pending'
                  ORDER BY n.id LIMIT 1)
    RETURNING id INTO next_id;
    IF next_id IS NOT NULL THEN
        PERFORM pg_notify('agent_queue_pending', replace(NEW.conversation_id::text, '-', ''));
    ELSE
        PERFORM pg_notify('agent_queue_jobs', replace(NEW.conversation_id::text, '-', ''));
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.add_column("jobs", sa.Column("is_head", sa.Boolean, nullable=False, server_default=sa.false()), schema=SCHEMA)
    # Existing rows: a job holding its conversation (processing, waiting for its retry) heads it,
    # else its oldest pending job.
    op.execute(
        f"""
        UPDATE {SCHEMA}.jobs AS j SET is_head = true
          FROM (SELECT DISTINCT ON (conversation_id) id
                  FROM {SCHEMA}.jobs
                 WHERE {UNFINISHED}
                 ORDER BY conversation_id, status = 'pending', id) AS heads
         WHERE j.id = heads.id
        """
    )
    # At most one head per conversation.
    op.create_index("jobs_head_key", "jobs", ["conversation_id"], unique=True, schema=SCHEMA,
                    postgresql_where=sa.text("is_head"))
    # The claim scan: pending heads, oldest first (UUIDv7 ids are creation order).
    op.create_index("jobs_claimable_idx", "jobs", ["id"], schema=SCHEMA,
                    postgresql_where=sa.text("status = 'pending' AND is_head"))
    # The hand-over: a conversation's oldest pending job, one index probe.
    op.create_index("jobs_conversation_pending_idx", "jobs", ["conversation_id", "id"], schema=SCHEMA,
                    postgresql_where=sa.text("status = 'pending'"))
    op.execute(TAKE_HEAD)
    op.execute(HAND_OVER)
    op.execute(
        f"CREATE TRIGGER jobs_take_head BEFORE INSERT ON {SCHEMA}.jobs"
        f" FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.jobs_take_head()"
    )
    op.execute(
        f"CREATE TRIGGER jobs_hand_over_head AFTER UPDATE OF is_head ON {SCHEMA}.jobs"
        f" FOR EACH ROW WHEN (OLD.is_head AND NOT NEW.is_head) EXECUTE FUNCTION {SCHEMA}.jobs_hand_over_head()"
    )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER jobs_hand_over_head ON {SCHEMA}.jobs")
    op.execute(f"DROP TRIGGER jobs_take_head ON {SCHEMA}.jobs")
    op.execute(f"DROP FUNCTION {SCHEMA}.jobs_hand_over_head()")
    op.execute(f"DROP FUNCTION {SCHEMA}.jobs_take_head()")
    op.drop_index("jobs_conversation_pending_idx", "jobs", schema=SCHEMA)
    op.drop_index("jobs_claimable_idx", "jobs", schema=SCHEMA)
    op.drop_index("jobs_head_key", "jobs", schema=SCHEMA)
    op.drop_column("jobs", "is_head", schema=SCHEMA)
