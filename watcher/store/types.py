"""Column types that keep money exact on both SQLite and PostgreSQL.

SQLite stores ``NUMERIC`` as REAL and silently loses uint256 precision (STACK.md), so
big integers travel as canonical decimal text there and as ``NUMERIC(78,0)`` on
PostgreSQL. Decimals (prices, position sizes) are stored as their exact text on both;
nothing in SQL compares or sums them, the domain does.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

UINT256_MAX = 2**256 - 1


def amount_text(value: int | None) -> str | None:
    """A ``BigAmount`` value as its canonical decimal text, checked as every bind of
    the type checks it (an ``int``, not a ``bool``, at most 78 digits); the bulk
    insert sends PostgreSQL ``NUMERIC`` arrays in this form."""
    if value is None:
        return None
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"BigAmount takes int, got {type(value).__name__}")
    if not -UINT256_MAX <= value <= UINT256_MAX:
        raise ValueError("amount exceeds 78 digits")
    return str(value)


class BigAmount(TypeDecorator[int]):
    """A signed integer of up to 78 digits (covers uint256), exact on every backend."""

    impl = String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(78, 0))
        return dialect.type_descriptor(String(80))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        text = amount_text(value)
        if dialect.name == "postgresql":
            return Decimal(value)
        return text

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            if value != value.to_integral_value():
                raise ValueError(f"non-integral amount in the database: {value}")
            return int(value)
        return int(value)


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal stored as its exact text (no float on any path)."""

    impl = String(100)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"ExactDecimal takes Decimal, got {type(value).__name__}")
        if not value.is_finite():
            raise ValueError("non-finite decimal")
        return format(value, "f")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value)
