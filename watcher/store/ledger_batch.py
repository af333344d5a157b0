"""Posting many journal transactions at once (deposit credits, batches of withdrawal holds).

Same guarantees as :func:`watcher.store.ledger.post`, for a list:

* every transaction is checked balanced before anything is written;
* posting is idempotent on ``ref``: refs that already exist are skipped and their
  existing ids returned; the same ref twice in one call is an error;
* all transactions, entries and balance changes land in the caller's DB transaction
  or not at all;
* concurrent batches on PostgreSQL cannot deadlock on each other: new accounts are
  inserted in sorted key order, and balance rows are locked (or created) in ONE
  pass in sorted (account id, asset, wallet) order — the order
  :func:`~watcher.store.ledger.post` locks them in, one by one. On SQLite the
  transaction already holds the writer lock (``BEGIN IMMEDIATE``, see db.py).

:func:`post_pairs` is the same for two-leg postings given as :class:`Pair` tuples
(the deposit backfill credits tens of thousands at once: no ``Posting`` and two
``Leg`` objects to build and check per credit).

It is set-based, whatever the number of postings and accounts: one ``SELECT`` of the
refs, of the accounts (plus one insert and one select for new accounts), the journal
transaction ids reserved up front (``max(id)`` under SQLite's writer lock,
``nextval`` on PostgreSQL) so nothing is read back, driver-level ``executemany`` of
the transactions and entries (:func:`watcher.store.bulk.insert_many`), and ONE
``executemany`` of balance upserts, one per touched (account, asset, wallet):

* PostgreSQL: ``INSERT .. ON CONFLICT DO UPDATE SET amount = balances.amount +
  excluded.amount`` in sorted key order — the row lock is taken by the upsert and the
  sum is exact ``NUMERIC``;
* SQLite: the touched rows are read, summed in Python (exact ints: SQLite would add
  the stored text as a 64-bit integer or a float) and written back by an upsert.

Example: 20,000 deposit credits by 10 users in one asset touch 11 balance rows: 11
upserts, not 20,000 read-modify-writes. Balance objects of the session's identity
map that were touched are flushed first and reloaded after, so the ORM never serves a
stale balance or writes one back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from watcher.domain.journal import CROSS, Leg, TxKind, UnbalancedTransaction, check_balanced
from watcher.store.bulk import insert_many, reserve_ids
from watcher.store.keys import KeyColumn, keys_params, rows_by_keys, select_by_keys
from watcher.store.ledger import create_accounts, dialect_name
from watcher.store.models import (
    Account,
    Balance,
    JournalEntry,
    JournalTransaction,
    table_of,
    utcnow,
)
from watcher.store.prepared import Prepared, ValueList, any_of, rows

_CHUNK = 5000  # IN-list size: under SQLite's and asyncpg's 32,767 parameters

BalanceKey = tuple[int, str, str]
_BALANCE_KEY = (
    KeyColumn("account_id", "bigint[]"),
    KeyColumn("asset", "text[]"),
    KeyColumn("wallet", "text[]"),
)


@dataclass(frozen=True)
class Posting:
    kind: TxKind
    ref: str
    legs: Sequence[Leg]
    account_key: str | None = None
    memo: str = ""


async def existing_refs(session: AsyncSession, refs: Sequence[str]) -> dict[str, int]:
    """{ref: journal transaction id} for the refs that are already posted.

    One statement with the refs as ONE parameter, however many (a backfill step asks
    for tens of thousands): a JSON array read by ``json_each`` on SQLite, a text
    array on PostgreSQL; both probe the unique index on ``ref``."""
    if not refs:
        return {}
    found = await rows(session, _REFS, {"refs": ValueList(refs)})
    return {ref: int(tx_id) for ref, tx_id in found}


_REFS = Prepared(
    lambda d: text(
        "SELECT ref, id FROM journal_transactions WHERE " + any_of(d, "ref", "refs", "text[]")
    )
)
_ACCOUNT_IDS = Prepared(
    lambda d: select(table_of(Account).c.key, table_of(Account).c.id).where(
        text(any_of(d, "accounts.key", "keys", "text[]"))
    )
)


async def account_ids(session: AsyncSession, keys: Sequence[str]) -> dict[str, int]:
    """{key: account id}, creating the missing accounts (race-safe, sorted key order)."""
    wanted = sorted(set(keys))
    found: dict[str, int] = {}

    async def read(which: Sequence[str]) -> None:
        for start in range(0, len(which), _CHUNK):
            keys = ValueList(which[start : start + _CHUNK])
            found.update({k: i for k, i in await rows(session, _ACCOUNT_IDS, {"keys": keys})})

    await read(wanted)
    missing = [k for k in wanted if k not in found]
    if missing:
        await create_accounts(session, missing)
        await read(missing)
    return found


class Pair(NamedTuple):
    """A two-leg posting for :func:`post_pairs`: ``units`` of ``asset`` (> 0) move from
    ``debit`` to ``credit``; ``owner`` is the account the transaction is about."""

    ref: str
    credit: str
    debit: str
    asset: str
    units: int
    owner: str | None = None


@dataclass
class _Columns:
    """Journal transactions and their entries, column by column, ready to write."""

    refs: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    owners: list[str | None] = field(default_factory=list)
    memos: list[str] = field(default_factory=list)
    # One item per entry; ``tx`` is the index of its transaction in ``refs``.
    tx: list[int] = field(default_factory=list)
    account: list[str] = field(default_factory=list)
    asset: list[str] = field(default_factory=list)
    wallet: list[str] = field(default_factory=list)
    amount: list[int] = field(default_factory=list)


def _unique(refs: Sequence[str]) -> None:
    if len(set(refs)) != len(refs):
        raise ValueError("post_many: the same ref twice in one batch")


async def post_many(
    session: AsyncSession,
    postings: Sequence[Posting],
    *,
    known_accounts: Mapping[str, int] | None = None,
    fresh_refs: bool = False,
    tx_ids: Sequence[int] | None = None,
    balances: Mapping[BalanceKey, int] | None = None,
) -> dict[str, int]:
    """Post every posting whose ref is new; return {ref: transaction id} for all of them.

    ``known_accounts`` ({key: id}, e.g. the rows the caller has locked) spares reading
    those ids again. ``fresh_refs=True`` is for refs that cannot exist yet (built from
    ids reserved in this very transaction): the lookup of already-posted refs is
    skipped, and the unique index on ``ref`` still refuses a duplicate (the
    transaction fails, nothing is posted twice).

    Two more spare a statement each where the caller already has the answer (the
    withdrawal intake, whose batch locked and read its accounts):

    * ``tx_ids``: the new transactions' ids, one per posting in order, reserved by the
      caller in this DB transaction (:func:`watcher.store.bulk.reserve_ids_many`);
      only with ``fresh_refs=True`` (no posting may be skipped);
    * ``balances``: {(account id, asset, wallet): amount} of balance rows as the caller
      read them in this DB transaction with the accounts locked, 0 for a row that does
      not exist. SQLite adds the deltas to these instead of reading the rows again
      (PostgreSQL adds on the server and reads nothing); a touched key missing from it
      is read as before. A wrong amount here would be written back, so it must come
      from this transaction's own read, with nothing written to those rows since."""
    if tx_ids is not None and (not fresh_refs or len(tx_ids) != len(postings)):
        raise ValueError("post_many: tx_ids need fresh_refs=True and one id per posting")
    checked = [(p, check_balanced(p.legs)) for p in postings]
    _unique([p.ref for p in postings])
    ids = {} if fresh_refs else await existing_refs(session, [p.ref for p in postings])
    cols = _Columns()
    for p, legs in checked:
        if p.ref in ids:
            continue
        index = len(cols.refs)
        cols.refs.append(p.ref)
        cols.kinds.append(str(p.kind))
        cols.owners.append(p.account_key)
        cols.memos.append(p.memo)
        for leg in legs:
            cols.tx.append(index)
            cols.account.append(leg.account)
            cols.asset.append(leg.asset)
            cols.wallet.append(leg.wallet)
            cols.amount.append(leg.amount)
    ids.update(await _write(session, cols, known_accounts, tx_ids, balances))
    return ids


