"""Giving up on a ``stalled`` withdrawal (its nonce was consumed, final, by a transaction of
the hot key that is none of its attempts, and the vault said unpaid): ``cancel`` /
``reject`` release the hold only after a fresh ``withdrawn(id)`` at the latest block says
unpaid. Real anvil, real contracts, real database; the unreachable RPC is a real closed
port."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import AsyncWeb3

from tests.fixtures_chain import DevnetFactory, transact
from tests.helpers import watcher_cli
from tests.integration.deposit_support import assert_ledger_consistent
from tests.integration.test_withdrawals_chain_faults import (
    broadcast_then_lose_nonce,
    chain_and_app,
    request_usdt,
    settlements,
)
from tests.integration.withdrawal_support import (
    OPERATOR,
    authorized,
    balance_of,
    deposit_token,
    run_pipeline,
    sender,
    track_rounds,
    withdrawn_events,
)
from watcher.app import App
from watcher.chain.artifacts import load_artifact
from watcher.chain.devnet import Deployment, dev_account, free_port
from watcher.chain.retry import RetryPolicy
from watcher.chain.rpc import RpcClient
from watcher.domain.journal import CROSS, HOLD, vault_account
from watcher.services import withdrawal_ops
from watcher.services.withdrawal_ops import OperatorError, Vaults
from watcher.store import ledger
from watcher.store import withdrawals as repo

USER = dev_account(2)  # request_usdt's user
WHOLE = 70  # USDT paid out; request_usdt credits WHOLE + 10 (the fee) in the ledger
CREDITED = (WHOLE + 10) * 10**8  # ledger units (8 decimals)


async def stall(app: App, w3: AsyncWeb3[Any], dep: Deployment, dest: str) -> int:
    """A withdrawal of WHOLE USDT to ``dest`` whose nonce a foreign tx of the hot key took;
    three confirmations and one more block later (seen twice) the tracker moves it to
    ``stalled`` (vault: unpaid)."""
    wid = await request_usdt(app, w3, dep, WHOLE, dest)
    await broadcast_then_lose_nonce(app, w3, dep, wid)
    await track_rounds(app, w3, 4)
    async with app.sessions() as s:
        w = await repo.get(s, wid)
        held = await ledger.balances(s, USER.address)
    assert w is not None and w.state == "stalled", w and (w.state, w.reason)
    assert "withdrawals cancel" in (w.reason or "")
    assert held[("USDT", HOLD)] == WHOLE * 10**8 + w.fee
    return wid


def vaults(app: App) -> Vaults:
    return Vaults.of(app.settings, app.rpc)


def unreachable(dep: Deployment) -> Vaults:
    """The devnet's vault behind an RPC URL nobody listens on (one attempt, no sleeps)."""
    rpc = RpcClient(
        [f"http://127.0.0.1:{free_port()}"],
        chain_id=dep.chain_id,
        policy=RetryPolicy(attempts=1, base_delay=0, jitter=0),
    )
    return Vaults({dep.chain_id: (rpc, dep.vault)})


async def snapshot(app: App, wid: int) -> tuple[Any, ...]:
    """Everything a refused action must leave as it was."""
    async with app.sessions() as s:
        w = await repo.get(s, wid)
        attempts = await repo.attempts_of(s, wid)
        held = await ledger.balances(s, USER.address)
    assert w is not None
    return (
        w.state,
        w.reason,
        w.tx_hash,
        [(a.tx_hash, a.state) for a in attempts],
        held,
        await settlements(app, wid),
    )


async def assert_released(app: App, dep: Deployment, wid: int, state: str, by: str) -> None:
    async with app.sessions() as s:
        w = await repo.get(s, wid)
        held = await ledger.balances(s, USER.address)
        vault = await ledger.balances(s, vault_account(dep.chain_id))
    assert w is not None and w.state == state
    assert f"by {by}" in (w.reason or "") and "unpaid at latest" in (w.reason or "")
    assert await settlements(app, wid) == [f"withdrawal:{wid}:hold", f"withdrawal:{wid}:release"]
    # Balance back: all of the credit in the cross wallet, nothing held, nothing to fees,
    # the vault account still owes exactly what the credit took from it.
    assert held[("USDT", HOLD)] == 0
    assert held[("USDT", CROSS)] == CREDITED
    assert vault[("USDT", CROSS)] == -CREDITED
    await assert_ledger_consistent(app.sessions)


# ---------------------------------------------------------------------------- released


@pytest.mark.parametrize(("action", "state"), [("cancel", "cancelled"), ("reject", "rejected")])
async def test_stalled_and_unpaid_at_latest_is_given_up_and_the_hold_released(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str, action: str, state: str
) -> None:
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=3) as (dep, w3, app):
        dest = Account.create().address
        wid = await stall(app, w3, dep, dest)
        # No RPC, no answer: refused, nothing changed.
        before = await snapshot(app, wid)
        with pytest.raises(OperatorError, match="needs the vault"):
            await getattr(withdrawal_ops, action)(app.sessions, wid, "ops")
        assert await snapshot(app, wid) == before

        w = await getattr(withdrawal_ops, action)(app.sessions, wid, "ops", vaults(app))
        assert w.state == state
        await assert_released(app, dep, wid, state, "ops")

        # Final: nothing moves it on, nothing is paid, a second cancel is refused.
        await run_pipeline(app, w3, rounds=3)
        with pytest.raises(OperatorError):
            await withdrawal_ops.cancel(app.sessions, wid, "ops", vaults(app))
        with pytest.raises(OperatorError):
            await withdrawal_ops.retry(app.sessions, wid)
        await assert_released(app, dep, wid, state, "ops")
        assert await balance_of(w3, dep.tokens["USDT"].address, dest) == 0
        assert await withdrawn_events(w3, dep) == []


