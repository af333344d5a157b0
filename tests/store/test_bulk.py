"""The bulk paths on SQLite and PostgreSQL: the driver-level writer stores exactly what
SQLAlchemy stores (uint256, timestamps), and the set-based post_many / post_pairs keep
ledger.post's guarantees for many accounts, existing balances, ORM objects in the
session and concurrent posters."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, cast

import pytest
from sqlalchemy import Table, event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.domain.journal import CROSS, HOLD, Leg, TxKind, UnbalancedTransaction, transfer
from watcher.store import bulk, ledger, ledger_batch
from watcher.store.bulk import PG_CHUNK, insert_many, reserve_ids, reserve_ids_many
from watcher.store.db import SessionFactory
from watcher.store.ledger_batch import (
    Pair,
    Posting,
    post_many,
    post_pairs,
)
from watcher.store.models import (
    Account,
    Balance,
    Deposit,
    JournalEntry,
    JournalTransaction,
    Withdrawal,
)
from watcher.store.reconciliation import ledger_integrity

UINT256_MAX = 2**256 - 1
ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
VAULT = "system:vault:31337"
AMOUNTS = [0, 1, 2**63 - 1, 2**63, 2**64 + 1, 10**30 + 7, UINT256_MAX]
DEPOSITS = cast(Table, Deposit.__table__)
JOURNAL = cast(Table, JournalTransaction.__table__)


def deposit_values(i: int, amount: int, at: datetime) -> dict[str, Any]:
    return {
        "chain_id": 31337,
        "tx_hash": "0x" + f"{i:064x}",
        "log_index": i,
        "block_number": 100 + i,
        "block_hash": "0x" + "cd" * 32,
        "account": ALICE,
        "token": "0x" + "00" * 20,
        "amount": amount,
        "asset": "ETH",
        "ledger_amount": amount // 10**10,
        "dust": -amount,
        "state": "credited",
        "credit_tx_id": None,
        "seen_at": at,
        "credited_at": None if i % 2 else at,
        "updated_at": at,
    }


async def stored(s: AsyncSession) -> list[tuple[Any, ...]]:
    """The deposits as the driver returns them (no type processing)."""
    rows = await s.execute(
        text(
            "SELECT log_index, amount, ledger_amount, dust, seen_at, credited_at "
            "FROM deposits ORDER BY log_index"
        )
    )
    return [tuple(r) for r in rows.all()]


async def test_insert_many_stores_what_the_orm_stores(sessions: SessionFactory) -> None:
    # A non-UTC aware time: UtcDateTime converts it on both paths.
    at = datetime(2026, 11, 21, 15, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    rows = [deposit_values(i, a, at) for i, a in enumerate(AMOUNTS)]
    async with sessions.begin() as s:
        s.add_all(Deposit(**r) for r in rows)
    async with sessions() as s:
        via_orm = await stored(s)
    async with sessions.begin() as s:
        await s.execute(DEPOSITS.delete())
        columns = {k: [r[k] for r in rows] for k in rows[0] if k not in ("chain_id", "state")}
        n = await insert_many(s, DEPOSITS, columns, same={"chain_id": 31337, "state": "credited"})
        assert n == len(AMOUNTS)
    async with sessions() as s:
        assert await stored(s) == via_orm
        got = list(await s.scalars(select(Deposit).order_by(Deposit.log_index)))
    assert [d.amount for d in got] == AMOUNTS
    assert [d.dust for d in got] == [-a for a in AMOUNTS]
    assert got[0].seen_at == at and got[0].seen_at.tzinfo == UTC
    assert got[1].credited_at is None and got[2].credited_at == at


async def test_insert_many_checks_like_the_column_types(sessions: SessionFactory) -> None:
    at = datetime.now(UTC)
    too_big = deposit_values(1, UINT256_MAX + 1, at)
    async with sessions.begin() as s:
        with pytest.raises(ValueError, match="78 digits"):
            await insert_many(s, DEPOSITS, {k: [v] for k, v in too_big.items()})
        with pytest.raises(TypeError, match="BigAmount takes int"):
            bad = deposit_values(1, 1, at) | {"amount": "1"}
            await insert_many(s, DEPOSITS, {k: [v] for k, v in bad.items()})
        with pytest.raises(ValueError, match="needs a value for 'updated_at'"):
            partial = {k: [v] for k, v in deposit_values(1, 1, at).items() if k != "updated_at"}
            await insert_many(s, DEPOSITS, partial)
        with pytest.raises(ValueError, match="different lengths"):
            await insert_many(s, DEPOSITS, {"amount": [1, 2], "dust": [1]})


async def test_insert_many_sends_more_than_one_chunk(sessions: SessionFactory) -> None:
    at = datetime.now(UTC)
    n = 12_001  # three driver calls, and more rows than asyncpg takes parameters
    async with sessions.begin() as s:
        columns: dict[str, list[Any]] = {
            "tx_hash": ["0x" + f"{i:064x}" for i in range(n)],
            "log_index": list(range(n)),
            "block_number": list(range(n)),
            "amount": [UINT256_MAX - i for i in range(n)],
            "ledger_amount": [None] * n,
            "credit_tx_id": [None] * n,
            "credited_at": [None] * n,
        }
        same = deposit_values(0, 0, at)
        for k in (*columns, "ledger_amount"):
            same.pop(k, None)
        await insert_many(s, DEPOSITS, columns, same=same)
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Deposit)) == n
        last = await s.scalar(select(Deposit.amount).where(Deposit.log_index == n - 1))
    assert last == UINT256_MAX - n + 1


async def test_insert_many_keeps_the_order_given_and_refuses_what_does_not_fit(
    sessions: SessionFactory, engine: Any
) -> None:
    """Rows get their ids in the order given, across the PostgreSQL unnest chunks
    (PG_CHUNK rows per statement) and SQLite's multi-row statements; on PostgreSQL a
    value too long for its column is refused, as by a single-row insert (the arrays
    are cast without a length, so nothing is silently truncated)."""
    at = datetime.now(UTC)
    n = 2 * PG_CHUNK + 7
    order = list(range(n))
    random.Random(7).shuffle(order)
    same = deposit_values(0, 0, at)
    columns: dict[str, list[Any]] = {
        "tx_hash": ["0x" + f"{i:064x}" for i in order],
        "log_index": order,
        "amount": [10**40 + i for i in order],
        "credited_at": [None if i % 3 else at for i in order],
    }
    for k in columns:
        same.pop(k)
    async with sessions.begin() as s:
        await insert_many(s, DEPOSITS, columns, same=same)
    async with sessions() as s:
        got = (
            await s.execute(select(Deposit.log_index, Deposit.amount).order_by(Deposit.id))
        ).all()
    assert [r[0] for r in got] == order
    assert [r[1] for r in got] == [10**40 + i for i in order]
    if engine.dialect.name != "postgresql":
        return  # SQLite does not enforce VARCHAR lengths
    too_long = deposit_values(n, 1, at) | {"tx_hash": "0x" + "ab" * 33}  # 68 > 66 characters
    with pytest.raises(DBAPIError, match="too long"):
        async with sessions.begin() as s:
            await insert_many(s, DEPOSITS, {k: [v] for k, v in too_long.items()})
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Deposit)) == n


# Strings that PostgreSQL's array text form must quote or escape (bulk._literal_text).
AWKWARD = [
    'a"b',
    "back\\slash",
    '\\"',
    'x","y',
    "{brace}",
    "com,ma",
    " spaced ",
    "",
    "NULL",
    "null",
    "ünï€",
    "new\nline",
    "tab\t",
    "'single'",
]


async def test_insert_many_keeps_every_string_and_null_as_given(
    sessions: SessionFactory,
) -> None:
    """On PostgreSQL integer, string and timestamp columns travel as the text form of
    an array: quotes, backslashes, braces, commas, blanks, empty strings, the word
    NULL and non-ASCII text come back exactly as given, ``None`` as NULL."""
    at = datetime.now(UTC)
    n = len(AWKWARD)
    async with sessions.begin() as s:
        ids = await reserve_ids(s, JOURNAL, n)
        await insert_many(
            s,
            JOURNAL,
            {
                "id": ids,
                "kind": ["deposit"] * n,
                "ref": [f"r{i}:{v}" for i, v in enumerate(AWKWARD)],
                "account_id": [None] * n,
                "memo": AWKWARD,
            },
            same={"created_at": at},
        )
        # A nullable string column with NULLs among awkward values (the escaping
        # path), and a nullable integer column with a NULL among integers.
        rows = [deposit_values(i, 1, at) for i in range(n)]
        columns = {k: [r[k] for r in rows] for k in rows[0]}
        columns["asset"] = [None if i % 4 == 0 else v[:16] for i, v in enumerate(AWKWARD)]
        columns["credit_tx_id"] = [None if i % 2 else tx for i, tx in enumerate(ids)]
        # Backslashes with no quote anywhere in the column (the fast path's check).
        columns["block_hash"] = [f"h\\{i}\\" for i in range(n)]
        await insert_many(s, DEPOSITS, columns)
    async with sessions() as s:
        got = (
            await s.execute(
                select(JournalTransaction.memo, JournalTransaction.ref).order_by(
                    JournalTransaction.id
                )
            )
        ).all()
        deposits = (
            await s.execute(
                select(
                    Deposit.asset, Deposit.credit_tx_id, Deposit.credited_at, Deposit.block_hash
                ).order_by(Deposit.log_index)
            )
        ).all()
    assert [r[0] for r in got] == AWKWARD
    assert [r[1] for r in got] == [f"r{i}:{v}" for i, v in enumerate(AWKWARD)]
    assert [r[0] for r in deposits] == columns["asset"]
    assert [r[1] for r in deposits] == columns["credit_tx_id"]
    assert [r[2] for r in deposits] == [None if i % 2 else at for i in range(n)]
    assert [r[3] for r in deposits] == columns["block_hash"]


def test_pg_columns_travel_as_text_only_with_the_type_the_driver_demands() -> None:
    """A column goes as the array's text form only when every value is exactly of the
    column's Python type (or None); anything else goes through the driver's binary
    encoding, which refuses a wrong type as it does for any parameter."""
    assert bulk._pg_mode("BIGINT", [1, None, 3]) == bulk.INTEGERS
    assert bulk._pg_mode("INTEGER", [1, "2"]) == bulk.BINARY
    assert bulk._pg_mode("INTEGER", [True, False]) == bulk.BINARY
    assert bulk._pg_mode("VARCHAR", ["a", None]) == bulk.STRINGS
    assert bulk._pg_mode("VARCHAR", ["a", 1]) == bulk.BINARY
    assert bulk._pg_mode("NUMERIC", ["10", "-3"]) == bulk.STRINGS
    assert bulk._pg_mode("NUMERIC", [Decimal("1.5")]) == bulk.BINARY
    assert bulk._pg_mode("TIMESTAMP WITH TIME ZONE", [datetime.now(UTC), None]) == bulk.TIMES
    naive = datetime(2026, 12, 4, 12, 0)
    assert bulk._pg_mode("TIMESTAMP WITH TIME ZONE", [datetime.now(UTC), naive]) == bulk.BINARY
    assert bulk._pg_mode("BOOLEAN", [True]) == bulk.BINARY
    assert bulk._pg_value(bulk.INTEGERS, [1, None, -3]) == "{1,NULL,-3}"
    assert bulk._literal_text(["a", None, 'q"', "b\\"]) == '{"a",NULL,"q\\"","b\\\\"}'
    assert bulk._literal_text(["plain", "text"]) == '{"plain","text"}'


async def test_insert_many_refuses_a_wrong_type_on_postgresql(
    sessions: SessionFactory, engine: Any
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite stores a string in an INTEGER column by its affinity")
    bad = deposit_values(1, 1, datetime.now(UTC)) | {"log_index": "1"}
    with pytest.raises(DBAPIError, match="invalid input for query argument"):
        async with sessions.begin() as s:
            await insert_many(s, DEPOSITS, {k: [v] for k, v in bad.items()})


async def test_batch_transaction_ids_follow_and_precede_plain_posts(
    sessions: SessionFactory,
) -> None:
    def legs(n: int) -> list[Leg]:
        return [Leg(ALICE, "USDT", n), Leg(VAULT, "USDT", -n)]

    async with sessions.begin() as s:
        before = await ledger.post(s, kind=TxKind.DEPOSIT, ref="before", legs=legs(1))
    async with sessions.begin() as s:
        ids = await post_many(s, [Posting(TxKind.DEPOSIT, f"b{i}", legs(2)) for i in range(5)])
    async with sessions.begin() as s:
        after = await ledger.post(s, kind=TxKind.DEPOSIT, ref="after", legs=legs(3))
    batch = [ids[f"b{i}"] for i in range(5)]
    assert batch == sorted(set(batch))
    assert before.transaction.id < batch[0] and batch[-1] < after.transaction.id
    async with sessions() as s:
        refs = dict((await s.execute(select(JournalTransaction.id, JournalTransaction.ref))).all())
    assert [refs[i] for i in batch] == [f"b{i}" for i in range(5)]


async def balances_of(sessions: SessionFactory) -> dict[tuple[str, str, str], int]:
    async with sessions() as s:
        rows = await s.execute(
            select(Account.key, Balance.asset, Balance.wallet, Balance.amount).join(
                Account, Account.id == Balance.account_id
            )
        )
        return {(k, a, w): amt for k, a, w, amt in rows.all()}


async def test_post_many_with_many_accounts_and_existing_balances(
    sessions: SessionFactory,
) -> None:
    users = [f"0x{i:040x}" for i in range(1, 301)]
    # Existing balances for half of the users, one of them near uint256 max.
    async with sessions.begin() as s:
        for i, user in enumerate(users[:150]):
            await ledger.post(
                s,
                kind=TxKind.DEPOSIT,
                ref=f"seed:{i}",
                legs=[Leg(user, "USDT", 1000 + i), Leg(VAULT, "USDT", -(1000 + i))],
                account_key=user,
            )
        big = UINT256_MAX - 20
        await ledger.post(
            s,
            kind=TxKind.DEPOSIT,
            ref="seed:big",
            legs=[Leg(users[0], "ETH", big), Leg(VAULT, "ETH", -big)],
        )
    postings = [
        Posting(
            TxKind.WITHDRAWAL_HOLD,
            f"hold:{i}",
            transfer("USDT", 10 + i, debit=(user, CROSS), credit=(user, HOLD)),
            account_key=user,
            memo=f"m{i}",
        )
        for i, user in enumerate(users)
    ]
    postings.append(
        Posting(
            TxKind.DEPOSIT,
            "three-legs",
            [Leg(users[0], "ETH", 10), Leg(users[1], "ETH", 5), Leg(VAULT, "ETH", -15)],
        )
    )
    async with sessions.begin() as s:
        ids = await post_many(s, postings)
    assert len(ids) == len(postings) and len(set(ids.values())) == len(postings)
    got = await balances_of(sessions)
    for i, user in enumerate(users):
        seeded = 1000 + i if i < 150 else 0
        assert got[(user, "USDT", CROSS)] == seeded - (10 + i)
        assert got[(user, "USDT", HOLD)] == 10 + i
    assert got[(users[0], "ETH", CROSS)] == UINT256_MAX - 10
    assert got[(users[1], "ETH", CROSS)] == 5
    async with sessions() as s:
        sums = await ledger.journal_sums(s)
        entries = await s.scalar(select(func.count()).select_from(JournalEntry))
        memo, owner = (
            await s.execute(
                select(JournalTransaction.memo, JournalTransaction.account_id).where(
                    JournalTransaction.ref == "hold:7"
                )
            )
        ).one()
        owner_key = await s.scalar(
            text("SELECT key FROM accounts WHERE id = :i").bindparams(i=owner)
        )
    assert memo == "m7" and owner_key == users[7]
    assert entries == 150 * 2 + 2 + 300 * 2 + 3
    async with sessions() as s:
        by_id = {a.id: a.key for a in await s.scalars(select(Account))}
    assert {(by_id[a], asset, w): v for (a, asset, w), v in sums.items() if v} == {
        k: v for k, v in got.items() if v
    }

    # Idempotent: the same batch again creates nothing and returns the same ids.
    async with sessions.begin() as s:
        assert await post_many(s, postings) == ids
    assert await balances_of(sessions) == got


async def test_post_many_keeps_orm_balances_in_step(sessions: SessionFactory) -> None:
    async with sessions.begin() as s:
        await ledger.post(
            s,
            kind=TxKind.DEPOSIT,
            ref="seed",
            legs=[Leg(ALICE, "USDT", 100), Leg(VAULT, "USDT", -100)],
        )
    async with sessions.begin() as s:
        account = await ledger.ensure_account(s, ALICE)
        row = await s.get(Balance, (account.id, "USDT", CROSS))
        assert row is not None and row.amount == 100
        row.amount = 150  # a pending ORM change: flushed before the batch, not lost
        await post_many(
            s, [Posting(TxKind.DEPOSIT, "p", [Leg(ALICE, "USDT", 7), Leg(VAULT, "USDT", -7)])]
        )
        fresh = await s.scalar(select(Balance.amount).where(Balance.account_id == account.id))
        assert fresh == 157
        assert row.amount == 157  # the identity-map object is not stale
    assert (await balances_of(sessions))[(ALICE, "USDT", CROSS)] == 157


async def test_post_many_with_fresh_refs_and_known_accounts(sessions: SessionFactory) -> None:
    """The intake's form: account ids given, refs declared new. A ref that was posted
    after all is refused by the unique index and nothing of the batch is written."""
    async with sessions.begin() as s:
        await post_many(
            s, [Posting(TxKind.DEPOSIT, "f1", [Leg(ALICE, "USDT", 9), Leg(VAULT, "USDT", -9)])]
        )
    async with sessions() as s:
        ids = await ledger_batch.account_ids(s, [ALICE, VAULT])
    async with sessions.begin() as s:
        got = await post_many(
            s,
            [Posting(TxKind.DEPOSIT, "f2", [Leg(ALICE, "USDT", 1), Leg(VAULT, "USDT", -1)])],
            known_accounts=ids,
            fresh_refs=True,
        )
    assert set(got) == {"f2"}
    with pytest.raises(IntegrityError):
        async with sessions.begin() as s:
            await post_many(
                s,
                [
                    Posting(TxKind.DEPOSIT, "f3", [Leg(ALICE, "USDT", 5), Leg(VAULT, "USDT", -5)]),
                    Posting(TxKind.DEPOSIT, "f1", [Leg(ALICE, "USDT", 5), Leg(VAULT, "USDT", -5)]),
                ],
                known_accounts=ids,
                fresh_refs=True,
            )
    balances = await balances_of(sessions)
    assert balances[(ALICE, "USDT", CROSS)] == 10 and balances[(VAULT, "USDT", CROSS)] == -10
    async with sessions() as s:
        refs = set((await s.scalars(select(JournalTransaction.ref))).all())
    assert refs == {"f1", "f2"}


async def test_post_pairs_checks_units_and_refs(sessions: SessionFactory) -> None:
    async with sessions.begin() as s:
        for bad in (0, -1, True, 1.5):
            with pytest.raises(UnbalancedTransaction):
                await post_pairs(s, TxKind.DEPOSIT, [Pair("r", ALICE, VAULT, "USDT", bad)])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="same ref twice"):
            await post_pairs(
                s,
                TxKind.DEPOSIT,
                [Pair("r", ALICE, VAULT, "USDT", 1), Pair("r", ALICE, VAULT, "USDT", 2)],
            )
        first = await post_pairs(
            s,
            TxKind.DEPOSIT,
            [Pair("a", ALICE, VAULT, "USDT", 5, ALICE), Pair("b", ALICE, VAULT, "ETH", 2)],
        )
    async with sessions.begin() as s:
        again = await post_pairs(
            s,
            TxKind.DEPOSIT,
            [Pair("a", ALICE, VAULT, "USDT", 5, ALICE), Pair("c", ALICE, VAULT, "USDT", 1)],
        )
    assert again["a"] == first["a"] and again["c"] not in first.values()
    got = await balances_of(sessions)
    assert got[(ALICE, "USDT", CROSS)] == 6 and got[(VAULT, "USDT", CROSS)] == -6
    assert got[(ALICE, "ETH", CROSS)] == 2


async def test_concurrent_batches_over_shared_accounts_all_post(sessions: SessionFactory) -> None:
    """Ten batches at once, each touching the same 20 new accounts in another order:
    no deadlock (PostgreSQL), nothing lost, balances equal the journal."""
    users = [f"0x{i:040x}" for i in range(1, 21)]

    async def batch(n: int) -> None:
        order = users[n:] + users[:n]
        async with sessions.begin() as s:
            await post_pairs(
                s,
                TxKind.DEPOSIT,
                [Pair(f"b{n}:{u}", u, VAULT, "USDT", 1 + n, u) for u in order],
            )

    await asyncio.wait_for(asyncio.gather(*(batch(n) for n in range(10))), timeout=60)
    got = await balances_of(sessions)
    assert all(got[(u, "USDT", CROSS)] == sum(range(1, 11)) for u in users)
    assert got[(VAULT, "USDT", CROSS)] == -20 * sum(range(1, 11))


async def test_batches_and_single_posts_on_shared_balances_do_not_deadlock(
    sessions: SessionFactory,
) -> None:
    """post_pairs batches and ledger.post at once over the same existing balance rows:
    both lock them in (account id, asset, wallet) order, so PostgreSQL never has to
    break a deadlock, and nothing is lost."""
    users = [f"0x{i:040x}" for i in range(1, 9)]
    async with sessions.begin() as s:  # every account and balance row exists
        await post_pairs(
            s, TxKind.DEPOSIT, [Pair(f"seed:{u}", u, VAULT, "USDT", 1000) for u in users]
        )

    async def batch(n: int) -> None:
        order = users[n % 8 :] + users[: n % 8]
        async with sessions.begin() as s:
            await post_pairs(
                s, TxKind.DEPOSIT, [Pair(f"b{n}:{u}", u, VAULT, "USDT", 1) for u in reversed(order)]
            )

    async def single(n: int) -> None:
        a, b = users[n % 8], users[(n + 3) % 8]
        async with sessions.begin() as s:
            await ledger.post(
                s,
                kind=TxKind.DEPOSIT,
                ref=f"s{n}",
                legs=[Leg(b, "USDT", -1), Leg(VAULT, "USDT", 2), Leg(a, "USDT", -1)],
            )

    jobs = [batch(n) for n in range(8)] + [single(n) for n in range(8)]
    await asyncio.wait_for(asyncio.gather(*jobs), timeout=60)
    got = await balances_of(sessions)
    assert sum(got[(u, "USDT", CROSS)] for u in users) == 8 * 1000 + 8 * 8 - 16
    assert got[(VAULT, "USDT", CROSS)] == -(8 * 1000) - 8 * 8 + 16


@contextlib.contextmanager
def statements_on(engine: Any) -> Iterator[list[str]]:
    """The SQL of every statement run on ``engine`` inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_reserve_ids_many_takes_each_tables_ids_in_one_statement(
    sessions: SessionFactory, engine: Any
) -> None:
    """The intake's withdrawal and hold ids in one statement: each table's ids ascending,
    after what exists; nothing reserved for a count of 0; a table given twice refused."""
    withdrawals, journal = cast(Table, Withdrawal.__table__), JOURNAL
    async with sessions.begin() as s:
        await ledger.post(
            s, kind=TxKind.DEPOSIT, ref="seed", legs=[Leg(ALICE, "USDT", 1), Leg(VAULT, "USDT", -1)]
        )
    with statements_on(engine) as statements:
        async with sessions.begin() as s:
            w_ids, tx_ids = await reserve_ids_many(s, [(withdrawals, 3), (journal, 2)])
    assert len([q for q in statements if "id" in q]) == 1, statements
    assert len(w_ids) == 3 and w_ids == sorted(set(w_ids))
    assert len(tx_ids) == 2 and tx_ids == sorted(set(tx_ids))
    async with sessions() as s:
        top = await s.scalar(select(func.max(JournalTransaction.id)))
    assert tx_ids[0] > top
    async with sessions.begin() as s:
        nothing = await reserve_ids_many(s, [(withdrawals, 0), (journal, 0)])
        some = await reserve_ids_many(s, [(withdrawals, 0), (journal, 1)])
        alone = await reserve_ids(s, journal, 1)
    assert nothing == [[], []] and some[0] == [] and len(some[1]) == 1 and len(alone) == 1
    with pytest.raises(ValueError, match="twice"):
        async with sessions.begin() as s:
            await reserve_ids_many(s, [(journal, 1), (journal, 2)])


