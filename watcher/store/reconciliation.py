"""Ledger-side figures for reconciliation: what the vault should hold per network and
asset, and whether the ledger is internally consistent.

The ledger's view of a vault, at a block C that the deposit listener has fully
scanned, in token base units::

    expected = liability            (-balance of system:vault:<chain> in that asset)
             + dust                 (credited deposits' sub-precision remainders)
             + pending              (deposits seen at or below C, not yet credited)
             + settled_after        (withdrawals settled in the ledger but mined after C)
             - mined_unsettled      (withdrawals mined at or below C, not yet settled)

Worked example: deposits of 100 USDT (credited) and 5 USDT (pending, block 40), a
20 USDT withdrawal mined in block 41 and still confirming, C = 42: liability 100,
pending 5, mined_unsettled 20 → expected 85; the vault's balanceOf at block 42 is 85.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Result, bindparam, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.domain.amounts import AmountPrecisionError, ledger_to_chain
from watcher.domain.journal import CROSS, vault_account
from watcher.domain.states import DepositState, WithdrawalState
from watcher.store.ledger import dialect_name, find_account
from watcher.store.models import Account, Balance, Deposit, JournalEntry, Withdrawal, table_of


@dataclass(frozen=True)
class LedgerView:
    liability: int
    dust: int
    pending: int
    settled_after: int
    mined_unsettled: int

    @property
    def expected(self) -> int:
        return self.liability + self.dust + self.pending + self.settled_after - self.mined_unsettled

    def as_dict(self) -> dict[str, str]:
        return {
            "liability": str(self.liability),
            "dust": str(self.dust),
            "pending": str(self.pending),
            "settledAfter": str(self.settled_after),
            "minedUnsettled": str(self.mined_unsettled),
            "expected": str(self.expected),
        }


async def ledger_view(
    session: AsyncSession,
    *,
    chain_id: int,
    asset: str,
    token: str,
    token_decimals: int,
    ledger_precision: int,
    block: int,
) -> LedgerView:
    liability_units = 0
    vault = await find_account(session, vault_account(chain_id))
    if vault is not None:
        row = await session.get(Balance, (vault.id, asset, CROSS))
        liability_units = -row.amount if row is not None else 0
    liability = _to_chain(liability_units, ledger_precision, token_decimals)

    dust = await credited_dust(session, chain_id=chain_id, token=token)
    # The rest reads few rows, each an index seek: the deposits still pending (the
    # confirmation window), the withdrawals mined and still confirming, and those
    # settled but mined above the block (the blocks since the listener's cursor).
    d, w = table_of(Deposit).c, table_of(Withdrawal).c
    pending = await _total(
        session,
        d.amount,
        d.state == DepositState.PENDING,
        d.chain_id == chain_id,
        d.block_number <= block,
        d.token == token,
    )
    settled_after = await _total(
        session,
        w.amount,
        w.state == WithdrawalState.COMPLETED,
        w.chain_id == chain_id,
        w.block_number > block,
        w.token == token,
    )
    mined_unsettled = await _total(
        session,
        w.amount,
        w.state == WithdrawalState.CONFIRMING,
        w.chain_id == chain_id,
        w.block_number <= block,
        w.token == token,
    )
    return LedgerView(liability, dust, pending, settled_after, mined_unsettled)


#: ids per statement where an audit reads a whole table (dust, the integrity check)
_CHUNK = 5_000
#: ids per statement where the server sums (PostgreSQL): only problems come back
_SERVER_CHUNK = 50_000


def _sum(rows: Result[Any]) -> int:
    return sum(int(amount) for (amount,) in rows)


async def _total(session: AsyncSession, amount: Any, *where: Any) -> int:
    """The exact sum of an amount column over the rows ``where`` selects (summed here:
    SQLite keeps amounts as text)."""
    return _sum(await session.execute(select(amount).where(*where)))


async def credited_dust(session: AsyncSession, *, chain_id: int, token: str) -> int:
    """The sub-precision remainders of every credited deposit of ``token``: they stay in
    the vault, credited to nobody. It reads every credited deposit of the token (an
    audit, like :func:`ledger_integrity`), in bounded memory: on PostgreSQL the server
    sums the exact ``numeric`` column; on SQLite, where amounts are text, the non-zero
    remainders come back as plain values a range of deposit ids per statement (reading
    them as ORM objects took a daemon with 1M deposits past a gigabyte; issue 22)."""
    d = table_of(Deposit).c
    wanted = (d.chain_id == chain_id, d.token == token, d.state == DepositState.CREDITED)
    if dialect_name(session) == "postgresql":
        total: Any = await session.scalar(select(func.coalesce(func.sum(d.dust), 0)).where(*wanted))
        return int(total or 0)
    highest = int(await session.scalar(select(func.max(d.id))) or 0)
    page = select(d.dust).where(
        d.id > bindparam("lo"), d.id <= bindparam("hi"), *wanted, d.dust != 0
    )
    dust = 0
    for lo in range(0, highest, _CHUNK):
        dust += _sum(await session.execute(page, {"lo": lo, "hi": lo + _CHUNK}))
        await asyncio.sleep(0)
    return dust


async def consistent_reads(session: AsyncSession) -> None:
    """Make the session's reads one snapshot. On PostgreSQL (READ COMMITTED by default
    each statement sees the latest commits, so a journal read and a balance read a moment
    later could disagree) the transaction is REPEATABLE READ; on SQLite every transaction
    already is one (``BEGIN IMMEDIATE`` on the writer connection; the audit reader's
    deferred ``BEGIN`` reads one WAL snapshot from its first statement to its end).
    Call before the session's first statement."""
    if dialect_name(session) == "postgresql" and not session.in_transaction():
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


