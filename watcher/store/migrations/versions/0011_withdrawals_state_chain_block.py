"""index withdrawals by (state, chain_id, block_number) for the reconciler

The reconciler asks, per network and token, for the withdrawals completed but mined
above the block it compares at, and for those mined at or below it but still
confirming. With an index on ``state`` alone the first read every completed withdrawal
ever made (issue 22: it loaded them all, as the dust sum loaded every credited
deposit, taking a daemon with a million rows past a gigabyte). With the chain and the
block in the index each is a seek of the few rows above (or below) the block.
``ix_withdrawals_state`` is a prefix of the new index and is dropped.

On a large PostgreSQL database the index build blocks writes to withdrawals while it
runs; build it beforehand with ``CREATE INDEX CONCURRENTLY`` under the same name if
that matters.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_withdrawals_state_chain_block", "withdrawals", ["state", "chain_id", "block_number"]
    )
    op.drop_index("ix_withdrawals_state", table_name="withdrawals")


def downgrade() -> None:
    op.create_index("ix_withdrawals_state", "withdrawals", ["state"])
    op.drop_index("ix_withdrawals_state_chain_block", table_name="withdrawals")
