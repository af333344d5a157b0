"""The risk gate: may this withdrawal / isolated-margin transfer go ahead? (DOMAIN.md §2–§4)

Checks run in this order, the first failure decides the reason:

Withdrawal (``decide_withdrawal``), paid from the cross wallet:
  1. ``UNKNOWN_ASSET``            the asset is not configured for the ledger
  2. ``AMOUNT_NOT_POSITIVE``      amount ≤ 0
  3. ``AMOUNT_PRECISION``         more decimals than the asset's ledger precision
  4. ``NEGATIVE_BALANCE``         any asset of the account is below 0 (§3); details list them
  5. ``INSUFFICIENT_WITHDRAWABLE`` amount > max withdrawable (§2 / §4)

A malformed request is reported as such even while a balance is negative: it was
never a withdrawal the account could make, and the caller's error is the actionable one.

Isolated transfer (``decide_isolated_transfer``), always in the settlement asset:
  ``AMOUNT_NOT_POSITIVE``, ``AMOUNT_PRECISION``, ``UNKNOWN_SYMBOL`` (no mark price or
  brackets), ``NO_ISOLATED_POSITION``, then for ``add`` only ``NEGATIVE_BALANCE``
  (moving margin out of a negative cross wallet would deepen the deficit; ``reduce``
  brings margin back and stays allowed), and ``INSUFFICIENT_TRANSFERABLE``.

Snapshot defects (missing price, leverage above the bracket, ...) raise: they are
data errors to alarm on, not answers to give a user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal

from watcher.domain.account import AccountSnapshot, SnapshotError, fits_precision, to_decimal
from watcher.domain.brackets import BracketError
from watcher.domain.collateral import (
    account_breakdown,
    account_isolated_max_transfer_in,
    max_withdrawable,
)
from watcher.domain.margin import PositionError, notional, position_margin
from watcher.domain.transfers import isolated_transfer_out_terms

NEGATIVE_BALANCE: Final = "NEGATIVE_BALANCE"
INSUFFICIENT_WITHDRAWABLE: Final = "INSUFFICIENT_WITHDRAWABLE"
UNKNOWN_ASSET: Final = "UNKNOWN_ASSET"
AMOUNT_NOT_POSITIVE: Final = "AMOUNT_NOT_POSITIVE"
AMOUNT_PRECISION: Final = "AMOUNT_PRECISION"
UNKNOWN_SYMBOL: Final = "UNKNOWN_SYMBOL"
NO_ISOLATED_POSITION: Final = "NO_ISOLATED_POSITION"
INSUFFICIENT_TRANSFERABLE: Final = "INSUFFICIENT_TRANSFERABLE"

WithdrawalReason = Literal[
    "NEGATIVE_BALANCE",
    "INSUFFICIENT_WITHDRAWABLE",
    "UNKNOWN_ASSET",
    "AMOUNT_NOT_POSITIVE",
    "AMOUNT_PRECISION",
]
TransferReason = Literal[
    "NEGATIVE_BALANCE",
    "UNKNOWN_SYMBOL",
    "NO_ISOLATED_POSITION",
    "INSUFFICIENT_TRANSFERABLE",
    "AMOUNT_NOT_POSITIVE",
    "AMOUNT_PRECISION",
]
TransferKind = Literal["add", "reduce"]


@dataclass(frozen=True)
class WithdrawalDecision:
    allowed: bool
    reason: WithdrawalReason | None = None
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class IsolatedTransferDecision:
    allowed: bool
    reason: TransferReason | None = None
    details: dict[str, object] = field(default_factory=dict)


def _negative_details(snapshot: AccountSnapshot) -> dict[str, object]:
    negatives = snapshot.negative_assets()
    return {
        "negativeAssets": list(negatives),
        "negativeBalances": {a: snapshot.balance(a) for a in negatives},
    }


def decide_withdrawal(snapshot: AccountSnapshot, asset: str, amount: Decimal) -> WithdrawalDecision:
    """Whether ``amount`` of ``asset`` may leave the account's cross wallet."""
    value = to_decimal(amount, "withdrawal amount")
    base: dict[str, object] = {"asset": asset, "amount": value}
    info = snapshot.assets.get(asset)
    if info is None:
        return WithdrawalDecision(False, "UNKNOWN_ASSET", base)
    if value <= 0:
        return WithdrawalDecision(False, "AMOUNT_NOT_POSITIVE", base)
    if not fits_precision(value, info.precision):
        return WithdrawalDecision(False, "AMOUNT_PRECISION", {**base, "precision": info.precision})
    if snapshot.negative_assets():
        return WithdrawalDecision(
            False, "NEGATIVE_BALANCE", {**base, **_negative_details(snapshot)}
        )
    quote = max_withdrawable(snapshot, asset)
    details = {
        **base,
        "multiAssetMode": snapshot.multi_asset_mode,
        **quote.as_dict(),
    }
    if value > quote.quantity:
        return WithdrawalDecision(False, "INSUFFICIENT_WITHDRAWABLE", details)
    return WithdrawalDecision(True, None, details)


