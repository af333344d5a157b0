"""Exact conversions between on-chain base units and ledger units.

Pure: integers end to end, no floats, no I/O.

Vocabulary (DOMAIN §5):

* *base units* — the token's smallest unit on one network (``wei`` for ETH,
  ``10**-18`` USDT on BNB Chain, ``10**-6`` USDT on Ethereum).
* *ledger units* — the ledger asset's smallest unit, ``10**-ledger_precision``
  of the asset (USDT with precision 8 counts in ``10**-8`` USDT).
* *dust* — what a chain → ledger conversion could not represent, in base units.

Worked example: 1.234567891234567891 USDT on BNB Chain (18 decimals) is
1_234_567_891_234_567_891 base units; with ledger precision 8 it credits
123_456_789 ledger units (1.23456789 USDT) and leaves 1_234_567_891 base units
(0.000000001234567891 USDT) of dust.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

__all__ = [
    "AmountError",
    "AmountFormatError",
    "AmountPrecisionError",
    "chain_to_ledger",
    "chain_to_ledger_of",
    "format_amount",
    "ledger_to_chain",
    "parse_decimal_amount",
    "plain_decimal",
]

# Digits only, an optional fraction; no sign, no exponent, no whitespace, no "_".
_DECIMAL_RE = re.compile(r"(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]+))?")
_MAX_DECIMALS = 77  # uint256 has 78 digits; no real token comes close


class AmountError(ValueError):
    """An amount that the rules cannot represent or accept."""


class AmountPrecisionError(AmountError):
    """Ledger → chain conversion would lose precision (``AMOUNT_PRECISION``)."""


class AmountFormatError(AmountError):
    """A decimal amount string that is not a plain non-negative decimal."""


def plain_decimal(value: Decimal) -> str:
    """``value`` in plain notation, exactly: no exponent, no trailing fractional zeros,
    ``"0"`` for any zero. Never goes through a context, so no digit is ever rounded
    away whatever the magnitude (``Decimal.normalize()`` would round to the current
    context's 28 digits)."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TypeError(f"expected a finite Decimal, got {value!r}")
    if value.is_zero():
        return "0"
    text = format(value, "f")  # no precision given: every digit, no rounding
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _pow10(exponent: int) -> int:
    # int ** int is typed Any (a negative exponent gives a float); ours is >= 0.
    result: int = 10**exponent
    return result


def _check_decimals(name: str, value: int) -> None:
    # bool is an int subclass; reject it so a stray True never means "1 decimal".
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= _MAX_DECIMALS:
        raise AmountError(f"{name} must be between 0 and {_MAX_DECIMALS}, got {value}")


def _check_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")


def chain_to_ledger(amount: int, token_decimals: int, ledger_precision: int) -> tuple[int, int]:
    """Convert ``amount`` base units to ``(ledger_units, dust_base_units)``.

    Floors to the ledger precision (the user is credited what the ledger can
    hold; the remainder is recorded as dust). When the token has fewer decimals
    than the ledger precision the conversion is exact and the dust is 0.

    >>> chain_to_ledger(1_234_567_891_234_567_891, 18, 8)
    (123456789, 1234567891)
    >>> chain_to_ledger(1_500_000, 6, 8)
    (150000000, 0)
    """
    return chain_to_ledger_of(token_decimals, ledger_precision)(amount)


def chain_to_ledger_of(
    token_decimals: int, ledger_precision: int
) -> Callable[[int], tuple[int, int]]:
    """:func:`chain_to_ledger` for one token: the decimals are checked once, then each
    amount costs an int check and a ``divmod`` (a backfill converts thousands).

    >>> usdt = chain_to_ledger_of(18, 8)
    >>> usdt(1_234_567_891_234_567_891), usdt(5)
    ((123456789, 1234567891), (0, 5))
    """
    _check_decimals("token_decimals", token_decimals)
    _check_decimals("ledger_precision", ledger_precision)

    def checked(amount: int) -> int:
        if type(amount) is not int:
            _check_int("amount", amount)
        if amount < 0:
            raise AmountError(f"on-chain amount cannot be negative, got {amount}")
        return amount

    if token_decimals >= ledger_precision:
        unit = _pow10(token_decimals - ledger_precision)

        def floor(amount: int) -> tuple[int, int]:
            ledger_units, dust = divmod(checked(amount), unit)
            return ledger_units, dust

        return floor
    factor = _pow10(ledger_precision - token_decimals)

    def exact(amount: int) -> tuple[int, int]:
        return checked(amount) * factor, 0

    return exact


def ledger_to_chain(ledger_units: int, ledger_precision: int, token_decimals: int) -> int:
    """Convert ledger units to the token's base units, exactly or not at all.

    Raises :class:`AmountPrecisionError` when the token cannot carry the
    amount (e.g. 0.00000001 USDT with precision 8 to USDT's 6 decimals on
    Ethereum): the withdrawal is rejected instead of rounded.

    >>> ledger_to_chain(123_456_789, 8, 18)
    1234567890000000000
    >>> ledger_to_chain(150_000_000, 8, 6)
    1500000
    """
    _check_int("ledger_units", ledger_units)
    _check_decimals("ledger_precision", ledger_precision)
    _check_decimals("token_decimals", token_decimals)
    if ledger_units < 0:
        raise AmountError(f"amount to send on chain cannot be negative, got {ledger_units}")
    if token_decimals >= ledger_precision:
        return ledger_units * _pow10(token_decimals - ledger_precision)
    base_units, remainder = divmod(ledger_units, _pow10(ledger_precision - token_decimals))
    if remainder:
        raise AmountPrecisionError(
            f"{format_amount(ledger_units, ledger_precision)} cannot be represented with "
            f"{token_decimals} decimals on this network"
        )
    return base_units


def parse_decimal_amount(text: str, decimals: int) -> int:
    """Parse a decimal string in token units into base units, exactly.

    Accepts only ``digits`` or ``digits.digits`` (trailing zeros in the fraction
    are fine: ``"1.500"`` with 2 decimals is 150). Rejects signs, exponents,
    NaN/Infinity, whitespace, underscores and more significant decimals than
    the token has.

    >>> parse_decimal_amount("1.234567891234567891", 18)
    1234567891234567891
    >>> parse_decimal_amount("12", 6)
    12000000
    """
    if not isinstance(text, str):
        raise TypeError(f"amount must be a string, got {type(text).__name__}")
    _check_decimals("decimals", decimals)
    match = _DECIMAL_RE.fullmatch(text)
    if match is None:
        raise AmountFormatError(_explain_bad_amount(text))
    integer = match.group("int")
    fraction = (match.group("frac") or "").rstrip("0")
    if len(fraction) > decimals:
        raise AmountFormatError(
            f"amount {text!r} has {len(fraction)} decimal places; at most {decimals} allowed"
        )
    return int(integer) * _pow10(decimals) + int(fraction.ljust(decimals, "0") or "0")


def _explain_bad_amount(text: str) -> str:
    stripped = text.strip()
    lowered = stripped.lower()
    if not stripped:
        return "amount is empty"
    if stripped != text:
        return f"amount {text!r} has surrounding whitespace"
    if lowered.lstrip("+-") in {"nan", "snan", "inf", "infinity"}:
        return f"amount {text!r} is not a number"
    if stripped.startswith("-"):
        return f"amount {text!r} is negative"
    if stripped.startswith("+"):
        return f"amount {text!r} must not carry a sign"
    if "e" in lowered:
        return f"amount {text!r} uses exponent notation; write it as a plain decimal"
    return f"amount {text!r} is not a plain decimal number (digits with an optional '.')"


def format_amount(units: int, decimals: int) -> str:
    """Render base units as a decimal string in token units.

    Never uses exponent notation, drops trailing fraction zeros, "0" for zero.

    >>> format_amount(1_234_567_891_234_567_891, 18)
    '1.234567891234567891'
    >>> format_amount(1_500_000, 6)
    '1.5'
    >>> format_amount(0, 18)
    '0'
    """
    _check_int("units", units)
    _check_decimals("decimals", decimals)
    sign = "-" if units < 0 else ""
    whole, fraction = divmod(abs(units), _pow10(decimals))
    if fraction == 0:
        return f"{sign}{whole}"
    fraction_text = str(fraction).rjust(decimals, "0").rstrip("0")
    return f"{sign}{whole}.{fraction_text}"
