"""tx_attempts.broadcast_block: the chain head when the attempt was (last) broadcast

The tracker counts ``stuck_after_blocks`` from it, so the count survives a restart
(it used to live in the tracker's memory only). NULL for attempts broadcast before
this revision: the tracker stamps them with the head it sees first.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tx_attempts") as batch_op:
        batch_op.add_column(sa.Column("broadcast_block", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tx_attempts") as batch_op:
        batch_op.drop_column("broadcast_block")
