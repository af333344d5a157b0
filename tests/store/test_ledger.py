"""The ledger on a real database: exact uint256 round trips, balanced postings,
idempotency on ref, and rollback leaving nothing behind."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from watcher.domain.journal import Leg, TxKind, UnbalancedTransaction, vault_account
from watcher.store import ledger
from watcher.store.db import SessionFactory
from watcher.store.models import Account, Deposit, JournalEntry, JournalTransaction

ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
UINT256_MAX = 2**256 - 1


@pytest.mark.parametrize("amount", [0, 1, 2**63, 2**64 + 1, 10**30 + 7, UINT256_MAX])
async def test_uint256_round_trips_exactly(sessions: SessionFactory, amount: int) -> None:
    async with sessions.begin() as s:
        s.add(
            Deposit(
                chain_id=1,
                tx_hash="0x" + "ab" * 32,
                log_index=0,
                block_number=1,
                block_hash="0x" + "cd" * 32,
                account=ALICE,
                token=ALICE,
                amount=amount,
                state="pending",
            )
        )
    async with sessions() as s:
        got = await s.scalar(select(Deposit.amount))
    assert got == amount and isinstance(got, int)


async def test_posting_moves_balances_and_is_idempotent(sessions: SessionFactory) -> None:
    vault = vault_account(31337)
    legs = [Leg(ALICE, "USDT", 12_345_678_901), Leg(vault, "USDT", -12_345_678_901)]
    async with sessions.begin() as s:
        first = await ledger.post(s, kind=TxKind.DEPOSIT, ref="dep:1", legs=legs, account_key=ALICE)
    async with sessions.begin() as s:
        again = await ledger.post(s, kind=TxKind.DEPOSIT, ref="dep:1", legs=legs, account_key=ALICE)
    assert first.created and not again.created
    assert again.transaction.id == first.transaction.id
    async with sessions() as s:
        assert await ledger.wallet_balances(s, ALICE, "cross") == {"USDT": 12_345_678_901}
        assert await ledger.wallet_balances(s, vault, "cross") == {"USDT": -12_345_678_901}
        assert await s.scalar(select(func.count()).select_from(JournalEntry)) == 2
        sums = await ledger.journal_sums(s)
    assert sorted(sums.values()) == [-12_345_678_901, 12_345_678_901]


@pytest.mark.parametrize(
    "legs",
    [
        [Leg(ALICE, "USDT", 5), Leg("system:engine", "USDT", -4)],
        [Leg(ALICE, "USDT", 5), Leg("system:engine", "USDC", -5)],
        [Leg(ALICE, "USDT", 5)],
        [Leg(ALICE, "USDT", 0), Leg("system:engine", "USDT", 0)],
    ],
)
async def test_unbalanced_transaction_writes_nothing(
    sessions: SessionFactory, legs: list[Leg]
) -> None:
    with pytest.raises(UnbalancedTransaction):
        async with sessions.begin() as s:
            await ledger.post(s, kind=TxKind.COMMISSION, ref="bad", legs=legs, account_key=ALICE)
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(JournalTransaction)) == 0
        assert await ledger.balances(s, ALICE) == {}


async def test_failure_mid_transaction_rolls_back_everything(sessions: SessionFactory) -> None:
    legs = [Leg(ALICE, "USDT", 7), Leg("system:engine", "USDT", -7)]
    with pytest.raises(RuntimeError):
        async with sessions.begin() as s:
            await ledger.post(
                s, kind=TxKind.REALIZED_PNL, ref="pnl:1", legs=legs, account_key=ALICE
            )
            raise RuntimeError("crash after posting, before commit")
    async with sessions() as s:
        assert await ledger.balances(s, ALICE) == {}
        assert await s.scalar(select(func.count()).select_from(JournalEntry)) == 0


async def test_create_accounts_creates_only_the_missing_ones(sessions: SessionFactory) -> None:
    bob = "0x" + "b0" * 20
    async with sessions.begin() as s:
        await ledger.create_accounts(s, [ALICE])
    async with sessions() as s:
        alice_id = await s.scalar(select(Account.id).where(Account.key == ALICE))
    async with sessions.begin() as s:
        # Duplicates, an existing key and a system account in one call.
        await ledger.create_accounts(s, [bob, ALICE, "system:fees", bob])
    async with sessions() as s:
        rows = {a.key: a for a in await s.scalars(select(Account))}
    assert sorted(rows) == sorted([ALICE, bob, "system:fees"])
    assert rows[ALICE].id == alice_id  # untouched
    assert (rows[bob].kind, rows["system:fees"].kind) == ("user", "system")
    assert rows[bob].version == 0 and rows[bob].multi_asset_mode is False


async def test_lock_accounts_from_concurrent_batches_bumps_each_once(
    sessions: SessionFactory,
) -> None:
    """Five rounds of twelve batches at once over twelve accounts (half of them new at
    first), each naming eight in another order: none deadlocks (PostgreSQL locks in
    key order; unordered, a round deadlocks about every other run), each batch gets
    every account it named, and each account's version counts the batches that
    locked it."""
    keys = [f"0x{i:040x}" for i in range(1, 13)]
    async with sessions.begin() as s:
        await ledger.create_accounts(s, keys[::2])
    named: list[list[str]] = []
    for n in range(12):
        order = keys[n:] + keys[:n]
        named.append(order[:8] if n % 2 else list(reversed(order[:8])))

    async def batch(wanted: list[str]) -> None:
        async with sessions.begin() as s:
            locked = await ledger.lock_accounts(s, wanted)
            assert sorted(locked) == sorted(wanted)
            assert all(locked[k].key == k for k in wanted)
            await asyncio.sleep(0.01)  # hold the locks while the others queue

    for _ in range(5):
        await asyncio.wait_for(asyncio.gather(*(batch(w) for w in named)), timeout=60)
    async with sessions() as s:
        versions = dict((await s.execute(select(Account.key, Account.version))).all())
    assert versions == {k: 5 * sum(k in w for w in named) for k in keys}
