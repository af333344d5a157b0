"""Operator actions on withdrawals (``watcher withdrawals list|show|retry|cancel|approve|reject``).

Each action is one DB transaction that checks the state machine first:

* ``approve``  review → requested (the sender picks it up on its next tick);
* ``reject``   requested | review | queued → rejected, hold released;
* ``cancel``   the same → cancelled, hold released. Before anything was signed no RPC
  is needed. After signing a transaction may still be mined, so only the chain
  decides, with one exception: ``stalled`` (its nonce was consumed, final by the
  network's rule, by a transaction that is none of its attempts: nothing of ours can
  be mined any more). A stalled withdrawal is cancelled / rejected only after a fresh
  ``withdrawn(id)`` eth_call to its vault at the latest block says unpaid (the vault
  answer comes first, then the DB transaction re-checks the state under its lock).
  Paid at latest → refused (``retry`` lets the tracker settle it, see below); RPC
  unreachable → refused. A refusal changes nothing;
* ``retry``    queued → clears the reason so the sender re-checks funds now;
  broadcast → the newest attempt is treated as stuck on the tracker's next tick
  (fee bump under the same nonce); stalled (its nonce was consumed by a foreign
  transaction, the vault said unpaid) → queued, signed again under a new nonce (if
  the vault paid the id meanwhile, that new transaction reverts with AlreadyWithdrawn
  and the tracker settles the withdrawal as paid elsewhere).
  Anything else is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from watcher.chain.errors import RpcError
from watcher.chain.rpc import RpcClient
from watcher.chain.vault import decode_uint, withdrawn_request
from watcher.domain.errors import DomainError, ErrorKind
from watcher.domain.states import (
    WITHDRAWAL_BEFORE_SIGNING,
    AttemptState,
    IllegalTransition,
    WithdrawalState,
)
from watcher.settings import Settings
from watcher.store import withdrawals as repo
from watcher.store.db import SessionFactory
from watcher.store.models import Withdrawal

W = WithdrawalState


class OperatorError(DomainError):
    """The action does not apply to the withdrawal in its current state (a conflict), or
    the withdrawal does not exist (:func:`_missing`)."""

    def __init__(
        self, message: str, *, code: str = "WITHDRAWAL_STATE", kind: ErrorKind = ErrorKind.CONFLICT
    ) -> None:
        super().__init__(code, message, kind=kind)


def _missing(withdrawal_id: int) -> OperatorError:
    return OperatorError(
        f"no withdrawal {withdrawal_id}", code="WITHDRAWAL_NOT_FOUND", kind=ErrorKind.NOT_FOUND
    )


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
        raise _missing(withdrawal_id)
    return w


async def approve(sessions: SessionFactory, withdrawal_id: int, by: str) -> Withdrawal:
    async with sessions.begin() as s:
        w = await _load(s, withdrawal_id)
        if w.state != W.REVIEW.value:
            raise OperatorError(f"withdrawal {w.id} is {w.state}, not in review")
        repo.move(w, W.REQUESTED, f"approved by {by}")
        return w


class Vaults:
    """Each enabled network's vault, by chain id, to ask whether a withdrawal id was paid."""

    def __init__(self, by_chain: Mapping[int, tuple[RpcClient, str]]) -> None:
        self._by_chain = dict(by_chain)

    @classmethod
    def of(cls, settings: Settings, clients: Mapping[str, RpcClient]) -> Vaults:
        """From the settings' enabled networks and their RPC clients (by network name),
        e.g. ``Vaults.of(app.settings, app.rpc)``."""
        return cls(
            {
                n.chain_id: (clients[n.name], n.vault)
                for n in settings.enabled_networks
                if n.name in clients and n.vault
            }
        )

    async def paid(self, chain_id: int, withdrawal_id: int) -> bool:
        """The vault's ``withdrawn(id)`` at the latest block. An unreachable RPC, an
        unconfigured network or an unreadable answer is an :class:`OperatorError`."""
        found = self._by_chain.get(chain_id)
        if found is None:
            raise OperatorError(
                f"chain {chain_id} is not an enabled network with a vault here: cannot ask "
                f"whether withdrawal {withdrawal_id} was paid; nothing changed"
            )
        rpc, vault = found
        try:
            result = await rpc.call(*withdrawn_request(vault, withdrawal_id))
            return bool(decode_uint(result))
        except (RpcError, ValueError) as exc:
            raise OperatorError(
                f"cannot ask the vault {vault} on chain {chain_id} whether withdrawal "
                f"{withdrawal_id} was paid ({type(exc).__name__}: {exc}); nothing changed, "
                "try again when its RPC answers"
            ) from None


def _signed(w: Withdrawal) -> OperatorError:
    return OperatorError(
        f"withdrawal {w.id} is {w.state}: a transaction was signed, only the chain can end it now"
    )


async def _end(
    sessions: SessionFactory,
    withdrawal_id: int,
    new: WithdrawalState,
    why: str,
    vaults: Vaults | None,
) -> Withdrawal:
    async with sessions() as s:
        seen = await repo.get(s, withdrawal_id)
        if seen is None:
            raise _missing(withdrawal_id)
        state, chain_id = WithdrawalState(seen.state), seen.chain_id
    unpaid = False
    if state == W.STALLED:
        # Its nonce went to a tx that is none of its attempts, so nothing of ours can
        # be mined; but the vault may have paid the id since (a tx of whoever holds
        # the hot key): ask it now, at the latest block, before releasing the hold.
        if vaults is None:
            raise OperatorError(
                f"withdrawal {withdrawal_id} is stalled: cancelling it needs the vault's "
                "answer, and no RPC was given; nothing changed"
            )
        if await vaults.paid(chain_id, withdrawal_id):
            raise OperatorError(
                f"withdrawal {withdrawal_id} is stalled but the vault says its id was paid "
                "(withdrawn(id) is true at the latest block): it cannot be cancelled or "
                f"rejected, nothing changed. `watcher withdrawals retry {withdrawal_id}` "
                "re-queues it; its new transaction reverts with AlreadyWithdrawn and the "
                "tracker settles it as paid by that other transaction"
            )
        unpaid = True
    async with sessions.begin() as s:
        w = await _load(s, withdrawal_id)
        current = WithdrawalState(w.state)
        if current == W.STALLED:
            if not unpaid:  # became stalled after the first look: not asked yet
                raise OperatorError(
                    f"withdrawal {w.id} became stalled meanwhile; nothing changed, run the "
                    "command again"
                )
            why += "; stalled (nonce used by a tx not ours), vault said unpaid at latest"
        elif current not in WITHDRAWAL_BEFORE_SIGNING:
            raise _signed(w)
        try:
            repo.move(w, new, why)
        except IllegalTransition as exc:
            raise OperatorError(str(exc)) from None
        await repo.release(s, w, why)
        return w


async def reject(
    sessions: SessionFactory, withdrawal_id: int, by: str, vaults: Vaults | None = None
) -> Withdrawal:
    """Before signing → rejected; stalled → rejected if ``vaults`` says unpaid at latest."""
    return await _end(sessions, withdrawal_id, W.REJECTED, f"rejected by {by}", vaults)


async def cancel(
    sessions: SessionFactory, withdrawal_id: int, by: str, vaults: Vaults | None = None
) -> Withdrawal:
    """Before signing → cancelled; stalled → cancelled if ``vaults`` says unpaid at latest."""
    return await _end(sessions, withdrawal_id, W.CANCELLED, f"cancelled by {by}", vaults)


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
            raise _missing(withdrawal_id)
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
