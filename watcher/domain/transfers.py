"""Max transfers out of the cross wallet and in/out of isolated wallets (DOMAIN.md §2).

Terms, in USDT (the settlement asset; USD in multi-asset mode):

* A = CWB − Σ iso order IM − Σ cross MM
* B = CWB + Σ cross uPnL − Σ cross IM − Σ iso order IM   (cross IM includes cross orders)
* max withdrawable (cross) = max(0, min(A, B)), floored to the ledger precision
* availableBalance = max(0, B), floored
* isolated max transfer-in = max(0, min(CWB − Σ iso position IM − Σ cross MM, availableBalance))
* isolated max transfer-out = max(0, min(isoWB − MM, isoWB + uPnL − notional × IMR))

The CWB is an argument: :mod:`watcher.domain.collateral` decides what it is (the
settlement balance, or the total collateral value in multi-asset mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from watcher.domain.account import ZERO, AccountSnapshot, Position, exact, floor_to
from watcher.domain.brackets import BracketTable
from watcher.domain.margin import position_margin


@dataclass(frozen=True)
class CrossTerms:
    """The sums §2 needs, over all positions and open orders of the account."""

    cross_unrealized_pnl: Decimal = ZERO
    cross_initial_margin: Decimal = ZERO
    isolated_open_order_initial_margin: Decimal = ZERO
    cross_maintenance_margin: Decimal = ZERO
    isolated_position_initial_margin: Decimal = ZERO


def cross_terms(snapshot: AccountSnapshot) -> CrossTerms:
    """Σ cross uPnL / IM (positions + cross orders) / MM, Σ iso order IM, Σ iso position IM."""
    upnl = cross_im = iso_order_im = cross_mm = iso_pos_im = ZERO
    for position in snapshot.positions:
        pm = position_margin(
            position,
            snapshot.mark_price(position.symbol),
            snapshot.bracket_table(position.symbol),
        )
        with exact():
            if position.margin_mode == "cross":
                upnl += pm.unrealized_pnl
                cross_im += pm.initial_margin
                cross_mm += pm.maintenance_margin
            else:
                iso_pos_im += pm.initial_margin
    for order in snapshot.open_orders:
        with exact():
            if order.margin_mode == "cross":
                cross_im += order.initial_margin
            else:
                iso_order_im += order.initial_margin
    return CrossTerms(
        cross_unrealized_pnl=upnl,
        cross_initial_margin=cross_im,
        isolated_open_order_initial_margin=iso_order_im,
        cross_maintenance_margin=cross_mm,
        isolated_position_initial_margin=iso_pos_im,
    )


@dataclass(frozen=True)
class CrossBreakdown:
    """The numbers behind a cross max-withdrawable figure (A and B exact, limits floored)."""

    a: Decimal
    b: Decimal
    cross_wallet_balance: Decimal
    cross_unrealized_pnl: Decimal
    cross_initial_margin: Decimal
    isolated_open_order_initial_margin: Decimal
    cross_maintenance_margin: Decimal
    max_withdraw_amount: Decimal
    available_balance: Decimal

    @property
    def headroom(self) -> Decimal:
        """min(A, B), exact and possibly negative."""
        return min(self.a, self.b)

    def as_dict(self) -> dict[str, Decimal]:
        """API / details spelling (Binance field names)."""
        return {
            "A": self.a,
            "B": self.b,
            "crossWalletBalance": self.cross_wallet_balance,
            "crossUnPnl": self.cross_unrealized_pnl,
            "crossInitialMargin": self.cross_initial_margin,
            "isolatedOpenOrderInitialMargin": self.isolated_open_order_initial_margin,
            "crossMaintenanceMargin": self.cross_maintenance_margin,
            "maxWithdrawAmount": self.max_withdraw_amount,
            "availableBalance": self.available_balance,
        }


def cross_breakdown(
    cross_wallet_balance: Decimal, terms: CrossTerms, precision: int
) -> CrossBreakdown:
    """A, B, max withdrawable = max(0, min(A, B)) and availableBalance, floored to ``precision``."""
    with exact():
        a = (
            cross_wallet_balance
            - terms.isolated_open_order_initial_margin
            - terms.cross_maintenance_margin
        )
        b = (
            cross_wallet_balance
            + terms.cross_unrealized_pnl
            - terms.cross_initial_margin
            - terms.isolated_open_order_initial_margin
        )
    return CrossBreakdown(
        a=a,
        b=b,
        cross_wallet_balance=cross_wallet_balance,
        cross_unrealized_pnl=terms.cross_unrealized_pnl,
        cross_initial_margin=terms.cross_initial_margin,
        isolated_open_order_initial_margin=terms.isolated_open_order_initial_margin,
        cross_maintenance_margin=terms.cross_maintenance_margin,
        max_withdraw_amount=floor_to(max(ZERO, min(a, b)), precision),
        available_balance=floor_to(max(ZERO, b), precision),
    )


def cross_max_withdrawable(
    cross_wallet_balance: Decimal, terms: CrossTerms, precision: int
) -> Decimal:
    return cross_breakdown(cross_wallet_balance, terms, precision).max_withdraw_amount


def isolated_max_transfer_in(
    cross_wallet_balance: Decimal, terms: CrossTerms, precision: int
) -> Decimal:
    """max(0, min(CWB − Σ iso position IM − Σ cross MM, availableBalance)), floored."""
    breakdown = cross_breakdown(cross_wallet_balance, terms, precision)
    with exact():
        first = (
            cross_wallet_balance
            - terms.isolated_position_initial_margin
            - terms.cross_maintenance_margin
        )
    available = max(ZERO, breakdown.b)
    return floor_to(max(ZERO, min(first, available)), precision)


@dataclass(frozen=True)
class IsolatedOutTerms:
    """The two terms of the isolated transfer-out rule and their floored result."""

    maintenance_margin: Decimal
    wallet_minus_mm: Decimal
    wallet_plus_upnl_minus_im: Decimal
    max_transfer_out: Decimal


def isolated_transfer_out_terms(
    position: Position, mark_price: Decimal, table: BracketTable, precision: int
) -> IsolatedOutTerms:
    """isoWB − MM and isoWB + size × (mark − entry) − mark × |size| × IMR."""
    pm = position_margin(position, mark_price, table)
    with exact():
        first = position.isolated_wallet - pm.maintenance_margin
        second = position.isolated_wallet + pm.unrealized_pnl - pm.initial_margin
    return IsolatedOutTerms(
        maintenance_margin=pm.maintenance_margin,
        wallet_minus_mm=first,
        wallet_plus_upnl_minus_im=second,
        max_transfer_out=floor_to(max(ZERO, min(first, second)), precision),
    )


def isolated_max_transfer_out(
    position: Position, mark_price: Decimal, table: BracketTable, precision: int
) -> Decimal:
    return isolated_transfer_out_terms(position, mark_price, table, precision).max_transfer_out