def decide_isolated_transfer(
    snapshot: AccountSnapshot, symbol: str, kind: TransferKind, amount: Decimal
) -> IsolatedTransferDecision:
    """Whether ``amount`` of margin may be added to / removed from ``symbol``'s isolated wallet."""
    if kind not in ("add", "reduce"):
        raise ValueError(f"kind must be 'add' or 'reduce', got {kind!r}")
    value = to_decimal(amount, "transfer amount")
    asset = snapshot.settlement_asset
    info = snapshot.asset_info(asset)
    base: dict[str, object] = {"symbol": symbol, "kind": kind, "asset": asset, "amount": value}
    if value <= 0:
        return IsolatedTransferDecision(False, "AMOUNT_NOT_POSITIVE", base)
    if not fits_precision(value, info.precision):
        return IsolatedTransferDecision(
            False, "AMOUNT_PRECISION", {**base, "precision": info.precision}
        )
    if symbol not in snapshot.mark_prices or symbol not in snapshot.brackets:
        return IsolatedTransferDecision(False, "UNKNOWN_SYMBOL", base)
    position = snapshot.isolated_position(symbol)
    if position is None or (position.size == 0 and position.isolated_wallet == 0):
        return IsolatedTransferDecision(False, "NO_ISOLATED_POSITION", base)
    if kind == "add":
        if snapshot.negative_assets():
            return IsolatedTransferDecision(
                False, "NEGATIVE_BALANCE", {**base, **_negative_details(snapshot)}
            )
        limit = account_isolated_max_transfer_in(snapshot)
        details: dict[str, object] = {
            **base,
            "maxTransferAmount": limit,
            "breakdown": account_breakdown(snapshot).as_dict(),
        }
    else:
        terms = isolated_transfer_out_terms(
            position, snapshot.mark_price(symbol), snapshot.bracket_table(symbol), info.precision
        )
        limit = terms.max_transfer_out
        details = {
            **base,
            "maxTransferAmount": limit,
            "isolatedWallet": position.isolated_wallet,
            "maintenanceMargin": terms.maintenance_margin,
            "walletMinusMaintenance": terms.wallet_minus_mm,
            "walletPlusUnPnlMinusInitial": terms.wallet_plus_upnl_minus_im,
        }
    if value > limit:
        return IsolatedTransferDecision(False, "INSUFFICIENT_TRANSFERABLE", details)
    return IsolatedTransferDecision(True, None, details)


@dataclass(frozen=True)
class IsolatedLimits:
    """The isolated-margin transfer limits of one symbol, from the same terms
    :func:`decide_isolated_transfer` checks: a transfer of exactly ``max_add`` /
    ``max_reduce`` passes (when > 0) and one ledger unit more is refused.

    ``add_blocked_by`` / ``reduce_blocked_by`` name the rule that makes a limit 0
    regardless of the margin (``NO_ISOLATED_POSITION``, ``UNKNOWN_SYMBOL``,
    ``NEGATIVE_BALANCE`` for add), else None."""

    symbol: str
    asset: str
    isolated_wallet: Decimal
    max_add: Decimal
    max_reduce: Decimal
    add_blocked_by: TransferReason | None
    reduce_blocked_by: TransferReason | None
    breakdown: dict[str, object]


