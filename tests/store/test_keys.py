"""Rows by composite key (store/keys.py) on SQLite and PostgreSQL: exactly the rows of
the keys asked for (missing keys skipped, duplicates once, uint256 amounts typed), the
intake's replay lookup by (account, nonce) through it, and on SQLite a plan that
searches the index per key instead of scanning the table."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table

from tests.store.test_withdrawals_store import USER, funded, row
from watcher.domain.journal import Leg, TxKind
from watcher.store import withdrawals as repo
from watcher.store.db import SessionFactory, create_engine
from watcher.store.keys import KeyColumn, by_keys, keys_params, select_by_keys
from watcher.store.ledger_batch import Posting, post_many
from watcher.store.migrate import upgrade
from watcher.store.models import Account, Balance, Withdrawal

BIG = 2**256 - 1 - 5
KEY = (
    KeyColumn("account_id", "bigint[]"),
    KeyColumn("asset", "text[]"),
    KeyColumn("wallet", "text[]"),
)


async def _accounts(sessions: SessionFactory, n: int) -> dict[str, int]:
    keys = [f"0x{i:040x}" for i in range(1, n + 1)]
    async with sessions.begin() as s:
        await post_many(
            s,
            [
                Posting(
                    kind=TxKind.DEPOSIT,
                    ref=f"k:{key}",
                    legs=[Leg("system:vault:1", "USDT", -BIG), Leg(key, "USDT", BIG)]
                    if i == 0
                    else [Leg("system:vault:1", "ETH", -i), Leg(key, "ETH", i)],
                    account_key=key,
                )
                for i, key in enumerate(keys)
            ],
        )
    async with sessions() as s:
        rows = (await s.execute(Account.__table__.select())).all()  # type: ignore[attr-defined]
    return {r.key: r.id for r in rows}


async def test_rows_of_the_keys_asked_for(sessions: SessionFactory) -> None:
    ids = await _accounts(sessions, 5)
    first, second, third = (ids[f"0x{i:040x}"] for i in (1, 2, 3))
    c = cast(Table, Balance.__table__).c
    wanted = [
        (first, "USDT", "cross"),
        (second, "ETH", "cross"),
        (second, "ETH", "cross"),  # asked twice: returned once
        (third, "USDT", "cross"),  # no such balance
        (10**9, "ETH", "cross"),  # no such account
    ]
    async with sessions() as s:
        rows = await select_by_keys(
            s, "balances", KEY, [c.account_id, c.asset, c.wallet, c.amount], wanted
        )
        assert await select_by_keys(s, "balances", KEY, [c.amount], []) == []
    got = sorted(tuple(r) for r in rows)
    assert got == sorted([(first, "USDT", "cross", BIG), (second, "ETH", "cross", 1)])
    assert all(type(r[3]) is int for r in rows)


async def test_replay_lookup_by_account_and_nonce(sessions: SessionFactory) -> None:
    account_id = await funded(sessions)
    async with sessions.begin() as s:
        s.add_all([row(account_id, nonce=n) for n in (1, 2, 2**200)])
    other = "0x00000000000000000000000000000000000000B2"
    async with sessions() as s:
        found = await repo.find_by_account_nonces(
            s, [(USER, 2), (USER, 2**200), (USER, 3), (other, 1), (USER, 2)]
        )
        assert await repo.find_by_account_nonces(s, []) == {}
    assert sorted(found) == [(USER, 2), (USER, 2**200)]
    assert all(isinstance(w, Withdrawal) for w in found.values())
    assert found[(USER, 2**200)].nonce == 2**200


def _plan(db: Path, sql: str, params: dict[str, Any]) -> str:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    finally:
        conn.close()
    return " | ".join(r[-1] for r in rows)


async def test_sqlite_searches_the_index_once_per_key(tmp_path: Path) -> None:
    db = tmp_path / "plan.db"
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    await upgrade(engine)
    await engine.dispose()
    balances = by_keys("sqlite", "balances", KEY, ["amount"])
    plan = _plan(db, str(balances), keys_params("sqlite", 3, [(1, "USDT", "cross")] * 2))
    assert "SEARCH t USING INDEX" in plan and "(account_id=? AND asset=? AND wallet=?)" in plan
    assert "SCAN t" not in plan, plan
    replay = by_keys(
        "sqlite",
        "withdrawals",
        (KeyColumn("account", "text[]"), KeyColumn("nonce", "text[]", "numeric[]")),
        ["id"],
    )
    plan = _plan(db, str(replay), keys_params("sqlite", 2, [(USER, "1")]))
    assert "(account=? AND nonce=?)" in plan and "SCAN t" not in plan, plan
