"""alarm webhook delivery marker and reconciliation results

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import watcher.store.models
import watcher.store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alarms") as batch_op:
        batch_op.add_column(
            sa.Column("notified_count", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "reconciliations",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("onchain", watcher.store.types.BigAmount(length=80), nullable=False),
        sa.Column("expected", watcher.store.types.BigAmount(length=80), nullable=False),
        sa.Column("difference", watcher.store.types.BigAmount(length=80), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("checked_at", watcher.store.models.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "asset", name=op.f("pk_reconciliations")),
    )


def downgrade() -> None:
    op.drop_table("reconciliations")
    with op.batch_alter_table("alarms") as batch_op:
        batch_op.drop_column("notified_count")
