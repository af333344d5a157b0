"""Liquidation price and margin ratio, one-way mode (DOMAIN.md §1; docs/risk.md).

A position is liquidated when its margin balance falls to its maintenance margin:

* isolated: MB = isolated wallet + the position's uPnL, MM = the position's MM;
* cross:    MB = CWB + Σ cross uPnL, MM = Σ cross MM, where CWB is this project's
  cross wallet balance (the settlement balance, or the total collateral value in
  multi-asset mode, :func:`watcher.domain.collateral.cross_wallet_balance`).

Solving MB(P) = MM(P) for the mark price P of one position (signed size Q, side
s = sign Q, q = |Q|, entry EP), with everything else held at its current value and the
bracket (MMR, cum) of the notional q × P:

    WB + UPNL1 + s·q·(P − EP) = TMM1 + q·P·MMR − cum
    P = (WB − TMM1 + UPNL1 + cum − s·q·EP) / (q·MMR − s·q)

WB is the isolated wallet (TMM1 = UPNL1 = 0) or the CWB; TMM1 / UPNL1 are the MM and
uPnL of the account's *other* cross positions at their current marks. MB − MM is
continuous and strictly monotone in P (slope s·q − q·MMR, MMR < 1) because MM is
continuous at every bracket boundary, so there is at most one root: trying each bracket
and keeping the one whose (floor, cap] holds q × P finds it. A root past the last cap
is computed with the last bracket extended (the table says nothing beyond it).

No positive price (``None``): a long whose wallet covers a fall to 0, a short whose
root is ≤ 0 (already below maintenance at every positive price; its margin ratio
says so), or no position (size 0).

Rounding: the root is computed at 78 digits and rounded to :data:`PRICE_PLACES`
decimals in the *conservative* direction — up for a long (liquidated when the price
falls to LP: a higher LP warns earlier), down for a short (liquidated when it rises).
The margin ratio is rounded up to :data:`RATIO_PLACES` decimals (a higher ratio is the
more cautious figure).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, InvalidOperation, Overflow

from watcher.domain.account import (
    PRECISION_DIGITS,
    ZERO,
    AccountSnapshot,
    Position,
    ceil_to,
    div_ceil,
    div_floor,
    exact,
    floor_to,
)
from watcher.domain.brackets import Bracket, BracketTable
from watcher.domain.collateral import cross_wallet_balance
from watcher.domain.margin import maintenance_margin, unrealized_pnl

#: Decimal places of a liquidation price (rounded away from the danger side).
PRICE_PLACES = 12
#: Decimal places of a margin ratio (rounded up).
RATIO_PLACES = 8


_UP = Context(prec=PRECISION_DIGITS, rounding=ROUND_CEILING, traps=[InvalidOperation, Overflow])
_DOWN = Context(prec=PRECISION_DIGITS, rounding=ROUND_FLOOR, traps=[InvalidOperation, Overflow])


def _notional(q: Decimal, price: Decimal, side: int) -> Decimal:
    """q × price at 78 digits, rounded the way the root was (a root already rounded
    across a cap stays across it: the bracket test never contradicts the rounding)."""
    return (_UP if side > 0 else _DOWN).multiply(q, price)


def _root(
    wallet: Decimal, other_mm: Decimal, other_upnl: Decimal, position: Position, bracket: Bracket
) -> Decimal:
    """The exact-as-possible root with one bracket, unrounded direction-wise (see caller)."""
    q = abs(position.size)
    side = 1 if position.size > 0 else -1
    with exact():
        numerator = wallet - other_mm + other_upnl + bracket.cum - side * q * position.entry_price
        denominator = q * bracket.maint_margin_ratio - side * q
    # long: denominator < 0, LP rounded up; short: denominator > 0, LP rounded down.
    return div_ceil(numerator, denominator) if side > 0 else div_floor(numerator, denominator)


def liquidation_price(
    position: Position,
    table: BracketTable,
    wallet: Decimal,
    other_mm: Decimal = ZERO,
    other_upnl: Decimal = ZERO,
) -> Decimal | None:
    """LP of ``position`` (see the module doc), or None when no positive price liquidates."""
    if position.size == 0:
        return None
    side = 1 if position.size > 0 else -1
    q = abs(position.size)
    chosen: Decimal | None = None
    for bracket in table.brackets:
        root = _root(wallet, other_mm, other_upnl, position, bracket)
        if root <= 0:
            continue
        at = _notional(q, root, side)
        if bracket.notional_floor < at <= bracket.notional_cap:
            chosen = root
            break
    if chosen is None:
        # Either no positive root at all, or the root lies past the last cap: then the
        # last bracket's line (extended) holds it.
        last = _root(wallet, other_mm, other_upnl, position, table.brackets[-1])
        beyond = last > 0 and _notional(q, last, side) > table.max_notional
        if not beyond:
            return None
        chosen = last
    rounded = ceil_to(chosen, PRICE_PLACES) if side > 0 else floor_to(chosen, PRICE_PLACES)
    return rounded if rounded > 0 else None


def margin_ratio(maintenance: Decimal, balance: Decimal) -> Decimal | None:
    """MM / MB rounded up to :data:`RATIO_PLACES`; 0 without MM; None when MB ≤ 0 while
    MM is held (past liquidation: the ratio is unbounded)."""
    if maintenance == 0:
        return ZERO
    if balance <= 0:
        return None
    return ceil_to(div_ceil(maintenance, balance), RATIO_PLACES)


@dataclass(frozen=True)
class PositionRisk:
    symbol: str
    margin_mode: str
    liquidation_price: Decimal | None
    margin_balance: Decimal
    maintenance_margin: Decimal
    #: Isolated positions only (a cross position shares the account's ratio).
    margin_ratio: Decimal | None


@dataclass(frozen=True)
class AccountRisk:
    cross_margin_balance: Decimal
    cross_maintenance_margin: Decimal
    cross_margin_ratio: Decimal | None
    positions: tuple[PositionRisk, ...]

    def position(self, symbol: str, margin_mode: str) -> PositionRisk:
        for p in self.positions:
            if p.symbol == symbol and p.margin_mode == margin_mode:
                return p
        raise KeyError((symbol, margin_mode))


def account_risk(snapshot: AccountSnapshot) -> AccountRisk:
    """Liquidation prices and margin ratios of every position of the account.

    Raises the snapshot's errors (missing price, notional past the last bracket) like
    every other rule."""
    cwb = cross_wallet_balance(snapshot)
    cross_mm: dict[int, Decimal] = {}
    cross_upnl: dict[int, Decimal] = {}
    for index, p in enumerate(snapshot.positions):
        if p.margin_mode != "cross":
            continue
        mark = snapshot.mark_price(p.symbol)
        cross_mm[index] = maintenance_margin(p, mark, snapshot.bracket_table(p.symbol))
        cross_upnl[index] = unrealized_pnl(p, mark)
    with exact():
        total_mm = sum(cross_mm.values(), ZERO)
        total_upnl = sum(cross_upnl.values(), ZERO)
        cross_mb = cwb + total_upnl
    out: list[PositionRisk] = []
    for index, p in enumerate(snapshot.positions):
        mark = snapshot.mark_price(p.symbol)
        table = snapshot.bracket_table(p.symbol)
        if p.margin_mode == "cross":
            with exact():
                other_mm = total_mm - cross_mm[index]
                other_upnl = total_upnl - cross_upnl[index]
            lp = liquidation_price(p, table, cwb, other_mm, other_upnl)
            out.append(PositionRisk(p.symbol, "cross", lp, cross_mb, total_mm, None))
            continue
        mm = maintenance_margin(p, mark, table)
        with exact():
            mb = p.isolated_wallet + unrealized_pnl(p, mark)
        lp = liquidation_price(p, table, p.isolated_wallet)
        out.append(PositionRisk(p.symbol, "isolated", lp, mb, mm, margin_ratio(mm, mb)))
    return AccountRisk(cross_mb, total_mm, margin_ratio(total_mm, cross_mb), tuple(out))
