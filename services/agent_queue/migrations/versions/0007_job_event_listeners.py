"""agent_queue: the users whose job events are written (AddJobEventListeners)

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SCHEMA = "agent_queue"
# services/agent_queue/store/job_events.py EVERYONE: until delivery has registered every user
# with an endpoint for job events, every owner's events are written. An upgraded database has
# endpoints this table does not know yet; a new one gets the row too and loses it at delivery's
# first start (services/delivery/usecases/job_event_owners.py).
EVERYONE = "00000000-0000-0000-0000-000000000000"


def upgrade() -> None:
    op.create_table(
        "job_event_listeners",
        sa.Column("user_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.execute(f"INSERT INTO {SCHEMA}.job_event_listeners (user_id, created_at) VALUES ('{EVERYONE}', now())")


def downgrade() -> None:
    op.drop_table("job_event_listeners", schema=SCHEMA)
