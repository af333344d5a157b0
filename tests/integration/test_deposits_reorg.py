"""Reorgs made by anvil_reorg (anvil sends no ``removed`` logs: detection is by the
stored block hashes): shallow reorgs orphan, re-included transactions are credited
once, and a reorg after credit is reversed with an alarm that stays latched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from tests.fixtures_chain import DevnetFactory
from tests.integration.deposit_support import (
    DEPOSIT_NATIVE,
    Chain,
    addr,
    assert_ledger_consistent,
    cross,
    deposit_rows,
    make_listener,
    make_settings,
)
from watcher.chain.devnet import dev_account
from watcher.domain.journal import ENGINE_ACCOUNT, Leg, TxKind
from watcher.store import ledger
from watcher.store.alarms import AlarmKind, active_alarms
from watcher.store.db import SessionFactory
from watcher.store.models import Block, JournalTransaction

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def signed_native_deposit(chain: Chain, who: int, value: int) -> tuple[str, str]:
    """(raw tx hex, tx hash) of a depositNative signed locally, so that anvil_reorg can
    re-include the very same transaction (same hash) in the new chain."""
    account = dev_account(who)
    nonce = int(await chain.rpc("eth_getTransactionCount", account.address, "pending"), 16)
    tx: dict[str, Any] = {
        "chainId": chain.dep.chain_id,
        "nonce": nonce,
        "to": chain.dep.vault,
        "value": value,
        "data": DEPOSIT_NATIVE,
        "gas": 100_000,
        "maxFeePerGas": 20 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    signed = account.sign_transaction(tx)
    return "0x" + signed.raw_transaction.hex(), signed.hash.to_0x_hex()


async def test_shallow_reorg_orphans_a_pending_deposit_for_good(
    tmp_path: Path, devnet_factory: DevnetFactory, sessions: SessionFactory, db_url: str, http
) -> None:
    async with devnet_factory() as (node, dep):
        chain = Chain(node.url, dep, http)
        listener = make_listener(
            make_settings(tmp_path, [("devnet", dep, 3)], db_url), "devnet", sessions
        )
        await chain.receipt(await chain.deposit_native(2, 10**18))
        await chain.mine(1)
        await listener.tick()
        assert [r.state for r in await deposit_rows(sessions)] == ["pending"]  # 2 of 3

        await chain.rpc("anvil_reorg", 2, [])  # same height, the deposit is gone
        await listener.tick()
        rows = await deposit_rows(sessions)
        assert [r.state for r in rows] == ["orphaned"]
        for _ in range(3):
            await chain.mine(2)
            await listener.tick()
        assert [r.state for r in await deposit_rows(sessions)] == ["orphaned"]
        assert await cross(sessions, addr(2)) == {}
        assert listener.metrics.reorgs.labels("devnet")._value.get() == 1
        async with sessions() as s:
            assert await active_alarms(s) == []  # 2 blocks < 3 confirmations: not deep


async def test_reincluded_transaction_is_credited_once(
    tmp_path: Path, devnet_factory: DevnetFactory, sessions: SessionFactory, db_url: str, http
) -> None:
    async with devnet_factory() as (node, dep):
        chain = Chain(node.url, dep, http)
        listener = make_listener(
            make_settings(tmp_path, [("devnet", dep, 3)], db_url), "devnet", sessions
        )
        raw, tx_hash = await signed_native_deposit(chain, 3, 5 * 10**17)
        await chain.rpc("eth_sendRawTransaction", raw)
        first = int((await chain.receipt(tx_hash))["blockNumber"], 16)
        await chain.mine(1)
        await listener.tick()
        [row] = await deposit_rows(sessions)
        assert (row.state, row.block_number) == ("pending", first)

        # Replace blocks first and first+1; the same transaction lands in first+1'.
        await chain.rpc("anvil_reorg", 2, [[raw, 1]])
        receipt = await chain.receipt(tx_hash)
        assert int(receipt["blockNumber"], 16) == first + 1
        await listener.tick()
        [row] = await deposit_rows(sessions)
        assert (row.state, row.block_number, row.tx_hash) == ("pending", first + 1, tx_hash)
        assert row.block_hash == receipt["blockHash"]

        await chain.mine(1)  # 2 confirmations in the new chain
        await listener.tick()
        assert (await deposit_rows(sessions))[0].state == "pending"
        await chain.mine(1)
        await listener.tick()
        await chain.mine(3)
        await listener.tick()
        [row] = await deposit_rows(sessions)
        assert row.state == "credited"
        assert await cross(sessions, addr(3)) == {"ETH": 50_000_000}
        async with sessions() as s:
            kinds = [t.kind for t in await s.scalars(select(JournalTransaction))]
        assert kinds == ["deposit"]
        await assert_ledger_consistent(sessions)


async def test_reorg_after_credit_reverses_and_latches_an_alarm(
    tmp_path: Path, devnet_factory: DevnetFactory, sessions: SessionFactory, db_url: str, http
) -> None:
    async with devnet_factory() as (node, dep):
        chain = Chain(node.url, dep, http)
        listener = make_listener(
            make_settings(tmp_path, [("devnet", dep, 3)], db_url), "devnet", sessions
        )
        await chain.receipt(await chain.deposit_native(4, 2 * 10**18))
        await chain.mine(2)
        await listener.tick()
        assert [r.state for r in await deposit_rows(sessions)] == ["credited"]
        assert await cross(sessions, addr(4)) == {"ETH": 200_000_000}
        # The user trades the deposit away before the chain changes its mind.
        async with sessions.begin() as s:
            await ledger.post(
                s,
                kind=TxKind.COMMISSION,
                ref="engine:spent",
                legs=[Leg(addr(4), "ETH", -150_000_000), Leg(ENGINE_ACCOUNT, "ETH", 150_000_000)],
                account_key=addr(4),
            )

        await chain.rpc("anvil_reorg", 4, [])  # deeper than the 3-confirmation rule
        await listener.tick()
        [row] = await deposit_rows(sessions)
        assert row.state == "reversed"
        assert await cross(sessions, addr(4)) == {"ETH": -150_000_000}  # negative now
        async with sessions() as s:
            alarms = await active_alarms(s)
            kinds = sorted(t.kind for t in await s.scalars(select(JournalTransaction)))
        assert [a.kind for a in alarms] == [AlarmKind.FINALITY_VIOLATED]
        assert alarms[0].details["reversed"] == [f"{row.tx_hash}:{row.log_index}"]
        assert kinds == ["commission", "deposit", "deposit_reversal"]

        # The alarm stays latched, the deposit stays reversed, the ledger balances.
        for _ in range(2):
            await chain.mine(3)
            await listener.tick()
        async with sessions() as s:
            assert [a.kind for a in await active_alarms(s)] == [AlarmKind.FINALITY_VIOLATED]
            numbers = sorted((await s.scalars(select(Block.number))).all())
        assert [r.state for r in await deposit_rows(sessions)] == ["reversed"]
        assert await cross(sessions, addr(4)) == {"ETH": -150_000_000}
        assert numbers == list(range(numbers[0], numbers[-1] + 1))  # a gap-free window
        await assert_ledger_consistent(sessions)
