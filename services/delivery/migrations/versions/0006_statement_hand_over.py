"""delivery: a recipient's head is handed over once per statement, with one wake-up per account

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = "delivery"

# Migration 0003 handed a finished head over row by row: a batch of ten acknowledgements ran its
# trigger ten times, each taking its recipient's lock, promoting one row and queueing one
# notification. This trigger does the same for the whole statement from its transition tables,
# as agent_queue's migration 0006 does for jobs: it takes the locks of the recipients whose head
# left for good in one sorted pass (so two statements never wait on each other in opposite
# orders), promotes each one's oldest unfinished row unless it already has a head, and wakes the
# accounts of the promoted rows once each (channel delivery_outbound, key the account id, as
# store.tables.OUTBOUND_CHANGES).
#
# 0003's race argument holds unchanged: an enqueue takes the same per-recipient lock
# (store.outbound.LOCK_RECIPIENT) before deciding whether its row is the head, and the promotion
# is a statement of its own after the locks, so it reads a fresh snapshot (READ COMMITTED).
#
# Its hand-over statement reads the recipients from array variables, so it is planned once per
# connection with its generic plan (plan_cache_mode): Postgres would otherwise plan it afresh on
# every call, which costs several times what running it does (agent_queue's migration 0008 says
# why).
#
# It fires after every UPDATE of outbound_messages (a trigger with transition tables cannot name
# columns), so it returns at once when no head left; that also ends the recursion its own UPDATE
# starts (the promoted rows gain is_head, none loses it). The trade: a batch of acknowledgements
# (the runtime's WorkOutbound and CompleteOutboundMessages) costs Postgres 3-13% less per
# message, a lone CompleteOutbound ~0.1 ms more (README "Performance": the outbound hand-over
# once per statement).
HAND_OVER_HEADS = f"""
CREATE FUNCTION {SCHEMA}.outbound_hand_over_heads() RETURNS trigger LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    accounts text[];
    channels text[];
    recipients text[];
    woken text[];
BEGIN
    -- the recipients whose head this statement finished (cleared is_head)
    SELECT array_agg(g.account_id), array_agg(g.channel), array_agg(g.recipient_key)
      INTO accounts, channels, recipients
      FROM (SELECT DISTINCT n.account_id, n.channel, n.recipient_key
              FROM after_rows AS n JOIN before_rows AS o ON o.id = n.id
             WHERE o.is_head AND NOT n.is_head) AS g;
    IF accounts IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(k.key)
       FROM (SELECT hashtextextended(t.a || chr(31) || t.c || chr(31) || t.r, 0) AS key
               FROM unnest(accounts, channels, recipients) AS t(a, c, r)
              ORDER BY 1) AS k;
    WITH gone AS (SELECT * FROM unnest(accounts, channels, recipients) AS t(account_id, channel, recipient_key)),
    next_heads AS (
        SELECT oldest.id
          FROM gone AS g
         CROSS JOIN LATERAL (SELECT n.id FROM {SCHEMA}.outbound_messages AS n
                              WHERE n.account_id = g.account_id AND n.channel = g.channel
                                AND n.recipient_key = g.recipient_key
                                AND n.status IN ('pending', 'processing', 'waiting_retry')
                              ORDER BY n.created_at, n.id
                              LIMIT 1) AS oldest
         WHERE NOT EXISTS (SELECT 1 FROM {SCHEMA}.outbound_messages AS h
                            WHERE h.account_id = g.account_id AND h.channel = g.channel
                              AND h.recipient_key = g.recipient_key AND h.is_head)
    ),
    promoted AS (
        UPDATE {SCHEMA}.outbound_messages AS m SET is_head = true
          FROM next_heads AS h
         WHERE m.id = h.id
        RETURNING m.account_id
    )
    SELECT array_agg(DISTINCT p.account_id) INTO woken FROM promoted AS p;
    -- WatchOutbound: rows became claimable
    PERFORM pg_notify('delivery_outbound', a) FROM unnest(woken) AS a;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    # Migration 0003's row function stays, unused, so the downgrade re-attaches it as it was.
    op.execute(f"DROP TRIGGER outbound_hand_over_head ON {SCHEMA}.outbound_messages")
    op.execute(HAND_OVER_HEADS)
    op.execute(
        f"CREATE TRIGGER outbound_hand_over_heads AFTER UPDATE ON {SCHEMA}.outbound_messages"
        " REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.outbound_hand_over_heads()"
    )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER outbound_hand_over_heads ON {SCHEMA}.outbound_messages")
    op.execute(f"DROP FUNCTION {SCHEMA}.outbound_hand_over_heads()")
    op.execute(
        f"CREATE TRIGGER outbound_hand_over_head AFTER UPDATE OF is_head ON {SCHEMA}.outbound_messages"
        " FOR EACH ROW WHEN (OLD.is_head AND NOT NEW.is_head)"
        f" EXECUTE FUNCTION {SCHEMA}.outbound_hand_over_head()"
    )
