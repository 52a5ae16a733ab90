"""delivery: webhook endpoints, events, deliveries and their attempts

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "delivery"
TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)
EVENT_TYPES = "('job.completed', 'job.failed', 'approval.requested', 'message.created')"
EVENT_TYPE_ARRAY = "ARRAY['job.completed', 'job.failed', 'approval.requested', 'message.created']::text[]"


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event_types", pg.ARRAY(sa.Text), nullable=False),
        # The svix signing secret (`whsec_…`) as issued: signing needs it in clear, and the kit has
        # no sealing helper yet (Todoist's Fernet cipher lives in that service).
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            f"cardinality(event_types) BETWEEN 1 AND 4 AND event_types <@ {EVENT_TYPE_ARRAY}",
            name="webhook_endpoints_event_types_check",
        ),
        schema=SCHEMA,
    )
    op.create_index("webhook_endpoints_user_idx", "webhook_endpoints", ["user_id", "id"], schema=SCHEMA)
    op.create_table(
        "webhook_events",
        # The emitter's idempotency key (`job.completed:job_…`): a repeated publish finds it.
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("owner_user_id", UUID),
        sa.Column("owner_contact_id", UUID),
        # The exact JSON every endpoint gets, on every attempt and redelivery.
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint(f"type IN {EVENT_TYPES}", name="webhook_events_type_check"),
        schema=SCHEMA,
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("event_id", sa.Text, sa.ForeignKey(f"{SCHEMA}.webhook_events.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "endpoint_id", UUID, sa.ForeignKey(f"{SCHEMA}.webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("status", sa.Text, nullable=False),
        # 1 for the first attempt series, one more per redelivery.
        sa.Column("series", sa.Integer, nullable=False, server_default="1"),
        sa.Column("delivered_at", TS),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        # One delivery per (event, endpoint): a repeated fan-out cannot send twice.
        sa.UniqueConstraint("event_id", "endpoint_id", name="webhook_deliveries_event_endpoint_key"),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="webhook_deliveries_status_check"),
        sa.CheckConstraint("(status = 'delivered') = (delivered_at IS NOT NULL)", name="webhook_deliveries_delivered_check"),
        sa.CheckConstraint("series >= 1", name="webhook_deliveries_series_check"),
        schema=SCHEMA,
    )
    # The delivery log of an endpoint, newest first.
    op.create_index("webhook_deliveries_endpoint_idx", "webhook_deliveries", ["endpoint_id", "id"], schema=SCHEMA)
    op.create_table(
        "webhook_attempts",
        sa.Column(
            "delivery_id", UUID, sa.ForeignKey(f"{SCHEMA}.webhook_deliveries.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("series", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("attempted_at", TS, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("succeeded", sa.Boolean, nullable=False),
        # An activity retried after recording records once.
        sa.PrimaryKeyConstraint("delivery_id", "series", "attempt", name="webhook_attempts_pkey"),
        sa.CheckConstraint("status_code BETWEEN 100 AND 599", name="webhook_attempts_status_code_check"),
        sa.CheckConstraint("duration_ms >= 0", name="webhook_attempts_duration_check"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("webhook_attempts", "webhook_deliveries", "webhook_events", "webhook_endpoints"):
        op.drop_table(table, schema=SCHEMA)
