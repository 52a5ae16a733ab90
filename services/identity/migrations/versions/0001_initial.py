"""identity: users, contacts, phone_verifications, outbox

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

SCHEMA = "identity"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
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
        sa.UniqueConstraint("external_id", name="users_external_id_key"),
        sa.CheckConstraint("role IN ('admin', 'member')", name="users_role_check"),
        sa.CheckConstraint("status IN ('active', 'inactive')", name="users_status_check"),
        schema=SCHEMA,
    )
    # One user per phone, enforced where the link is written (docs/hardening.md #5).
    op.create_index("users_phone_key", "users", ["phone"], unique=True, schema=SCHEMA,
                    postgresql_where=sa.text("phone IS NOT NULL"))
    op.create_table(
        "contacts",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("phone", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("is_allowed", sa.Boolean, nullable=False),
        sa.Column("user_id", pg.UUID(as_uuid=True)),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("phone", name="contacts_phone_key"),
        schema=SCHEMA,
    )
    op.create_index("contacts_user_id_idx", "contacts", ["user_id"], schema=SCHEMA)
    op.create_table(
        "phone_verifications",
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
        schema=SCHEMA,
    )
    op.create_index("phone_verifications_user_status_idx", "phone_verifications", ["user_id", "status"], schema=SCHEMA)
    op.create_index("phone_verifications_phone_created_idx", "phone_verifications", ["phone", "created_at"], schema=SCHEMA)
    create_outbox_table(op.get_bind(), SCHEMA)


def downgrade() -> None:
    for table in ("outbox", "phone_verifications", "contacts", "users"):
        op.drop_table(table, schema=SCHEMA)
