"""withdrawals.deadline holds any uint256

A user-signed ``Withdraw`` carries ``deadline`` as a uint256, and a correctly signed
request with a deadline of 2^64 or more is valid; the BIGINT column could not store it
(the insert failed with an overflow, answered as a 500). It becomes the exact big
integer type the amounts use (NUMERIC(78,0) on PostgreSQL, text on SQLite).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import watcher.store.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.alter_column(
            "withdrawals",
            "deadline",
            type_=sa.Numeric(78, 0),
            existing_type=sa.BigInteger(),
            postgresql_using="deadline::numeric(78,0)",
        )
        return
    # SQLite: the column's declared type changes to text; the stored integers are
    # rewritten as their decimal text, which is what BigAmount reads and writes.
    with op.batch_alter_table("withdrawals") as batch_op:
        batch_op.alter_column(
            "deadline",
            type_=watcher.store.types.BigAmount(length=80),
            existing_type=sa.BigInteger(),
            existing_nullable=False,
        )
    op.execute("UPDATE withdrawals SET deadline = CAST(deadline AS TEXT)")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.alter_column(
            "withdrawals",
            "deadline",
            type_=sa.BigInteger(),
            existing_type=sa.Numeric(78, 0),
            postgresql_using="deadline::bigint",
        )
        return
    with op.batch_alter_table("withdrawals") as batch_op:
        batch_op.alter_column(
            "deadline",
            type_=sa.BigInteger(),
            existing_type=watcher.store.types.BigAmount(length=80),
            existing_nullable=False,
        )
    op.execute("UPDATE withdrawals SET deadline = CAST(deadline AS INTEGER)")
