"""Leverage brackets (DOMAIN.md §1): bracket choice at the boundaries, MM, max leverage."""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import pytest

from watcher.domain.brackets import Bracket, BracketError, BracketTable

CONFIG = Path(__file__).resolve().parents[2] / "config" / "brackets"


def load(symbol: str) -> BracketTable:
    with (CONFIG / f"{symbol}.json").open() as fh:
        return BracketTable.from_json_obj(json.load(fh))


BTC = load("BTCUSDT")
ETH = load("ETHUSDT")

# The four BTCUSDT tiers of DOMAIN.md §1, as the API would send them (ints and strings).
DOMAIN_ROWS: list[dict[str, object]] = [
    {"bracket": 1, "initialLeverage": 125, "notionalFloor": 0, "notionalCap": 50000,
     "maintMarginRatio": "0.004", "cum": 0},
    {"bracket": 2, "initialLeverage": 100, "notionalFloor": 50000, "notionalCap": 250000,
     "maintMarginRatio": "0.005", "cum": 50},
    {"bracket": 3, "initialLeverage": 50, "notionalFloor": 250000, "notionalCap": 3000000,
     "maintMarginRatio": "0.01", "cum": "1300"},
    {"bracket": 4, "initialLeverage": 20, "notionalFloor": 3000000, "notionalCap": 20000000,
     "maintMarginRatio": "0.025", "cum": "46300"},
]  # fmt: skip


def rows_without_cum() -> list[dict[str, object]]:
    return [{k: v for k, v in row.items() if k != "cum"} for row in DOMAIN_ROWS]


def test_domain_examples_exact() -> None:
    table = BracketTable.from_brackets(DOMAIN_ROWS, "BTCUSDT")
    assert table.maintenance_margin(D(200000)) == D(950)
    assert table.maintenance_margin(D(1000000)) == D(8700)


def test_config_btc_starts_with_the_domain_tiers() -> None:
    domain = BracketTable.from_brackets(DOMAIN_ROWS)
    assert BTC.brackets[:4] == domain.brackets
    assert len(BTC.brackets) > 4
    assert BTC.symbol == "BTCUSDT"
    assert ETH.symbol == "ETHUSDT"


@pytest.mark.parametrize(
    ("notional", "bracket", "mm"),
    [
        (D(0), 1, D(0)),
        (D("0.01"), 1, D("0.00004")),
        (D(10000), 1, D(40)),
        (D(50000), 1, D(200)),  # exactly at cap 1: still bracket 1
        (D("50000.01"), 2, D("200.00005")),
        (D(100000), 2, D(450)),
        (D(200000), 2, D(950)),  # DOMAIN example
        (D(250000), 2, D(1200)),  # cap 2
        (D("250000.01"), 3, D("1200.0001")),
        (D(1000000), 3, D(8700)),  # DOMAIN example
        (D(3000000), 3, D(28700)),  # cap 3
        (D(3000001), 4, D("28700.025")),
        (D(20000000), 4, D(453700)),  # cap 4
        (D(20000001), 5, D("453700.05")),
        (D(50000000), 5, D(1953700)),
        (D(100000000), 6, D(6953700)),
        (D(1000000000), 9, D(199453700)),
        (D(1500000000), 10, D(449453700)),  # last cap
    ],
)
def test_btc_bracket_and_mm(notional: D, bracket: int, mm: D) -> None:
    assert BTC.bracket_for(notional).bracket == bracket
    assert BTC.maintenance_margin(notional) == mm


@pytest.mark.parametrize(
    ("notional", "bracket", "mm"),
    [
        (D(10000), 1, D(50)),
        (D(10001), 2, D("50.0065")),
        (D(100000), 2, D(635)),
        (D(500000), 3, D(4635)),
        (D(750000), 4, D(9635)),
        (D(1000000), 4, D(14635)),
        (D(100000000), 10, D(34989635)),
    ],
)
def test_eth_bracket_and_mm(notional: D, bracket: int, mm: D) -> None:
    assert ETH.bracket_for(notional).bracket == bracket
    assert ETH.maintenance_margin(notional) == mm


@pytest.mark.parametrize(
    ("notional", "leverage"),
    [
        (D(0), 125),
        (D(50000), 125),
        (D("50000.00000001"), 100),
        (D(250000), 100),
        (D(3000000), 50),
        (D(20000000), 20),
        (D(1000000000), 2),
        (D(1500000000), 1),
    ],
)
def test_btc_max_leverage(notional: D, leverage: int) -> None:
    assert BTC.max_leverage(notional) == leverage


