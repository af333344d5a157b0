"""Every state of a deposit, a withdrawal and a transaction attempt, and the only
transitions allowed between them. Services call :func:`check_transition`; an illegal
transition is an error, never a silent overwrite.
"""

from __future__ import annotations

from enum import StrEnum


class IllegalTransition(Exception):
    """A state change that the state machine does not allow."""


class DepositState(StrEnum):
    PENDING = "pending"  # seen in a block we hold the hash of, not yet final
    CREDITED = "credited"  # final by the network's rule; journal posted
    ORPHANED = "orphaned"  # its block was reorged out before it was credited
    REVERSED = "reversed"  # reorged out after credit; compensating entry posted, alarm latched
    UNSUPPORTED = "unsupported"  # token not configured: recorded, never credited


class WithdrawalState(StrEnum):
    REQUESTED = "requested"  # accepted, funds on hold, waiting for the sender
    REVIEW = "review"  # above the review threshold: waits for an operator
    QUEUED = "queued"  # approved, waiting for hot-wallet funds or gas
    SIGNED = "signed"  # raw tx persisted, not yet known to be broadcast
    BROADCAST = "broadcast"  # sent to the network, not mined
    CONFIRMING = "confirming"  # mined, counting confirmations
    # Its nonce was consumed (final by the network's rule) by a transaction that is not
    # one of its attempts, and the vault says the id is unpaid: nothing of ours can be
    # mined any more. Waits for an operator: `withdrawals retry` → queued, new nonce;
    # or `withdrawals cancel|reject` → hold released, only if the vault's withdrawn(id)
    # at the latest block still says unpaid (checked by the command, fresh).
    STALLED = "stalled"
    COMPLETED = "completed"  # final on chain; hold settled
    FAILED = "failed"  # reverted on chain; hold released
    REJECTED = "rejected"  # refused by an operator (before signing, or stalled); hold released
    CANCELLED = "cancelled"  # cancelled before signing, or stalled and unpaid; hold released


class AttemptState(StrEnum):
    SIGNED = "signed"  # persisted before broadcast
    BROADCAST = "broadcast"
    MINED = "mined"  # has a receipt in a block we hold the hash of
    CONFIRMED = "confirmed"  # final by the network's rule
    REPLACED = "replaced"  # another attempt with the same nonce took over (fee bump)
    DROPPED = "dropped"  # the nonce was used by another attempt that was mined


_DEPOSIT: dict[DepositState, frozenset[DepositState]] = {
    DepositState.PENDING: frozenset(
        {DepositState.PENDING, DepositState.CREDITED, DepositState.ORPHANED}
    ),
    DepositState.CREDITED: frozenset({DepositState.REVERSED}),
    # An orphaned deposit whose tx is re-included in a new block comes back to pending.
    DepositState.ORPHANED: frozenset({DepositState.PENDING}),
    # A reversed deposit whose tx is re-included is credited again (a new credit entry).
    DepositState.REVERSED: frozenset({DepositState.PENDING}),
    DepositState.UNSUPPORTED: frozenset(),
}

W = WithdrawalState
_WITHDRAWAL: dict[WithdrawalState, frozenset[WithdrawalState]] = {
    W.REQUESTED: frozenset({W.REVIEW, W.QUEUED, W.SIGNED, W.CANCELLED, W.REJECTED}),
    W.REVIEW: frozenset({W.REQUESTED, W.QUEUED, W.REJECTED, W.CANCELLED}),
    W.QUEUED: frozenset({W.SIGNED, W.CANCELLED, W.REJECTED}),
    W.SIGNED: frozenset({W.BROADCAST, W.CONFIRMING}),
    # Nonce consumed by a foreign tx: stalled if the vault says unpaid, completed if the
    # vault says the id was paid (by that foreign tx), the hold then settled.
    W.BROADCAST: frozenset({W.BROADCAST, W.CONFIRMING, W.FAILED, W.STALLED, W.COMPLETED}),
    # Only an operator moves it on: re-queued, signed again under a new nonce (the
    # vault's id guard makes a second payout impossible if an old attempt ever lands),
    # or given up (cancelled / rejected, hold released) once the vault's withdrawn(id)
    # at the latest block said unpaid (withdrawal_ops checks that before the move).
    W.STALLED: frozenset({W.QUEUED, W.CANCELLED, W.REJECTED}),
    # A mined tx whose block is reorged out goes back to broadcast (re-sent as is). A
    # final tx that paid nothing (the vault paused itself at its hourly limit) goes
    # back to the queue, hold kept, signed again after the unpause.
    W.CONFIRMING: frozenset({W.BROADCAST, W.COMPLETED, W.FAILED, W.QUEUED}),
    W.COMPLETED: frozenset(),
    W.FAILED: frozenset(),
    W.REJECTED: frozenset(),
    W.CANCELLED: frozenset(),
}

A = AttemptState
_ATTEMPT: dict[AttemptState, frozenset[AttemptState]] = {
    A.SIGNED: frozenset({A.BROADCAST, A.MINED, A.REPLACED}),
    A.BROADCAST: frozenset({A.BROADCAST, A.MINED, A.REPLACED, A.DROPPED}),
    A.MINED: frozenset({A.CONFIRMED, A.BROADCAST}),
    A.CONFIRMED: frozenset(),
    A.REPLACED: frozenset({A.MINED, A.DROPPED}),
    A.DROPPED: frozenset(),
}

WITHDRAWAL_TERMINAL = frozenset({W.COMPLETED, W.FAILED, W.REJECTED, W.CANCELLED})
# States in which the withdrawal's funds sit in the account's hold wallet.
WITHDRAWAL_HOLDING = frozenset(set(WithdrawalState) - WITHDRAWAL_TERMINAL)
# States that may be cancelled or rejected without asking the chain: nothing was signed
# yet. (A stalled one may be too, but only after the vault said unpaid at latest.)
WITHDRAWAL_BEFORE_SIGNING = frozenset({W.REQUESTED, W.REVIEW, W.QUEUED})


def _check(table: dict[str, frozenset[str]], kind: str, old: str, new: str) -> None:
    if new not in table[old]:
        raise IllegalTransition(f"{kind}: {old} -> {new} is not allowed")


def check_deposit(old: DepositState, new: DepositState) -> None:
    _check(_DEPOSIT, "deposit", old, new)  # type: ignore[arg-type]


def check_withdrawal(old: WithdrawalState, new: WithdrawalState) -> None:
    _check(_WITHDRAWAL, "withdrawal", old, new)  # type: ignore[arg-type]


def check_attempt(old: AttemptState, new: AttemptState) -> None:
    _check(_ATTEMPT, "tx attempt", old, new)  # type: ignore[arg-type]
