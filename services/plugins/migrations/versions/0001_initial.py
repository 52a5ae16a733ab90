"""plugins: plugin_definitions, plugin_diagnostics, plugin_installs, plugin_policies

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

SCHEMA = "plugins"
TS = sa.DateTime(timezone=True)
CHANNEL_CHECK = "channel IS NULL OR channel IN ('web', 'whatsapp')"


def upgrade() -> None:
    op.create_table(
        "plugin_definitions",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        # One definition per name (docs/hardening.md #24).
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("manifest", pg.JSONB, nullable=False),
        sa.Column("checksum", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'inactive')", name="plugin_definitions_status_check"
        ),
        schema=SCHEMA,
    )
    # The runtime's activation results by plugin name; kept apart from definitions so a result
    # posted before its definition (concurrent start-up) is not lost.
    op.create_table(
        "plugin_diagnostics",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("messages", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("last_diagnostic_at", TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('activated', 'conflict', 'invalid')", name="plugin_diagnostics_status_check"
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "plugin_installs",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("workspace_scope", sa.Text, nullable=False),
        sa.Column("agent_id", pg.UUID(as_uuid=True)),
        sa.Column("channel", sa.Text),
        sa.Column("plugin_name", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("config", pg.JSONB),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(CHANNEL_CHECK, name="plugin_installs_channel_check"),
        schema=SCHEMA,
    )
    op.create_table(
        "plugin_policies",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("workspace_scope", sa.Text, nullable=False),
        sa.Column("agent_id", pg.UUID(as_uuid=True)),
        sa.Column("channel", sa.Text),
        sa.Column("allow", pg.ARRAY(sa.Text)),
        sa.Column("deny", pg.ARRAY(sa.Text)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(CHANNEL_CHECK, name="plugin_policies_channel_check"),
        schema=SCHEMA,
    )
    # One install per (scope, agent, channel, plugin) and one policy per scope triple
    # (docs/hardening.md #24); an absent agent / channel is one value (NULLS NOT DISTINCT), as
    # the upserts match it. These also serve the layer lookups.
    op.execute(
        "ALTER TABLE plugins.plugin_installs ADD CONSTRAINT plugin_installs_key "
        "UNIQUE NULLS NOT DISTINCT (workspace_scope, agent_id, channel, plugin_name)"
    )
    op.execute(
        "ALTER TABLE plugins.plugin_policies ADD CONSTRAINT plugin_policies_key "
        "UNIQUE NULLS NOT DISTINCT (workspace_scope, agent_id, channel)"
    )


def downgrade() -> None:
    for table in ("plugin_policies", "plugin_installs", "plugin_diagnostics", "plugin_definitions"):
        op.drop_table(table, schema=SCHEMA)
