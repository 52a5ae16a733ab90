"""The tables of schema `todoist` (the migrations create them; this mirrors them)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from zenthor.outbox import outbox_table

SCHEMA = "todoist"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)
# Change-feed channel of WatchTodoistConnectionStatus; the key is the user id.
CHANGES = "todoist_changes"

connections = sa.Table(
    "connections",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("user_id", UUID, nullable=False),
    sa.Column("token_ciphertext", sa.Text, nullable=False),
    sa.Column("token_key_id", sa.Text, nullable=False),
    sa.Column("token_type", sa.Text),
    sa.Column("scope", sa.Text),
    sa.Column("account_email", sa.Text),
    sa.Column("account_name", sa.Text),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("user_id", name="connections_user_id_key"),
)

oauth_states = sa.Table(
    "oauth_states",
    metadata,
    sa.Column("state", sa.Text, primary_key=True),
    sa.Column("user_id", UUID, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("claimed_at", TS),
    sa.CheckConstraint("status IN ('starting', 'open', 'claimed', 'exchanged')", name="oauth_states_status_check"),
    sa.CheckConstraint(
        "(status IN ('claimed', 'exchanged')) = (claimed_at IS NOT NULL)", name="oauth_states_claimed_at_check"
    ),
    sa.CheckConstraint("expires_at > created_at", name="oauth_states_expiry_check"),
    sa.Index("oauth_states_user_idx", "user_id"),
    sa.Index("oauth_states_expiry_idx", "expires_at"),
)

outbox = outbox_table(metadata, SCHEMA)
