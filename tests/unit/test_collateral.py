"""Collateral and per-asset max withdrawable in single- and multi-asset mode (DOMAIN.md §4)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tests.unit.test_transfers import ASSETS, btc, cross_order, eth, snapshot
from watcher.domain.account import AccountSnapshot, AssetInfo, Position, SnapshotError
from watcher.domain.collateral import (
    account_breakdown,
    account_isolated_max_transfer_in,
    collateral_value,
    cross_wallet_balance,
    max_withdrawable,
    total_collateral_value,
)

PRICES = {"BTC": "60000", "ETH": "3000", "POL": "0.5", "USDC": "1"}


@pytest.mark.parametrize(
    ("asset", "qty", "value"),
    [
        ("USDT", "10000", "9999"),  # 0.9999 haircut
        ("BTC", "0.5", "28500"),  # 0.5 × 60,000 × 0.95
        ("ETH", "2", "5700"),
        ("POL", "1000", "450"),  # 1,000 × 0.5 × 0.9
        ("USDC", "0", "0"),
        ("USDT", "-100", "-100"),  # negative: full value, no haircut
        ("BTC", "-0.01", "-600"),
        ("POL", "-10", "-5"),
        ("BTC", "0.00000001", "0.00057"),
    ],
)
def test_collateral_value(asset: str, qty: str, value: str) -> None:
    snap = snapshot({asset: qty}, prices=PRICES, multi=True)
    assert collateral_value(snap, asset) == D(value)


@pytest.mark.parametrize(
    ("balances", "total"),
    [
        ({"USDT": "10000", "BTC": "0.5"}, "38499"),
        ({"USDT": "10000", "BTC": "0.5", "ETH": "2"}, "44199"),
        ({"USDT": "-100", "BTC": "0.5"}, "28400"),
        ({"USDT": "100", "BTC": "-0.01", "POL": "1000"}, "-50.01"),  # 99.99 − 600 + 450
    ],
)
def test_total_collateral(balances: dict[str, str], total: str) -> None:
    snap = snapshot(balances, prices=PRICES, multi=True)
    assert total_collateral_value(snap) == D(total)
    assert cross_wallet_balance(snap) == D(total)


def test_single_mode_cwb_is_settlement_balance() -> None:
    snap = snapshot({"USDT": "10000", "BTC": "0.5"}, prices=PRICES)
    assert cross_wallet_balance(snap) == D(10000)


# (balances, positions, marks, asset, expected quantity, limited_by)
MULTI_CASES = [
    pytest.param(
        {"USDT": "10000", "BTC": "0.5"}, [], {}, "BTC", "0.5", "balance", id="no-positions-btc",
    ),
    pytest.param(
        {"USDT": "10000", "BTC": "0.5"}, [], {}, "USDT", "10000", "balance", id="no-positions-usdt",
    ),
    pytest.param(
        # CWB 999.9 + 28,500 = 29,499.9; BTC long 1 @ 60k 10×: MM 250, IM 6,000
        # → B = 23,499.9 → 23,499.9 / 57,000 = 0.412278947… → 0.41227894
        {"USDT": "1000", "BTC": "0.5"}, [btc("1", "60000", 10)], {"BTCUSDT": "60000"},
        "BTC", "0.41227894", "margin", id="btc-haircut-margin",
    ),
    pytest.param(
        {"USDT": "1000", "BTC": "0.5"}, [btc("1", "60000", 10)], {"BTCUSDT": "60000"},
        "USDT", "1000", "balance", id="usdt-balance-binds",
    ),
    pytest.param(
        # CWB 19,998; IM 12,000 → B = 7,998 → 7,998 / 0.9999 = 7,998.799879… → 7,998.79987998
        {"USDT": "20000"}, [btc("1", "60000", 5)], {"BTCUSDT": "60000"},
        "USDT", "7998.79987998", "margin", id="usdt-haircut-margin",
    ),
    pytest.param(
        # ETH 3 @ 3,000 = 8,550 collateral; ETH long 10 @ 3,000 10× → notional 30,000:
        # MM 0.65% × 30,000 − 15 = 180, IM 3,000 → B = 5,550 → 5,550 / 2,850 = 1.947368421…
        {"ETH": "3"}, [eth("10", "3000", 10)], {"ETHUSDT": "3000"},
        "ETH", "1.94736842", "margin", id="eth-margin",
    ),
    pytest.param(
        # BTC 0.1 (5,700); long 0.1 50k → 60k 10×: IM 600, uPnL +1,000, MM 24 →
        # A = 5,676 < B = 6,100 → 5,676 / 57,000 = 0.09957894…
        {"BTC": "0.1"}, [btc("0.1", "50000", 10)], {"BTCUSDT": "60000"},
        "BTC", "0.09957894", "margin", id="profit-not-withdrawable",
    ),
    pytest.param(
        # CWB 99.99; long 1 60k → 55k 100×: uPnL −5,000 → headroom negative → 0
        {"USDT": "100"}, [btc("1", "60000", 100)], {"BTCUSDT": "55000"},
        "USDT", "0", "margin", id="negative-headroom",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("balances", "positions", "marks", "asset", "expected", "limited_by"), MULTI_CASES
)
def test_multi_asset_max_withdrawable(
    balances: dict[str, str],
    positions: list[Position],
    marks: dict[str, str],
    asset: str,
    expected: str,
    limited_by: str,
) -> None:
    snap = snapshot(balances, positions, [], marks, PRICES, multi=True)
    quote = max_withdrawable(snap, asset)
    assert quote.quantity == D(expected)
    assert quote.limited_by == limited_by


def test_pol_haircut_with_cross_order() -> None:
    # POL 1,000 @ 0.5 × 0.9 = 450 and USDT 100 → 549.99; cross order IM 300 → B = 249.99
    # → POL max 249.99 / 0.45 = 555.5333… (balance 1,000 is larger) → 555.53333333
    snap = snapshot(
        {"USDT": "100", "POL": "1000"}, [], [cross_order("300")], {}, PRICES, multi=True
    )
    quote = max_withdrawable(snap, "POL")
    assert quote.quantity == D("555.53333333")
    assert quote.limited_by == "margin"


def test_withdrawing_the_multi_max_leaves_headroom_non_negative() -> None:
    snap = snapshot(
        {"USDT": "1000", "BTC": "0.5"}, [btc("1", "60000", 10)], [], {"BTCUSDT": "60000"},
        PRICES, multi=True,
    )  # fmt: skip
    q = max_withdrawable(snap, "BTC").quantity
    after = account_breakdown(snap.with_balance("BTC", D("0.5") - q))
    assert min(after.a, after.b) >= 0
    worse = account_breakdown(snap.with_balance("BTC", D("0.5") - q - D("0.00000001")))
    assert min(worse.a, worse.b) < 0


def test_zero_ratio_asset_is_not_collateral() -> None:
    assets = {**ASSETS, "XYZ": AssetInfo("XYZ", 4, D(0), D("0.5"))}
    snap = AccountSnapshot(
        balances={"XYZ": D("50.12345")},
        positions=(),
        open_orders=(),
        mark_prices={},
        asset_prices={"XYZ": D(2)},
        brackets={},
        assets=assets,
        multi_asset_mode=True,
    )
    assert collateral_value(snap, "XYZ") == 0
    quote = max_withdrawable(snap, "XYZ")
    assert quote.quantity == D("50.1234")  # balance floored to 4 decimals
    assert quote.limited_by == "balance"


def test_single_mode_other_assets_withdraw_their_balance() -> None:
    snap = snapshot(
        {"USDT": "5000", "BTC": "0.3"}, [btc("1", "60000", 10)], [], {"BTCUSDT": "60000"}
    )
    assert max_withdrawable(snap, "BTC").quantity == D("0.3")
    assert max_withdrawable(snap, "BTC").limited_by == "balance"
    # USDT: A = 5,000 − 250, B = 5,000 − 6,000 < 0 → 0
    assert max_withdrawable(snap, "USDT").quantity == D(0)
    assert max_withdrawable(snap, "ETH").quantity == D(0)  # never held


def test_any_negative_balance_zeroes_every_quote() -> None:
    for multi in (False, True):
        snap = snapshot({"USDT": "-1", "BTC": "0.5"}, prices=PRICES, multi=multi)
        for asset in ("USDT", "BTC"):
            quote = max_withdrawable(snap, asset)
            assert quote.quantity == 0
            assert quote.limited_by == "negative_balance"


def test_multi_mode_isolated_transfer_in_is_capped_by_usdt() -> None:
    snap = snapshot({"USDT": "500", "BTC": "1"}, prices=PRICES, multi=True)
    # CWB 499.95 + 57,000 = 57,499.95, but only 500 USDT can move
    assert account_isolated_max_transfer_in(snap) == D(500)
    iso = snapshot(
        {"USDT": "500", "BTC": "1"}, [btc("1", "60000", 1, "isolated", "60000")], [],
        {"BTCUSDT": "60000"}, PRICES, multi=True,
    )  # fmt: skip
    # iso position IM 60,000 > CWB 57,499.95 → 0
    assert account_isolated_max_transfer_in(iso) == D(0)


def test_missing_price_in_multi_mode_is_a_snapshot_error() -> None:
    snap = snapshot({"USDT": "10", "BTC": "1"}, multi=True)
    with pytest.raises(SnapshotError, match="BTC"):
        max_withdrawable(snap, "USDT")


def test_unknown_asset_is_a_snapshot_error() -> None:
    snap = snapshot({"USDT": "10"})
    with pytest.raises(SnapshotError):
        max_withdrawable(snap, "DOGE")


def test_quote_as_dict() -> None:
    snap = snapshot({"USDT": "10000", "BTC": "0.5"}, prices=PRICES, multi=True)
    out = max_withdrawable(snap, "BTC").as_dict()
    assert out["maxWithdrawAmount"] == D("0.5")
    assert out["price"] == D(60000)
    assert out["collateralRatio"] == D("0.95")
    assert isinstance(out["breakdown"], dict)
    assert out["breakdown"]["crossWalletBalance"] == D(38499)
