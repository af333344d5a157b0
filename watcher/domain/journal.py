"""Double-entry rules, pure. A journal transaction is a list of legs; for every asset
the legs sum to exactly zero, so money is only ever moved, never made or lost.

Accounts are named by key: a user's checksummed address, or a system account
(``system:vault:<chain_id>`` is what the exchange holds on that chain,
``system:conversion`` is the counterparty of auto-conversions, ``system:engine`` of
realized PnL, funding fees and commissions). A user's funds sit in wallets:
``cross`` (the cross wallet), ``hold`` (withdrawals in flight) and ``iso:<SYMBOL>``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

CROSS = "cross"
HOLD = "hold"
ENGINE_ACCOUNT = "system:engine"
CONVERSION_ACCOUNT = "system:conversion"


def vault_account(chain_id: int) -> str:
    return f"system:vault:{chain_id}"


def isolated_wallet(symbol: str) -> str:
    return f"iso:{symbol}"


class TxKind(StrEnum):
    DEPOSIT = "deposit"
    DEPOSIT_REVERSAL = "deposit_reversal"
    WITHDRAWAL_HOLD = "withdrawal_hold"
    WITHDRAWAL_SETTLE = "withdrawal_settle"
    WITHDRAWAL_RELEASE = "withdrawal_release"
    AUTO_CONVERSION = "auto_conversion"
    REALIZED_PNL = "realized_pnl"
    FUNDING_FEE = "funding_fee"
    COMMISSION = "commission"
    ISOLATED_TRANSFER = "isolated_transfer"


class UnbalancedTransaction(ValueError):
    """The legs of a journal transaction do not sum to zero for some asset."""


@dataclass(frozen=True)
class Leg:
    account: str
    asset: str
    amount: int  # ledger base units, signed: + credits the wallet, - debits it
    wallet: str = CROSS


def check_balanced(legs: Iterable[Leg]) -> list[Leg]:
    """Return the legs if they form a valid transaction, else raise."""
    legs = list(legs)
    if len(legs) < 2:
        raise UnbalancedTransaction("a journal transaction needs at least two legs")
    sums: dict[str, int] = defaultdict(int)
    for leg in legs:
        if isinstance(leg.amount, bool) or not isinstance(leg.amount, int):
            raise UnbalancedTransaction(f"leg amount must be an int, got {leg.amount!r}")
        if leg.amount == 0:
            raise UnbalancedTransaction(f"zero leg for {leg.account} {leg.asset}")
        sums[leg.asset] += leg.amount
    off = {asset: total for asset, total in sums.items() if total != 0}
    if off:
        raise UnbalancedTransaction(f"legs do not balance per asset: {off}")
    return legs


def transfer(
    asset: str,
    amount: int,
    *,
    debit: tuple[str, str],
    credit: tuple[str, str],
) -> list[Leg]:
    """Two legs moving ``amount`` from (account, wallet) ``debit`` to ``credit``."""
    if amount <= 0:
        raise UnbalancedTransaction(f"transfer amount must be positive, got {amount}")
    return check_balanced(
        [
            Leg(debit[0], asset, -amount, debit[1]),
            Leg(credit[0], asset, amount, credit[1]),
        ]
    )