async def test_cli_cancel_of_a_stalled_withdrawal(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    """The real `watcher withdrawals cancel` process, with the tests' config directory."""
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=3) as (dep, w3, app):
        wid = await stall(app, w3, dep, Account.create().address)
        env = {**os.environ, "WATCHER_DATABASE_URL": db_url}
        proc = await watcher_cli(
            "withdrawals",
            "cancel",
            str(wid),
            "--by",
            "alice",
            "--config",
            str(tmp_path / "config"),
            env=env,
            merge_stderr=True,
        )
        out = (await proc.communicate())[0].decode()
        assert proc.returncode == 0, out
        assert f"withdrawal {wid} cancelled: now cancelled" in out
        await assert_released(app, dep, wid, "cancelled", "alice")


# ---------------------------------------------------------------------------- refused


async def test_stalled_but_paid_at_latest_is_refused_and_retry_settles_it_once(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    """After it stalled, whoever holds the hot key pays the id with ``vault.withdraw``:
    one block deep, far from final at depth 3, but paid at latest. Cancel and reject are
    refused and change nothing; the refusal's advice (retry) ends in one settlement."""
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=3) as (dep, w3, app):
        dest = Account.create().address
        usdt = dep.tokens["USDT"].address
        wid = await stall(app, w3, dep, dest)
        # Other users' funds in the vault, as on a live one: after the hot key's own
        # payout it still holds enough for the retried transaction to be signed.
        await deposit_token(w3, dev_account(3), dep, "USDT", 1_000 * 10**18)
        vault = w3.eth.contract(address=dep.vault, abi=load_artifact("Vault").abi)  # type: ignore[call-overload]
        receipt = await transact(
            w3,
            OPERATOR,
            vault.functions.withdraw(*authorized(dep, wid, usdt, dest, WHOLE * 10**18)),
        )
        payer = receipt["transactionHash"].to_0x_hex()
        assert await balance_of(w3, usdt, dest) == WHOLE * 10**18

        before = await snapshot(app, wid)
        for action in (withdrawal_ops.cancel, withdrawal_ops.reject):
            with pytest.raises(OperatorError, match=r"vault says its id was paid.*retry"):
                await action(app.sessions, wid, "ops", vaults(app))
            assert await snapshot(app, wid) == before
        async with app.sessions() as s:
            held = await ledger.balances(s, USER.address)
        assert held[("USDT", HOLD)] > 0 and before[0] == "stalled"

        # As the refusal says: retry → signed again → reverts with AlreadyWithdrawn →
        # settled as paid by the hot key's own payout. One payout, one settlement.
        await withdrawal_ops.retry(app.sessions, wid)
        await run_pipeline(app, w3, rounds=6)
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            held = await ledger.balances(s, USER.address)
        assert w is not None and w.state == "completed" and w.tx_hash == payer
        assert held[("USDT", HOLD)] == 0
        assert held[("USDT", CROSS)] == CREDITED - WHOLE * 10**8 - w.fee
        assert await settlements(app, wid) == [f"withdrawal:{wid}:hold", f"withdrawal:{wid}:settle"]
        assert await balance_of(w3, usdt, dest) == WHOLE * 10**18
        assert len(await withdrawn_events(w3, dep)) == 1
        await assert_ledger_consistent(app.sessions)


async def test_stalled_with_the_rpc_unreachable_is_refused(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=3) as (dep, w3, app):
        wid = await stall(app, w3, dep, Account.create().address)
        before = await snapshot(app, wid)
        for action in (withdrawal_ops.cancel, withdrawal_ops.reject):
            with pytest.raises(OperatorError, match=r"cannot ask the vault.*nothing changed"):
                await action(app.sessions, wid, "ops", unreachable(dep))
            assert await snapshot(app, wid) == before
        # The network answers again: now it goes through.
        await withdrawal_ops.cancel(app.sessions, wid, "ops", vaults(app))
        await assert_released(app, dep, wid, "cancelled", "ops")


async def test_broadcast_is_still_refused_and_before_signing_needs_no_rpc(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    """A broadcast withdrawal (signed, may still be mined) cannot be cancelled, with or
    without a vault to ask; one not signed yet is cancelled with the RPC unreachable."""
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=3) as (dep, w3, app):
        wid = await request_usdt(app, w3, dep, WHOLE, Account.create().address)
        await sender(app).tick()  # signed and broadcast (automined; no tracker tick yet)
        # Asked for after the sender's tick: requested, nothing signed.
        waiting = await request_usdt(app, w3, dep, 5, Account.create().address, nonce=2)
        before = await snapshot(app, wid)
        assert before[0] == "broadcast"
        for given in (None, vaults(app), unreachable(dep)):
            for action in (withdrawal_ops.cancel, withdrawal_ops.reject):
                with pytest.raises(OperatorError, match="a transaction was signed"):
                    await action(app.sessions, wid, "ops", given)
                assert await snapshot(app, wid) == before

        w = await withdrawal_ops.cancel(app.sessions, waiting, "ops", unreachable(dep))
        assert w.state == "cancelled" and w.reason == "cancelled by ops"
        assert await settlements(app, waiting) == [
            f"withdrawal:{waiting}:hold",
            f"withdrawal:{waiting}:release",
        ]
        await assert_ledger_consistent(app.sessions)