def hold(ref: str, units: int) -> Posting:
    return Posting(
        TxKind.WITHDRAWAL_HOLD,
        ref,
        transfer("USDT", units, debit=(ALICE, CROSS), credit=(ALICE, HOLD)),
    )


async def test_post_many_with_reserved_ids_and_balances_read_under_the_lock(
    sessions: SessionFactory, engine: Any
) -> None:
    """The intake's form of post_many: journal ids reserved by the caller and the
    balances it read with the accounts locked. The ids are the ones used; on SQLite the
    given balances are added to without reading the rows again (a key not given is
    read); the result equals what a plain post_many leaves, on both databases."""
    async with sessions.begin() as s:
        await post_many(
            s,
            [
                Posting(
                    TxKind.DEPOSIT,
                    "d",
                    transfer("USDT", 100, debit=(VAULT, CROSS), credit=(ALICE, CROSS)),
                )
            ],
        )
    async with sessions() as s:
        ids = await ledger_batch.account_ids(s, [ALICE, VAULT])
    alice = ids[ALICE]
    with statements_on(engine) as statements:
        async with sessions.begin() as s:
            # Three reserved, the last two used: not what a fresh reservation would give.
            reserved = (await reserve_ids(s, JOURNAL, 3))[1:]
            got = await post_many(
                s,
                [hold("h1", 30), hold("h2", 5)],
                known_accounts=ids,
                fresh_refs=True,
                tx_ids=reserved,
                # cross as read (100); no hold row yet: 0
                balances={(alice, "USDT", CROSS): 100, (alice, "USDT", HOLD): 0},
            )
    assert got == {"h1": reserved[0], "h2": reserved[1]}
    reads = [q for q in statements if q.lstrip().upper().startswith("SELECT") and "balances" in q]
    assert reads == []
    balances = await balances_of(sessions)
    assert balances[(ALICE, "USDT", CROSS)] == 65 and balances[(ALICE, "USDT", HOLD)] == 35
    # Only one key given: the other is read (here the hold row, 35 by now).
    async with sessions.begin() as s:
        await post_many(
            s,
            [hold("h3", 1)],
            known_accounts=ids,
            fresh_refs=True,
            balances={(alice, "USDT", CROSS): 65},
        )
    balances = await balances_of(sessions)
    assert balances[(ALICE, "USDT", CROSS)] == 64 and balances[(ALICE, "USDT", HOLD)] == 36
    async with sessions() as s:
        problems = await ledger_integrity(s)
    assert problems == []
    for bad in ({"fresh_refs": False}, {"fresh_refs": True, "tx_ids": [1]}):
        with pytest.raises(ValueError, match="tx_ids"):
            async with sessions.begin() as s:
                kwargs: dict[str, Any] = {"tx_ids": [10**9, 10**9 + 1], **bad}
                await post_many(s, [hold("x1", 1), hold("x2", 1)], known_accounts=ids, **kwargs)
