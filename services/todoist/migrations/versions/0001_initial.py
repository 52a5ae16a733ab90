"""todoist: connections, oauth_states, outbox

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from zenthor.outbox import create_outbox_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "todoist"
TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("user_id", UUID, nullable=False),
        # The access token sealed with Fernet (docs/hardening.md #36), never the token itself.
        sa.Column("token_ciphertext", sa.Text, nullable=False),
        # Fingerprint of the TODOIST_TOKEN_KEY key that sealed it (key rotation).
        sa.Column("token_key_id", sa.Text, nullable=False),
        sa.Column("token_type", sa.Text),
        sa.Column("scope", sa.Text),
        sa.Column("account_email", sa.Text),
        sa.Column("account_name", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        # One connection per user (docs/hardening.md #24).
        sa.UniqueConstraint("user_id", name="connections_user_id_key"),
        schema=SCHEMA,
    )
    op.create_table(
        "oauth_states",
        # `todoist_<uuid4>`: unique by being the key (docs/hardening.md #24).
        sa.Column("state", sa.Text, primary_key=True),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("claimed_at", TS),
        sa.CheckConstraint(
            "status IN ('starting', 'open', 'claimed', 'exchanged')", name="oauth_states_status_check"
        ),
        # A state claimed by a callback says when; one that was never claimed does not.
        sa.CheckConstraint(
            "(status IN ('claimed', 'exchanged')) = (claimed_at IS NOT NULL)", name="oauth_states_claimed_at_check"
        ),
        sa.CheckConstraint("expires_at > created_at", name="oauth_states_expiry_check"),
        schema=SCHEMA,
    )
    op.create_index("oauth_states_user_idx", "oauth_states", ["user_id"], schema=SCHEMA)
    # The hourly cleanup's scan.
    op.create_index("oauth_states_expiry_idx", "oauth_states", ["expires_at"], schema=SCHEMA)
    create_outbox_table(op.get_bind(), SCHEMA)


def downgrade() -> None:
    for table in ("outbox", "oauth_states", "connections"):
        op.drop_table(table, schema=SCHEMA)