@pytest.mark.parametrize("table", [BTC, ETH], ids=["BTCUSDT", "ETHUSDT"])
def test_mm_is_continuous_at_every_cap(table: BracketTable) -> None:
    for lower, upper in zip(table.brackets, table.brackets[1:], strict=False):
        cap = lower.notional_cap
        assert lower.maintenance_margin(cap) == upper.maintenance_margin(cap)


def test_cum_is_computed_when_absent() -> None:
    computed = BracketTable.from_brackets(rows_without_cum())
    assert [b.cum for b in computed.brackets] == [D(0), D(50), D(1300), D(46300)]
    assert computed.brackets == BracketTable.from_brackets(DOMAIN_ROWS).brackets


def test_cum_null_is_computed() -> None:
    rows = [dict(r) for r in DOMAIN_ROWS]
    rows[2]["cum"] = None
    assert BracketTable.from_brackets(rows).brackets[2].cum == D(1300)


def test_rows_in_any_order() -> None:
    shuffled = list(reversed(DOMAIN_ROWS))
    assert BracketTable.from_brackets(shuffled).brackets == BTC.brackets[:4]


def test_above_last_cap_is_an_error() -> None:
    with pytest.raises(BracketError, match="exceeds the last bracket cap"):
        BTC.bracket_for(D("1500000000.01"))
    table = BracketTable.from_brackets(DOMAIN_ROWS)
    with pytest.raises(BracketError):
        table.maintenance_margin(D(20000001))


def test_negative_notional_is_an_error() -> None:
    with pytest.raises(BracketError):
        BTC.bracket_for(D(-1))


def test_float_is_rejected_with_a_clear_error() -> None:
    rows = [dict(r) for r in DOMAIN_ROWS]
    rows[0]["maintMarginRatio"] = 0.004
    with pytest.raises(TypeError, match="float"):
        BracketTable.from_brackets(rows)


def _mutated(index: int, *, strip_cum: bool = False, **changes: object) -> list[dict[str, object]]:
    rows = rows_without_cum() if strip_cum else [dict(r) for r in DOMAIN_ROWS]
    rows[index].update(changes)
    return rows


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (_mutated(2, cum="1301"), "cum"),
        (_mutated(1, strip_cum=True, notionalFloor=60000), "contiguous"),
        (_mutated(0, notionalFloor=1), "notionalFloor 0"),
        (_mutated(0, cum=5), "cum"),
        (_mutated(3, bracket=5), "1..4"),
        (_mutated(1, initialLeverage=150), "initialLeverage increases"),
        (_mutated(2, strip_cum=True, maintMarginRatio="0.0045"), "maintMarginRatio decreases"),
        (_mutated(3, notionalCap=3000000), "must exceed"),
        (_mutated(0, strip_cum=True, maintMarginRatio="1"), r"\[0, 1\)"),
        (_mutated(0, initialLeverage=0), "≥ 1"),
        (_mutated(1, notionalCap="abc"), "not a decimal"),
        ([], "at least one"),
    ],
)
def test_invalid_tables(rows: list[dict[str, object]], message: str) -> None:
    with pytest.raises(BracketError, match=message):
        BracketTable.from_brackets(rows)


def test_missing_key_is_reported() -> None:
    rows = [dict(r) for r in DOMAIN_ROWS]
    del rows[1]["maintMarginRatio"]
    with pytest.raises(BracketError, match="maintMarginRatio"):
        BracketTable.from_brackets(rows)


def test_from_json_obj_shape_errors() -> None:
    with pytest.raises(BracketError):
        BracketTable.from_json_obj([DOMAIN_ROWS])
    with pytest.raises(BracketError):
        BracketTable.from_json_obj({"symbol": "BTCUSDT"})


def test_json_roundtrip() -> None:
    again = BracketTable.from_json_obj(json.loads(json.dumps(BTC.to_json_obj())))
    assert again == BTC


def test_json_with_decimal_floats() -> None:
    text = json.dumps({"symbol": "X", "brackets": rows_without_cum()}).replace('"0.004"', "0.004")
    with pytest.raises(TypeError):
        BracketTable.from_json_obj(json.loads(text))
    table = BracketTable.from_json_obj(json.loads(text, parse_float=D))
    assert table.maintenance_margin(D(200000)) == D(950)


def test_direct_construction_is_validated() -> None:
    good = Bracket(1, 10, D(0), D(100), D("0.01"), D(0))
    bad = Bracket(2, 5, D(100), D(200), D("0.02"), D(0))  # cum should be 1
    with pytest.raises(BracketError):
        BracketTable((good, bad))
    assert BracketTable((good, Bracket(2, 5, D(100), D(200), D("0.02"), D(1)))).max_notional == 200
