"""The risk gate (DOMAIN.md §2–§4): every reason code, and the boundary at the max."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tests.unit.test_transfers import btc, eth, snapshot
from watcher.domain.account import AccountSnapshot
from watcher.domain.risk import decide_isolated_transfer, decide_withdrawal

PRICES = {"BTC": "60000", "ETH": "3000"}
UNIT = D("0.00000001")


def single_long_loss() -> AccountSnapshot:
    # long 1 BTC 60k → 55k, 20×: A = 9,775, B = 2,250 → max 2,250
    return snapshot(
        {"USDT": "10000", "BTC": "0.3"}, [btc("1", "60000", 20)], [], {"BTCUSDT": "55000"}
    )


def multi_btc() -> AccountSnapshot:
    # CWB 29,499.9, B = 23,499.9 → BTC max 0.41227894
    return snapshot(
        {"USDT": "1000", "BTC": "0.5"}, [btc("1", "60000", 10)], [], {"BTCUSDT": "60000"},
        PRICES, multi=True,
    )  # fmt: skip


# (snapshot, asset, amount, allowed, reason)
WITHDRAWALS = [
    pytest.param(single_long_loss(), "USDT", "2250", True, None, id="exactly-max"),
    pytest.param(single_long_loss(), "USDT", "2250.00000001", False, "INSUFFICIENT_WITHDRAWABLE",
                 id="max-plus-one-unit"),
    pytest.param(single_long_loss(), "USDT", "0.00000001", True, None, id="one-unit"),
    pytest.param(single_long_loss(), "USDT", "2250.000000000", True, None, id="trailing-zeros-ok"),
    pytest.param(single_long_loss(), "USDT", "1.000000001", False, "AMOUNT_PRECISION",
                 id="nine-decimals"),
    pytest.param(single_long_loss(), "USDT", "0", False, "AMOUNT_NOT_POSITIVE", id="zero"),
    pytest.param(single_long_loss(), "USDT", "-5", False, "AMOUNT_NOT_POSITIVE", id="negative"),
    pytest.param(single_long_loss(), "DOGE", "1", False, "UNKNOWN_ASSET", id="unknown-asset"),
    pytest.param(single_long_loss(), "BTC", "0.3", True, None, id="single-mode-other-asset"),
    pytest.param(single_long_loss(), "BTC", "0.30000001", False, "INSUFFICIENT_WITHDRAWABLE",
                 id="single-mode-other-asset-over"),
    pytest.param(single_long_loss(), "ETH", "0.1", False, "INSUFFICIENT_WITHDRAWABLE",
                 id="never-held"),
    pytest.param(multi_btc(), "BTC", "0.41227894", True, None, id="multi-max"),
    pytest.param(multi_btc(), "BTC", "0.41227895", False, "INSUFFICIENT_WITHDRAWABLE",
                 id="multi-max-plus-unit"),
    pytest.param(multi_btc(), "USDT", "1000", True, None, id="multi-usdt-balance"),
    pytest.param(multi_btc(), "USDT", "1000.00000001", False, "INSUFFICIENT_WITHDRAWABLE",
                 id="multi-usdt-over-balance"),
    pytest.param(snapshot({"USDT": "100", "BTC": "-0.001"}, prices=PRICES), "USDT", "1", False,
                 "NEGATIVE_BALANCE", id="negative-other-asset"),
    pytest.param(snapshot({"USDT": "-0.00000001"}), "USDT", "1", False, "NEGATIVE_BALANCE",
                 id="negative-one-unit"),
    pytest.param(snapshot({"USDT": "-1", "BTC": "1"}, prices=PRICES, multi=True), "BTC",
                 "0.00000001", False, "NEGATIVE_BALANCE", id="negative-multi"),
    pytest.param(snapshot({"USDT": "-1"}), "USDT", "0", False, "AMOUNT_NOT_POSITIVE",
                 id="bad-request-before-negative"),
]  # fmt: skip


@pytest.mark.parametrize(("snap", "asset", "amount", "allowed", "reason"), WITHDRAWALS)
def test_withdrawal_table(
    snap: AccountSnapshot, asset: str, amount: str, allowed: bool, reason: str | None
) -> None:
    decision = decide_withdrawal(snap, asset, D(amount))
    assert decision.allowed is allowed
    assert decision.reason == reason


def test_negative_balance_lists_the_assets() -> None:
    snap = snapshot({"USDT": "-3", "BTC": "-0.1", "ETH": "5"}, prices=PRICES)
    decision = decide_withdrawal(snap, "ETH", D(1))
    assert decision.reason == "NEGATIVE_BALANCE"
    assert decision.details["negativeAssets"] == ["BTC", "USDT"]
    assert decision.details["negativeBalances"] == {"BTC": D("-0.1"), "USDT": D(-3)}


def test_insufficient_details_carry_the_numbers() -> None:
    decision = decide_withdrawal(single_long_loss(), "USDT", D(2251))
    assert decision.reason == "INSUFFICIENT_WITHDRAWABLE"
    assert decision.details["maxWithdrawAmount"] == D(2250)
    breakdown = decision.details["breakdown"]
    assert isinstance(breakdown, dict)
    assert breakdown["A"] == D(9775)
    assert breakdown["B"] == D(2250)
    assert breakdown["crossMaintenanceMargin"] == D(225)
    assert breakdown["crossUnPnl"] == D(-5000)
    assert all(isinstance(v, D) for v in breakdown.values())


def test_float_amount_is_refused() -> None:
    with pytest.raises(TypeError):
        decide_withdrawal(single_long_loss(), "USDT", 1.5)  # type: ignore[arg-type]


def isolated_book() -> AccountSnapshot:
    # CWB 10,000; isolated BTC short (DOMAIN example, transfer-out 0);
    # isolated ETH long 10 @ 3,000 → 3,300, 10×, isoWB 3,500: IM 3,300, uPnL 3,000,
    # MM 0.65% × 33,000 − 15 = 199.5 → out = min(3,300.5, 3,200) = 3,200;
    # cross BTC position none, so transfer-in = min(10,000 − 3,150 − 3,300, 10,000) = 3,550
    return snapshot(
        {"USDT": "10000"},
        [btc("-0.5", "60000", 10, "isolated", "3100"), eth("10", "3000", 10, "isolated", "3500")],
        [],
        {"BTCUSDT": "63000", "ETHUSDT": "3300"},
    )


# (snapshot, symbol, kind, amount, allowed, reason)
TRANSFERS = [
    pytest.param(isolated_book(), "BTCUSDT", "reduce", "0.00000001", False,
                 "INSUFFICIENT_TRANSFERABLE", id="domain-short-nothing-out"),
    pytest.param(isolated_book(), "ETHUSDT", "reduce", "3200", True, None, id="eth-out-max"),
    pytest.param(isolated_book(), "ETHUSDT", "reduce", "3200.00000001", False,
                 "INSUFFICIENT_TRANSFERABLE", id="eth-out-over"),
    pytest.param(isolated_book(), "BTCUSDT", "add", "3550", True, None, id="in-max"),
    pytest.param(isolated_book(), "BTCUSDT", "add", "3550.00000001", False,
                 "INSUFFICIENT_TRANSFERABLE", id="in-over"),
    pytest.param(isolated_book(), "SOLUSDT", "add", "1", False, "UNKNOWN_SYMBOL",
                 id="unknown-symbol"),
    pytest.param(snapshot({"USDT": "100"}, [btc("0.001", "60000", 10)], [], {"BTCUSDT": "60000"}),
                 "BTCUSDT", "add", "1", False, "NO_ISOLATED_POSITION", id="cross-only"),
    pytest.param(isolated_book(), "BTCUSDT", "add", "0", False, "AMOUNT_NOT_POSITIVE",
                 id="zero"),
    pytest.param(isolated_book(), "BTCUSDT", "add", "0.000000001", False, "AMOUNT_PRECISION",
                 id="precision"),
    pytest.param(isolated_book().with_balance("BTC", D("-0.001")), "ETHUSDT", "add", "1", False,
                 "NEGATIVE_BALANCE", id="add-blocked-by-negative"),
    pytest.param(isolated_book().with_balance("BTC", D("-0.001")), "ETHUSDT", "reduce", "100",
                 True, None, id="reduce-allowed-while-negative"),
]  # fmt: skip


@pytest.mark.parametrize(("snap", "symbol", "kind", "amount", "allowed", "reason"), TRANSFERS)
def test_isolated_transfer_table(
    snap: AccountSnapshot, symbol: str, kind: str, amount: str, allowed: bool, reason: str | None
) -> None:
    decision = decide_isolated_transfer(snap, symbol, kind, D(amount))  # type: ignore[arg-type]
    assert decision.allowed is allowed
    assert decision.reason == reason


def test_isolated_reduce_details() -> None:
    decision = decide_isolated_transfer(isolated_book(), "BTCUSDT", "reduce", D(1))
    assert decision.details["maintenanceMargin"] == D(126)
    assert decision.details["walletMinusMaintenance"] == D(2974)
    assert decision.details["walletPlusUnPnlMinusInitial"] == D(-1550)
    assert decision.details["maxTransferAmount"] == D(0)


def test_isolated_transfer_bad_kind() -> None:
    with pytest.raises(ValueError):
        decide_isolated_transfer(isolated_book(), "BTCUSDT", "move", D(1))  # type: ignore[arg-type]
