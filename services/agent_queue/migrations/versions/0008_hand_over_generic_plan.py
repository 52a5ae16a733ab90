"""agent_queue: the statement hand-over's queries are planned once per connection, not per call

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCHEMA = "agent_queue"

# Migration 0006's function reads the conversations it hands over from an array variable, so
# PL/pgSQL caches its hand-over statement as a prepared statement with a parameter. Postgres then
# plans such a statement afresh on every call for as long as its generic plan looks costlier than
# the custom ones (it estimates ten rows for an array it cannot see: delivery's like statement
# came out at 166 against 33), and planning it costs several times what running it does (0.4 ms
# against 0.07 for delivery's): an acknowledgement that handed a conversation over paid that.
# Forcing the generic plan plans it once per connection; the plan (index lookups per
# conversation) is the right one for one row and for hundreds. Timed on a test database, a
# single-row acknowledgement with a hand-over went from 0.63 to 0.40 ms; the bench pairs are in
# README "Performance" (the outbound hand-over once per statement, and both hand-overs planned once).
GENERIC = "plan_cache_mode = force_generic_plan"


def upgrade() -> None:
    op.execute(f"ALTER FUNCTION {SCHEMA}.jobs_hand_over_heads() SET {GENERIC}")


def downgrade() -> None:
    op.execute(f"ALTER FUNCTION {SCHEMA}.jobs_hand_over_heads() RESET plan_cache_mode")
