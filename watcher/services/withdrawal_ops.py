"""Operator actions on withdrawals (``watcher withdrawals list|show|retry|cancel|approve|reject``).

Each action is one DB transaction that checks the state machine first:

* ``approve``  review → requested (the sender picks it up on its next tick);
* ``reject``   requested | review | queued → rejected, hold released;
* ``cancel``   the same, before anything was signed → cancelled, hold released. A
  signed transaction may still be mined, so after signing only the chain decides;
* ``retry``    queued → clears the reason so the sender re-checks funds now;
  broadcast → the newest attempt is treated as stuck on the tracker's next tick
  (fee bump under the same nonce); stalled (its nonce was consumed by a foreign
  transaction, the vault said unpaid) → queued, signed again under a new nonce.
  Anything else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from watcher.domain.states import (
    WITHDRAWAL_BEFORE_SIGNING,
    AttemptState,
    IllegalTransition,
    WithdrawalState,
)
from watcher.store import withdrawals as repo
from watcher.store.db import SessionFactory
from watcher.store.models import Withdrawal

W = WithdrawalState


class OperatorError(Exception):
    """The action does not apply to the withdrawal in its current state."""


@dataclass(frozen=True)
class Row:
    id: int
    state: str
    account: str
    chain_id: int
    asset: str
    amount: int
    tx_hash: str | None
    reason: str | None


async def _load(s: Any, withdrawal_id: int) -> Withdrawal:
    w = await repo.get(s, withdrawal_id, lock=True)
    if w is None:
        raise OperatorError(f"no withdrawal {withdrawal_id}")
    return w


async def approve(sessions: SessionFactory, withdrawal_id: int, by: str) -> Withdrawal:
    async with sessions.begin() as s:
        w = await _load(s, withdrawal_id)
        if w.state != W.REVIEW.value:
            raise OperatorError(f"withdrawal {w.id} is {w.state}, not in review")
        repo.move(w, W.REQUESTED, f"approved by {by}")
        return w


async def _end(
    sessions: SessionFactory, withdrawal_id: int, new: WithdrawalState, why: str
) -> Withdrawal:
    async with sessions.begin() as s:
        w = await _load(s, withdrawal_id)
        if WithdrawalState(w.state) not in WITHDRAWAL_BEFORE_SIGNING:
            raise OperatorError(
                f"withdrawal {w.id} is {w.state}: a transaction was signed, only the chain "
                "can end it now"
            )
        try:
            repo.move(w, new, why)
        except IllegalTransition as exc:
            raise OperatorError(str(exc)) from None
        await repo.release(s, w, why)
        return w


async def reject(sessions: SessionFactory, withdrawal_id: int, by: str) -> Withdrawal:
    return await _end(sessions, withdrawal_id, W.REJECTED, f"rejected by {by}")


async def cancel(sessions: SessionFactory, withdrawal_id: int, by: str) -> Withdrawal:
    return await _end(sessions, withdrawal_id, W.CANCELLED, f"cancelled by {by}")


async def retry(sessions: SessionFactory, withdrawal_id: int) -> Withdrawal:
    async with sessions.begin() as s:
        w = await _load(s, withdrawal_id)
        if w.state == W.QUEUED.value:
            w.reason = None
            return w
        if w.state == W.STALLED.value:
            # Its nonce went to a foreign tx and the vault said unpaid: sign it again
            # under the wallet's next nonce (the sender resyncs it with the chain).
            repo.move(w, W.QUEUED, "re-queued by an operator after its nonce was consumed")
            w.tx_hash = None
            return w
        if w.state == W.BROADCAST.value:
            attempts = [
                a
                for a in await repo.attempts_of(s, w.id)
                if a.state == AttemptState.BROADCAST.value
            ]
            if not attempts:
                raise OperatorError(f"withdrawal {w.id} has no broadcast attempt to bump")
            attempts[-1].broadcast_at = datetime.fromtimestamp(0, UTC)
            return w
        raise OperatorError(f"withdrawal {w.id} is {w.state}: nothing to retry")


async def listing(
    sessions: SessionFactory, state: str | None = None, limit: int = 50
) -> list[Withdrawal]:
    async with sessions() as s:
        return await repo.listing(s, state=state, limit=limit)


async def show(sessions: SessionFactory, withdrawal_id: int) -> dict[str, Any]:
    async with sessions() as s:
        w = await repo.get(s, withdrawal_id)
        if w is None:
            raise OperatorError(f"no withdrawal {withdrawal_id}")
        attempts = await repo.attempts_of(s, withdrawal_id)
    return {
        "withdrawal": w,
        "attempts": [
            {
                "id": a.id,
                "nonce": a.nonce,
                "txHash": a.tx_hash,
                "state": a.state,
                "maxFeePerGas": a.max_fee_per_gas,
                "maxPriorityFeePerGas": a.max_priority_fee_per_gas,
                "block": a.block_number,
                "status": a.status,
            }
            for a in attempts
        ],
    }
