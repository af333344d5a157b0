"""Max transfers (DOMAIN.md §2): cross A/B, max withdrawable, isolated in/out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal as D

import pytest

from tests.unit.test_brackets import BTC, ETH
from watcher.domain.account import AccountSnapshot, AssetInfo, OpenOrderMargin, Position
from watcher.domain.brackets import BracketTable
from watcher.domain.collateral import account_breakdown, account_isolated_max_transfer_in
from watcher.domain.transfers import (
    CrossTerms,
    cross_breakdown,
    cross_max_withdrawable,
    cross_terms,
    isolated_max_transfer_in,
    isolated_max_transfer_out,
    isolated_transfer_out_terms,
)

ASSETS = {
    "USDT": AssetInfo("USDT", 8, D("0.9999"), D("0.975")),
    "USDC": AssetInfo("USDC", 8, D("0.9999"), D("0.975")),
    "BTC": AssetInfo("BTC", 8, D("0.95"), D("0.975")),
    "ETH": AssetInfo("ETH", 8, D("0.95"), D("0.975")),
    "POL": AssetInfo("POL", 8, D("0.9"), D("0.95")),
}
TABLES = {"BTCUSDT": BTC, "ETHUSDT": ETH}


def btc(size: str, entry: str, lev: int, mode: str = "cross", iso: str = "0") -> Position:
    return Position("BTCUSDT", D(size), D(entry), lev, mode, D(iso))  # type: ignore[arg-type]


def eth(size: str, entry: str, lev: int, mode: str = "cross", iso: str = "0") -> Position:
    return Position("ETHUSDT", D(size), D(entry), lev, mode, D(iso))  # type: ignore[arg-type]


def cross_order(im: str, symbol: str = "BTCUSDT") -> OpenOrderMargin:
    return OpenOrderMargin(symbol, "cross", D(im))


def iso_order(im: str, symbol: str = "BTCUSDT") -> OpenOrderMargin:
    return OpenOrderMargin(symbol, "isolated", D(im))


def snapshot(
    balances: Mapping[str, str],
    positions: Sequence[Position] = (),
    orders: Sequence[OpenOrderMargin] = (),
    marks: Mapping[str, str] | None = None,
    prices: Mapping[str, str] | None = None,
    multi: bool = False,
) -> AccountSnapshot:
    return AccountSnapshot(
        balances={a: D(q) for a, q in balances.items()},
        positions=positions,
        open_orders=orders,
        mark_prices={s: D(p) for s, p in (marks or {}).items()},
        asset_prices={a: D(p) for a, p in (prices or {}).items()},
        brackets=TABLES,
        assets=ASSETS,
        multi_asset_mode=multi,
    )


def test_domain_example_a_is_9600() -> None:
    # CWB 10,000, iso order IM 150 + 50, cross MM 120.5 + 79.5, no IM or uPnL beyond that.
    terms = CrossTerms(
        isolated_open_order_initial_margin=D(150) + D(50),
        cross_maintenance_margin=D("120.5") + D("79.5"),
    )
    bd = cross_breakdown(D(10000), terms, 8)
    assert bd.a == D(9600)
    assert bd.b == D(9800)
    assert bd.max_withdraw_amount == D(9600)
    assert bd.available_balance == D(9800)


def test_domain_example_a_from_positions() -> None:
    # The same A built from hedge-mode BTC positions at mark 50,000, 10×: long 0.6025
    # (MM 0.4% × 30,125 = 120.5) and short −0.3975 (MM 0.4% × 19,875 = 79.5); IM 3,012.5 + 1,987.5.
    snap = snapshot(
        {"USDT": "10000"},
        [btc("0.6025", "50000", 10), btc("-0.3975", "50000", 10)],
        [iso_order("150"), iso_order("50", "ETHUSDT")],
        {"BTCUSDT": "50000"},
    )
    bd = account_breakdown(snap)
    assert bd.cross_maintenance_margin == D(200)
    assert bd.isolated_open_order_initial_margin == D(200)
    assert bd.a == D(9600)
    assert bd.cross_initial_margin == D(5000)
    assert bd.b == D(4800)  # 10,000 − 5,000 − 200
    assert bd.max_withdraw_amount == D(4800)


def test_domain_example_isolated_short_transfer_out_is_zero() -> None:
    position = btc("-0.5", "60000", 10, "isolated", "3100")
    terms = isolated_transfer_out_terms(position, D(63000), BTC, 8)
    assert terms.maintenance_margin == D(126)
    assert terms.wallet_minus_mm == D(2974)
    assert terms.wallet_plus_upnl_minus_im == D(-1550)
    assert terms.max_transfer_out == D(0)


# (balances, positions, orders, marks, A, B, max withdrawable, availableBalance)
CROSS_CASES = [
    pytest.param({"USDT": "1000"}, [], [], {}, "1000", "1000", "1000", "1000", id="no-positions"),
    pytest.param(
        # long 1 BTC 50k → 55k, 20×: IM 2,750, uPnL +5,000, MM 225 → profit not withdrawable
        {"USDT": "10000"}, [btc("1", "50000", 20)], [], {"BTCUSDT": "55000"},
        "9775", "12250", "9775", "12250", id="long-profit-capped-by-A",
    ),
    pytest.param(
        # long 1 BTC 60k → 55k, 20×: uPnL −5,000 → B = 10,000 − 5,000 − 2,750
        {"USDT": "10000"}, [btc("1", "60000", 20)], [], {"BTCUSDT": "55000"},
        "9775", "2250", "2250", "2250", id="long-loss-B-binds",
    ),
    pytest.param(
        # short −1 BTC 50k → 52k, 25×: IM 2,080, uPnL −2,000, MM 210
        {"USDT": "5000"}, [btc("-1", "50000", 25)], [], {"BTCUSDT": "52000"},
        "4790", "920", "920", "920", id="short-loss",
    ),
    pytest.param(
        # short −1 BTC 60k → 50k, 10×: IM 5,000, uPnL +10,000, MM 200 (bracket 1 cap)
        {"USDT": "3000"}, [btc("-1", "60000", 10)], [], {"BTCUSDT": "50000"},
        "2800", "8000", "2800", "8000", id="short-profit-at-bracket-cap",
    ),
    pytest.param(
        # B negative: long 1 BTC 60k → 58k, 100×: IM 580, uPnL −2,000, MM 240
        {"USDT": "1000"}, [btc("1", "60000", 100)], [], {"BTCUSDT": "58000"},
        "760", "-1580", "0", "0", id="B-negative-clamped",
    ),
    pytest.param(
        # A negative: MM 0.5% × 240,000 − 50 = 1,150 > CWB 1,000
        {"USDT": "1000"}, [btc("4", "60000", 100)], [], {"BTCUSDT": "60000"},
        "-150", "-1400", "0", "0", id="A-negative-clamped",
    ),
    pytest.param(
        # orders only: cross order IM 300 enters B only, iso order IM 100 both
        {"USDT": "2000"}, [], [cross_order("300"), iso_order("100")], {},
        "1900", "1600", "1600", "1600", id="open-orders",
    ),
    pytest.param(
        # IM 40,000 / 3 is inexact: B = 6,666.666… floored to 6,666.66666666
        {"USDT": "20000"}, [btc("1", "40000", 3)], [], {"BTCUSDT": "40000"},
        "19840", None, "6666.66666666", "6666.66666666", id="inexact-IM-floored",
    ),
    pytest.param(
        # isolated position is not in A or B
        {"USDT": "10000"}, [btc("1", "60000", 10, "isolated", "6000")], [], {"BTCUSDT": "50000"},
        "10000", "10000", "10000", "10000", id="isolated-position-ignored",
    ),
    pytest.param(
        # BTC long 0.5 60k→62k 20× (IM 1,550, uPnL 1,000, MM 124) + ETH short −10 3k→3.1k 25×
        # (IM 1,240, uPnL −1,000, MM 186.5) + cross orders 500 + iso orders 250
        {"USDT": "20000"}, [btc("0.5", "60000", 20), eth("-10", "3000", 25)],
        [cross_order("500"), iso_order("250", "ETHUSDT")],
        {"BTCUSDT": "62000", "ETHUSDT": "3100"},
        "19439.5", "16460", "16460", "16460", id="two-positions-and-orders",
    ),
    pytest.param(
        # non-settlement balances don't count in single-asset mode
        {"USDT": "100", "BTC": "5"}, [], [], {}, "100", "100", "100", "100",
        id="single-mode-usdt-only",
    ),
    pytest.param(
        # CWB at 8 decimals, no positions
        {"USDT": "0.00000001"}, [], [], {}, "0.00000001", "0.00000001", "0.00000001", "0.00000001",
        id="one-base-unit",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("balances", "positions", "orders", "marks", "a", "b", "max_w", "avail"), CROSS_CASES
)
def test_cross_breakdown_table(
    balances: dict[str, str],
    positions: list[Position],
    orders: list[OpenOrderMargin],
    marks: dict[str, str],
    a: str,
    b: str | None,
    max_w: str,
    avail: str,
) -> None:
    bd = account_breakdown(snapshot(balances, positions, orders, marks))
    assert bd.a == D(a)
    if b is not None:
        assert bd.b == D(b)
    assert bd.max_withdraw_amount == D(max_w)
    assert bd.available_balance == D(avail)
    assert bd.max_withdraw_amount >= 0


def test_breakdown_as_dict_names() -> None:
    bd = cross_breakdown(D(10000), CrossTerms(cross_maintenance_margin=D(1)), 8)
    assert bd.as_dict() == {
        "A": D(9999),
        "B": D(10000),
        "crossWalletBalance": D(10000),
        "crossUnPnl": D(0),
        "crossInitialMargin": D(0),
        "isolatedOpenOrderInitialMargin": D(0),
        "crossMaintenanceMargin": D(1),
        "maxWithdrawAmount": D(9999),
        "availableBalance": D(10000),
    }


@pytest.mark.parametrize(
    ("cwb", "terms", "precision", "expected"),
    [
        (D("100.123456789"), CrossTerms(), 8, D("100.12345678")),
        (D("100.123456789"), CrossTerms(), 2, D("100.12")),
        (D("100.129"), CrossTerms(), 2, D("100.12")),  # floor, not half-up
        (D("100"), CrossTerms(cross_unrealized_pnl=D("-0.001")), 2, D("99.99")),
        (D("-5"), CrossTerms(), 8, D(0)),
    ],
)
def test_cross_max_floors_to_precision(
    cwb: D, terms: CrossTerms, precision: int, expected: D
) -> None:
    assert cross_max_withdrawable(cwb, terms, precision) == expected


def test_cross_terms_split() -> None:
    snap = snapshot(
        {"USDT": "10000"},
        [btc("1", "60000", 10), eth("10", "3000", 10, "isolated", "3000")],
        [cross_order("7"), iso_order("11", "ETHUSDT")],
        {"BTCUSDT": "61000", "ETHUSDT": "3000"},
    )
    terms = cross_terms(snap)
    assert terms.cross_unrealized_pnl == D(1000)
    assert terms.cross_initial_margin == D(6107)  # 6,100 + 7
    assert terms.cross_maintenance_margin == D(255)  # 0.5% × 61,000 − 50
    assert terms.isolated_open_order_initial_margin == D(11)
    assert terms.isolated_position_initial_margin == D(3000)


# Isolated transfer-out: (position, mark, table, MM, isoWB − MM, isoWB + uPnL − IM, result)
OUT_CASES = [
    pytest.param(
        btc("-0.5", "60000", 10, "isolated", "3100"), "63000", BTC, "126", "2974", "-1550", "0",
        id="domain-short",
    ),
    pytest.param(
        # long 1, 50k → 55k, 10×, isoWB 5,000: IM 5,500, uPnL 5,000, MM 225
        btc("1", "50000", 10, "isolated", "5000"), "55000", BTC, "225", "4775", "4500", "4500",
        id="long-profit-IM-term",
    ),
    pytest.param(
        # long 0.1, flat at 60k, 20×, isoWB 1,000: notional 6,000, IM 300, MM 24
        btc("0.1", "60000", 20, "isolated", "1000"), "60000", BTC, "24", "976", "700", "700",
        id="surplus-wallet",
    ),
    pytest.param(
        # ETH short −2, 3,000 → 2,800, 10×, isoWB 700: IM 560, uPnL +400, MM 28
        eth("-2", "3000", 10, "isolated", "700"), "2800", ETH, "28", "672", "540", "540",
        id="eth-short-profit",
    ),
    pytest.param(
        # long 1, 60k → 90k, 50×, isoWB 1,200: MM 0.5% × 90,000 − 50 = 400 binds
        btc("1", "60000", 50, "isolated", "1200"), "90000", BTC, "400", "800", "29400", "800",
        id="MM-term-binds",
    ),
    pytest.param(
        # long 1, 60k → 57k, 10×, isoWB 6,000: uPnL −3,000, IM 5,700
        btc("1", "60000", 10, "isolated", "6000"), "57000", BTC, "235", "5765", "-2700", "0",
        id="long-loss-clamped",
    ),
    pytest.param(
        # IM 30,000 / 7 = 4,285.714285…; second term 5,000 − 4,285.714285… floored to 8 dp
        btc("1", "30000", 7, "isolated", "5000"), "30000", BTC, "120", "4880", None,
        "714.28571428", id="inexact-IM-floored",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("position", "mark", "table", "mm", "t1", "t2", "result"), OUT_CASES)
def test_isolated_transfer_out_table(
    position: Position,
    mark: str,
    table: BracketTable,
    mm: str,
    t1: str,
    t2: str | None,
    result: str,
) -> None:
    terms = isolated_transfer_out_terms(position, D(mark), table, 8)
    assert terms.maintenance_margin == D(mm)
    assert terms.wallet_minus_mm == D(t1)
    if t2 is not None:
        assert terms.wallet_plus_upnl_minus_im == D(t2)
    assert terms.max_transfer_out == D(result)
    assert isolated_max_transfer_out(position, D(mark), table, 8) == D(result)


# Isolated transfer-in: (balances, positions, marks, orders, expected)
IN_CASES = [
    pytest.param(
        # CWB 10,000 − iso position IM 5,000 (1 BTC @ 50k, 10×) − cross MM 0; available 10,000
        {"USDT": "10000"}, [btc("1", "60000", 10, "isolated", "6000")], {"BTCUSDT": "50000"}, [],
        "5000", id="iso-IM-binds",
    ),
    pytest.param(
        # first term 100 − 500 < 0 → 0
        {"USDT": "100"}, [btc("0.1", "50000", 10, "isolated", "500")], {"BTCUSDT": "50000"}, [],
        "0", id="clamped",
    ),
    pytest.param(
        # cross long 1 BTC 60k → 55k 20× (IM 2,750, uPnL −5,000, MM 225) + iso ETH 10 @ 3k
        # 10× (IM 3,000): first 10,000 − 3,000 − 225 = 6,775; available 2,250
        {"USDT": "10000"}, [btc("1", "60000", 20), eth("10", "3000", 10, "isolated", "3000")],
        {"BTCUSDT": "55000", "ETHUSDT": "3000"}, [], "2250", id="available-binds",
    ),
    pytest.param(
        # no isolated positions: min(CWB − cross MM, B) with cross order IM 400 → min(10,000, 9,600)
        {"USDT": "10000"}, [], {}, [cross_order("400")], "9600", id="orders-only",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("balances", "positions", "marks", "orders", "expected"), IN_CASES)
def test_isolated_transfer_in_table(
    balances: dict[str, str],
    positions: list[Position],
    marks: dict[str, str],
    orders: list[OpenOrderMargin],
    expected: str,
) -> None:
    snap = snapshot(balances, positions, orders, marks)
    assert account_isolated_max_transfer_in(snap) == D(expected)
    terms = cross_terms(snap)
    assert isolated_max_transfer_in(D(balances["USDT"]), terms, 8) == D(expected)
