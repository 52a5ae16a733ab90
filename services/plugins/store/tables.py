"""The tables of schema `plugins` (the migrations create them; this mirrors them)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

SCHEMA = "plugins"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)
CHANNEL_CHECK = "channel IS NULL OR channel IN ('web', 'whatsapp')"

definitions = sa.Table(
    "plugin_definitions",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("manifest", pg.JSONB, nullable=False),
    sa.Column("checksum", sa.Text),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.CheckConstraint("status IN ('active', 'inactive')", name="plugin_definitions_status_check"),
    # One definition per name (docs/hardening.md #24).
    sa.UniqueConstraint("name", name="plugin_definitions_name_key"),
)
# The runtime's activation results by plugin name, apart from definitions so a result posted
# before its definition is not lost.
diagnostics = sa.Table(
    "plugin_diagnostics",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("messages", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("last_diagnostic_at", TS, nullable=False),
    sa.CheckConstraint(
        "status IN ('activated', 'conflict', 'invalid')", name="plugin_diagnostics_status_check"
    ),
)


def _layered(name: str, *columns: sa.Column[Any], key: tuple[str, ...] = ()) -> sa.Table:
    """A table of rows set on one scope layer: unique per layer and `key`
    (docs/hardening.md #24), an absent agent / channel being one value (NULLS NOT DISTINCT)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", UUID, primary_key=True),
        sa.Column("workspace_scope", sa.Text, nullable=False),
        sa.Column("agent_id", UUID),
        sa.Column("channel", sa.Text),
        *columns,
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(CHANNEL_CHECK, name=f"{name}_channel_check"),
        sa.UniqueConstraint(
            "workspace_scope",
            "agent_id",
            "channel",
            *key,
            name=f"{name}_key",
            postgresql_nulls_not_distinct=True,
        ),
    )


installs = _layered(
    "plugin_installs",
    sa.Column("plugin_name", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("config", pg.JSONB),
    key=("plugin_name",),
)
policies = _layered(
    "plugin_policies",
    sa.Column("allow", pg.ARRAY(sa.Text)),
    sa.Column("deny", pg.ARRAY(sa.Text)),
)
