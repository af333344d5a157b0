"""Per-position margin (DOMAIN.md §1), all in the quote asset (USDT).

* notional = |size| × markPrice
* IM = notional / leverage — the one inexact step; it is rounded *up* to 30 decimals
  (``MARGIN_PLACES``): a liability is never understated, so limits derived from it
  stay conservative, and sums of IMs stay exact.
* uPnL = size × (markPrice − entryPrice)
* MM = notional × MMR − cum with the bracket of the notional.

Leverage is validated against the bracket of the *entry* notional (|size| × entry):
that is the notional the engine accepted the position at. Validating against the mark
notional would turn a price rally into an error and block every withdrawal of an
account whose position merely grew in value; the MM still uses the mark notional.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from watcher.domain.account import MARGIN_PLACES, Position, ceil_to, div_ceil, exact
from watcher.domain.brackets import BracketTable


class PositionError(ValueError):
    """A position breaks a rule the engine should have enforced (e.g. max leverage)."""


def notional(position: Position, mark_price: Decimal) -> Decimal:
    with exact():
        return abs(position.size) * mark_price


def initial_margin(position: Position, mark_price: Decimal) -> Decimal:
    """IM = notional / leverage (IMR = 1 / leverage), rounded up to ``MARGIN_PLACES``."""
    return ceil_to(
        div_ceil(notional(position, mark_price), Decimal(position.leverage)), MARGIN_PLACES
    )


def unrealized_pnl(position: Position, mark_price: Decimal) -> Decimal:
    with exact():
        return position.size * (mark_price - position.entry_price)


def maintenance_margin(position: Position, mark_price: Decimal, table: BracketTable) -> Decimal:
    return table.maintenance_margin(notional(position, mark_price))


def check_leverage(position: Position, table: BracketTable) -> None:
    """Raise :class:`PositionError` if the leverage exceeds the bracket's initialLeverage."""
    with exact():
        entry_notional = abs(position.size) * position.entry_price
    allowed = table.max_leverage(entry_notional)
    if position.leverage > allowed:
        raise PositionError(
            f"{position.symbol}: leverage {position.leverage}× exceeds {allowed}× allowed "
            f"for notional {entry_notional}"
        )


@dataclass(frozen=True)
class PositionMargin:
    symbol: str
    margin_mode: str
    notional: Decimal
    initial_margin: Decimal
    unrealized_pnl: Decimal
    maintenance_margin: Decimal
    bracket: int


def position_margin(position: Position, mark_price: Decimal, table: BracketTable) -> PositionMargin:
    """All margin numbers of one position, after checking its leverage."""
    check_leverage(position, table)
    value = notional(position, mark_price)
    bracket = table.bracket_for(value)
    return PositionMargin(
        symbol=position.symbol,
        margin_mode=position.margin_mode,
        notional=value,
        initial_margin=initial_margin(position, mark_price),
        unrealized_pnl=unrealized_pnl(position, mark_price),
        maintenance_margin=bracket.maintenance_margin(value),
        bracket=bracket.bracket,
    )
