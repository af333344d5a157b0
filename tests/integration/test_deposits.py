"""The deposit listener on real anvil nodes with the real vault and tokens: crediting
at exactly N confirmations with exact ledger amounts, and two networks at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures_chain import DevnetFactory
from tests.integration.deposit_support import (
    Chain,
    addr,
    assert_ledger_consistent,
    cross,
    deposit_rows,
    make_listener,
    make_settings,
    vault_cross,
)
from watcher.metrics import Metrics
from watcher.store.db import SessionFactory
from watcher.store.deposits import deposit_history
from watcher.store.models import NetworkCursor

USDT_AMOUNT = 1_234_567_891_234_567_891  # 18 decimals: 1.23456789 credited, dust 1234567891
USDC_AMOUNT = 2_500_000  # 6 decimals: 2.5
ETH_AMOUNT = 10**17  # 0.1 ETH


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_credits_at_exactly_n_confirmations_with_exact_amounts(
    tmp_path: Path, devnet_factory: DevnetFactory, sessions: SessionFactory, db_url: str, http
) -> None:
    async with devnet_factory(chain_id=31337) as (node, dep):
        chain = Chain(node.url, dep, http)
        settings = make_settings(tmp_path, [("devnet", dep, 3)], db_url)
        metrics = Metrics()
        listener = make_listener(settings, "devnet", sessions, metrics=metrics, http=http)
        usdt, usdc = dep.tokens["USDT"].address, dep.tokens["USDC"].address
        other = await chain.deploy_token("OTHER", 18, holders=[4])
        for who, token in ((2, usdt), (3, usdc), (2, usdc), (4, other)):
            await chain.approve(who, token)

        await listener.tick()  # backfill from the deployment block: nothing yet
        await chain.automine(False)
        txs = [
            await chain.deposit_token(2, usdt, USDT_AMOUNT),
            await chain.deposit_token(3, usdc, USDC_AMOUNT),
            await chain.deposit_token(2, usdc, 1),  # 0.000001 USDC
            await chain.deposit_native(5, ETH_AMOUNT),
            await chain.deposit_native(6, 7),  # 7 wei: all dust, credited as 0
            await chain.deposit_token(4, other, 10**18),  # not configured
        ]
        block = await chain.mine(1)
        await chain.automine(True)
        for tx in txs:
            await chain.receipt(tx)

        await listener.tick()  # 1 confirmation
        rows = await deposit_rows(sessions)
        assert [r.state for r in rows] == ["pending"] * 5 + ["unsupported"]
        assert {r.block_number for r in rows} == {block}
        async with sessions() as s:
            history = await deposit_history(s, addr(2).lower(), settings)
        assert [h["state"] for h in history] == ["pending", "pending"]
        first = next(h for h in history if h["asset"] == "USDT")
        assert first["amount"] == "1.23456789"
        assert (first["confirmations"], first["requiredConfirmations"]) == (1, 3)
        assert first["etaSeconds"] == 2 and first["chainId"] == 31337
        assert first["txHash"] == txs[0]

        await chain.mine(1)
        await listener.tick()  # N - 1 = 2 confirmations: still nothing credited
        assert {r.state for r in await deposit_rows(sessions)} == {"pending", "unsupported"}
        assert await cross(sessions, addr(2)) == {}

        await chain.mine(1)
        await listener.tick()  # N = 3: credited
        rows = await deposit_rows(sessions)
        assert [r.state for r in rows] == ["credited"] * 5 + ["unsupported"]
        assert await cross(sessions, addr(2)) == {"USDT": 123_456_789, "USDC": 100}
        assert await cross(sessions, addr(3)) == {"USDC": 250_000_000}
        assert await cross(sessions, addr(5)) == {"ETH": 10_000_000}
        assert await cross(sessions, addr(6)) == {}
        assert await vault_cross(sessions, 31337) == {
            "USDT": -123_456_789,
            "USDC": -250_000_100,
            "ETH": -10_000_000,
        }
        usdt_row = next(r for r in rows if r.asset == "USDT")
        assert (usdt_row.ledger_amount, usdt_row.dust) == (123_456_789, 1_234_567_891)
        dust_row = next(r for r in rows if r.amount == 7)
        assert (dust_row.ledger_amount, dust_row.dust, dust_row.credit_tx_id) == (0, 7, None)
        await assert_ledger_consistent(sessions)

        # Idle ticks and a replay of the whole range change nothing.
        await chain.mine(2)
        await listener.tick()
        async with sessions.begin() as s:
            cursor = await s.get(NetworkCursor, 31337)
            assert cursor is not None and cursor.backfill_from is None
            cursor.scanned_block = dep.deploy_block - 1
        replay = make_listener(settings, "devnet", sessions, http=http)
        await replay.tick()
        assert await cross(sessions, addr(2)) == {"USDT": 123_456_789, "USDC": 100}
        assert len(await deposit_rows(sessions)) == 6
        await assert_ledger_consistent(sessions)

        async with sessions() as s:
            history = await deposit_history(s, addr(2), settings)
        assert [(h["state"], h["confirmations"], h["etaSeconds"]) for h in history] == [
            ("credited", 3, 0),
            ("credited", 3, 0),
        ]
        text = metrics.render().decode()
        assert 'watcher_deposits_total{event="credited",network="devnet"} 5.0' in text
        assert 'watcher_deposits_total{event="unsupported",network="devnet"} 1.0' in text
        assert "watcher_rpc_calls_total" in text
        assert listener.health_reasons() == []


async def test_two_networks_credit_independently_into_one_ledger(
    tmp_path: Path, devnet_factory: DevnetFactory, sessions: SessionFactory, db_url: str, http
) -> None:
    async with (
        devnet_factory(chain_id=31337) as (node_a, dep_a),
        devnet_factory(chain_id=31338) as (node_b, dep_b),
    ):
        a, b = Chain(node_a.url, dep_a, http), Chain(node_b.url, dep_b, http)
        settings = make_settings(tmp_path, [("alpha", dep_a, 2), ("beta", dep_b, 4)], db_url)
        la = make_listener(settings, "alpha", sessions, http=http)
        lb = make_listener(settings, "beta", sessions, http=http)
        await a.approve(2, dep_a.tokens["USDC"].address)
        await b.approve(2, dep_b.tokens["USDC"].address)
        await a.receipt(await a.deposit_token(2, dep_a.tokens["USDC"].address, 1_000_000))
        await b.receipt(await b.deposit_token(2, dep_b.tokens["USDC"].address, 3_000_000))
        await b.receipt(await b.deposit_native(2, 10**18))

        await la.tick()
        await lb.tick()
        await a.mine(1)  # alpha: 2 confirmations → credited
        await b.mine(1)  # beta: 2 (native) and 3 (USDC) of 4
        await la.tick()
        await lb.tick()
        assert await cross(sessions, addr(2)) == {"USDC": 100_000_000}
        await b.mine(1)  # beta USDC has 4, native 3
        await lb.tick()
        assert await cross(sessions, addr(2)) == {"USDC": 400_000_000}
        await b.mine(1)
        await lb.tick()
        assert await cross(sessions, addr(2)) == {"USDC": 400_000_000, "ETH": 100_000_000}
        assert await vault_cross(sessions, 31337) == {"USDC": -100_000_000}
        assert await vault_cross(sessions, 31338) == {"USDC": -300_000_000, "ETH": -100_000_000}
        assert {(r.chain_id, r.state) for r in await deposit_rows(sessions)} == {
            (31337, "credited"),
            (31338, "credited"),
        }
        await assert_ledger_consistent(sessions)
