"""Account state on a real database: the snapshot the rules read, the engine writes,
engine-entry idempotency, history, and the locked decision's fail-closed paths."""

from __future__ import annotations

from decimal import Decimal

import pytest

from watcher.domain.journal import CONVERSION_ACCOUNT, TxKind
from watcher.services.rebalance import NothingToRebalance, operator_ref, rebalance
from watcher.services.risk_gate import AccountStateError, isolated_transfer, withdrawal_hold
from watcher.settings import DEFAULT_CONFIG_DIR, Settings, load_settings
from watcher.store import accounts, ledger
from watcher.store.db import SessionFactory

ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
UNIT = 10**8


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(DEFAULT_CONFIG_DIR, env={})


async def _entry(
    sessions: SessionFactory, settings: Settings, asset: str, units: int, ref: str
) -> accounts.EngineEntry:
    async with sessions.begin() as s:
        return await accounts.post_engine_entry(
            s, settings, key=ALICE, asset=asset, units=units, kind=TxKind.REALIZED_PNL, ref_id=ref
        )


def test_units_convert_exactly() -> None:
    big = 2**255 + 12345
    assert str(accounts.units_to_decimal(big, 8)) == f"{big // 10**8}.{big % 10**8:08d}"
    assert accounts.decimal_to_units(accounts.units_to_decimal(big, 8), 8) == big
    assert accounts.units_to_decimal(-1, 8) == Decimal("-0.00000001")
    with pytest.raises(ValueError):
        accounts.decimal_to_units(Decimal("0.000000001"), 8)


async def test_snapshot_reads_ledger_positions_orders_prices(
    sessions: SessionFactory, settings: Settings
) -> None:
    await _entry(sessions, settings, "USDT", 123_456_789_012_345_678, "u")
    await _entry(sessions, settings, "BTC", -1, "b")
    async with sessions.begin() as s:
        await accounts.upsert_prices(
            s, {"BTCUSDT": Decimal("60000.5"), "ETHUSDT": Decimal(3000)}, {"BTC": Decimal(60000)}
        )
        await accounts.replace_positions(
            s,
            ALICE,
            [
                accounts.PositionInput("BTCUSDT", Decimal("-0.001"), Decimal(61000), 20, "cross"),
                accounts.PositionInput("ETHUSDT", Decimal("2"), Decimal(2900), 10, "isolated"),
            ],
        )
        await accounts.replace_open_orders(
            s, ALICE, [accounts.OrderInput("ETHUSDT", "isolated", Decimal("12.5"))]
        )
        await accounts.set_multi_asset_mode(s, ALICE, True)
    async with sessions() as s:
        state = await accounts.load_state(s, settings, ALICE)
    snap = state.snapshot
    assert state.exists and state.multi_asset_mode and snap.multi_asset_mode
    assert snap.balances == {"USDT": Decimal("1234567890.12345678"), "BTC": Decimal("-1E-8")}
    assert snap.negative_assets() == ("BTC",)
    assert [(p.symbol, p.size, p.margin_mode, p.isolated_wallet) for p in snap.positions] == [
        ("BTCUSDT", Decimal("-0.001"), "cross", 0),
        ("ETHUSDT", Decimal(2), "isolated", 0),
    ]
    assert [(o.symbol, o.margin_mode, o.initial_margin) for o in snap.open_orders] == [
        ("ETHUSDT", "isolated", Decimal("12.5"))
    ]
    assert snap.mark_prices["BTCUSDT"] == Decimal("60000.5")
    # configured prices (USDT 1) merged with the engine's
    assert snap.asset_prices["BTC"] == 60000 and snap.asset_prices["USDT"] == 1
    # prices upsert, positions and orders replace
    async with sessions.begin() as s:
        await accounts.upsert_prices(s, {"BTCUSDT": Decimal(59000)}, {})
        await accounts.replace_positions(s, ALICE, [])
        await accounts.replace_open_orders(s, ALICE, [])
    async with sessions() as s:
        snap = (await accounts.load_state(s, settings, ALICE)).snapshot
    assert snap.positions == () and snap.open_orders == ()
    assert snap.mark_prices == {"BTCUSDT": 59000, "ETHUSDT": 3000}


