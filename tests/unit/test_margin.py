"""Per-position margin (DOMAIN.md §1): notional, IM, uPnL, MM, leverage check."""

from __future__ import annotations

from decimal import Context, localcontext
from decimal import Decimal as D

import pytest

from tests.unit.test_brackets import BTC, ETH
from watcher.domain.account import Position, ceil_to, floor_to
from watcher.domain.brackets import BracketError, BracketTable
from watcher.domain.margin import (
    PositionError,
    check_leverage,
    initial_margin,
    maintenance_margin,
    notional,
    position_margin,
    unrealized_pnl,
)


def pos(size: str, entry: str, lev: int, mode: str = "cross", symbol: str = "BTCUSDT") -> Position:
    return Position(symbol, D(size), D(entry), lev, mode)  # type: ignore[arg-type]


# (position, mark, table, notional, IM, uPnL, MM, bracket) — each worked by hand.
CASES = [
    # long 2 BTC, 60k → 63k, 10×: 126,000 × 0.5% − 50 = 580
    (pos("2", "60000", 10), "63000", BTC, "126000", "12600", "6000", "580", 2),
    # DOMAIN §2 isolated short: −0.5 BTC, 60k → 63k, 10×: MM 126 (bracket 1)
    (pos("-0.5", "60000", 10, "isolated"), "63000", BTC, "31500", "3150", "-1500", "126", 1),
    # short in profit: −1 BTC, 60k → 55k, 20×: 55,000 × 0.5% − 50 = 225
    (pos("-1", "60000", 20), "55000", BTC, "55000", "2750", "5000", "225", 2),
    # long at a loss: 1 BTC, 60k → 55k, 20×
    (pos("1", "60000", 20), "55000", BTC, "55000", "2750", "-5000", "225", 2),
    # exactly at the cap of bracket 1: 1 BTC at 50,000 → 0.4% × 50,000 = 200
    (pos("1", "50000", 125), "50000", BTC, "50000", "400", "0", "200", 1),
    # DOMAIN example notional 200,000 → 950
    (pos("4", "50000", 50), "50000", BTC, "200000", "4000", "0", "950", 2),
    # DOMAIN example notional 1,000,000 → 8,700
    (pos("-20", "50000", 20), "50000", BTC, "1000000", "50000", "0", "8700", 3),
    # ETH long 10 @ 3,000 → 3,100, 20×: 31,000 × 0.65% − 15 = 186.5
    (pos("10", "3000", 20, symbol="ETHUSDT"), "3100", ETH, "31000", "1550", "1000", "186.5", 2),
    # ETH short −2, 3,000 → 2,800, 10×: 5,600 × 0.5% = 28
    (pos("-2", "3000", 10, symbol="ETHUSDT"), "2800", ETH, "5600", "560", "400", "28", 1),
    # flat position: everything 0
    (pos("0", "60000", 10), "63000", BTC, "0", "0", "0", "0", 1),
    # small fractional size: 0.001 BTC at 61,234.5 → notional 61.2345, MM 0.244938
    (pos("0.001", "60000", 100), "61234.5", BTC, "61.2345", "0.612345", "1.2345", "0.244938", 1),
]


@pytest.mark.parametrize(
    ("position", "mark", "table", "value", "im", "upnl", "mm", "bracket"), CASES
)
def test_position_margin_table(
    position: Position,
    mark: str,
    table: BracketTable,
    value: str,
    im: str,
    upnl: str,
    mm: str,
    bracket: int,
) -> None:
    pm = position_margin(position, D(mark), table)
    assert pm.notional == D(value)
    assert pm.initial_margin == D(im)
    assert pm.unrealized_pnl == D(upnl)
    assert pm.maintenance_margin == D(mm)
    assert pm.bracket == bracket
    assert notional(position, D(mark)) == D(value)
    assert initial_margin(position, D(mark)) == D(im)
    assert unrealized_pnl(position, D(mark)) == D(upnl)
    assert maintenance_margin(position, D(mark), table) == D(mm)


def test_inexact_im_is_rounded_up_never_down() -> None:
    # 1 BTC at 40,000, 3×: IM = 13,333.333… rounded up at the 30th decimal.
    im = initial_margin(pos("1", "40000", 3), D(40000))
    with localcontext(Context(prec=200)):
        assert D(0) < im * 3 - D(40000) < D("3e-30")
    assert im == D("13333." + "3" * 29 + "4")
    assert ceil_to(im, 8) == D("13333.33333334")
    assert floor_to(im, 8) == D("13333.33333333")


def test_leverage_above_bracket_is_an_error() -> None:
    # entry notional 60,000 is in bracket 2 (max 100×)
    with pytest.raises(PositionError, match="100"):
        check_leverage(pos("1", "60000", 125), BTC)
    check_leverage(pos("1", "60000", 100), BTC)
    with pytest.raises(PositionError):
        position_margin(pos("-10", "30000", 51), D(30000), BTC)  # 300,000 → bracket 3, 50×


def test_leverage_is_checked_at_entry_notional() -> None:
    # opened at 50,000 with 125× (bracket 1); mark rallies to 60,000 (bracket 2 would be 100×):
    # still valid, and MM uses the mark notional: 60,000 × 0.5% − 50 = 250.
    pm = position_margin(pos("1", "50000", 125), D(60000), BTC)
    assert pm.maintenance_margin == D(250)
    assert pm.bracket == 2


def test_notional_above_table_is_an_error() -> None:
    with pytest.raises(BracketError):
        position_margin(pos("1", "3000", 1, symbol="ETHUSDT"), D("100000001"), ETH)


def test_position_rejects_float_and_bad_fields() -> None:
    with pytest.raises(TypeError):
        Position("BTCUSDT", 1.0, D(1), 10, "cross")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Position("BTCUSDT", D(1), D(1), 0, "cross")
    with pytest.raises(ValueError):
        Position("BTCUSDT", D(1), D(1), 10, "portfolio")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Position("BTCUSDT", D(1), D(1), 10, "cross", D(5))
