"""The reconciler's ledger integrity check (store/reconciliation.py) on SQLite and
PostgreSQL: a clean ledger has no problem; each kind of tampered row is found, once,
whatever the number of id ranges the check reads and whether the amounts fit 64 bits;
the database-side sums (PostgreSQL's server, SQLite's exact 64-bit filter) find exactly
what the per-row reference finds."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import defaultdict

import pytest
from sqlalchemy import delete, func, select, text, update

from watcher.domain.journal import Leg, TxKind, vault_account
from watcher.store import ledger
from watcher.store import reconciliation as rec
from watcher.store.db import SessionFactory
from watcher.store.ledger import dialect_name
from watcher.store.models import Account, Balance, JournalEntry

VAULT = vault_account(31337)
USERS = [f"0x{n:040x}" for n in range(1, 13)]
BIG = 10**30  # beyond int64: SQLite cannot sum these exactly


async def _seed(sessions: SessionFactory, big: int = BIG) -> None:
    async with sessions.begin() as s:
        for n, user in enumerate(USERS, start=1):
            for k, asset in enumerate(("USDT", "ETH")):
                await ledger.post(
                    s,
                    kind=TxKind.DEPOSIT,
                    ref=f"dep:{n}:{asset}",
                    legs=[Leg(user, asset, big + n * 7 + k), Leg(VAULT, asset, -(big + n * 7 + k))],
                    account_key=user,
                )


async def _account_id(sessions: SessionFactory, key: str) -> int:
    async with sessions() as s:
        account = await ledger.find_account(s, key)
    assert account is not None
    return account.id


async def _problems(sessions: SessionFactory) -> list[tuple[str, str]]:
    async with sessions() as s:
        return sorted((p.what, p.detail) for p in await rec.ledger_integrity(s))


async def _by_rows(sessions: SessionFactory) -> list[tuple[str, str]]:
    """The reference: every entry and balance read and summed here, in Python."""
    per_tx: dict[tuple[int, str], int] = defaultdict(int)
    sums: dict[tuple[int, str, str], int] = defaultdict(int)
    async with sessions() as s:
        for entry in await s.scalars(select(JournalEntry)):
            per_tx[(entry.transaction_id, entry.asset)] += entry.amount
            sums[(entry.account_id, entry.asset, entry.wallet)] += entry.amount
        balances = {
            (b.account_id, b.asset, b.wallet): b.amount for b in await s.scalars(select(Balance))
        }
    found = [rec._unbalanced(t, a, total) for (t, a), total in per_tx.items() if total != 0]
    for key, amount in balances.items():
        if amount != sums.get(key, 0):
            found.append(rec._mismatch(*key, amount, sums.get(key, 0)))
    found += [rec._missing(*k, t) for k, t in sums.items() if k not in balances and t != 0]
    return sorted((p.what, p.detail) for p in found)


@pytest.mark.asyncio
@pytest.mark.parametrize("big", [BIG, 10**15], ids=["beyond-64-bits", "within-64-bits"])
@pytest.mark.parametrize("chunk", [1, 3, 5_000])
async def test_integrity_finds_each_tampered_row(
    sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch, chunk: int, big: int
) -> None:
    # Small ranges: the check reads the journal and the balances in many statements.
    monkeypatch.setattr(rec, "_CHUNK", chunk)
    monkeypatch.setattr(rec, "_SERVER_CHUNK", chunk)
    await _seed(sessions, big)
    assert await _problems(sessions) == []

    a2, a5, a9 = [await _account_id(sessions, USERS[i]) for i in (2, 5, 9)]
    async with sessions.begin() as s:
        # 1. a balance edited by hand
        await s.execute(
            update(Balance)
            .where(Balance.account_id == a2, Balance.asset == "USDT")
            .values(amount=big + 2 * 7 + 1000)
        )
        # 2. a balance row deleted whose entries do not sum to zero
        await s.execute(delete(Balance).where(Balance.account_id == a5, Balance.asset == "ETH"))
        # 3. a balance that no entry backs
        s.add(Balance(account_id=a9, asset="BTC", wallet="cross", amount=3))
        # 4. an entry edited by hand: its transaction no longer sums to zero, and its
        #    balance no longer equals its entries
        entry = await s.scalar(
            select(JournalEntry).where(JournalEntry.account_id == a2, JournalEntry.asset == "ETH")
        )
        assert entry is not None
        tx_id = entry.transaction_id
        entry.amount = entry.amount + 5

    got = await _problems(sessions)
    usdt2, eth2 = big + 3 * 7, big + 3 * 7 + 1  # USERS[2] is the third user: n = 3
    assert got == sorted(
        [
            (
                "balance_mismatch",
                f"account {a2} USDT/cross: balance {usdt2 + 993} != journal {usdt2}",
            ),
            ("balance_mismatch", f"account {a2} ETH/cross: balance {eth2} != journal {eth2 + 5}"),
            ("balance_missing", f"account {a5} ETH/cross: {big + 6 * 7 + 1}"),
            ("balance_mismatch", f"account {a9} BTC/cross: balance 3 != journal 0"),
            ("unbalanced_transaction", f"journal tx {tx_id} ETH: 5"),
        ]
    )

    # The database's sums and the per-row sums agree, problem for problem.
    assert await _by_rows(sessions) == got


def _refuse_python_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(*_: object) -> list[rec.IntegrityProblem]:
        raise AssertionError("a range was summed in Python")

    monkeypatch.setattr(rec, "_tx_range", refused)
    monkeypatch.setattr(rec, "_account_range", refused)


@pytest.mark.asyncio
async def test_integrity_on_postgresql_is_summed_by_the_server(
    sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL no journal entry crosses the wire: nothing is summed in Python."""
    await _seed(sessions)
    _refuse_python_sums(monkeypatch)
    async with sessions() as s:
        if dialect_name(s) != "postgresql":
            pytest.skip("SQLite keeps amounts as text: the check sums them in Python")
        assert await rec.ledger_integrity(s) == []


