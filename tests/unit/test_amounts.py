"""Exact amount rules (DOMAIN §5) as tables with worked numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.domain.amounts import (
    AmountError,
    AmountFormatError,
    AmountPrecisionError,
    chain_to_ledger,
    chain_to_ledger_of,
    format_amount,
    ledger_to_chain,
    parse_decimal_amount,
)


@pytest.mark.parametrize(
    ("case", "amount", "token_decimals", "ledger_precision", "ledger", "dust"),
    [
        # USDT on BNB Chain has 18 decimals; ledger USDT precision 8.
        ("bsc-usdt", 1_234_567_891_234_567_891, 18, 8, 123_456_789, 1_234_567_891),
        # USDT on Ethereum has 6 decimals: ledger has more room, exact, no dust.
        ("eth-usdt", 1_234_567, 6, 8, 123_456_700, 0),
        ("eth-usdt-1", 1, 6, 8, 100, 0),
        # Equal precision: identity.
        ("btc-8-8", 12_345_678, 8, 8, 12_345_678, 0),
        # ETH 18 decimals to ledger precision 8: 1 wei is pure dust.
        ("one-wei", 1, 18, 8, 0, 1),
        ("just-below-unit", 9_999_999_999, 18, 8, 0, 9_999_999_999),
        ("exactly-one-unit", 10_000_000_000, 18, 8, 1, 0),
        ("zero", 0, 18, 8, 0, 0),
        # 2**256-1 wei (max uint256) stays exact.
        (
            "max-uint256",
            2**256 - 1,
            18,
            8,
            (2**256 - 1) // 10**10,
            (2**256 - 1) % 10**10,
        ),
        ("zero-decimals-token", 5, 0, 8, 500_000_000, 0),
    ],
)
def test_chain_to_ledger(
    case: str, amount: int, token_decimals: int, ledger_precision: int, ledger: int, dust: int
) -> None:
    assert chain_to_ledger(amount, token_decimals, ledger_precision) == (ledger, dust)
    # The per-token converter the deposit backfill uses gives the same, amount by amount.
    convert = chain_to_ledger_of(token_decimals, ledger_precision)
    assert convert(amount) == (ledger, dust)
    assert [convert(a) for a in (0, 1, amount)] == [
        chain_to_ledger(a, token_decimals, ledger_precision) for a in (0, 1, amount)
    ]


@pytest.mark.parametrize(
    ("ledger_units", "ledger_precision", "token_decimals", "expected"),
    [
        (123_456_789, 8, 18, 1_234_567_890_000_000_000),
        (150_000_000, 8, 6, 1_500_000),  # 1.5 USDT to Ethereum USDT
        (100, 8, 6, 1),  # 0.000001 USDT: the smallest Ethereum USDT unit
        (0, 8, 6, 0),
        (7, 0, 18, 7 * 10**18),
        (12_345_678, 8, 8, 12_345_678),
    ],
)
def test_ledger_to_chain_exact(
    ledger_units: int, ledger_precision: int, token_decimals: int, expected: int
) -> None:
    assert ledger_to_chain(ledger_units, ledger_precision, token_decimals) == expected


@pytest.mark.parametrize(
    ("ledger_units", "ledger_precision", "token_decimals"),
    [
        (1, 8, 6),  # 0.00000001 USDT does not exist on Ethereum
        (150_000_001, 8, 6),
        (99, 8, 6),
        (5, 2, 0),
    ],
)
def test_ledger_to_chain_rejects_inexact(
    ledger_units: int, ledger_precision: int, token_decimals: int
) -> None:
    with pytest.raises(AmountPrecisionError, match="cannot be represented with"):
        ledger_to_chain(ledger_units, ledger_precision, token_decimals)


def test_negative_amounts_rejected() -> None:
    with pytest.raises(AmountError):
        chain_to_ledger(-1, 18, 8)
    with pytest.raises(AmountError):
        chain_to_ledger_of(6, 8)(-1)
    with pytest.raises(AmountError):
        ledger_to_chain(-1, 8, 18)


def test_non_int_rejected() -> None:
    with pytest.raises(TypeError):
        chain_to_ledger(1.5, 18, 8)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        chain_to_ledger(True, 18, 8)


@pytest.mark.parametrize(
    ("text", "decimals", "expected"),
    [
        ("1.234567891234567891", 18, 1_234_567_891_234_567_891),
        ("1.5", 6, 1_500_000),
        ("12", 6, 12_000_000),
        ("0", 18, 0),
        ("0.000001", 6, 1),
        ("000123.45", 2, 12_345),
        ("1.500000000", 2, 150),  # trailing zeros beyond the decimals are still exact
        ("7", 0, 7),
        ("7.000", 0, 7),
        (
            "115792089237316195423570985008687907853269984665640564039457.584007913129639935",
            18,
            2**256 - 1,
        ),
    ],
)
def test_parse_decimal_amount(text: str, decimals: int, expected: int) -> None:
    assert parse_decimal_amount(text, decimals) == expected


@pytest.mark.parametrize(
    ("text", "decimals", "message"),
    [
        ("1.1234567", 6, "has 7 decimal places; at most 6 allowed"),
        ("0.5", 0, "has 1 decimal places; at most 0 allowed"),
        ("1e18", 18, "exponent notation"),
        ("1E-6", 6, "exponent notation"),
        ("-1", 6, "negative"),
        ("-0.5", 6, "negative"),
        ("+1", 6, "sign"),
        ("NaN", 6, "not a number"),
        ("nan", 6, "not a number"),
        ("Infinity", 6, "not a number"),
        ("-inf", 6, "not a number"),
        ("", 6, "empty"),
        (" 1", 6, "whitespace"),
        ("1 ", 6, "whitespace"),
        ("1,5", 6, "not a plain decimal"),
        ("1_000", 6, "not a plain decimal"),
        (".5", 6, "not a plain decimal"),
        ("1.", 6, "not a plain decimal"),
        ("0x10", 6, "not a plain decimal"),
        ("١", 6, "not a plain decimal"),  # Arabic-Indic digit: int() would accept it
    ],
)
def test_parse_decimal_amount_rejects(text: str, decimals: int, message: str) -> None:
    with pytest.raises(AmountFormatError, match=message):
        parse_decimal_amount(text, decimals)


@pytest.mark.parametrize(
    ("units", "decimals", "expected"),
    [
        (1_234_567_891_234_567_891, 18, "1.234567891234567891"),
        (1_500_000, 6, "1.5"),
        (12_000_000, 6, "12"),
        (0, 18, "0"),
        (0, 0, "0"),
        (1, 18, "0.000000000000000001"),
        (10**30, 18, "1000000000000"),
        (1_000_000_000_000_000_001, 18, "1.000000000000000001"),
        (-150, 2, "-1.5"),
        (42, 0, "42"),
    ],
)
def test_format_amount(units: int, decimals: int, expected: str) -> None:
    assert format_amount(units, decimals) == expected


@given(units=st.integers(min_value=0, max_value=2**256 - 1), decimals=st.integers(0, 36))
def test_format_then_parse_round_trips(units: int, decimals: int) -> None:
    text = format_amount(units, decimals)
    assert "e" not in text.lower()
    assert parse_decimal_amount(text, decimals) == units


@given(
    amount=st.integers(min_value=0, max_value=2**256 - 1),
    token_decimals=st.integers(0, 30),
    ledger_precision=st.integers(0, 18),
)
def test_chain_to_ledger_conserves_value(
    amount: int, token_decimals: int, ledger_precision: int
) -> None:
    ledger, dust = chain_to_ledger(amount, token_decimals, ledger_precision)
    assert ledger >= 0
    assert dust >= 0
    # The credited part goes back to chain exactly; credited + dust is the deposit.
    assert ledger_to_chain(ledger, ledger_precision, token_decimals) + dust == amount
