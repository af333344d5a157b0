"""leases: one holder per chain role across replicas

Several daemons (replicas) on one PostgreSQL database share the HTTP API; each chain
role runs on exactly one of them, the holder of the role's lease row. ``token`` grows
on every takeover and fences a paused holder's writes. SQLite gets the table too (one
schema), where the single daemon holds every lease.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import watcher.store.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("role", sa.String(length=160), nullable=False),
        sa.Column("holder", sa.String(length=120), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", watcher.store.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", watcher.store.models.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("role", name=op.f("pk_leases")),
    )


def downgrade() -> None:
    op.drop_table("leases")
