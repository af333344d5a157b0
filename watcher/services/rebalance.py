"""Rebalance (auto-conversion) of an account's negative balances (DOMAIN.md §3).

One call converts other assets of the account to bring every negative asset to zero
(or as near as the other assets allow), as ONE balanced ``auto_conversion`` journal
transaction against ``system:conversion``, through the locked decision
(:mod:`watcher.services.risk_gate`): the plan is computed from the snapshot read
*after* the account lock, so a concurrent withdrawal hold or engine entry can never
interleave with it. Nothing to convert → :class:`NothingToRebalance`, and nothing is
written. Triggered by the user (``POST /v1/accounts/{address}/rebalance``, signed) or an
operator (``watcher rebalance ACCOUNT``); a deposit credit that covers the negative
clears it too, without any of this (it is just a credit).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from watcher.domain.amounts import plain_decimal
from watcher.domain.errors import DomainError, ErrorKind
from watcher.domain.journal import CONVERSION_ACCOUNT, CROSS, Leg, TxKind
from watcher.domain.rebalance import RebalancePlan, plan_rebalance
from watcher.services.risk_gate import (
    AccountStateError,
    Rule,
    Verdict,
    locked_decision,
)
from watcher.settings import Settings
from watcher.store.accounts import AccountState, decimal_to_units, iso_time
from watcher.store.db import SessionFactory

NOTHING_TO_REBALANCE = "NOTHING_TO_REBALANCE"


class NothingToRebalance(DomainError):
    """No asset of the account is negative, or nothing can be converted to cover it."""

    def __init__(self, message: str, details: dict[str, object]) -> None:
        super().__init__(NOTHING_TO_REBALANCE, message, details, kind=ErrorKind.RULE)


def _d(value: Decimal) -> str:
    return plain_decimal(value)


def plan_to_dict(plan: RebalancePlan) -> dict[str, object]:
    return {
        "conversions": [
            {
                "asset": c.asset,
                "balanceBefore": _d(c.balance_before),
                "credit": _d(c.credit),
                "price": _d(c.price),
                "shortfallUsd": _d(c.shortfall_usd),
                "receivedUsd": _d(c.received_usd),
                "covered": c.covered,
                "debits": [
                    {
                        "asset": d.asset,
                        "quantity": _d(d.quantity),
                        "price": _d(d.price),
                        "rate": _d(d.rate),
                        "valueUsd": _d(d.value_usd),
                    }
                    for d in c.debits
                ],
            }
            for c in plan.conversions
        ],
        "changes": [{"asset": leg.asset, "amount": _d(leg.delta)} for leg in plan.legs],
        "balancesAfter": {a: _d(q) for a, q in sorted(plan.balances_after.items())},
        "fullyCovered": plan.fully_covered,
        "negativeAssets": list(plan.remaining_negative),
    }


@dataclass(frozen=True)
class RebalanceResult:
    account: str
    ref: str
    transaction_id: int
    time: str
    plan: dict[str, object]
    replayed: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "account": self.account,
            "type": "auto-conversion",
            "transactionId": self.transaction_id,
            "time": self.time,
            **self.plan,
        }


def operator_ref(account: str) -> str:
    return f"rebalance:{account}:op:{uuid.uuid4().hex}"


def user_ref(account: str, nonce: int) -> str:
    return f"rebalance:{account}:{nonce}"


async def rebalance(
    session: AsyncSession, settings: Settings, *, account: str, ref: str
) -> RebalanceResult:
    """Convert the account's positive assets to clear its negative ones, in the caller's
    transaction. Raises :class:`NothingToRebalance` (nothing written) or
    :class:`AccountStateError` (a price is missing)."""
    plans: list[RebalancePlan] = []

    def decide(state: AccountState) -> Verdict:
        negatives = state.snapshot.negative_assets()
        if not negatives:
            return Rule(False, NOTHING_TO_REBALANCE, {"negativeAssets": []})
        plan = plan_rebalance(state.snapshot)
        plans.append(plan)
        if plan.is_empty:
            return Rule(
                False,
                NOTHING_TO_REBALANCE,
                {"negativeAssets": list(negatives), "reason": "no other asset to convert"},
            )
        return Rule(True)

    def legs(state: AccountState) -> Sequence[Leg]:
        out: list[Leg] = []
        for leg in plans[-1].legs:
            units = decimal_to_units(leg.delta, state.snapshot.asset_info(leg.asset).precision)
            out.append(Leg(account, leg.asset, units, CROSS))
            out.append(Leg(CONVERSION_ACCOUNT, leg.asset, -units, CROSS))
        return out

    result = await locked_decision(
        session,
        settings,
        account=account,
        decide=decide,
        kind=TxKind.AUTO_CONVERSION,
        ref=ref,
        legs=legs,
    )
    tx = result.transaction
    if not result.allowed or tx is None:
        negatives = result.details.get("negativeAssets", [])
        message = (
            "no asset of the account is negative"
            if not negatives
            else "the account holds no other asset that can be converted"
        )
        raise NothingToRebalance(message, dict(result.details))
    plan = plan_to_dict(plans[-1]) if plans else {}
    return RebalanceResult(
        account, ref, tx.id, iso_time(tx.created_at), plan, replayed=result.replayed
    )


async def rebalance_now(
    sessions: SessionFactory, settings: Settings, account: str
) -> RebalanceResult:
    """Operator entry point (``watcher rebalance``): one transaction, committed."""
    async with sessions.begin() as session:
        return await rebalance(session, settings, account=account, ref=operator_ref(account))


__all__ = [
    "NOTHING_TO_REBALANCE",
    "AccountStateError",
    "NothingToRebalance",
    "RebalanceResult",
    "operator_ref",
    "rebalance",
    "rebalance_now",
    "user_ref",
]
