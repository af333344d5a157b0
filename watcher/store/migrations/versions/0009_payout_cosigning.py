"""payout co-signing: the validators' signatures on each withdrawal, the vault's pause

The vault pays a withdrawal only with signatures of validators holding two thirds of
the power over a payout authorization that carries a deadline. The sender collects
them from the co-signers and keeps them, with that deadline, on the withdrawal in the
same transaction as the signed transaction that carries them: a fee bump rebuilds the
same call. ``vault_states`` holds what the watcher last saw of each vault's pause.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import watcher.store.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("withdrawals") as batch_op:
        batch_op.add_column(sa.Column("payout_deadline", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("cosignatures", sa.Text(), nullable=True))
    op.create_table(
        "vault_states",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("changed_at", watcher.store.models.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name=op.f("pk_vault_states")),
    )


def downgrade() -> None:
    op.drop_table("vault_states")
    with op.batch_alter_table("withdrawals") as batch_op:
        batch_op.drop_column("cosignatures")
        batch_op.drop_column("payout_deadline")
