"""The identity schema as the migrations create it (tests/service/test_schema_drift.py compares
the two): users, contacts, phone_verifications, webhook_deliveries and the kit's outbox."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from zenthor.outbox import outbox_table

SCHEMA = "identity"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("external_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("role", sa.Text),
    sa.Column("email_verified", sa.Boolean),
    sa.Column("image", sa.Text),
    sa.Column("phone", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    # One row per Clerk user (docs/hardening.md #24).
    sa.UniqueConstraint("external_id", name="users_external_id_key"),
    sa.CheckConstraint("role IN ('admin', 'member')", name="users_role_check"),
    sa.CheckConstraint("status IN ('active', 'inactive')", name="users_status_check"),
    # One user per phone, enforced where the link is written (docs/hardening.md #5).
    sa.Index("users_phone_key", "phone", unique=True, postgresql_where=sa.text("phone IS NOT NULL")),
)

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("phone", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("is_allowed", sa.Boolean, nullable=False),
    sa.Column("user_id", pg.UUID(as_uuid=True)),
    sa.Column("created_at", TS, nullable=False),
    # One contact per phone, so creation is idempotent (docs/hardening.md #24).
    sa.UniqueConstraint("phone", name="contacts_phone_key"),
    sa.Index("contacts_user_id_idx", "user_id"),
)

phone_verifications = sa.Table(
    "phone_verifications",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("phone", sa.Text, nullable=False),
    sa.Column("code_hash", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("verified_at", TS),
    sa.CheckConstraint(
        "status IN ('pending', 'verified', 'expired', 'locked')", name="phone_verifications_status_check"
    ),
    sa.Index("phone_verifications_user_status_idx", "user_id", "status"),
    sa.Index("phone_verifications_phone_created_idx", "phone", "created_at"),
)

outbox = outbox_table(metadata, SCHEMA)

# svix-ids of processed Clerk webhook deliveries: a replay finds its id and changes nothing.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("svix_id", sa.Text, primary_key=True),
    sa.Column("received_at", TS, nullable=False),
    sa.Index("webhook_deliveries_received_at_idx", "received_at"),
)