async def withdrawals_in_flight(
    session: AsyncSession, *, chain_id: int, token: str
) -> list[tuple[int, int]]:
    """(id, amount) of the withdrawals of ``token`` sent or about to be (signed,
    broadcast) whose receipt the tracker has not recorded: one may already be paid."""
    rows = await session.execute(
        select(Withdrawal.id, Withdrawal.amount).where(
            Withdrawal.chain_id == chain_id,
            Withdrawal.token == token,
            Withdrawal.state.in_([WithdrawalState.SIGNED, WithdrawalState.BROADCAST]),
        )
    )
    return [(int(i), int(a)) for i, a in rows.all()]


def _to_chain(units: int, precision: int, decimals: int) -> int:
    # The vault account only moves by deposits and withdrawals, which are exact in
    # chain units; anything else would itself be a finding, so floor visibly.
    try:
        return ledger_to_chain(units, precision, decimals)
    except AmountPrecisionError:
        scale: int = 10 ** (precision - decimals)
        return units // scale


@dataclass(frozen=True)
class IntegrityProblem:
    what: str
    detail: str


async def ledger_integrity(session: AsyncSession) -> list[IntegrityProblem]:
    """Every balance equals the sum of its journal entries; every journal transaction
    sums to zero per asset. A tampered row breaks one or the other.

    It reads the whole journal. On PostgreSQL the server does the sums (exact
    ``numeric``) and sends back only the problems (:func:`_integrity_on_server`). On
    SQLite, where amounts are text that SQLite cannot sum exactly in general, SQLite
    sums the ones that are exact as 64-bit integers and only the id ranges it cannot
    clear are summed here (:func:`_integrity_sqlite`). Both are tested against every
    entry summed in Python (tests/store/test_ledger_integrity.py)."""
    if dialect_name(session) == "postgresql":
        return await _integrity_on_server(session)
    return await _integrity_sqlite(session)


def _unbalanced(tx_id: int, asset: str, total: int) -> IntegrityProblem:
    return IntegrityProblem("unbalanced_transaction", f"journal tx {tx_id} {asset}: {total}")


def _mismatch(
    account_id: int, asset: str, wallet: str, amount: int, total: int
) -> IntegrityProblem:
    return IntegrityProblem(
        "balance_mismatch",
        f"account {account_id} {asset}/{wallet}: balance {amount} != journal {total}",
    )


def _missing(account_id: int, asset: str, wallet: str, total: int) -> IntegrityProblem:
    return IntegrityProblem("balance_missing", f"account {account_id} {asset}/{wallet}: {total}")


