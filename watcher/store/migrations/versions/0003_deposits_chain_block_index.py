"""index deposits by (chain_id, block_number)

The listener asks every step which deposits are stored above its cursor, and a
reorg which are above the common ancestor; without this index both scan the whole
deposits table (35 ms per step at 20,000 rows on SQLite).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deposits") as batch_op:
        batch_op.create_index("ix_deposits_chain_block", ["chain_id", "block_number"])


def downgrade() -> None:
    with op.batch_alter_table("deposits") as batch_op:
        batch_op.drop_index("ix_deposits_chain_block")
