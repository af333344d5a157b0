"""index tx_attempts by (chain_id, state)

The sender and the tracker ask every tick which attempts of a network are signed,
broadcast or mined; without this index each tick scans every attempt ever made.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tx_attempts") as batch_op:
        batch_op.create_index("ix_tx_attempts_chain_state", ["chain_id", "state"])


def downgrade() -> None:
    with op.batch_alter_table("tx_attempts") as batch_op:
        batch_op.drop_index("ix_tx_attempts_chain_state")
