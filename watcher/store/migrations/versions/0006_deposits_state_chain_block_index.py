"""index deposits by (state, chain_id, block_number) instead of (state, chain_id)

With ix_deposits_chain_block (0003) SQLite's planner answered "pending deposits of a
chain up to block N, lowest first" (pending_upto, lowest_pending_block: every
listener step) by walking that index over every deposit of the chain, credited ones
included (~7 ms per query at 20,000 rows). With the block number in the state index
both are a range of the pending entries only.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deposits") as batch_op:
        batch_op.drop_index("ix_deposits_state_chain")
        batch_op.create_index(
            "ix_deposits_state_chain_block", ["state", "chain_id", "block_number"]
        )


def downgrade() -> None:
    with op.batch_alter_table("deposits") as batch_op:
        batch_op.drop_index("ix_deposits_state_chain_block")
        batch_op.create_index("ix_deposits_state_chain", ["state", "chain_id"])