def isolated_limits(snapshot: AccountSnapshot, symbol: str) -> IsolatedLimits:
    """maxAdd (isolated max transfer-in) and maxReduce (max transfer-out) of ``symbol``."""
    asset = snapshot.settlement_asset
    info = snapshot.asset_info(asset)
    zero = Decimal(0)
    position = snapshot.isolated_position(symbol)
    wallet = position.isolated_wallet if position is not None else zero
    blocked: TransferReason | None = None
    if symbol not in snapshot.mark_prices or symbol not in snapshot.brackets:
        blocked = "UNKNOWN_SYMBOL"
    elif position is None or (position.size == 0 and position.isolated_wallet == 0):
        blocked = "NO_ISOLATED_POSITION"
    cross = account_breakdown(snapshot).as_dict()
    breakdown: dict[str, object] = {"cross": cross}
    if blocked is not None:
        return IsolatedLimits(symbol, asset, wallet, zero, zero, blocked, blocked, breakdown)
    assert position is not None
    add_blocked: TransferReason | None = None
    if snapshot.negative_assets():
        add_blocked = "NEGATIVE_BALANCE"
        max_add = zero
        breakdown.update(_negative_details(snapshot))
    else:
        max_add = account_isolated_max_transfer_in(snapshot)
    terms = isolated_transfer_out_terms(
        position, snapshot.mark_price(symbol), snapshot.bracket_table(symbol), info.precision
    )
    breakdown["isolated"] = {
        "isolatedWallet": position.isolated_wallet,
        "maintenanceMargin": terms.maintenance_margin,
        "walletMinusMaintenance": terms.wallet_minus_mm,
        "walletPlusUnPnlMinusInitial": terms.wallet_plus_upnl_minus_im,
    }
    return IsolatedLimits(
        symbol, asset, wallet, max_add, terms.max_transfer_out, add_blocked, None, breakdown
    )


@dataclass(frozen=True)
class EvaluationProblem:
    """Why an account cannot be evaluated: the position (``symbol``) or the account
    (``symbol`` None) and a code, e.g. ``NOTIONAL_ABOVE_BRACKETS`` after a price move."""

    symbol: str | None
    code: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"symbol": self.symbol, "code": self.code, "message": self.message}


def evaluation_problems(snapshot: AccountSnapshot) -> list[EvaluationProblem]:
    """Every reason the rules cannot evaluate ``snapshot`` (empty: evaluable).

    Per position: no mark price (``MISSING_MARK_PRICE``), no brackets
    (``UNKNOWN_SYMBOL``), notional at the mark past the last bracket cap
    (``NOTIONAL_ABOVE_BRACKETS``), leverage above its bracket (``LEVERAGE_TOO_HIGH``);
    then, for the account as a whole, anything else the §2 terms lack (e.g. an asset
    price in multi-asset mode: ``ACCOUNT_STATE_INCOMPLETE``)."""
    problems: list[EvaluationProblem] = []
    for p in snapshot.positions:
        if p.symbol not in snapshot.brackets:
            problems.append(
                EvaluationProblem(p.symbol, "UNKNOWN_SYMBOL", f"{p.symbol} has no brackets")
            )
            continue
        if p.symbol not in snapshot.mark_prices:
            problems.append(
                EvaluationProblem(p.symbol, "MISSING_MARK_PRICE", f"no mark price for {p.symbol}")
            )
            continue
        mark = snapshot.mark_price(p.symbol)
        table = snapshot.bracket_table(p.symbol)
        try:
            position_margin(p, mark, table)
        except BracketError:
            problems.append(
                EvaluationProblem(
                    p.symbol,
                    "NOTIONAL_ABOVE_BRACKETS",
                    f"{p.symbol}: notional {notional(p, mark)} at mark {mark} is above the "
                    f"last bracket cap {table.max_notional}",
                )
            )
        except PositionError as exc:
            problems.append(EvaluationProblem(p.symbol, "LEVERAGE_TOO_HIGH", str(exc)))
    if problems:
        return problems
    try:
        account_breakdown(snapshot)
        for asset in sorted(snapshot.balances):
            if asset in snapshot.assets:
                max_withdrawable(snapshot, asset)
    except (SnapshotError, BracketError, PositionError) as exc:
        problems.append(EvaluationProblem(None, "ACCOUNT_STATE_INCOMPLETE", str(exc)))
    return problems
