"""index an account's history: deposits, withdrawals and journal entries newest first

``GET /v1/accounts/{a}/history?limit=100`` asks for an account's newest deposits
(``account = ? ORDER BY seen_at DESC, id DESC``), withdrawals (``account = ? ORDER BY
created_at DESC, id DESC``) and journal entries of the kinds it shows (``account_id = ?
AND kind = ? ORDER BY created_at DESC, id DESC``, one per kind). With indexes on the
account only, each read and sorted every row of the account (issue 22: 1.6-1.9x the
empty database's time for an account with ~1,400 deposits, growing with it). With the
order in the index each is a seek of ``limit`` entries read backwards. The deposits'
``ix_deposits_account`` and the journal's ``ix_journal_transactions_account_id`` are
prefixes of the new indexes and are dropped; the withdrawals' ``(account, nonce)``
unique constraint stays (replays), and so does ``ix_withdrawals_created_at``.

The new withdrawal index also serves the intake's daily limit (an account's
withdrawals since a time). On a large PostgreSQL database the index builds take a
lock that blocks writes to each table while they run; build them beforehand with
``CREATE INDEX CONCURRENTLY`` under the same names if that matters.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deposits_account_seen", "deposits", ["account", "seen_at", "id"])
    op.drop_index("ix_deposits_account", table_name="deposits")
    op.create_index(
        "ix_withdrawals_account_created", "withdrawals", ["account", "created_at", "id"]
    )
    op.create_index(
        "ix_journal_transactions_account_kind_created",
        "journal_transactions",
        ["account_id", "kind", "created_at", "id"],
    )
    op.drop_index("ix_journal_transactions_account_id", table_name="journal_transactions")


def downgrade() -> None:
    op.create_index("ix_journal_transactions_account_id", "journal_transactions", ["account_id"])
    op.drop_index("ix_journal_transactions_account_kind_created", table_name="journal_transactions")
    op.drop_index("ix_withdrawals_account_created", table_name="withdrawals")
    op.create_index("ix_deposits_account", "deposits", ["account"])
    op.drop_index("ix_deposits_account_seen", table_name="deposits")
