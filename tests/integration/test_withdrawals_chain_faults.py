"""Withdrawals against what the chain itself can do to them, on real anvil nodes: a reorg
that drops a mined payout, a stuck transaction across a restart, a nonce gap with no
persisted attempt, a node that lost its pool while the daemon runs (a new batch coming,
or none), a nonce consumed by
a foreign transaction of the hot key, and a
broadcast to two endpoints of which one fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account
from sqlalchemy import select
from web3 import AsyncWeb3
from web3.providers.rpc import AsyncHTTPProvider

from tests.faultproxy import FaultProxy
from tests.fixtures_chain import DevnetFactory
from tests.integration.withdrawal_support import (
    OPERATOR,
    authorized,
    balance_of,
    credit,
    deposit_token,
    mine,
    sender,
    track_rounds,
    tracker,
    usdt_body,
    withdrawal_app,
    withdrawn_events,
)
from watcher.api.server import make_web_app
from watcher.app import App
from watcher.chain.devnet import Deployment, dev_account
from watcher.chain.rpc import RpcClient
from watcher.chain.vault import withdraw_calldata
from watcher.domain.journal import CROSS, HOLD, vault_account
from watcher.services import withdrawal_ops
from watcher.services.tracker import Tracker
from watcher.store import ledger
from watcher.store import withdrawals as repo
from watcher.store.alarms import active_alarms
from watcher.store.models import JournalTransaction, TxAttempt


@asynccontextmanager
async def w3_for(url: str) -> AsyncIterator[AsyncWeb3[Any]]:
    w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(url))
    try:
        yield w3
    finally:
        await w3.provider.disconnect()


@asynccontextmanager
async def chain_and_app(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str, *, confirmations: int
) -> AsyncIterator[tuple[Deployment, AsyncWeb3[Any], App]]:
    """A fresh anvil with the contracts (each test does things to its chain), a web3
    client for it and a withdrawal app on it."""
    async with (
        devnet_factory() as (node, dep),
        w3_for(node.url) as w3,
        withdrawal_app(tmp_path, dep, db_url, confirmations=confirmations) as app,
    ):
        yield dep, w3, app


async def rpc(w3: AsyncWeb3[Any], method: str, *params: Any) -> Any:
    answer = await w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in answer, answer
    return answer["result"]


async def request_usdt(
    app: App, w3: AsyncWeb3[Any], dep: Deployment, whole: int, dest: str, *, nonce: int = 1
) -> int:
    """A funded user (tokens deposited into the vault on chain, credited in the ledger)
    asks over HTTP for ``whole`` USDT to ``dest``; returns the withdrawal id."""
    user = dev_account(2)
    await deposit_token(w3, user, dep, "USDT", whole * 10**18)
    # 10 USDT more in the ledger than the payout: the withdrawal fee.
    await credit(app, user.address, "USDT", (whole + 10) * 10**8, f"test:{user.address}:{nonce}")
    body = usdt_body(dep, user, whole, nonce, dest)
    async with TestClient(TestServer(make_web_app(app))) as client:
        resp = await client.post("/v1/withdrawals", json=body)
        doc = await resp.json()
    assert resp.status == 202, doc
    return int(doc["id"])


async def settlements(app: App, withdrawal_id: int) -> list[str]:
    """Refs of the journal transactions posted for the withdrawal (hold, settle, release)."""
    async with app.sessions() as s:
        rows = await s.scalars(
            select(JournalTransaction.ref).where(
                JournalTransaction.ref.like(f"withdrawal:{withdrawal_id}:%")
            )
        )
        return sorted(rows)


# ---------------------------------------------------------------------------- reorg


async def test_reorged_out_withdrawal_is_resent_mined_again_and_paid_once(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=3) as (dep, w3, app):
        dest = Account.create().address
        usdt = dep.tokens["USDT"].address
        wid = await request_usdt(app, w3, dep, 250, dest)
        await sender(app).tick()  # signed, broadcast, automined
        track = tracker(app)
        await track.tick()
        async with app.sessions() as s:
            (attempt,) = await repo.attempts_of(s, wid)
            w = await repo.get(s, wid)
        assert attempt.state == "mined" and w is not None and w.state == "confirming"
        first_block = attempt.block_number
        assert first_block is not None
        await mine(w3, 1)
        await track.tick()
        async with app.sessions() as s:
            w = await repo.get(s, wid)
        assert w is not None and (w.state, w.confirmations) == ("confirming", 2)  # of 3
        assert await balance_of(w3, usdt, dest) == 250 * 10**18

        # Replace the payout's block and the one above it by two empty blocks: the
        # payout is gone from the chain (anvil does not put it back into its pool).
        await rpc(w3, "anvil_reorg", 2, [])
        assert await rpc(w3, "eth_getTransactionReceipt", attempt.tx_hash) is None
        assert await balance_of(w3, usdt, dest) == 0

        await track.tick()  # block hash differs → back to broadcast, raw re-sent (automined)
        assert track.last.reorged == 1
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            (again,) = await repo.attempts_of(s, wid)
        assert w is not None and w.state == "broadcast" and "reorged out" in (w.reason or "")
        assert again.tx_hash == attempt.tx_hash and again.state == "broadcast"
        receipt = await w3.eth.get_transaction_receipt(attempt.tx_hash)  # type: ignore[arg-type]
        assert receipt["blockNumber"] > first_block  # the same tx, mined again

        await track_rounds(app, w3, 4)
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            attempts = await repo.attempts_of(s, wid)
            vault = await ledger.balances(s, vault_account(dep.chain_id))
            held = await ledger.balances(s, dev_account(2).address)
        assert w is not None and w.state == "completed" and w.tx_hash == attempt.tx_hash
        assert [(a.tx_hash, a.state, a.block_number) for a in attempts] == [
            (attempt.tx_hash, "confirmed", receipt["blockNumber"])
        ]
        assert await settlements(app, wid) == [f"withdrawal:{wid}:hold", f"withdrawal:{wid}:settle"]
        # Settled once: the hold is gone, the user keeps 260 - 250 - fee, the vault
        # account got the 250 back that the test credit took from it.
        assert held.get(("USDT", HOLD), 0) == 0
        assert held[("USDT", CROSS)] == 10 * 10**8 - w.fee
        assert vault[("USDT", CROSS)] == -10 * 10**8
        assert await balance_of(w3, usdt, dest) == 250 * 10**18
        assert len(await withdrawn_events(w3, dep)) == 1


async def test_payout_reincluded_by_the_reorg_is_tracked_in_its_new_block(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=3) as (dep, w3, app):
        dest = Account.create().address
        wid = await request_usdt(app, w3, dep, 40, dest)
        await sender(app).tick()
        track = tracker(app)
        await track.tick()
        async with app.sessions() as s:
            (attempt,) = await repo.attempts_of(s, wid)
        assert attempt.state == "mined" and attempt.block_number is not None
        old_block, old_hash = attempt.block_number, attempt.block_hash
        await mine(w3, 1)
        # The reorg replaces the payout's block and the next one; it puts the very
        # same payout one block higher in the new chain.
        await rpc(w3, "anvil_reorg", 2, [[attempt.raw_tx, 1]])
        receipt = await rpc(w3, "eth_getTransactionReceipt", attempt.tx_hash)
        assert int(receipt["blockNumber"], 16) == old_block + 1
        await track_rounds(app, w3, 5)
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            (final,) = await repo.attempts_of(s, wid)
        assert w is not None and w.state == "completed"
        assert (final.state, final.block_number, final.block_hash) == (
            "confirmed",
            old_block + 1,
            receipt["blockHash"],
        )
        assert final.block_hash != old_hash
        assert await settlements(app, wid) == [f"withdrawal:{wid}:hold", f"withdrawal:{wid}:settle"]
        assert await balance_of(w3, dep.tokens["USDT"].address, dest) == 40 * 10**18
        assert len(await withdrawn_events(w3, dep)) == 1


# ---------------------------------------------------------------------------- stuck


def fresh_tracker(app: App, **settings: Any) -> Tracker:
    """A tracker as a restarted process builds it: nothing in memory."""
    old = tracker(app)
    return Tracker(
        network=old.network,
        settings=old.settings.model_copy(update=settings),
        sessions=app.sessions,
        rpc=old.rpc,
        http=app.http,
        signer=old.signer,
    )


async def mine_without_the_pool(w3: AsyncWeb3[Any], blocks: int, over: int) -> None:
    """Mine ``blocks`` blocks whose base fee exceeds ``over`` wei: the pooled payout
    (max fee ``over``) cannot be included, as on a congested network."""
    for _ in range(blocks):
        await rpc(w3, "anvil_setNextBlockBaseFeePerGas", hex(over * 4))
        await mine(w3, 1)


async def test_stuck_after_blocks_survives_a_restart(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=1) as (dep, w3, app):
        stuck = {"stuck_after_blocks": 3, "stuck_after_seconds": 3600}
        dest = Account.create().address
        wid = await request_usdt(app, w3, dep, 30, dest)
        await rpc(w3, "evm_setAutomine", False)
        await sender(app).tick()
        head = await w3.eth.block_number
        async with app.sessions() as s:
            (old,) = await repo.attempts_of(s, wid)
        assert (old.state, old.broadcast_block) == ("broadcast", head)
        await fresh_tracker(app, **stuck).tick()

        await mine_without_the_pool(w3, 2, old.max_fee_per_gas)
        restarted = fresh_tracker(app, **stuck)  # the process restarts 2 blocks after the broadcast
        await restarted.tick()
        assert restarted.last.replaced == 0  # 2 < 3 blocks
        await mine_without_the_pool(w3, 1, old.max_fee_per_gas)
        again = fresh_tracker(app, **stuck)  # and once more, 3 blocks after it
        await again.tick()
        assert again.last.replaced == 1
        async with app.sessions() as s:
            old2, new = await repo.attempts_of(s, wid)
        assert (old2.state, new.state, new.nonce) == ("replaced", "broadcast", old.nonce)
        assert new.broadcast_block == head + 3
        assert new.max_fee_per_gas > old.max_fee_per_gas

        await rpc(w3, "evm_setAutomine", True)
        for _ in range(4):
            await mine(w3, 1)
            await again.tick()
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            states = {a.tx_hash: a.state for a in await repo.attempts_of(s, wid)}
        assert w is not None and w.state == "completed" and w.tx_hash == new.tx_hash
        assert states == {old.tx_hash: "dropped", new.tx_hash: "confirmed"}
        assert await balance_of(w3, dep.tokens["USDT"].address, dest) == 30 * 10**18
        assert len(await withdrawn_events(w3, dep)) == 1


# ---------------------------------------------------------------------------- nonces


async def test_nonce_gap_without_persisted_attempts_is_filled(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    """The table says next nonce = chain + 3 but no attempt holds the 3 nonces between
    (attempts lost, DB restored from an odd backup): self-transfers fill them, and the
    withdrawal signed under the stored nonce is not stuck behind the gap."""
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=1) as (dep, w3, app):
        hot = sender(app).signer.address
        before = await w3.eth.get_transaction_count(hot)  # type: ignore[arg-type]
        first_block = await w3.eth.block_number
        async with app.sessions.begin() as s:
            await repo.set_next_nonce(s, dep.chain_id, hot, before + 3)
        dest = Account.create().address
        wid = await request_usdt(app, w3, dep, 20, dest)
        for _ in range(3):
            await sender(app).tick()
            await tracker(app).tick()
            await mine(w3, 1)
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            (attempt,) = await repo.attempts_of(s, wid)
            row = await repo.nonce_row(s, dep.chain_id, hot)
        assert w is not None and w.state == "completed"
        assert attempt.nonce == before + 3 and attempt.state == "confirmed"
        assert row is not None and row.next_nonce == before + 4
        assert await w3.eth.get_transaction_count(hot) == before + 4  # type: ignore[arg-type]
        assert attempt.block_number is not None
        sent = []  # every transaction of the hot wallet, in chain order
        for number in range(first_block, attempt.block_number + 1):
            block = await w3.eth.get_block(number, True)
            sent += [tx for tx in block["transactions"] if tx["from"] == hot]  # type: ignore[index]
        assert [(tx["nonce"], tx["to"], tx["value"]) for tx in sent] == [  # type: ignore[index]
            *[(n, hot, 0) for n in range(before, before + 3)],  # fillers: 0 to self
            (before + 3, dep.vault, 0),  # the payout
        ]
        assert await balance_of(w3, dep.tokens["USDT"].address, dest) == 20 * 10**18


async def test_node_that_lost_its_pool_gets_our_attempts_again_before_new_ones(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    """While the daemon runs, the node loses its pool (a restart): our broadcast but
    unmined attempt is gone, and the next withdrawal, signed under the following nonce,
    would wait behind the gap until the stuck timer (60 s here) bumped it. The sender
    sees the gap when it syncs before the batch and re-sends the lost attempt (same raw
    bytes, same hash) first; both are mined on the next block and each paid once."""
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=1) as (dep, w3, app):
        first_dest, second_dest = Account.create().address, Account.create().address
        first = await request_usdt(app, w3, dep, 20, first_dest, nonce=1)
        await rpc(w3, "evm_setAutomine", False)
        await sender(app).tick()  # signed and broadcast: in the pool, not mined
        await tracker(app).tick()  # (its once-per-process re-broadcast is spent here)
        async with app.sessions() as s:
            (lost,) = await repo.attempts_of(s, first)
        assert lost.state == "broadcast"
        await rpc(w3, "anvil_dropAllTransactions")  # the node forgets its pool
        assert await rpc(w3, "eth_getTransactionByHash", lost.tx_hash) is None

        await rpc(w3, "evm_setAutomine", True)  # the user's deposit for the next one
        second = await request_usdt(app, w3, dep, 30, second_dest, nonce=2)
        await rpc(w3, "evm_setAutomine", False)
        await sender(app).tick()  # gap {lost.nonce} re-sent, then the new one signed
        assert await rpc(w3, "eth_getTransactionByHash", lost.tx_hash) is not None
        await mine(w3, 1)  # both in this block: nothing waits behind a gap
        async with app.sessions() as s:
            (new,) = await repo.attempts_of(s, second)
        for tx_hash in (lost.tx_hash, new.tx_hash):
            receipt = await rpc(w3, "eth_getTransactionReceipt", tx_hash)
            assert receipt is not None and receipt["status"] == "0x1", tx_hash
        await rpc(w3, "evm_setAutomine", True)
        await track_rounds(app, w3, 2)
        async with app.sessions() as s:
            states = {i: (await repo.get(s, i)).state for i in (first, second)}  # type: ignore[union-attr]
            attempts = [a for i in (first, second) for a in await repo.attempts_of(s, i)]
        assert states == {first: "completed", second: "completed"}
        assert [(a.nonce, a.state) for a in attempts] == [
            (lost.nonce, "confirmed"),
            (lost.nonce + 1, "confirmed"),
        ]
        assert attempts[0].tx_hash == lost.tx_hash  # the same transaction, not a bump
        assert await balance_of(w3, dep.tokens["USDT"].address, first_dest) == 20 * 10**18
        assert await balance_of(w3, dep.tokens["USDT"].address, second_dest) == 30 * 10**18
        assert len(await withdrawn_events(w3, dep)) == 2


async def test_tracker_resends_the_next_nonce_the_node_lost(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    """No new withdrawal comes to trigger the sender's gap repair: the node lost the
    attempt holding the wallet's next nonce (and, anvil being thorough, the one after
    it). Each time the head of the line has waited `resend_after_seconds` (the
    tracker's clock, moved by the test), the tracker re-sends it as signed; both are
    mined and paid once, with no fee bump (the stuck timer, 60 s, is far away)."""
    now = [1_000_000.0]
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=1) as (dep, w3, app):
        t = tracker(app)
        t.clock = lambda: now[0]
        dests = [Account.create().address for _ in range(2)]
        wids = [await request_usdt(app, w3, dep, 10 + i, d, nonce=i) for i, d in enumerate(dests)]
        await rpc(w3, "evm_setAutomine", False)
        await sender(app).tick()  # both broadcast, neither mined
        await t.tick()  # (its once-per-process re-broadcast is spent here)
        async with app.sessions() as s:
            first, second = [(await repo.attempts_of(s, w))[0] for w in wids]
        assert second.nonce == first.nonce + 1
        await rpc(w3, "anvil_dropTransaction", first.tx_hash)  # lost; the second waits
        assert await rpc(w3, "eth_getTransactionByHash", first.tx_hash) is None
        # anvil drops the ones that depended on it as well: both are gone.
        assert await rpc(w3, "eth_getTransactionByHash", second.tx_hash) is None

        await t.tick()  # the head of the line is noted
        now[0] += 4.0
        await t.tick()  # 4 s < 5 s: not yet
        assert await rpc(w3, "eth_getTransactionByHash", first.tx_hash) is None
        now[0] += 2.0
        await t.tick()  # 6 s: re-sent as signed
        assert await rpc(w3, "eth_getTransactionByHash", first.tx_hash) is not None
        await mine(w3, 1)
        await t.tick()  # the first mined; the second is now the head of the line
        assert await rpc(w3, "eth_getTransactionByHash", second.tx_hash) is None
        now[0] += 6.0
        await t.tick()
        assert await rpc(w3, "eth_getTransactionByHash", second.tx_hash) is not None
        await mine(w3, 1)
        await rpc(w3, "evm_setAutomine", True)
        for _ in range(2):
            await t.tick()
            await mine(w3, 1)
        async with app.sessions() as s:
            states = [(await repo.get(s, w)).state for w in wids]  # type: ignore[union-attr]
            attempts = [a for w in wids for a in await repo.attempts_of(s, w)]
        assert states == ["completed", "completed"]
        assert [(a.tx_hash, a.state) for a in attempts] == [
            (first.tx_hash, "confirmed"),
            (second.tx_hash, "confirmed"),
        ]
        for i, dest in enumerate(dests):
            assert await balance_of(w3, dep.tokens["USDT"].address, dest) == (10 + i) * 10**18
        assert len(await withdrawn_events(w3, dep)) == 2


async def foreign_tx_under(
    w3: AsyncWeb3[Any], dep: Deployment, attempt: TxAttempt, *, data: str = "0x"
) -> str:
    """Someone else with the hot key: our attempt leaves the pool (another node never
    saw it) and a different transaction of the hot wallet takes its nonce, mined."""
    await rpc(w3, "anvil_dropTransaction", attempt.tx_hash)
    block = await w3.eth.get_block("latest")
    signed = OPERATOR.sign_transaction(
        {
            "type": 2,
            "chainId": dep.chain_id,
            "nonce": attempt.nonce,
            "to": dep.vault if data != "0x" else OPERATOR.address,
            "value": 0,
            "data": data,
            "gas": 300_000,
            "maxFeePerGas": 3 * block["baseFeePerGas"] + 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    tx_hash = str(await rpc(w3, "eth_sendRawTransaction", "0x" + signed.raw_transaction.hex()))
    await mine(w3, 1)
    receipt = await rpc(w3, "eth_getTransactionReceipt", tx_hash)
    assert receipt is not None and receipt["status"] == "0x1"
    assert tx_hash != attempt.tx_hash
    return tx_hash


async def broadcast_then_lose_nonce(
    app: App, w3: AsyncWeb3[Any], dep: Deployment, wid: int, *, data: str = "0x"
) -> tuple[TxAttempt, str]:
    await rpc(w3, "evm_setAutomine", False)
    try:
        await sender(app).tick()
        async with app.sessions() as s:
            (attempt,) = await repo.attempts_of(s, wid)
        assert attempt.state == "broadcast"
        foreign = await foreign_tx_under(w3, dep, attempt, data=data)
    finally:
        await rpc(w3, "evm_setAutomine", True)
    return attempt, foreign


async def test_nonce_taken_by_a_foreign_tx_stalls_then_retry_pays_once(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=3) as (dep, w3, app):
        dest = Account.create().address
        usdt = dep.tokens["USDT"].address
        wid = await request_usdt(app, w3, dep, 70, dest)
        attempt, _ = await broadcast_then_lose_nonce(app, w3, dep, wid)
        track = tracker(app)
        await track.tick()  # re-sent on start: "nonce too low"; 1 of 3 confirmations
        await mine(w3, 1)
        await track.tick()  # 2 of 3: not final yet, the withdrawal still waits
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            assert await active_alarms(s) == []
        assert w is not None and w.state == "broadcast"

        await mine(w3, 1)
        await track.tick()  # the foreign tx is final: seen once, not yet acted on
        assert track.last.stalled == 0
        async with app.sessions() as s:
            assert await active_alarms(s) == []
        await mine(w3, 1)
        await track.tick()  # still so at a higher head: our attempt can never be mined
        assert track.last.stalled == 1
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            (dropped,) = await repo.attempts_of(s, wid)
            alarms = await active_alarms(s)
            held = await ledger.balances(s, dev_account(2).address)
        assert w is not None and w.state == "stalled" and "retry" in (w.reason or "")
        assert dropped.state == "dropped"
        assert [(a.kind, a.details["withdrawalId"]) for a in alarms] == [("nonce_consumed", wid)]
        assert held[("USDT", HOLD)] == 70 * 10**8 + w.fee  # still held: nothing paid
        for _ in range(3):  # nothing moves on its own
            await sender(app).tick()
            await track.tick()
            await mine(w3, 1)
        async with app.sessions() as s:
            still = await repo.get(s, wid)
        assert still is not None and still.state == "stalled"
        assert await balance_of(w3, usdt, dest) == 0

        await withdrawal_ops.retry(app.sessions, wid)
        for _ in range(5):
            await sender(app).tick()
            await track.tick()
            await mine(w3, 1)
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            old, new = await repo.attempts_of(s, wid)
        assert w is not None and w.state == "completed" and w.tx_hash == new.tx_hash
        assert (old.state, new.state) == ("dropped", "confirmed")
        assert new.nonce == attempt.nonce + 1
        assert await settlements(app, wid) == [f"withdrawal:{wid}:hold", f"withdrawal:{wid}:settle"]
        assert await balance_of(w3, usdt, dest) == 70 * 10**18
        assert len(await withdrawn_events(w3, dep)) == 1


async def test_nonce_taken_by_a_foreign_payout_of_the_same_id_is_settled_once(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    """The foreign tx is itself ``vault.withdraw`` of this id (another signer with the
    hot key, other fees): the vault says paid, the tracker records that tx and settles."""
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=2) as (dep, w3, app):
        dest = Account.create().address
        usdt = dep.tokens["USDT"].address
        wid = await request_usdt(app, w3, dep, 15, dest)
        data = withdraw_calldata(*authorized(dep, wid, usdt, dest, 15 * 10**18))
        attempt, foreign = await broadcast_then_lose_nonce(app, w3, dep, wid, data=data)
        await track_rounds(app, w3, 3)
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            (ours,) = await repo.attempts_of(s, wid)
            alarms = await active_alarms(s)
        assert w is not None and w.state == "completed" and w.tx_hash == foreign
        assert ours.state == "dropped" and ours.tx_hash == attempt.tx_hash
        assert [a.kind for a in alarms] == ["nonce_consumed"]
        assert await settlements(app, wid) == [f"withdrawal:{wid}:hold", f"withdrawal:{wid}:settle"]
        assert await balance_of(w3, usdt, dest) == 15 * 10**18
        assert len(await withdrawn_events(w3, dep)) == 1


async def test_a_receipt_the_node_has_not_indexed_yet_is_not_a_foreign_tx(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    """Our payout is mined, but for one tick the node answers its receipt "not found"
    while its nonce count already includes it (anvil under load; a load-balanced
    provider's backends lagging each other): the tracker must not call the nonce
    consumed (no alarm, attempt not dropped); the next tick finds the receipt."""
    async with (
        devnet_factory() as (node, dep),
        w3_for(node.url) as w3,
        withdrawal_app(tmp_path, dep, db_url, confirmations=1) as app,
        FaultProxy(node.url) as proxy,
    ):
        dest = Account.create().address
        wid = await request_usdt(app, w3, dep, 25, dest)
        await sender(app).tick()  # signed, broadcast, mined at once (automine)
        track = tracker(app)
        track.rpc = RpcClient([proxy.url], chain_id=dep.chain_id)
        try:
            proxy.null_next("eth_getTransactionReceipt", 10)
            await track.tick()
            assert proxy.nulls["eth_getTransactionReceipt"] < 10  # the receipts were asked
            async with app.sessions() as s:
                w = await repo.get(s, wid)
                (attempt,) = await repo.attempts_of(s, wid)
                assert await active_alarms(s) == []
            assert w is not None and w.state == "broadcast"
            assert attempt.state == "broadcast"
            proxy.reset()
            await mine(w3, 1)
            await track.tick()
        finally:
            await track.rpc.close()
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            (attempt,) = await repo.attempts_of(s, wid)
            assert await active_alarms(s) == []
        assert w is not None and w.state == "completed" and w.tx_hash == attempt.tx_hash
        assert attempt.state == "confirmed"
        assert await balance_of(w3, dep.tokens["USDT"].address, dest) == 25 * 10**18


async def test_sender_signs_above_a_nonce_a_foreign_tx_used_while_running(
    tmp_path: Path, devnet_factory: DevnetFactory, db_url: str
) -> None:
    async with chain_and_app(tmp_path, devnet_factory, db_url, confirmations=1) as (dep, w3, app):
        send = sender(app)
        await send.tick()  # started: stored next nonce = the chain's
        hot = send.signer.address
        stored = await w3.eth.get_transaction_count(hot)  # type: ignore[arg-type]
        foreign = OPERATOR.sign_transaction(
            {
                "type": 2,
                "chainId": dep.chain_id,
                "nonce": stored,
                "to": hot,
                "value": 0,
                "gas": 21_000,
                "maxFeePerGas": 10 * 10**9,
                "maxPriorityFeePerGas": 10**9,
            }
        )
        await rpc(w3, "eth_sendRawTransaction", "0x" + foreign.raw_transaction.hex())
        dest = Account.create().address
        wid = await request_usdt(app, w3, dep, 5, dest)
        for _ in range(3):
            await send.tick()
            await tracker(app).tick()
            await mine(w3, 1)
        async with app.sessions() as s:
            w = await repo.get(s, wid)
            (attempt,) = await repo.attempts_of(s, wid)
        assert attempt.nonce == stored + 1  # not the nonce the foreign tx took
        assert w is not None and w.state == "completed"
        assert await balance_of(w3, dep.tokens["USDT"].address, dest) == 5 * 10**18
