"""Exact output: every decimal the API / CLI prints goes through ``plain_decimal``
(``api.schemas.dec``), which must be exact at any magnitude the ledger can hold
(uint256 base units at any precision) — never rounded by a context."""

from __future__ import annotations

from decimal import Decimal as D
from decimal import localcontext

from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.api.schemas import dec
from watcher.domain.account import EXACT
from watcher.domain.amounts import format_amount, parse_decimal_amount, plain_decimal
from watcher.domain.parsing import UINT256_MAX
from watcher.store.accounts import units_to_decimal


def test_the_issue_case() -> None:
    # 123456789012345678901.23456789 with 0.00000002 held: the max is …901.23456787,
    # which normalize() in a 28-digit context printed as …901.2345679.
    value = EXACT.subtract(D("123456789012345678901.23456789"), D("0.00000002"))
    assert dec(value) == "123456789012345678901.23456787"


def test_shapes() -> None:
    assert dec(D("0")) == "0"
    assert dec(D("-0.000")) == "0"
    assert dec(D("1.2300")) == "1.23"
    assert dec(D("100")) == "100"
    assert dec(D("1E+30")) == "1" + "0" * 30
    assert dec(D("-5.50")) == "-5.5"
    assert dec(D("1E-40")) == "0." + "0" * 39 + "1"


@settings(max_examples=400, deadline=None)
@given(st.integers(-UINT256_MAX, UINT256_MAX), st.integers(0, 30))
def test_exact_over_the_uint256_range(units: int, precision: int) -> None:
    value = units_to_decimal(units, precision)
    text = plain_decimal(value)
    assert D(text) == value  # nothing rounded
    assert "E" not in text and "e" not in text
    if "." in text:
        assert not text.endswith("0")
    if units >= 0:
        # the same digits as the integer formatter, and back to the same units
        assert D(text) == D(format_amount(units, precision))
        assert parse_decimal_amount(text, precision) == units


def test_independent_of_the_ambient_context() -> None:
    value = units_to_decimal(UINT256_MAX, 8)
    with localcontext() as ctx:
        ctx.prec = 3
        assert D(plain_decimal(value)) == units_to_decimal(UINT256_MAX, 8)
