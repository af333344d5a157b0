"""The locked decision under load, on SQLite and PostgreSQL: 50 concurrent requests
whose sum exceeds the limit, each in its own DB transaction; the ledger never goes
past the limit, and it still balances."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import select

from watcher.domain.journal import TxKind
from watcher.services.risk_gate import GateResult, isolated_transfer, withdrawal_hold
from watcher.settings import DEFAULT_CONFIG_DIR, Settings, load_settings
from watcher.store import accounts, ledger
from watcher.store.db import SessionFactory
from watcher.store.models import Balance

ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
UNIT = 10**8  # USDT ledger precision 8


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(DEFAULT_CONFIG_DIR, env={})


async def _seed(sessions: SessionFactory, settings: Settings, *, isolated: bool) -> None:
    async with sessions.begin() as s:
        await accounts.post_engine_entry(
            s,
            settings,
            key=ALICE,
            asset="USDT",
            units=10_000 * UNIT,
            kind=TxKind.REALIZED_PNL,
            ref_id="seed",
        )
        await accounts.upsert_prices(s, {"BTCUSDT": Decimal(60000)}, {})
        if isolated:
            # 0.1 BTC isolated at 60,000, 10×: IM 600 → transfer-in max 9,400.
            await accounts.replace_positions(
                s,
                ALICE,
                [accounts.PositionInput("BTCUSDT", Decimal("0.1"), Decimal(60000), 10, "isolated")],
            )


async def _ledger_is_consistent(sessions: SessionFactory) -> None:
    async with sessions() as s:
        sums = await ledger.journal_sums(s)
        found = await s.scalars(select(Balance))
        rows = {(b.account_id, b.asset, b.wallet): b.amount for b in found}
    assert {k: v for k, v in rows.items() if v} == {k: v for k, v in sums.items() if v}
    per_asset: dict[str, int] = {}
    for (_, asset, _), amount in sums.items():
        per_asset[asset] = per_asset.get(asset, 0) + amount
    assert all(v == 0 for v in per_asset.values())


async def test_fifty_concurrent_isolated_adds_never_pass_the_limit(
    sessions: SessionFactory, settings: Settings
) -> None:
    await _seed(sessions, settings, isolated=True)

    async def add(i: int) -> GateResult:
        async with sessions.begin() as s:
            return await isolated_transfer(
                s,
                settings,
                account=ALICE,
                symbol="BTCUSDT",
                kind="add",
                units=200 * UNIT,
                ref=f"iso:{i}",
            )

    results = await asyncio.gather(*(add(i) for i in range(50)))
    # 50 × 200 = 10,000 asked against a limit of 9,400 − 200k after k adds: 47 fit.
    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 47
    assert {r.reason for r in results if not r.allowed} == {"INSUFFICIENT_TRANSFERABLE"}
    async with sessions() as s:
        balances = await ledger.balances(s, ALICE)
        state = await accounts.load_state(s, settings, ALICE)
    assert balances[("USDT", "iso:BTCUSDT")] == 9_400 * UNIT
    assert balances[("USDT", "cross")] == 600 * UNIT
    # Every rejected decision saw a state in which its 200 did not fit.
    for r in results:
        if not r.allowed:
            assert Decimal(str(r.details["maxTransferAmount"])) < 200
    assert state.isolated == {"BTCUSDT": 9_400 * UNIT}
    await _ledger_is_consistent(sessions)


async def test_fifty_concurrent_withdrawal_holds_never_overdraw(
    sessions: SessionFactory, settings: Settings
) -> None:
    await _seed(sessions, settings, isolated=False)

    async def hold(i: int) -> GateResult:
        async with sessions.begin() as s:
            return await withdrawal_hold(
                s, settings, account=ALICE, asset="USDT", units=300 * UNIT, ref=f"w:{i}"
            )

    results = await asyncio.gather(*(hold(i) for i in range(50)))
    assert sum(r.allowed for r in results) == 33  # 33 × 300 = 9,900 ≤ 10,000 < 34 × 300
    async with sessions() as s:
        balances = await ledger.balances(s, ALICE)
    assert balances[("USDT", "hold")] == 9_900 * UNIT
    assert balances[("USDT", "cross")] == 100 * UNIT
    await _ledger_is_consistent(sessions)


async def test_concurrent_replays_of_one_ref_post_once(
    sessions: SessionFactory, settings: Settings
) -> None:
    await _seed(sessions, settings, isolated=False)

    async def hold() -> GateResult:
        async with sessions.begin() as s:
            return await withdrawal_hold(
                s, settings, account=ALICE, asset="USDT", units=1_000 * UNIT, ref="w:same"
            )

    results = await asyncio.gather(*(hold() for _ in range(10)))
    assert all(r.allowed for r in results)
    assert sum(not r.replayed for r in results) == 1
    assert len({r.transaction.id for r in results if r.transaction}) == 1
    async with sessions() as s:
        assert (await ledger.balances(s, ALICE))[("USDT", "hold")] == 1_000 * UNIT