async def test_unknown_account_is_an_empty_snapshot(
    sessions: SessionFactory, settings: Settings
) -> None:
    async with sessions() as s:
        state = await accounts.load_state(s, settings, ALICE)
    assert not state.exists and state.snapshot.balances == {} and state.snapshot.positions == ()


async def test_engine_entry_idempotency_and_conflict(
    sessions: SessionFactory, settings: Settings
) -> None:
    first = await _entry(sessions, settings, "USDT", -5 * UNIT, "fee")
    again = await _entry(sessions, settings, "USDT", -5 * UNIT, "fee")
    assert first.created and not again.created
    assert first.as_dict() == again.as_dict()
    with pytest.raises(accounts.EntryConflict) as info:
        await _entry(sessions, settings, "USDT", -6 * UNIT, "fee")
    assert info.value.stored["amount"] == "-5"
    async with sessions() as s:
        assert await ledger.wallet_balances(s, ALICE, "cross") == {"USDT": -5 * UNIT}
        assert await ledger.wallet_balances(s, "system:engine", "cross") == {"USDT": 5 * UNIT}


async def test_orphan_isolated_wallet_shows_as_empty_position(
    sessions: SessionFactory, settings: Settings
) -> None:
    await _entry(sessions, settings, "USDT", 1000 * UNIT, "seed")
    async with sessions.begin() as s:
        await accounts.upsert_prices(s, {"BTCUSDT": Decimal(60000)}, {})
        await accounts.replace_positions(
            s,
            ALICE,
            [accounts.PositionInput("BTCUSDT", Decimal("0.01"), Decimal(60000), 10, "isolated")],
        )
    async with sessions.begin() as s:
        r = await isolated_transfer(
            s, settings, account=ALICE, symbol="BTCUSDT", kind="add", units=100 * UNIT, ref="a"
        )
        assert r.allowed
        await accounts.replace_positions(s, ALICE, [])
    async with sessions() as s:
        state = await accounts.load_state(s, settings, ALICE)
    (pos,) = state.snapshot.positions
    assert (pos.symbol, pos.size, pos.leverage, pos.isolated_wallet) == (
        "BTCUSDT",
        0,
        1,
        Decimal(100),
    )
    async with sessions.begin() as s:
        over = await isolated_transfer(
            s, settings, account=ALICE, symbol="BTCUSDT", kind="reduce", units=100 * UNIT + 1,
            ref="r0",
        )  # fmt: skip
        assert not over.allowed and over.reason == "INSUFFICIENT_TRANSFERABLE"
        out = await isolated_transfer(
            s, settings, account=ALICE, symbol="BTCUSDT", kind="reduce", units=100 * UNIT, ref="r"
        )
        assert out.allowed
    async with sessions() as s:
        assert (await accounts.load_state(s, settings, ALICE)).snapshot.positions == ()


async def test_missing_mark_price_fails_closed(
    sessions: SessionFactory, settings: Settings
) -> None:
    await _entry(sessions, settings, "USDT", 1000 * UNIT, "seed")
    async with sessions.begin() as s:
        await accounts.replace_positions(
            s,
            ALICE,
            [accounts.PositionInput("BTCUSDT", Decimal("0.01"), Decimal(60000), 10, "cross")],
        )
    with pytest.raises(AccountStateError, match="BTCUSDT"):
        async with sessions.begin() as s:
            await withdrawal_hold(s, settings, account=ALICE, asset="USDT", units=1, ref="w")
    async with sessions() as s:
        assert await ledger.wallet_balances(s, ALICE, "hold") == {}


