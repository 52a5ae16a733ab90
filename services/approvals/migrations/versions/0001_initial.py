"""approvals: tool_approvals

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "approvals"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tool_approvals",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("conversation_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("job_id", pg.UUID(as_uuid=True), nullable=False),
        # The conversation's owner, copied at creation so ownership needs no cross-service read.
        sa.Column("owner_user_id", pg.UUID(as_uuid=True)),
        sa.Column("owner_contact_id", pg.UUID(as_uuid=True)),
        sa.Column("tool_name", sa.Text, nullable=False),
        sa.Column("tool_input", pg.JSONB),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("resolved_at", TS),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'expired')", name="tool_approvals_status_check"
        ),
        sa.CheckConstraint("channel IN ('web', 'whatsapp')", name="tool_approvals_channel_check"),
        sa.CheckConstraint(
            "owner_user_id IS NOT NULL OR owner_contact_id IS NOT NULL", name="tool_approvals_owner_check"
        ),
        # Final rows carry when they left PENDING; pending rows do not.
        sa.CheckConstraint(
            "(status = 'pending') = (resolved_at IS NULL)", name="tool_approvals_resolved_at_check"
        ),
        schema=SCHEMA,
    )
    op.create_index("tool_approvals_job_idx", "tool_approvals", ["job_id", "id"], schema=SCHEMA)
    op.create_index("tool_approvals_conversation_idx", "tool_approvals", ["conversation_id", "id"], schema=SCHEMA)
    # The sweep's scan: only pending rows, by expiry.
    op.create_index("tool_approvals_pending_expiry_idx", "tool_approvals", ["expires_at"], schema=SCHEMA,
                    postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_table("tool_approvals", schema=SCHEMA)
