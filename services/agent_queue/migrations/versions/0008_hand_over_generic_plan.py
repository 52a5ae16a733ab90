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
# the custom ones (it estimates ten rows for an array it cannot see; 5x a custom plan's cost
# here), and planning that statement takes ~0.4 ms, several times what running it takes: every
# acknowledgement that finished a head paid it. Forcing the generic plan plans it once per
# connection; the plan (index lookups per conversation) is the right one for one row and for
# hundreds. Measured with bench (a)-(d), README "Performance" (the generic hand-over plans).
GENERIC = "plan_cache_mode = force_generic_plan"


def upgrade() -> None:
    op.execute(f"ALTER FUNCTION {SCHEMA}.jobs_hand_over_heads() SET {GENERIC}")


def downgrade() -> None:
    op.execute(f"ALTER FUNCTION {SCHEMA}.jobs_hand_over_heads() RESET plan_cache_mode")
