"""Inputs of the risk rules (DOMAIN.md §1–§4) and the exact-arithmetic helpers they share.

Everything here is pure: the store builds an :class:`AccountSnapshot` from its rows
(ledger integers already converted to ``Decimal`` asset units, exactly) and hands it
to :mod:`watcher.domain.transfers`, :mod:`~watcher.domain.collateral`,
:mod:`~watcher.domain.rebalance` and :mod:`~watcher.domain.risk`.

Arithmetic policy (ARCHITECTURE.md principle 10):

* Sums, differences and products run in :data:`EXACT`, a 78-digit context that
  *traps* ``Inexact``: if an operation would ever round silently, it raises instead.
* The few divisions the rules need (IM = notional / leverage, quantity = USD / price)
  go through :func:`div_floor` / :func:`div_ceil`, which round in a named direction at
  78 digits. Because directed rounding is monotone and every ledger grid point is
  representable in 78 digits, ``floor_to(div_floor(a, b), p)`` equals the floor of the
  exact quotient (same for ceil): no double-rounding error is possible.
* An inexact quotient that feeds further sums (only IM = notional / leverage) is
  rounded up to :data:`MARGIN_PLACES` (30) decimals, so the sums stay exact in 78
  digits for any magnitude below 10^48; a liability rounded up by < 10^-30 can only
  lower a floored limit, never raise it.
* Results are quantized to an asset's ledger precision only with :func:`floor_to`
  (limits: max withdrawable, max transfer, credits) or :func:`ceil_to` (debits).
* ``float`` is rejected everywhere with a ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from watcher.domain.brackets import BracketTable

PRECISION_DIGITS = 78
#: Decimal places of an inexact intermediate margin figure (IM), rounded up.
MARGIN_PLACES = 30
_BASE_TRAPS = [InvalidOperation, DivisionByZero, Overflow]

#: Context for + − × and comparisons: raises ``decimal.Inexact`` instead of rounding.
EXACT = Context(prec=PRECISION_DIGITS, rounding=ROUND_HALF_EVEN, traps=[*_BASE_TRAPS, Inexact])
_FLOOR_CTX = Context(prec=PRECISION_DIGITS, rounding=ROUND_FLOOR, traps=_BASE_TRAPS)
_CEIL_CTX = Context(prec=PRECISION_DIGITS, rounding=ROUND_CEILING, traps=_BASE_TRAPS)
_QUANTIZE_CTX = Context(prec=PRECISION_DIGITS, rounding=ROUND_HALF_EVEN, traps=_BASE_TRAPS)

ZERO = Decimal(0)
ONE = Decimal(1)

MarginMode = Literal["cross", "isolated"]
MARGIN_MODES: tuple[MarginMode, ...] = ("cross", "isolated")


class SnapshotError(ValueError):
    """The snapshot is inconsistent or lacks data a rule needs (a price, an asset, ...)."""


def exact() -> AbstractContextManager[Context]:
    """``with exact():`` — arithmetic that raises rather than rounds silently."""
    return localcontext(EXACT)


def div_floor(numerator: Decimal, denominator: Decimal) -> Decimal:
    """numerator / denominator rounded toward −∞ at 78 significant digits."""
    return _FLOOR_CTX.divide(numerator, denominator)


def div_ceil(numerator: Decimal, denominator: Decimal) -> Decimal:
    """numerator / denominator rounded toward +∞ at 78 significant digits."""
    return _CEIL_CTX.divide(numerator, denominator)


def quantum(places: int) -> Decimal:
    """The base unit of a ledger precision: 8 → Decimal('1E-8')."""
    if isinstance(places, bool) or not isinstance(places, int) or places < 0:
        raise ValueError(f"precision must be a non-negative int, got {places!r}")
    return Decimal(1).scaleb(-places)


def floor_to(value: Decimal, places: int) -> Decimal:
    """Round toward −∞ to ``places`` decimals (limits, credits)."""
    return value.quantize(quantum(places), rounding=ROUND_FLOOR, context=_QUANTIZE_CTX)


def ceil_to(value: Decimal, places: int) -> Decimal:
    """Round toward +∞ to ``places`` decimals (debits)."""
    return value.quantize(quantum(places), rounding=ROUND_CEILING, context=_QUANTIZE_CTX)


def fits_precision(value: Decimal, places: int) -> bool:
    """True when ``value`` has no non-zero digit beyond ``places`` decimals."""
    return floor_to(value, places) == value


def to_decimal(value: object, what: str) -> Decimal:
    """Parse an int / str / Decimal exactly. ``float`` (and ``bool``) are refused."""
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected int, str or Decimal, got bool {value!r}")
    if isinstance(value, float):
        raise TypeError(
            f"{what}: float {value!r} is not accepted (inexact); pass a string or an int, "
            "or load JSON with parse_float=Decimal"
        )
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation as exc:
            raise ValueError(f"{what}: {value!r} is not a decimal number") from exc
    else:
        raise TypeError(f"{what}: expected int, str or Decimal, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"{what}: {value!r} is not finite")
    return result


def _require_decimal(value: object, what: str) -> None:
    if not isinstance(value, Decimal):
        raise TypeError(f"{what} must be a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise ValueError(f"{what} must be finite, got {value!r}")


@dataclass(frozen=True)
class Position:
    """One open position as written by the trading engine (DOMAIN.md §1).

    ``size`` is signed (+ long, − short) in contract units; ``isolated_wallet`` is the
    ledger's isolated wallet of (account, symbol) and is 0 for cross positions.
    """

    symbol: str
    size: Decimal
    entry_price: Decimal
    leverage: int
    margin_mode: MarginMode
    isolated_wallet: Decimal = ZERO

    def __post_init__(self) -> None:
        _require_decimal(self.size, f"{self.symbol} size")
        _require_decimal(self.entry_price, f"{self.symbol} entry_price")
        _require_decimal(self.isolated_wallet, f"{self.symbol} isolated_wallet")
        if isinstance(self.leverage, bool) or not isinstance(self.leverage, int):
            raise TypeError(f"{self.symbol} leverage must be an int, got {self.leverage!r}")
        if self.leverage < 1:
            raise ValueError(f"{self.symbol} leverage must be ≥ 1, got {self.leverage}")
        if self.margin_mode not in MARGIN_MODES:
            raise ValueError(f"{self.symbol} margin_mode must be cross|isolated")
        if self.entry_price < 0:
            raise ValueError(f"{self.symbol} entry_price must be ≥ 0")
        if self.margin_mode == "cross" and self.isolated_wallet != 0:
            raise ValueError(f"{self.symbol}: a cross position has no isolated wallet")


@dataclass(frozen=True)
class OpenOrderMargin:
    """Initial margin held by the open orders of one symbol, in USDT (DOMAIN.md §1)."""

    symbol: str
    margin_mode: MarginMode
    initial_margin: Decimal

    def __post_init__(self) -> None:
        _require_decimal(self.initial_margin, f"{self.symbol} order initial_margin")
        if self.margin_mode not in MARGIN_MODES:
            raise ValueError(f"{self.symbol} margin_mode must be cross|isolated")
        if self.initial_margin < 0:
            raise ValueError(f"{self.symbol} order initial_margin must be ≥ 0")


@dataclass(frozen=True)
class AssetInfo:
    """Ledger precision, multi-asset haircut and rebalance rate of one asset."""

    asset: str
    precision: int
    collateral_ratio: Decimal
    auto_exchange_rate: Decimal

    def __post_init__(self) -> None:
        quantum(self.precision)  # validates the int
        _require_decimal(self.collateral_ratio, f"{self.asset} collateral_ratio")
        _require_decimal(self.auto_exchange_rate, f"{self.asset} auto_exchange_rate")
        if not ZERO <= self.collateral_ratio <= ONE:
            raise ValueError(f"{self.asset} collateral_ratio must be in [0, 1]")
        if not ZERO <= self.auto_exchange_rate <= ONE:
            raise ValueError(f"{self.asset} auto_exchange_rate must be in [0, 1]")


@dataclass(frozen=True)
class AccountSnapshot:
    """Everything the risk rules read about one account, taken in one DB transaction.

    ``balances`` are the cross wallet per asset; ``mark_prices`` are per symbol and
    ``asset_prices`` are USD per asset (the settlement asset is 1 unless given).
    """

    balances: Mapping[str, Decimal]
    positions: Sequence[Position]
    open_orders: Sequence[OpenOrderMargin]
    mark_prices: Mapping[str, Decimal]
    asset_prices: Mapping[str, Decimal]
    brackets: Mapping[str, BracketTable]
    assets: Mapping[str, AssetInfo]
    multi_asset_mode: bool
    settlement_asset: str = "USDT"
    _isolated: Mapping[str, Position] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", tuple(self.positions))
        object.__setattr__(self, "open_orders", tuple(self.open_orders))
        for asset, qty in self.balances.items():
            _require_decimal(qty, f"balance of {asset}")
        for symbol, mark in self.mark_prices.items():
            _require_decimal(mark, f"mark price of {symbol}")
            if mark < 0:
                raise SnapshotError(f"mark price of {symbol} is negative")
        for asset, price in self.asset_prices.items():
            _require_decimal(price, f"price of {asset}")
            if price < 0:
                raise SnapshotError(f"price of {asset} is negative")
        for key, info in self.assets.items():
            if key != info.asset:
                raise SnapshotError(f"assets[{key!r}] describes {info.asset!r}")
        isolated: dict[str, Position] = {}
        for position in self.positions:
            if position.margin_mode == "isolated":
                if position.symbol in isolated:
                    raise SnapshotError(
                        f"two isolated positions on {position.symbol}: the ledger holds one "
                        "isolated wallet per (account, symbol)"
                    )
                isolated[position.symbol] = position
        object.__setattr__(self, "_isolated", isolated)

    def balance(self, asset: str) -> Decimal:
        """Cross wallet balance of ``asset`` (0 when the account never held it)."""
        return self.balances.get(asset, ZERO)

    def price_of(self, asset: str) -> Decimal:
        """USD price of ``asset``; the settlement asset defaults to 1."""
        price = self.asset_prices.get(asset)
        if price is not None:
            return price
        if asset == self.settlement_asset:
            return ONE
        raise SnapshotError(f"no USD price for asset {asset}")

    def asset_info(self, asset: str) -> AssetInfo:
        try:
            return self.assets[asset]
        except KeyError:
            raise SnapshotError(f"asset {asset} is not configured") from None

    def mark_price(self, symbol: str) -> Decimal:
        try:
            return self.mark_prices[symbol]
        except KeyError:
            raise SnapshotError(f"no mark price for {symbol}") from None

    def bracket_table(self, symbol: str) -> BracketTable:
        try:
            return self.brackets[symbol]
        except KeyError:
            raise SnapshotError(f"no leverage brackets for {symbol}") from None

    def isolated_position(self, symbol: str) -> Position | None:
        return self._isolated.get(symbol)

    def negative_assets(self) -> tuple[str, ...]:
        """Assets whose cross wallet is below zero, sorted by name (DOMAIN.md §3)."""
        return tuple(sorted(a for a, qty in self.balances.items() if qty < 0))

    def with_balance(self, asset: str, quantity: Decimal) -> AccountSnapshot:
        """A copy with one cross-wallet balance replaced (used to test "after" states)."""
        balances = dict(self.balances)
        balances[asset] = quantity
        return AccountSnapshot(
            balances=balances,
            positions=self.positions,
            open_orders=self.open_orders,
            mark_prices=self.mark_prices,
            asset_prices=self.asset_prices,
            brackets=self.brackets,
            assets=self.assets,
            multi_asset_mode=self.multi_asset_mode,
            settlement_asset=self.settlement_asset,
        )