async def post_pairs(
    session: AsyncSession,
    kind: TxKind,
    pairs: Sequence[Pair],
    *,
    credit_wallet: str = CROSS,
    debit_wallet: str = CROSS,
    memo: str = "",
) -> dict[str, int]:
    """:func:`post_many` for two-leg postings of one kind, without building a
    :class:`Posting` and two :class:`Leg` per item (the backfill posts tens of
    thousands). Balanced by construction: +units and -units of one asset; units must
    be a positive int (what :func:`check_balanced` demands of a pair)."""
    for pair in pairs:
        units = pair.units
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise UnbalancedTransaction(f"{pair.ref}: units must be a positive int, got {units!r}")
    refs = [p.ref for p in pairs]
    _unique(refs)
    ids = await existing_refs(session, refs)
    todo = [p for p in pairs if p.ref not in ids] if ids else list(pairs)
    n = len(todo)
    cols = _Columns(
        refs=[p.ref for p in todo],
        kinds=[str(kind)] * n,
        owners=[p.owner for p in todo],
        memos=[memo] * n,
    )
    for index, p in enumerate(todo):
        cols.tx += (index, index)
        cols.account += (p.credit, p.debit)
        cols.asset += (p.asset, p.asset)
        cols.amount += (p.units, -p.units)
    cols.wallet = [credit_wallet, debit_wallet] * n
    ids.update(await _write(session, cols))
    return ids


