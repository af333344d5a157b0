"""Latched alarms: raised by services, they stay active until an operator
acknowledges them (``watcher alarms ack ID``); raising the same (kind, key) again
while active bumps its count instead of adding a row.

A new alarm is logged once, at WARNING, when the transaction that latched it commits
("alarm raised id=… kind=… key=… severity=…: message"); a bump of an active one is
not logged again (a condition that lasts would repeat it on every tick)."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.store.events import after_commit
from watcher.store.models import Alarm, utcnow

log = logging.getLogger("watcher.alarms")


class AlarmKind(StrEnum):
    FINALITY_VIOLATED = "finality_violated"  # a credited deposit was reorged out
    RECONCILIATION_MISMATCH = "reconciliation_mismatch"
    HOT_WALLET_LOW = "hot_wallet_low"
    RPC_DOWN = "rpc_down"
    LAG_OVER_BUDGET = "lag_over_budget"
    WITHDRAWAL_STUCK = "withdrawal_stuck"
    # A nonce of the hot wallet was used by a transaction that is none of our attempts.
    NONCE_CONSUMED = "nonce_consumed"
    # The risk rules cannot evaluate an account (e.g. a price moved a position's notional
    # past the last bracket): its withdrawals and transfers answer 422 until it is fixed.
    ACCOUNT_UNEVALUABLE = "account_unevaluable"
    # A chain role's lease has had no holder for longer than its budget (replicas).
    LEASE_UNHELD = "lease_unheld"
    # Payout defense (docs/cosigner.md): a co-signer refused a payout; withdrawals waited
    # longer than the budget for the validators' quorum; the vault is paused (its hourly
    # limit was reached, or the guardian paused it).
    COSIGN_REFUSED = "cosign_refused"
    COSIGN_QUORUM = "cosign_quorum"
    VAULT_PAUSED = "vault_paused"


async def raise_alarm(
    session: AsyncSession,
    kind: AlarmKind,
    key: str,
    message: str,
    details: dict[str, Any] | None = None,
    severity: str = "critical",
    *,
    once: bool = False,
) -> Alarm | None:
    """Latch (or bump) the alarm (kind, key). With ``once``, a finding an operator
    has already acknowledged under the same key is not raised again (keys of such
    findings carry their substance, e.g. the exact difference)."""
    if once:
        acked = await session.scalar(
            select(Alarm).where(
                Alarm.kind == str(kind), Alarm.key == key, Alarm.acknowledged_at.is_not(None)
            )
        )
        if acked is not None:
            return None
    active = await session.scalar(
        select(Alarm).where(
            Alarm.kind == str(kind), Alarm.key == key, Alarm.acknowledged_at.is_(None)
        )
    )
    if active is not None:
        active.count += 1
        active.last_seen_at = utcnow()
        active.message = message
        if details:
            active.details = details
        return active
    alarm = Alarm(
        kind=str(kind), key=key, severity=severity, message=message, details=details or {}
    )
    session.add(alarm)
    await session.flush()
    after_commit(
        session,
        log,
        "alarm raised id=%d kind=%s key=%s severity=%s: %s",
        (alarm.id, alarm.kind, alarm.key, alarm.severity, alarm.message),
        level=logging.WARNING,
    )
    return alarm


async def latch_alarm(
    session: AsyncSession,
    kind: AlarmKind,
    key: str,
    message: str,
    details: dict[str, Any] | None = None,
    severity: str = "warning",
) -> tuple[Alarm, bool]:
    """Raise (kind, key) once: while it is active, nothing is written (no count bump),
    so a finding met on every read latches one alarm, not one row or update per read.
    Returns the alarm and whether it was raised now."""
    active = await session.scalar(
        select(Alarm).where(
            Alarm.kind == str(kind), Alarm.key == key, Alarm.acknowledged_at.is_(None)
        )
    )
    if active is not None:
        return active, False
    alarm = Alarm(
        kind=str(kind), key=key, severity=severity, message=message, details=details or {}
    )
    session.add(alarm)
    await session.flush()
    return alarm, True


async def active_alarms(session: AsyncSession) -> list[Alarm]:
    rows = await session.scalars(
        select(Alarm).where(Alarm.acknowledged_at.is_(None)).order_by(Alarm.id)
    )
    return list(rows)


async def acknowledge(session: AsyncSession, alarm_id: int, by: str) -> Alarm | None:
    alarm = await session.get(Alarm, alarm_id)
    if alarm is None or alarm.acknowledged_at is not None:
        return alarm
    alarm.acknowledged_at = utcnow()
    alarm.acknowledged_by = by
    return alarm