async def _integrity_on_server(session: AsyncSession) -> list[IntegrityProblem]:
    """:func:`ledger_integrity` with PostgreSQL doing the per-row work: per range of
    transaction ids, the (transaction, asset) groups whose entries do not sum to zero;
    per range of account ids, the balances that differ from their entries' sum (a full
    join, so a sum with no balance row is found too). Only problems cross the wire: on a
    1M-deposit ledger the per-row version kept the daemon's event loop busy for seconds
    (2.8M entries decoded and summed in Python) and the withdrawal intake's p99 rose
    from ~0.3 to 2.7-10.9 s while it ran (issue 22)."""
    problems: list[IntegrityProblem] = []
    e = table_of(JournalEntry).c
    lo: Any = bindparam("lo")
    hi: Any = bindparam("hi")
    total = func.sum(e.amount)
    unbalanced = (
        select(e.transaction_id, e.asset, total)
        .where(e.transaction_id > lo, e.transaction_id <= hi)
        .group_by(e.transaction_id, e.asset)
        .having(total != 0)
        .order_by(e.transaction_id, e.asset)
    )
    highest = int(await session.scalar(select(func.max(e.transaction_id))) or 0)
    for start in range(0, highest, _SERVER_CHUNK):
        for tx_id, asset, amount in await session.execute(
            unbalanced, {"lo": start, "hi": start + _SERVER_CHUNK}
        ):
            problems.append(_unbalanced(tx_id, asset, amount))
    b = table_of(Balance).c
    sums = (
        select(e.account_id, e.asset, e.wallet, func.sum(e.amount).label("total"))
        .where(e.account_id > lo, e.account_id <= hi)
        .group_by(e.account_id, e.asset, e.wallet)
        .subquery()
    )
    held = select(b.account_id, b.asset, b.wallet, b.amount).where(
        b.account_id > lo, b.account_id <= hi
    )
    bal = held.subquery()
    same = (
        (bal.c.account_id == sums.c.account_id)
        & (bal.c.asset == sums.c.asset)
        & (bal.c.wallet == sums.c.wallet)
    )
    journal = func.coalesce(sums.c.total, 0)
    differing = (
        select(
            func.coalesce(bal.c.account_id, sums.c.account_id).label("account_id"),
            func.coalesce(bal.c.asset, sums.c.asset).label("asset"),
            func.coalesce(bal.c.wallet, sums.c.wallet).label("wallet"),
            bal.c.amount,
            sums.c.total,
        )
        .select_from(bal.join(sums, same, full=True))
        .where(
            ((bal.c.amount.is_(None)) & (journal != 0))
            | ((bal.c.amount.is_not(None)) & (bal.c.amount != journal))
        )
        .order_by("account_id", "asset", "wallet")
    )
    last = await _highest_account_id(session)
    for start in range(0, last, _SERVER_CHUNK):
        for account_id, asset, wallet, amount, summed in await session.execute(
            differing, {"lo": start, "hi": start + _SERVER_CHUNK}
        ):
            if amount is None:
                problems.append(_missing(account_id, asset, wallet, summed))
            else:
                problems.append(_mismatch(account_id, asset, wallet, amount, summed or 0))
    return problems


async def _highest_account_id(session: AsyncSession) -> int:
    """The highest account id any balance or entry names (three index seeks): the
    foreign keys say it is a row of accounts, but a check for tampered rows does not
    rely on a rule that whoever edits the file can switch off."""
    e, b = table_of(JournalEntry).c, table_of(Balance).c
    found = await session.execute(
        select(
            select(func.max(table_of(Account).c.id)).scalar_subquery(),
            select(func.max(b.account_id)).scalar_subquery(),
            select(func.max(e.account_id)).scalar_subquery(),
        )
    )
    return max((int(v) for v in found.one() if v is not None), default=0)


def _exact(x: str) -> str:
    """SQLite: true where the amount ``x`` is text that ``CAST(x AS INTEGER)`` reads
    exactly as Python's ``int(x)`` does: the integer printed back is the text itself
    (canonical decimal, no sign but ``-``, no leading zero or space, no ``-0``, within
    64 bits, not a number or blob stored as such). NULL is not exact. Sums of exact
    amounts are exact too: SQLite's ``sum()`` of integers raises "integer overflow"
    rather than round (:func:`_flagged`)."""
    return f"coalesce(CAST(CAST({x} AS INTEGER) AS TEXT) = {x}, 0)"


# A range of transactions SQLite cannot clear: a (transaction, asset) group with an
# amount it cannot sum exactly, or whose sum is not zero.
_TX_FLAG = text(
    "SELECT 1 FROM journal_entries"
    " WHERE transaction_id > :lo AND transaction_id <= :hi"
    " GROUP BY transaction_id, asset"
    f" HAVING min({_exact('amount')}) = 0 OR sum(CAST(amount AS INTEGER)) != 0 LIMIT 1"
)
# A range of accounts SQLite cannot clear: a balance that is not exact or differs from
# its entries' exact sum, or entries summing to non-zero with no balance row.
_BALANCE_FLAG = text(
    "WITH sums AS MATERIALIZED ("
    " SELECT account_id, asset, wallet,"
    f" min({_exact('amount')}) AS exact, sum(CAST(amount AS INTEGER)) AS total"
    " FROM journal_entries WHERE account_id > :lo AND account_id <= :hi"
    " GROUP BY account_id, asset, wallet),"
    " bal AS MATERIALIZED (SELECT account_id, asset, wallet, amount FROM balances"
    " WHERE account_id > :lo AND account_id <= :hi)"
    " SELECT 1 FROM bal LEFT JOIN sums ON sums.account_id = bal.account_id"
    " AND sums.asset = bal.asset AND sums.wallet = bal.wallet"
    f" WHERE NOT ({_exact('bal.amount')} AND coalesce(sums.exact, 1) = 1"
    " AND CAST(bal.amount AS INTEGER) = coalesce(sums.total, 0))"
    " UNION ALL SELECT 1 FROM sums WHERE NOT (sums.exact = 1 AND sums.total = 0)"
    " AND NOT EXISTS (SELECT 1 FROM bal WHERE bal.account_id = sums.account_id"
    " AND bal.asset = sums.asset AND bal.wallet = sums.wallet)"
    " LIMIT 1"
)