async def _write(
    session: AsyncSession,
    cols: _Columns,
    known: Mapping[str, int] | None = None,
    reserved: Sequence[int] | None = None,
    balances: Mapping[BalanceKey, int] | None = None,
) -> dict[str, int]:
    """Write new transactions with their entries and balance changes; {ref: id}."""
    if not cols.refs:
        return {}
    # Pending ORM changes (a Balance changed by the caller) must reach the database
    # before the set-based writes below read and overwrite the same rows.
    await session.flush()
    owners = {o for o in cols.owners if o is not None}
    keys = set(cols.account) | owners
    accounts = {k: known[k] for k in keys if k in known} if known else {}
    if len(accounts) < len(keys):
        accounts.update(await account_ids(session, sorted(keys - accounts.keys())))
    if reserved is None:
        tx_ids = await reserve_ids(session, table_of(JournalTransaction), len(cols.refs))
    else:
        tx_ids = list(reserved)
    entry_tx = [tx_ids[i] for i in cols.tx]
    entry_account = [accounts[k] for k in cols.account]
    deltas: dict[BalanceKey, int] = defaultdict(int)
    for key, amount in zip(
        zip(entry_account, cols.asset, cols.wallet, strict=True), cols.amount, strict=True
    ):
        deltas[key] += amount

    await insert_many(
        session,
        table_of(JournalTransaction),
        {
            "id": tx_ids,
            "kind": cols.kinds,
            "ref": cols.refs,
            "account_id": [None if o is None else accounts[o] for o in cols.owners],
            "memo": cols.memos,
        },
        same={"created_at": utcnow()},
    )
    await insert_many(
        session,
        table_of(JournalEntry),
        {
            "transaction_id": entry_tx,
            "account_id": entry_account,
            "asset": cols.asset,
            "wallet": cols.wallet,
            "amount": cols.amount,
        },
    )
    await _apply_deltas(session, {k: d for k, d in deltas.items() if d != 0}, balances)
    return dict(zip(cols.refs, tx_ids, strict=True))


async def _apply_deltas(
    session: AsyncSession,
    deltas: dict[BalanceKey, int],
    given: Mapping[BalanceKey, int] | None = None,
) -> None:
    """Add each delta to its balance row (created at 0 if missing), in sorted key order;
    on SQLite from the amounts ``given`` (see :func:`post_many`), the others read."""
    if not deltas:
        return
    keys = sorted(deltas)
    dialect = dialect_name(session)
    postgres = dialect == "postgresql"
    if postgres:
        amounts = [deltas[k] for k in keys]
        new_amount = "balances.amount + excluded.amount"
    else:
        given = given or {}
        current = {k: given[k] for k in keys if k in given}
        if len(current) < len(keys):
            current.update(await _read_balances(session, [k for k in keys if k not in given]))
        amounts = [current.get(k, 0) + deltas[k] for k in keys]
        new_amount = "excluded.amount"
    # One executemany: the driver runs the rows in order, so PostgreSQL takes the row
    # locks in sorted key order (like ledger.post) and two posters cannot deadlock.
    await insert_many(
        session,
        table_of(Balance),
        {
            "account_id": [k[0] for k in keys],
            "asset": [k[1] for k in keys],
            "wallet": [k[2] for k in keys],
            "amount": amounts,
        },
        same={"updated_at": utcnow()},
        suffix="ON CONFLICT (account_id, asset, wallet) DO UPDATE SET "
        f"amount = {new_amount}, updated_at = excluded.updated_at",
    )
    # Balance objects the session already holds are reloaded, so the ORM neither serves
    # a stale amount nor (async) needs a lazy load after an expire.
    identity = session.sync_session.identity_map
    held = [k for k in keys if identity_key(Balance, k) in identity]
    if held:
        await session.execute(
            select(Balance)
            .from_statement(rows_by_keys(dialect, table_of(Balance), _BALANCE_KEY))
            .execution_options(populate_existing=True),
            keys_params(dialect, len(_BALANCE_KEY), held),
        )


async def _read_balances(
    session: AsyncSession, keys: Sequence[BalanceKey]
) -> dict[BalanceKey, int]:
    c = table_of(Balance).c
    rows = await select_by_keys(
        session, "balances", _BALANCE_KEY, [c.account_id, c.asset, c.wallet, c.amount], keys
    )
    return {(a, s, w): amount for a, s, w, amount in rows}
