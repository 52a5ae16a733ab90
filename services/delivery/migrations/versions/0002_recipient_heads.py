"""delivery: recipient heads (is_head) so claims and counts read only claimable rows

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "delivery"
UNFINISHED = "status IN ('pending', 'processing', 'waiting_retry')"


def upgrade() -> None:
    # The head of a recipient's queue: its one message that may be claimed, in flight or
    # waiting for a retry. Kept by the transitions (enqueue, leaving for good), so a claim reads
    # only heads instead of checking every pending row against its recipient's older rows.
    op.add_column("outbound_messages", sa.Column("is_head", sa.Boolean, nullable=False, server_default="false"),
                  schema=SCHEMA)
    op.execute(
        f"""
        UPDATE {SCHEMA}.outbound_messages AS m SET is_head = true
          FROM (SELECT DISTINCT ON (account_id, channel, recipient_key) id
                  FROM {SCHEMA}.outbound_messages
                 WHERE {UNFINISHED}
                 ORDER BY account_id, channel, recipient_key, created_at, id) AS heads
         WHERE m.id = heads.id
        """
    )
    op.create_check_constraint("outbound_messages_head_check", "outbound_messages",
                               f"NOT is_head OR {UNFINISHED}", schema=SCHEMA)
    # At most one head per recipient.
    op.create_index("outbound_messages_head_key", "outbound_messages", ["account_id", "channel", "recipient_key"],
                    unique=True, schema=SCHEMA, postgresql_where=sa.text("is_head"))
    op.drop_index("outbound_messages_claim_idx", "outbound_messages", schema=SCHEMA)
    # Claim scan and claimable count: an account's pending heads in FIFO order.
    op.create_index("outbound_messages_claim_idx", "outbound_messages", ["account_id", "channel", "created_at", "id"],
                    schema=SCHEMA, postgresql_where=sa.text("status = 'pending' AND is_head"))


def downgrade() -> None:
    op.drop_index("outbound_messages_claim_idx", "outbound_messages", schema=SCHEMA)
    op.create_index("outbound_messages_claim_idx", "outbound_messages", ["account_id", "channel", "created_at", "id"],
                    schema=SCHEMA, postgresql_where=sa.text("status = 'pending'"))
    op.drop_index("outbound_messages_head_key", "outbound_messages", schema=SCHEMA)
    op.drop_constraint("outbound_messages_head_check", "outbound_messages", schema=SCHEMA)
    op.drop_column("outbound_messages", "is_head", schema=SCHEMA)
