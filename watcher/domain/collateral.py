"""Which balance is the CWB, and how much of each asset may leave (DOMAIN.md §2, §4).

Single-asset mode (``multi_asset_mode=False``):
  CWB = the settlement asset's (USDT) cross balance; the USDT max withdrawable is the
  §2 cross max. Other assets are not collateral: nothing is margined against them,
  so their max withdrawable is their whole balance (floored to their precision).

Multi-asset mode:
  collateral value of X = qty_X × price_X × collateralRatio_X for qty_X ≥ 0, and
  qty_X × price_X (full value, no haircut) for qty_X < 0; CWB = Σ of those, in USD.
  headroom = min(A, B) of §2 computed with that CWB, *exact* (not floored in USD first:
  flooring twice would only lose a unit for nothing), and
  max withdrawable of X = min(balance_X, headroom / (price_X × ratio_X)), floored to
  X's precision (the quotient is taken rounding down, see ``account.div_floor``).
  An asset with ratio 0 (or price 0) adds no collateral, so taking it out costs no
  headroom: its max is its balance.

In both modes, while any asset is negative the max withdrawable of every asset is 0:
the figure shown equals what :func:`watcher.domain.risk.decide_withdrawal` allows
(which rejects with ``NEGATIVE_BALANCE``).

Isolated transfer-in moves the settlement asset, so in multi-asset mode the §2 figure
(computed with the collateral CWB) is further capped at the settlement balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from watcher.domain.account import (
    ZERO,
    AccountSnapshot,
    div_floor,
    exact,
    floor_to,
)
from watcher.domain.transfers import (
    CrossBreakdown,
    cross_breakdown,
    cross_terms,
    isolated_max_transfer_in,
)


def collateral_value(snapshot: AccountSnapshot, asset: str) -> Decimal:
    """USD collateral value of one asset's cross balance (haircut only when positive)."""
    qty = snapshot.balance(asset)
    if qty == 0:
        return ZERO
    price = snapshot.price_of(asset)
    with exact():
        if qty < 0:
            return qty * price
        return qty * price * snapshot.asset_info(asset).collateral_ratio


def total_collateral_value(snapshot: AccountSnapshot) -> Decimal:
    total = ZERO
    for asset in sorted(snapshot.balances):
        value = collateral_value(snapshot, asset)
        with exact():
            total += value
    return total


def cross_wallet_balance(snapshot: AccountSnapshot) -> Decimal:
    """The CWB of §2: total collateral value (multi-asset) or the settlement balance."""
    if snapshot.multi_asset_mode:
        return total_collateral_value(snapshot)
    return snapshot.balance(snapshot.settlement_asset)


def account_breakdown(snapshot: AccountSnapshot) -> CrossBreakdown:
    """§2 breakdown with this account's CWB, floored to the settlement precision."""
    precision = snapshot.asset_info(snapshot.settlement_asset).precision
    return cross_breakdown(cross_wallet_balance(snapshot), cross_terms(snapshot), precision)


@dataclass(frozen=True)
class WithdrawableQuote:
    """Max withdrawable quantity of one asset and why it is what it is."""

    asset: str
    quantity: Decimal
    limited_by: str  # "margin" | "balance" | "negative_balance"
    breakdown: CrossBreakdown
    balance: Decimal
    price: Decimal | None = None
    collateral_ratio: Decimal | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "asset": self.asset,
            "maxWithdrawAmount": self.quantity,
            "limitedBy": self.limited_by,
            "balance": self.balance,
            "breakdown": self.breakdown.as_dict(),
        }
        if self.price is not None:
            out["price"] = self.price
        if self.collateral_ratio is not None:
            out["collateralRatio"] = self.collateral_ratio
        return out


def max_withdrawable(snapshot: AccountSnapshot, asset: str) -> WithdrawableQuote:
    """The largest quantity of ``asset`` the risk gate lets leave the cross wallet."""
    info = snapshot.asset_info(asset)
    balance = snapshot.balance(asset)
    breakdown = account_breakdown(snapshot)
    if snapshot.negative_assets():
        return WithdrawableQuote(asset, ZERO, "negative_balance", breakdown, balance)
    if not snapshot.multi_asset_mode:
        if asset == snapshot.settlement_asset:
            qty = min(breakdown.max_withdraw_amount, floor_to(max(ZERO, balance), info.precision))
            return WithdrawableQuote(asset, qty, "margin", breakdown, balance)
        return WithdrawableQuote(
            asset, floor_to(max(ZERO, balance), info.precision), "balance", breakdown, balance
        )
    price = snapshot.price_of(asset)
    ratio = info.collateral_ratio
    by_balance = floor_to(max(ZERO, balance), info.precision)
    headroom = breakdown.headroom
    with exact():
        unit_value = price * ratio
    if unit_value == 0:
        return WithdrawableQuote(asset, by_balance, "balance", breakdown, balance, price, ratio)
    by_margin = floor_to(div_floor(max(ZERO, headroom), unit_value), info.precision)
    if by_balance <= by_margin:
        return WithdrawableQuote(asset, by_balance, "balance", breakdown, balance, price, ratio)
    return WithdrawableQuote(asset, by_margin, "margin", breakdown, balance, price, ratio)


def account_isolated_max_transfer_in(snapshot: AccountSnapshot) -> Decimal:
    """Max margin movable from the cross wallet into an isolated wallet (settlement asset)."""
    info = snapshot.asset_info(snapshot.settlement_asset)
    limit = isolated_max_transfer_in(
        cross_wallet_balance(snapshot), cross_terms(snapshot), info.precision
    )
    if snapshot.multi_asset_mode:
        settlement = floor_to(
            max(ZERO, snapshot.balance(snapshot.settlement_asset)), info.precision
        )
        limit = min(limit, settlement)
    return limit
