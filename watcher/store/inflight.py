"""What was in flight when the daemon stopped: read once at start for the recovery log
(``services/recovery.py``). Every query seeks an index on state."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.domain.states import WITHDRAWAL_HOLDING, AttemptState, DepositState
from watcher.store.models import Deposit, NetworkCursor, TxAttempt, Withdrawal

#: Withdrawal states something still happens to (by the daemon or an operator): the
#: ones whose funds are still on hold.
ACTIVE_WITHDRAWALS = tuple(sorted(s.value for s in WITHDRAWAL_HOLDING))
#: Attempts the tracker still follows (signed ones are sent by the sender first).
OPEN_ATTEMPTS = tuple(
    s.value for s in (AttemptState.SIGNED, AttemptState.BROADCAST, AttemptState.MINED)
)


@dataclass
class ChainInFlight:
    cursor: NetworkCursor | None = None
    deposits_pending: int = 0
    withdrawals: dict[str, int] = field(default_factory=dict)  # active state -> count
    attempts: dict[str, int] = field(default_factory=dict)  # open state -> count
    unsent_ids: list[int] = field(default_factory=list)  # withdrawals with a signed attempt


async def in_flight(session: AsyncSession, chain_ids: list[int]) -> dict[int, ChainInFlight]:
    found: dict[int, ChainInFlight] = defaultdict(ChainInFlight)
    for cursor in await session.scalars(
        select(NetworkCursor).where(NetworkCursor.chain_id.in_(chain_ids))
    ):
        found[cursor.chain_id].cursor = cursor
    deposits = await session.execute(
        select(Deposit.chain_id, func.count())
        .where(Deposit.state == DepositState.PENDING.value, Deposit.chain_id.in_(chain_ids))
        .group_by(Deposit.chain_id)
    )
    for chain_id, count in deposits:
        found[chain_id].deposits_pending = count
    withdrawals = await session.execute(
        select(Withdrawal.chain_id, Withdrawal.state, func.count())
        .where(Withdrawal.state.in_(ACTIVE_WITHDRAWALS), Withdrawal.chain_id.in_(chain_ids))
        .group_by(Withdrawal.chain_id, Withdrawal.state)
    )
    for chain_id, state, count in withdrawals:
        found[chain_id].withdrawals[state] = count
    attempts = await session.execute(
        select(TxAttempt.chain_id, TxAttempt.state, func.count())
        .where(TxAttempt.state.in_(OPEN_ATTEMPTS), TxAttempt.chain_id.in_(chain_ids))
        .group_by(TxAttempt.chain_id, TxAttempt.state)
    )
    for chain_id, state, count in attempts:
        found[chain_id].attempts[state] = count
    unsent = await session.execute(
        select(TxAttempt.chain_id, TxAttempt.withdrawal_id)
        .where(TxAttempt.state == AttemptState.SIGNED.value, TxAttempt.chain_id.in_(chain_ids))
        .order_by(TxAttempt.nonce)
        .limit(50)
    )
    for chain_id, withdrawal_id in unsent:
        found[chain_id].unsent_ids.append(withdrawal_id)
    return {c: found[c] for c in chain_ids}