async def test_withdrawal_hold_with_custom_legs_and_replay(
    sessions: SessionFactory, settings: Settings
) -> None:
    await _entry(sessions, settings, "USDT", 100 * UNIT, "seed")
    async with sessions.begin() as s:
        r = await withdrawal_hold(
            s, settings, account=ALICE, asset="USDT", units=100 * UNIT + 1, ref="w1"
        )
    assert not r.allowed and r.reason == "INSUFFICIENT_WITHDRAWABLE"
    assert r.details["maxWithdrawAmount"] == Decimal(100)
    async with sessions.begin() as s:
        r = await withdrawal_hold(
            s, settings, account=ALICE, asset="USDT", units=40 * UNIT, ref="w1"
        )
        assert r.allowed and not r.replayed and r.transaction is not None
        again = await withdrawal_hold(
            s, settings, account=ALICE, asset="USDT", units=40 * UNIT, ref="w1"
        )
        assert again.replayed and again.transaction is not None
        assert again.transaction.id == r.transaction.id
    async with sessions() as s:
        assert await ledger.wallet_balances(s, ALICE, "hold") == {"USDT": 40 * UNIT}
    # An unknown asset is a reason, not a crash.
    async with sessions.begin() as s:
        r = await withdrawal_hold(s, settings, account=ALICE, asset="DOGE", units=1, ref="w2")
    assert r.reason == "UNKNOWN_ASSET"


async def test_operator_rebalance_posts_one_balanced_conversion(
    sessions: SessionFactory, settings: Settings
) -> None:
    await _entry(sessions, settings, "BTC", 50_000_000, "btc")
    await _entry(sessions, settings, "USDT", -10_000 * UNIT, "loss")
    async with sessions.begin() as s:
        await accounts.upsert_prices(s, {}, {"BTC": Decimal(60000)})
    async with sessions.begin() as s:
        result = await rebalance(s, settings, account=ALICE, ref=operator_ref(ALICE))
    assert result.plan["changes"] == [
        {"asset": "BTC", "amount": "-0.17094018"},
        {"asset": "USDT", "amount": "10000"},
    ]
    async with sessions() as s:
        assert await ledger.wallet_balances(s, ALICE, "cross") == {"BTC": 32_905_982, "USDT": 0}
        assert await ledger.wallet_balances(s, CONVERSION_ACCOUNT, "cross") == {
            "BTC": 17_094_018,
            "USDT": -10_000 * UNIT,
        }
        items = await accounts.account_history(s, settings, ALICE)
    assert [(i.type, i.asset, i.amount) for i in items[:2]] == [
        ("auto-conversion", "BTC", "-0.17094018"),
        ("auto-conversion", "USDT", "10000"),
    ]
    with pytest.raises(NothingToRebalance):
        async with sessions.begin() as s:
            await rebalance(s, settings, account=ALICE, ref=operator_ref(ALICE))


async def test_partial_rebalance_leaves_the_rest_negative(
    sessions: SessionFactory, settings: Settings
) -> None:
    # USDT −1,000; ETH 0.1 at 3,000 × 0.975 = 292.5 USD received → USDT −707.5.
    await _entry(sessions, settings, "ETH", 10_000_000, "eth")
    await _entry(sessions, settings, "USDT", -1_000 * UNIT, "loss")
    async with sessions.begin() as s:
        await accounts.upsert_prices(s, {}, {"ETH": Decimal(3000)})
    async with sessions.begin() as s:
        result = await rebalance(s, settings, account=ALICE, ref="rb-1")
    assert result.plan["fullyCovered"] is False
    assert result.plan["negativeAssets"] == ["USDT"]
    async with sessions() as s:
        cross = await ledger.wallet_balances(s, ALICE, "cross")
    assert cross == {"ETH": 0, "USDT": -70_750_000_000}
    # nothing left to convert: refused, nothing written
    with pytest.raises(NothingToRebalance, match="no other asset"):
        async with sessions.begin() as s:
            await rebalance(s, settings, account=ALICE, ref="rb-2")
