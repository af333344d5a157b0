"""SQLAlchemy 2 models. The same schema runs on SQLite and PostgreSQL.

Amounts are integers in base units (``BigAmount``: exact to 78 digits on both
backends); prices and sizes are exact decimals (``ExactDecimal``). Timestamps are
timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from watcher.store.types import BigAmount, ExactDecimal

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def table_of(model: type[object]) -> Table:
    """The Core ``Table`` of a mapped class (typed: ``__table__`` is ``FromClause``)."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    """A ledger account: a user (checksummed address) or a system account."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(80), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # user | system
    multi_asset_mode: Mapped[bool] = mapped_column(Boolean, default=False)
    # Bumped under the account lock by every risk decision (see repositories.lock_account).
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Asset(Base):
    __tablename__ = "assets"
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    precision: Mapped[int] = mapped_column(Integer)


class JournalTransaction(Base):
    __tablename__ = "journal_transactions"
    __table_args__ = (
        # An account's history page: the newest entries of each shown kind, one index
        # seek per kind (store/accounts.py _journal_items).
        Index(
            "ix_journal_transactions_account_kind_created", "account_id", "kind", "created_at", "id"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    # Idempotency key: e.g. "deposit:31337:0xabc..:3", "engine:<refId>".
    ref: Mapped[str] = mapped_column(String(200), unique=True)
    # The user account the transaction is about (for history), if any.
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    memo: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class JournalEntry(Base):
    __tablename__ = "journal_entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    asset: Mapped[str] = mapped_column(String(16))
    wallet: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigAmount)


class Balance(Base):
    __tablename__ = "balances"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    asset: Mapped[str] = mapped_column(String(16), primary_key=True)
    wallet: Mapped[str] = mapped_column(String(40), primary_key=True)
    amount: Mapped[int] = mapped_column(BigAmount, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Block(Base):
    """Canonical block hashes of the unconfirmed window, per network."""

    __tablename__ = "blocks"
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(66))
    parent_hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[int] = mapped_column(BigInteger)


class NetworkCursor(Base):
    __tablename__ = "network_cursors"
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    # Highest block whose logs are fully stored; the next tick starts at +1.
    scanned_block: Mapped[int] = mapped_column(BigInteger)
    scanned_hash: Mapped[str | None] = mapped_column(String(66))
    head: Mapped[int | None] = mapped_column(BigInteger)
    head_time: Mapped[int | None] = mapped_column(BigInteger)
    safe: Mapped[int | None] = mapped_column(BigInteger)
    finalized: Mapped[int | None] = mapped_column(BigInteger)
    backfill_from: Mapped[int | None] = mapped_column(BigInteger)
    backfill_to: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Deposit(Base):
    __tablename__ = "deposits"
    __table_args__ = (
        UniqueConstraint("chain_id", "tx_hash", "log_index"),
        # Pending deposits of a chain by block (crediting, pruning), orphaned/reversed ones.
        Index("ix_deposits_state_chain_block", "state", "chain_id", "block_number"),
        # The listener's "already stored above the cursor?" and reorg queries.
        Index("ix_deposits_chain_block", "chain_id", "block_number"),
        # An account's deposits newest first (the history page): a seek of ``limit``.
        Index("ix_deposits_account_seen", "account", "seen_at", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    account: Mapped[str] = mapped_column(String(42))
    token: Mapped[str] = mapped_column(String(42))
    amount: Mapped[int] = mapped_column(BigAmount)  # token base units as emitted
    asset: Mapped[str | None] = mapped_column(String(16))
    ledger_amount: Mapped[int | None] = mapped_column(BigAmount)
    dust: Mapped[int] = mapped_column(BigAmount, default=0)  # token base units below precision
    state: Mapped[str] = mapped_column(String(16))
    credit_tx_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"))
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    credited_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Withdrawal(Base):
    __tablename__ = "withdrawals"
    __table_args__ = (
        UniqueConstraint("account", "nonce"),
        # Live states (status, gauges, the sender's queue) and, with the chain and the
        # block, the reconciler's withdrawals mined above or below its block.
        Index("ix_withdrawals_state_chain_block", "state", "chain_id", "block_number"),
        # An account's withdrawals newest first (the history page: a seek of ``limit``)
        # and since a time (the intake's daily limit).
        Index("ix_withdrawals_account_created", "account", "created_at", "id"),
    )
    # The primary key is also the on-chain id passed to vault.withdraw(id, ...).
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(42))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    token: Mapped[str] = mapped_column(String(42))
    asset: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigAmount)  # token base units paid to destination
    ledger_amount: Mapped[int] = mapped_column(BigAmount)  # held: amount + fee, ledger units
    fee: Mapped[int] = mapped_column(BigAmount, default=0)  # ledger units
    destination: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigAmount)
    deadline: Mapped[int] = mapped_column(BigAmount)
    signature: Mapped[str] = mapped_column(String(140))
    request_digest: Mapped[str] = mapped_column(String(66))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    confirmations: Mapped[int] = mapped_column(Integer, default=0)
    hold_tx_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    # The payout authorization's deadline and the validators' signatures over it (JSON
    # [[signer, signature], ...] sorted by signer), stored with the signed transaction
    # that carries them; cleared when the withdrawal goes back to the queue.
    payout_deadline: Mapped[int | None] = mapped_column(BigInteger)
    cosignatures: Mapped[str | None] = mapped_column(Text)