@pytest.mark.asyncio
async def test_integrity_on_sqlite_sums_amounts_within_64_bits_in_sqlite(
    sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a clean ledger whose amounts and sums fit 64 bits is cleared by SQLite's
    own sums: no entry is summed in Python."""
    async with sessions() as s:
        if dialect_name(s) != "sqlite":
            pytest.skip("PostgreSQL sums on the server (test above)")
    await _seed(sessions, 10**17)
    _refuse_python_sums(monkeypatch)
    assert await _problems(sessions) == []


async def _raw_amount(sessions: SessionFactory, table: str, rowid: int, value: object) -> None:
    """Write an amount as SQLite stores whatever it is given (as a tamperer with the
    file would), bypassing the column type."""
    async with sessions.begin() as s:
        await s.execute(
            text(f"UPDATE {table} SET amount = :v WHERE rowid = :r"), {"v": value, "r": rowid}
        )


@pytest.mark.asyncio
async def test_integrity_on_sqlite_reads_what_it_cannot_sum_exactly(
    sessions: SessionFactory,
) -> None:
    """Amounts SQLite would read differently from Python (non-canonical text) and sums
    beyond 64 bits are summed exactly in Python, never misread: the answer is the
    per-row reference's in each case."""
    async with sessions() as s:
        if dialect_name(s) != "sqlite":
            pytest.skip("SQLite's 64-bit filter")
    # Entries of 9 * 10^17 each: every one exact, their sum per balance beyond 2^63
    # (SQLite's sum raises "integer overflow": the range is summed in Python).
    huge = 9 * 10**17
    async with sessions.begin() as s:
        for n in range(12):
            await ledger.post(
                s,
                kind=TxKind.DEPOSIT,
                ref=f"huge:{n}",
                legs=[Leg(USERS[0], "USDT", huge), Leg(VAULT, "USDT", -huge)],
                account_key=USERS[0],
            )
    assert await _problems(sessions) == []
    async with sessions() as s:
        entry = await s.scalar(select(JournalEntry).where(JournalEntry.amount == huge))
    assert entry is not None
    # The same value written as non-canonical text: Python reads 9 * 10^17, CAST too;
    # nothing is wrong, and nothing is reported.
    await _raw_amount(sessions, "journal_entries", entry.id, f"0{huge}")
    assert await _problems(sessions) == []
    # Text that CAST reads as 900000000000000000 and Python refuses to read is not
    # cleared by SQLite: the exact path reads it, and fails loudly, as the reference.
    await _raw_amount(sessions, "journal_entries", entry.id, f"{huge}abc")
    with pytest.raises(ValueError):
        await _problems(sessions)
    # A real difference hidden in a huge sum is found.
    await _raw_amount(sessions, "journal_entries", entry.id, str(huge + 1))
    got = await _problems(sessions)
    assert got == await _by_rows(sessions) and {what for what, _ in got} == {
        "unbalanced_transaction",
        "balance_mismatch",
    }


@pytest.mark.asyncio
async def test_integrity_finds_rows_of_an_account_that_does_not_exist(
    sessions: SessionFactory,
) -> None:
    """Whoever edits the database can switch the foreign keys off: a balance naming an
    account id beyond every account is still read and found."""
    await _seed(sessions, 10**12)
    async with sessions() as s:
        # beyond the range of ids the highest account falls in, on either path
        ghost = int(await s.scalar(select(func.max(Account.id))) or 0) + 100_000
        postgres = dialect_name(s) == "postgresql"
        database = s.get_bind().url.database
    insert = (
        "INSERT INTO balances (account_id, asset, wallet, amount, updated_at) "
        f"VALUES ({ghost}, 'USDT', 'cross', '7', CURRENT_TIMESTAMP)"
    )
    if postgres:
        async with sessions.begin() as s:  # the server's foreign-key triggers off
            await s.execute(text("SET LOCAL session_replication_role = replica"))
            await s.execute(text(insert))
    else:  # a plain sqlite3 connection: foreign keys are off unless asked for
        assert database
        with contextlib.closing(sqlite3.connect(database)) as raw:
            raw.execute(insert)
            raw.commit()
    got = await _problems(sessions)
    assert got == [("balance_mismatch", f"account {ghost} USDT/cross: balance 7 != journal 0")]
