"""delivery: a recipient's head is handed over by a trigger, in the statement that finishes it

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "delivery"

# A head that left for good (its statement cleared is_head: SENT, FAILED) hands its recipient to
# the recipient's oldest unfinished row (until this migration a statement of its own after each
# settle): under the same per-recipient advisory lock an enqueue takes before deciding whether its
# row is the head (store.outbound.LOCK_RECIPIENT), so the two never interleave. Each statement inside
# the function reads a fresh snapshot (READ COMMITTED), after the lock: a batch of
# acknowledgements is one client statement however many recipients it frees. A row handed the
# head is claimable: the account's WatchOutbound streams are woken (channel delivery_outbound,
# key the account id, as store.tables.OUTBOUND_CHANGES).
HAND_OVER = f"""
CREATE FUNCTION {SCHEMA}.outbound_hand_over_head() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next_id uuid;
BEGIN
    PERFORM pg_advisory_xact_lock(
        hashtextextended(NEW.account_id || chr(31) || NEW.channel || chr(31) || NEW.recipient_key, 0));
    UPDATE {SCHEMA}.outbound_messages AS m SET is_head = true
     WHERE m.id = (SELECT n.id FROM {SCHEMA}.outbound_messages AS n
                    WHERE n.account_id = NEW.account_id AND n.channel = NEW.channel
                      AND n.recipient_key = NEW.recipient_key
                      AND n.status IN ('pending', 'processing', 'waiting_retry')
                    ORDER BY n.created_at, n.id
                    LIMIT 1)
       AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.outbound_messages AS h
                        WHERE h.account_id = NEW.account_id AND h.channel = NEW.channel
                          AND h.recipient_key = NEW.recipient_key AND h.is_head)
    RETURNING m.id INTO next_id;
    IF next_id IS NOT NULL THEN
        PERFORM pg_notify('delivery_outbound', NEW.account_id);
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.execute(HAND_OVER)
    op.execute(
        f"CREATE TRIGGER outbound_hand_over_head AFTER UPDATE OF is_head ON {SCHEMA}.outbound_messages"
        f" FOR EACH ROW WHEN (OLD.is_head AND NOT NEW.is_head)"
        f" EXECUTE FUNCTION {SCHEMA}.outbound_hand_over_head()"
    )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER outbound_hand_over_head ON {SCHEMA}.outbound_messages")
    op.execute(f"DROP FUNCTION {SCHEMA}.outbound_hand_over_head()")
