"""Liquidation price and margin ratio (watcher/domain/liquidation.py, docs/risk.md).

Tables: DOMAIN.md's worked example, hand-computed cases (long/short, isolated/cross,
the bracket that holds the root is not the first one, the boundary where the bracket
changes). Properties (hypothesis): at the liquidation price the margin balance meets
the maintenance margin — on the safe side at LP, past it one price unit (1e-12) beyond —
computed through the ordinary margin code (transfers.cross_terms / margin), not the
liquidation module.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.unit.test_brackets import BTC, ETH
from watcher.domain.account import AccountSnapshot, AssetInfo, Position, exact, quantum
from watcher.domain.brackets import BracketError
from watcher.domain.collateral import cross_wallet_balance
from watcher.domain.liquidation import (
    PRICE_PLACES,
    account_risk,
    liquidation_price,
    margin_ratio,
)
from watcher.domain.margin import maintenance_margin, unrealized_pnl
from watcher.domain.transfers import cross_terms

ASSETS = {"USDT": AssetInfo("USDT", 8, D("1"), D("1"))}
TABLES = {"BTCUSDT": BTC, "ETHUSDT": ETH}
UNIT = quantum(PRICE_PLACES)


def iso(size: str, entry: str, wallet: str, symbol: str = "BTCUSDT", lev: int = 10) -> Position:
    return Position(symbol, D(size), D(entry), lev, "isolated", D(wallet))


def cross(size: str, entry: str, symbol: str = "BTCUSDT", lev: int = 10) -> Position:
    return Position(symbol, D(size), D(entry), lev, "cross")


def snap(
    usdt: str, positions: list[Position], marks: dict[str, str] | None = None
) -> AccountSnapshot:
    return AccountSnapshot(
        balances={"USDT": D(usdt)},
        positions=positions,
        open_orders=[],
        mark_prices={k: D(v) for k, v in (marks or {"BTCUSDT": "80000"}).items()},
        asset_prices={},
        brackets=TABLES,
        assets=ASSETS,
        multi_asset_mode=False,
    )


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        # DOMAIN.md: bracket 1 gives 75,903.61 (notional > 50,000: rejected), bracket 2
        # gives 75,929.65; the short twin 91,990.05. Long rounds up, short down.
        (iso("1", "84000", "8400"), "75929.648241206031"),
        (iso("-1", "84000", "8400"), "91990.049751243781"),
        # short 2 BTC at 60,000 with 6,000: bracket 2, (6000 + 50 + 120000) / 2.01.
        (iso("-2", "60000", "6000"), "62711.442786069651"),
        # the boundary: wallet 34,200 puts the root exactly on 50,000 (both brackets agree)
        (iso("1", "84000", "34200"), "50000"),
        # a cent less margin: the root moves above 50,000 → bracket 2
        (iso("1", "84000", "34199.99"), "50000.010050251257"),
        # a cent more: below 50,000 → bracket 1 (0.4 %, cum 0)
        (iso("1", "84000", "34200.01"), "49999.989959839358"),
        # a 1x long with its full cost as margin: no positive price liquidates it
        (iso("1", "84000", "84000", lev=1), None),
        # a short under water at every positive price: the root is ≤ 0
        (iso("-1", "84000", "-90000"), None),
    ],
)
def test_isolated_table(position: Position, expected: str | None) -> None:
    lp = liquidation_price(position, BTC, position.isolated_wallet)
    assert lp == (None if expected is None else D(expected))


def test_domain_example_to_the_cent() -> None:
    assert round(liquidation_price(iso("1", "84000", "8400"), BTC, D(8400)) or 0, 2) == D(
        "75929.65"
    )
    assert round(liquidation_price(iso("-1", "84000", "8400"), BTC, D(8400)) or 0, 2) == D(
        "91990.05"
    )


def test_cross_holds_the_other_positions_fixed() -> None:
    # CWB 20,000; BTC long 1 @ 84,000 (mark 80,000); ETH short 10 @ 3,000 (mark 3,100).
    # ETH: notional 31,000 → bracket 2: TMM1 = 31,000 × 0.0065 − 15 = 186.5, UPNL1 = −1,000.
    # BTC LP = (20,000 − 186.5 − 1,000 + 50 − 84,000) / (0.005 − 1) = 65,463.8190954773869…
    s = snap(
        "20000",
        [cross("1", "84000"), cross("-10", "3000", "ETHUSDT")],
        {"BTCUSDT": "80000", "ETHUSDT": "3100"},
    )
    risk = account_risk(s)
    assert risk.position("BTCUSDT", "cross").liquidation_price == D("65463.819095477387")
    # ETH, BTC held: TMM1 = 80,000 × 0.005 − 50 = 350, UPNL1 = −4,000; bracket 1's root
    # (notional 45,423) is past its 10,000 cap, bracket 2: (20,000 − 350 − 4,000 + 15 +
    # 30,000) / (10 × 0.0065 + 10) = 4,537.00943864878…, rounded down for a short.
    assert risk.position("ETHUSDT", "cross").liquidation_price == D("4537.009438648782")
    # cross margin ratio: MM 350 + 186.5 over MB 20,000 − 4,000 − 1,000.
    assert risk.cross_maintenance_margin == D("536.5")
    assert risk.cross_margin_balance == D("15000")
    assert risk.cross_margin_ratio == D("0.03576667")  # 0.0357666… rounded up


def test_isolated_ratio_and_cross_untouched() -> None:
    s = snap("100", [iso("1", "84000", "8400")])
    risk = account_risk(s)
    p = risk.position("BTCUSDT", "isolated")
    # MB = 8,400 − 4,000 = 4,400; MM = 80,000 × 0.005 − 50 = 350.
    assert (p.margin_balance, p.maintenance_margin) == (D(4400), D(350))
    assert p.margin_ratio == D("0.07954546")  # 0.0795454545… rounded up
    assert risk.cross_margin_ratio == 0


def test_margin_ratio_edges() -> None:
    assert margin_ratio(D(0), D(-5)) == 0
    assert margin_ratio(D(1), D(0)) is None
    assert margin_ratio(D(1), D(-1)) is None
    assert margin_ratio(D(3), D(3)) == 1


def test_root_past_the_last_bracket_uses_the_last_line() -> None:
    # Short 10,000 BTC at 100,000 (1e9 notional, bracket 9) with a wallet that lets the
    # price rise far: the root's notional is past 1.5e9, the last bracket's line holds it.
    position = iso("-10000", "100000", "1000000000", lev=1)
    lp = liquidation_price(position, BTC, position.isolated_wallet)
    assert lp is not None
    with exact():
        assert abs(position.size) * lp > BTC.max_notional
    last = BTC.brackets[-1]
    expected = (D(1000000000) + last.cum + D(10000) * D(100000)) / (
        D(10000) * last.maint_margin_ratio + D(10000)
    )
    assert abs(lp - expected) < UNIT


# --------------------------------------------------------------------------- properties

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _at(s: AccountSnapshot, symbol: str, price: D) -> AccountSnapshot:
    marks = dict(s.mark_prices)
    marks[symbol] = price
    return dataclasses.replace(s, mark_prices=marks)


def _excess(s: AccountSnapshot, position: Position) -> D:
    """MB − MM of the position's margin (isolated: its own; cross: the account's)."""
    mark = s.mark_price(position.symbol)
    if position.margin_mode == "isolated":
        with exact():
            return (
                position.isolated_wallet
                + unrealized_pnl(position, mark)
                - maintenance_margin(position, mark, TABLES[position.symbol])
            )
    terms = cross_terms(s)
    with exact():
        return cross_wallet_balance(s) + terms.cross_unrealized_pnl - terms.cross_maintenance_margin


def decimals(lo: int, hi: int, places: int) -> st.SearchStrategy[D]:
    return st.integers(lo, hi).map(lambda n: D(n).scaleb(-places))


@st.composite
def accounts(draw: st.DrawFn) -> tuple[AccountSnapshot, Position]:
    mode = draw(st.sampled_from(["isolated", "cross"]))
    size = draw(decimals(-30000, 30000, 3).filter(lambda d: d != 0))
    entry = draw(decimals(1_000_000, 15_000_000, 2))
    wallet = draw(decimals(0, 10**11, 4)) if mode == "isolated" else D(0)
    subject = Position("BTCUSDT", size, entry, 1, mode, wallet)  # type: ignore[arg-type]
    positions = [subject]
    if mode == "cross" and draw(st.booleans()):
        positions.append(
            Position("ETHUSDT", draw(decimals(-500000, 500000, 3)), D(3000), 1, "cross")
        )
    s = AccountSnapshot(
        balances={"USDT": draw(decimals(-(10**10), 10**12, 8))},
        positions=positions,
        open_orders=[],
        mark_prices={
            "BTCUSDT": draw(decimals(1_000_000, 15_000_000, 2)),
            "ETHUSDT": draw(decimals(100_000, 600_000, 2)),
        },
        asset_prices={},
        brackets=TABLES,
        assets=ASSETS,
        multi_asset_mode=False,
    )
    return s, subject


@SETTINGS
@given(accounts())
def test_margin_meets_maintenance_at_the_liquidation_price(
    case: tuple[AccountSnapshot, Position],
) -> None:
    s, position = case
    lp = account_risk(s).position("BTCUSDT", position.margin_mode).liquidation_price
    long = position.size > 0
    if lp is None:
        # long: the margin covers a fall to (almost) 0; short: below MM at every price.
        edge = _excess(_at(s, "BTCUSDT", UNIT), position)
        assert edge >= 0 if long else edge <= 0
        return
    past = lp - UNIT if long else lp + UNIT
    try:
        at_lp = _excess(_at(s, "BTCUSDT", lp), position)
        beyond = _excess(_at(s, "BTCUSDT", past), position)
    except BracketError:
        assume(False)  # the root lies past the last bracket: MM is undefined there
        return
    assert at_lp >= 0  # rounded toward safety: not yet liquidated at the shown price
    assert beyond < 0  # one price unit further and it is


@SETTINGS
@given(decimals(1, 10**12, 8), decimals(-(10**12), 10**12, 8))
def test_margin_ratio_rounds_up_by_less_than_a_unit(mm: D, mb: D) -> None:
    ratio = margin_ratio(mm, mb)
    if mb <= 0:
        assert ratio is None
        return
    assert ratio is not None
    with exact():
        assert ratio * mb >= mm
        assert (ratio - quantum(8)) * mb < mm
