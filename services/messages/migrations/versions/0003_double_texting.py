"""messages: double-texting strategy per conversation

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "messages"
TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)


def upgrade() -> None:
    # What a message sent while the agent is busy with the conversation does
    # (docs/double-texting.md); `enqueue` is the original's behaviour.
    op.add_column(
        "conversations",
        sa.Column("double_texting", sa.Text, nullable=False, server_default="enqueue"),
        schema=SCHEMA,
    )
    op.create_check_constraint(
        "conversations_double_texting_check",
        "conversations",
        "double_texting IN ('enqueue', 'reject', 'interrupt', 'rollback')",
        schema=SCHEMA,
    )
    # Messages are deleted only by a rollback (a cancelled run's partial reply). A watcher reads
    # changes by revision, and a deleted row has none left: each deletion leaves its id here,
    # stamped with the revision of the change that deleted it, so WatchConversation can say
    # "removed" in change order, and a resume from an older position still learns of it.
    op.create_table(
        "removed_messages",
        sa.Column("message_id", UUID, primary_key=True),
        sa.Column("conversation_id", UUID, sa.ForeignKey(f"{SCHEMA}.conversations.id"), nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("removed_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "removed_messages_conversation_revision_idx",
        "removed_messages",
        ["conversation_id", "revision"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index("removed_messages_conversation_revision_idx", "removed_messages", schema=SCHEMA)
    op.drop_table("removed_messages", schema=SCHEMA)
    op.drop_constraint("conversations_double_texting_check", "conversations", schema=SCHEMA)
    op.drop_column("conversations", "double_texting", schema=SCHEMA)
