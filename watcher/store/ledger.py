"""The double-entry ledger: accounts, journal transactions and balances.

Guarantees:
- A journal transaction is posted with all its entries and the balance changes in the
  caller's DB transaction, or not at all; its legs balance per asset (checked by
  ``watcher.domain.journal.check_balanced`` before anything is written).
- Posting is idempotent on ``ref``: posting the same ref again returns the existing
  transaction and changes nothing (a unique constraint backs the check).
- ``lock_account`` serializes every decision about one account: ``SELECT ... FOR
  UPDATE`` on PostgreSQL; on SQLite the transaction already holds the writer lock
  (``BEGIN IMMEDIATE``, see db.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import Executable, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.domain.journal import Leg, TxKind, check_balanced
from watcher.store.bulk import insert_many
from watcher.store.models import (
    Account,
    Balance,
    JournalEntry,
    JournalTransaction,
    table_of,
    utcnow,
)
from watcher.store.prepared import Prepared, ValueList, any_of, run


@dataclass(frozen=True)
class Posted:
    transaction: JournalTransaction
    created: bool  # False when the ref already existed (idempotent replay)


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _insert(session: AsyncSession):  # type: ignore[no-untyped-def]
    return postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert


def account_kind(key: str) -> str:
    return "system" if key.startswith("system:") else "user"


async def create_accounts(session: AsyncSession, keys: Sequence[str]) -> None:
    """Create the accounts of ``keys`` that do not exist yet, in one statement however
    many (an ``unnest`` insert on PostgreSQL, multi-row ``VALUES`` on SQLite); race-safe
    (``ON CONFLICT DO NOTHING``: a concurrent creator's row wins, nothing fails). The
    rows go in sorted key order, so two creators of overlapping sets wait for each
    other in one order and cannot deadlock."""
    wanted = sorted(set(keys))
    if not wanted:
        return
    await insert_many(
        session,
        table_of(Account),
        {"key": wanted, "kind": [account_kind(k) for k in wanted]},
        same={"multi_asset_mode": False, "version": 0, "created_at": utcnow()},
        suffix="ON CONFLICT (key) DO NOTHING",
    )


async def ensure_account(session: AsyncSession, key: str) -> Account:
    """Return the account for ``key``, creating it if needed (race-safe)."""
    found = await session.scalar(select(Account).where(Account.key == key))
    if found is not None:
        return found
    await create_accounts(session, [key])
    account = await session.scalar(select(Account).where(Account.key == key))
    assert account is not None
    return account


async def find_account(session: AsyncSession, key: str) -> Account | None:
    return await session.scalar(select(Account).where(Account.key == key))


async def lock_account(session: AsyncSession, key: str) -> Account:
    """Take the account's lock for the rest of the DB transaction."""
    await ensure_account(session, key)
    account = await session.scalar(select(Account).where(Account.key == key).with_for_update())
    assert account is not None
    account.version += 1
    await session.flush()
    return account


class LockedAccount(NamedTuple):
    """An account row locked by :func:`lock_accounts` (its version already bumped)."""

    id: int
    key: str
    multi_asset_mode: bool
    version: int


async def lock_accounts(session: AsyncSession, keys: Sequence[str]) -> dict[str, LockedAccount]:
    """:func:`lock_account` for many accounts at once, with a fixed number of statements
    whatever their number. PostgreSQL: create the missing ones (``ON CONFLICT DO
    NOTHING``), then lock them in key order (``SELECT ... ORDER BY key FOR UPDATE``, so
    two batches that share accounts never deadlock) and bump their versions in the same
    statement, returning the rows. SQLite (whose transaction already holds the writer
    lock): bump the existing ones, then create and bump the missing ones if any."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    if dialect_name(session) == "sqlite":
        # The transaction holds SQLite's writer lock already: lock (bump) the existing
        # rows first and create only what is missing (one statement when all exist,
        # the usual case), then lock those.
        locked = await _bump_versions(session, wanted)
        missing = [k for k in wanted if k not in locked]
        if missing:
            await create_accounts(session, missing)
            locked.update(await _bump_versions(session, missing))
        return locked
    # PostgreSQL: the missing accounts first (none, usually), then ONE statement locks
    # the rows in key order and bumps their versions (_LOCK_AND_BUMP).
    await create_accounts(session, wanted)
    return await _bump_versions(session, wanted, _LOCK_AND_BUMP)


def _build_bump(dialect: str) -> Executable:
    accounts = table_of(Account)
    c = accounts.c
    return (
        update(accounts)
        .where(text(any_of(dialect, "accounts.key", "keys", "text[]")))
        .values(version=c.version + 1)
        .returning(c.id, c.key, c.multi_asset_mode, c.version)
    )


def _build_lock_and_bump(dialect: str) -> Executable:
    """PostgreSQL: ``WITH locked AS MATERIALIZED (SELECT id .. ORDER BY key FOR UPDATE)
    UPDATE accounts .. FROM locked``: the CTE takes the row locks in key order (an
    ``UPDATE`` alone locks in whatever order its plan visits the rows, and two batches
    over the same accounts could deadlock), the update bumps what it locked. One round
    trip instead of a locking ``SELECT`` and an ``UPDATE``."""
    accounts = table_of(Account)
    c = accounts.c
    locked = (
        select(c.id)
        .where(text(any_of(dialect, "accounts.key", "keys", "text[]")))
        .order_by(c.key)
        .with_for_update()
        .cte("locked")
        .prefix_with("MATERIALIZED")
    )
    return (
        update(accounts)
        .where(c.id == locked.c.id)
        .values(version=c.version + 1)
        .returning(c.id, c.key, c.multi_asset_mode, c.version)
    )


_BUMP = Prepared(_build_bump)
_LOCK_AND_BUMP = Prepared(_build_lock_and_bump)


async def _bump_versions(
    session: AsyncSession, keys: Sequence[str], statement: Prepared = _BUMP
) -> dict[str, LockedAccount]:
    # Not through the ORM: Account objects of this session, if any, keep their loaded
    # version (as with the bulk update this replaced, synchronize_session=False).
    rows = await run(session, statement, {"keys": ValueList(keys)})
    return {
        r.key: LockedAccount(int(r.id), r.key, bool(r.multi_asset_mode), r.version) for r in rows
    }


async def _balance_row(session: AsyncSession, account_id: int, asset: str, wallet: str) -> Balance:
    key = (account_id, asset, wallet)
    row = await session.get(Balance, key, with_for_update=True)
    if row is None:
        await session.execute(
            _insert(session)(Balance)
            .values(
                account_id=account_id, asset=asset, wallet=wallet, amount=0, updated_at=utcnow()
            )
            .on_conflict_do_nothing()
        )
        row = await session.get(Balance, key, with_for_update=True, populate_existing=True)
        assert row is not None
    return row


async def post(
    session: AsyncSession,
    *,
    kind: TxKind,
    ref: str,
    legs: Iterable[Leg],
    account_key: str | None = None,
    memo: str = "",
) -> Posted:
    """Post one balanced journal transaction and apply it to the balances."""
    checked = check_balanced(legs)
    existing = await session.scalar(select(JournalTransaction).where(JournalTransaction.ref == ref))
    if existing is not None:
        return Posted(existing, created=False)
    owner = await ensure_account(session, account_key) if account_key else None
    tx = JournalTransaction(
        kind=str(kind), ref=ref, account_id=owner.id if owner else None, memo=memo
    )
    session.add(tx)
    await session.flush()
    ids: dict[str, int] = {}
    for leg in checked:
        if leg.account not in ids:
            ids[leg.account] = (await ensure_account(session, leg.account)).id
    # Lock balance rows in a stable order so two posters never deadlock on PostgreSQL.
    for leg in sorted(checked, key=lambda x: (ids[x.account], x.asset, x.wallet)):
        account_id = ids[leg.account]
        session.add(
            JournalEntry(
                transaction_id=tx.id,
                account_id=account_id,
                asset=leg.asset,
                wallet=leg.wallet,
                amount=leg.amount,
            )
        )
        row = await _balance_row(session, account_id, leg.asset, leg.wallet)
        row.amount = row.amount + leg.amount
        row.updated_at = utcnow()
    await session.flush()
    return Posted(tx, created=True)


async def balances(session: AsyncSession, key: str) -> dict[tuple[str, str], int]:
    """{(asset, wallet): amount} for one account (zero rows included)."""
    account = await find_account(session, key)
    if account is None:
        return {}
    rows = await session.scalars(select(Balance).where(Balance.account_id == account.id))
    return {(r.asset, r.wallet): r.amount for r in rows}


async def wallet_balances(session: AsyncSession, key: str, wallet: str) -> dict[str, int]:
    return {asset: amt for (asset, w), amt in (await balances(session, key)).items() if w == wallet}


async def journal_sums(session: AsyncSession) -> dict[tuple[int, str, str], int]:
    """Recompute every balance from the journal (for reconciliation and tests)."""
    sums: dict[tuple[int, str, str], int] = defaultdict(int)
    for entry in await session.scalars(select(JournalEntry)):
        sums[(entry.account_id, entry.asset, entry.wallet)] += entry.amount
    return dict(sums)
