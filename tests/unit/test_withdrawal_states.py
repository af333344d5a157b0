"""The withdrawal state machine around ``stalled`` (a nonce consumed by a foreign tx)."""

from __future__ import annotations

import pytest

from watcher.domain.states import (
    WITHDRAWAL_BEFORE_SIGNING,
    WITHDRAWAL_HOLDING,
    WITHDRAWAL_TERMINAL,
    IllegalTransition,
    WithdrawalState,
    check_withdrawal,
)

W = WithdrawalState


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (W.BROADCAST, W.STALLED),  # vault says unpaid
        (W.BROADCAST, W.COMPLETED),  # vault says the foreign tx paid this id
        (W.STALLED, W.QUEUED),  # operator retry: signed again under a new nonce
    ],
)
def test_foreign_nonce_transitions_are_allowed(old: W, new: W) -> None:
    check_withdrawal(old, new)


@pytest.mark.parametrize(
    "new", [W.COMPLETED, W.FAILED, W.CANCELLED, W.REJECTED, W.SIGNED, W.BROADCAST, W.REQUESTED]
)
def test_only_an_operator_retry_leaves_stalled(new: W) -> None:
    with pytest.raises(IllegalTransition):
        check_withdrawal(W.STALLED, new)


@pytest.mark.parametrize("old", [W.REQUESTED, W.REVIEW, W.QUEUED, W.SIGNED, W.CONFIRMING])
def test_only_a_broadcast_withdrawal_stalls(old: W) -> None:
    with pytest.raises(IllegalTransition):
        check_withdrawal(old, W.STALLED)


def test_stalled_keeps_the_hold_and_cannot_be_cancelled() -> None:
    # A stalled withdrawal was signed: its funds stay held, and cancel/reject (which
    # release the hold) stay refused; the vault's id guard protects only a payout.
    assert W.STALLED in WITHDRAWAL_HOLDING
    assert W.STALLED not in WITHDRAWAL_TERMINAL
    assert W.STALLED not in WITHDRAWAL_BEFORE_SIGNING
