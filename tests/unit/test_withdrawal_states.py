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
        (W.STALLED, W.CANCELLED),  # operator cancel, the vault said unpaid at latest
        (W.STALLED, W.REJECTED),  # operator reject, the same check
    ],
)
def test_foreign_nonce_transitions_are_allowed(old: W, new: W) -> None:
    check_withdrawal(old, new)


@pytest.mark.parametrize(
    "new", [W.COMPLETED, W.FAILED, W.SIGNED, W.BROADCAST, W.CONFIRMING, W.REQUESTED, W.STALLED]
)
def test_only_an_operator_retry_cancel_or_reject_leaves_stalled(new: W) -> None:
    with pytest.raises(IllegalTransition):
        check_withdrawal(W.STALLED, new)


@pytest.mark.parametrize("old", [W.REQUESTED, W.REVIEW, W.QUEUED, W.SIGNED, W.CONFIRMING])
def test_only_a_broadcast_withdrawal_stalls(old: W) -> None:
    with pytest.raises(IllegalTransition):
        check_withdrawal(old, W.STALLED)


def test_stalled_keeps_the_hold_and_is_not_cancelled_without_the_vault() -> None:
    # A stalled withdrawal was signed: its funds stay held, and it is not among the
    # states cancel/reject end without asking the chain (withdrawal_ops asks the vault's
    # withdrawn(id) at latest first); the vault's id guard protects only a payout.
    assert W.STALLED in WITHDRAWAL_HOLDING
    assert W.STALLED not in WITHDRAWAL_TERMINAL
    assert W.STALLED not in WITHDRAWAL_BEFORE_SIGNING


@pytest.mark.parametrize("old", [W.SIGNED, W.BROADCAST, W.CONFIRMING])
@pytest.mark.parametrize("new", [W.CANCELLED, W.REJECTED])
def test_signed_and_not_stalled_is_never_cancelled_or_rejected(old: W, new: W) -> None:
    with pytest.raises(IllegalTransition):
        check_withdrawal(old, new)