class VaultState(Base):
    """What the watcher last saw of a vault's pause (the sender reads ``paused()``)."""

    __tablename__ = "vault_states"
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    vault: Mapped[str] = mapped_column(String(42))
    paused: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class TxAttempt(Base):
    __tablename__ = "tx_attempts"
    __table_args__ = (Index("ix_tx_attempts_chain_state", "chain_id", "state"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    withdrawal_id: Mapped[int] = mapped_column(ForeignKey("withdrawals.id"), index=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    sender: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66), unique=True)
    raw_tx: Mapped[str] = mapped_column(Text)
    max_fee_per_gas: Mapped[int] = mapped_column(BigAmount)
    max_priority_fee_per_gas: Mapped[int] = mapped_column(BigAmount)
    state: Mapped[str] = mapped_column(String(16))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(String(66))
    status: Mapped[int | None] = mapped_column(Integer)  # receipt status
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    broadcast_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Chain head when it was (last) broadcast: stuck_after_blocks counts from here.
    broadcast_block: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class SenderNonce(Base):
    """Next nonce per (network, hot wallet), persisted so a restart never reuses one."""

    __tablename__ = "nonces"
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    next_nonce: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Position(Base):
    __tablename__ = "positions"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    size: Mapped[Decimal] = mapped_column(ExactDecimal)
    entry_price: Mapped[Decimal] = mapped_column(ExactDecimal)
    leverage: Mapped[int] = mapped_column(Integer)
    margin_mode: Mapped[str] = mapped_column(String(8))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class OpenOrderMargin(Base):
    __tablename__ = "open_orders"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    margin_mode: Mapped[str] = mapped_column(String(8), primary_key=True)
    initial_margin: Mapped[Decimal] = mapped_column(ExactDecimal)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Price(Base):
    """Mark price per symbol (kind=mark) or USD price per asset (kind=asset)."""

    __tablename__ = "prices"
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    price: Mapped[Decimal] = mapped_column(ExactDecimal)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class SignedRequest(Base):
    """Replay guard for user-signed requests other than withdrawals."""

    __tablename__ = "signed_requests"
    __table_args__ = (UniqueConstraint("account", "kind", "nonce"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(42))
    kind: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[int] = mapped_column(BigAmount)
    digest: Mapped[str] = mapped_column(String(66))
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Alarm(Base):
    """A latched alarm stays active until an operator acknowledges it."""

    __tablename__ = "alarms"
    __table_args__ = (Index("ix_alarms_active", "kind", "key", "acknowledged_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    raised_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    count: Mapped[int] = mapped_column(Integer, default=1)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(80))
    # How many raises the webhook has been told about (count > notified_count: notify).
    notified_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Reconciliation(Base):
    """The last reconciliation result per (network, asset), for status and metrics."""

    __tablename__ = "reconciliations"
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    asset: Mapped[str] = mapped_column(String(16), primary_key=True)
    token: Mapped[str] = mapped_column(String(42))
    block_number: Mapped[int] = mapped_column(BigInteger)
    onchain: Mapped[int] = mapped_column(BigAmount)  # token base units
    expected: Mapped[int] = mapped_column(BigAmount)  # token base units
    difference: Mapped[int] = mapped_column(BigAmount)  # onchain - expected
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    checked_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Heartbeat(Base):
    """Liveness of daemon components, read by `watcher status`."""

    __tablename__ = "heartbeats"
    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    pid: Mapped[int] = mapped_column(Integer)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Lease(Base):
    """Who runs a chain role (a network's listener, a hot wallet's sender...) now.

    ``token`` grows by one on every acquisition that is not a renewal, so a holder
    that was paused past ``expires_at`` carries a stale token and every write it
    tries is refused (store/leases.py). ``expires_at`` is the database's clock."""

    __tablename__ = "leases"
    role: Mapped[str] = mapped_column(String(160), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(120))
    token: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    acquired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