async def _flagged(session: AsyncSession, query: Any, lo: int, hi: int) -> bool:
    try:
        return (await session.execute(query, {"lo": lo, "hi": hi})).first() is not None
    except OperationalError as exc:  # a sum beyond 64 bits: summed exactly in Python
        if "integer overflow" not in str(exc):
            raise
        return True


async def _integrity_sqlite(session: AsyncSession) -> list[IntegrityProblem]:
    """:func:`ledger_integrity` on SQLite. Per range of transaction ids, then per range
    of account ids, one statement asks SQLite whether it can clear the range: every
    amount exact as a 64-bit integer (:func:`_exact`) and every sum as it must be. A
    range it cannot clear, and only such a range, is read and summed exactly in Python
    (:func:`_tx_range`, :func:`_account_range`): the answer is exactly the per-row
    check's, and on a clean ledger whose amounts and sums fit 64 bits (8-decimal ledger
    units: up to ~9 * 10^10 of an asset per balance) no entry crosses into Python. The
    reads run in the audit connection's worker thread, and SQLite releases the GIL while
    it sums, so the event loop keeps serving (2M entries: the loop's p99 lag 1 ms, was
    28 ms when every entry was summed in Python; bench/README.md, issue 22)."""
    problems: list[IntegrityProblem] = []
    e = table_of(JournalEntry).c
    highest = int(await session.scalar(select(func.max(e.transaction_id))) or 0)
    for lo in range(0, highest, _CHUNK):
        if await _flagged(session, _TX_FLAG, lo, lo + _CHUNK):
            problems.extend(await _tx_range(session, lo, lo + _CHUNK))
    last = await _highest_account_id(session)
    for lo in range(0, last, _CHUNK):
        if await _flagged(session, _BALANCE_FLAG, lo, lo + _CHUNK):
            problems.extend(await _account_range(session, lo, lo + _CHUNK))
    return problems


async def _tx_range(session: AsyncSession, lo: int, hi: int) -> list[IntegrityProblem]:
    """The unbalanced (transaction, asset) groups of transaction ids (lo, hi], exactly."""
    e = table_of(JournalEntry).c
    per_tx: dict[tuple[int, str], int] = defaultdict(int)
    for tx_id, asset, amount in await session.execute(
        select(e.transaction_id, e.asset, e.amount).where(
            e.transaction_id > lo, e.transaction_id <= hi
        )
    ):
        per_tx[(tx_id, asset)] += amount
    return [_unbalanced(t, a, total) for (t, a), total in sorted(per_tx.items()) if total != 0]


async def _account_range(session: AsyncSession, lo: int, hi: int) -> list[IntegrityProblem]:
    """The balances of account ids (lo, hi] that differ from their entries, exactly."""
    e, b = table_of(JournalEntry).c, table_of(Balance).c
    sums: dict[tuple[int, str, str], int] = defaultdict(int)
    for account_id, asset, wallet, amount in await session.execute(
        select(e.account_id, e.asset, e.wallet, e.amount).where(
            e.account_id > lo, e.account_id <= hi
        )
    ):
        sums[(account_id, asset, wallet)] += amount
    problems: list[IntegrityProblem] = []
    seen: set[tuple[int, str, str]] = set()
    for account_id, asset, wallet, amount in await session.execute(
        select(b.account_id, b.asset, b.wallet, b.amount)
        .where(b.account_id > lo, b.account_id <= hi)
        .order_by(b.account_id, b.asset, b.wallet)
    ):
        key = (account_id, asset, wallet)
        seen.add(key)
        if amount != sums.get(key, 0):
            problems.append(_mismatch(account_id, asset, wallet, amount, sums.get(key, 0)))
    for key, total in sorted(sums.items()):
        if key not in seen and total != 0:
            problems.append(_missing(*key, total))
    return problems
