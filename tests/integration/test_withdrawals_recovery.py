"""The hard cases on a real anvil: concurrent over-asking, crashes around the broadcast,
stuck transactions, reverts, low funds, review."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account
from sqlalchemy import select
from web3 import AsyncWeb3

from tests.fixtures_chain import transact
from tests.integration.withdrawal_support import (
    OPERATOR,
    balance_of,
    credit,
    deposit_native,
    deposit_token,
    fresh_sender,
    mine,
    run_pipeline,
    sender,
    signed_body,
    track_rounds,
    tracker,
    usdt_body,
    withdrawal_app,
    withdrawn_events,
)
from watcher.api.server import make_web_app
from watcher.app import App
from watcher.chain.artifacts import load_artifact
from watcher.chain.broadcast import broadcast_raw
from watcher.chain.devnet import Deployment, dev_account
from watcher.chain.vault import ZERO_ADDRESS
from watcher.domain.journal import CROSS, HOLD
from watcher.services import withdrawal_ops
from watcher.services.tracker import Tracker
from watcher.store import ledger, vaults
from watcher.store import withdrawals as repo
from watcher.store.alarms import active_alarms
from watcher.store.models import TxAttempt, Withdrawal

pytestmark = pytest.mark.usefixtures("chain_snapshot")


@pytest.fixture
async def app(tmp_path: Path, deployment: Deployment, db_url: str) -> AsyncIterator[App]:
    extra = '[withdrawals.review_threshold]\nUSDT = "5000"\n'
    async with withdrawal_app(tmp_path, deployment, db_url, extra_toml=extra) as a:
        yield a


@pytest.fixture
async def client(app: App) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_web_app(app))) as c:
        yield c


async def funded(app: App, w3: AsyncWeb3[Any], dep: Deployment, user: Any, whole: int) -> None:
    """``whole`` USDT really in the vault (an on-chain deposit) and credited in the ledger."""
    await deposit_token(w3, user, dep, "USDT", whole * 10**18)
    await credit(app, user.address, "USDT", whole * 10**8, f"test:{user.address}:{whole}")


async def post(client: TestClient[Any, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/withdrawals", json=body)
    return resp.status, await resp.json()


async def test_50_concurrent_withdrawals_never_exceed_the_balance(
    app: App, client: TestClient[Any, Any], deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    user = dev_account(2)
    await funded(app, chain_w3, deployment, user, 10_000)
    dest = Account.create().address
    bodies = [usdt_body(deployment, user, 300, n, dest) for n in range(50)]  # 15,000 asked
    answers = await asyncio.gather(*(post(client, b) for b in bodies))
    accepted = [d for status, d in answers if status == 202]
    refused = [d for status, d in answers if status != 202]
    assert len(accepted) == 33  # 33 × 300 = 9,900 ≤ 10,000 < 34 × 300
    assert {d["code"] for d in refused} == {"INSUFFICIENT_WITHDRAWABLE"}
    async with app.sessions() as s:
        held = await ledger.balances(s, user.address)
    assert held[("USDT", HOLD)] == 9_900 * 10**8
    assert held[("USDT", CROSS)] == 100 * 10**8

    await run_pipeline(app, chain_w3, rounds=6)
    assert await balance_of(chain_w3, deployment.tokens["USDT"].address, dest) == 9_900 * 10**18
    async with app.sessions() as s:
        states = {w.state for w in await s.scalars(select(Withdrawal))}
        after = await ledger.balances(s, user.address)
    assert states == {"completed"}
    assert after[("USDT", HOLD)] == 0 and after[("USDT", CROSS)] == 100 * 10**8


async def test_crash_after_signing_before_broadcast_pays_once(
    app: App, client: TestClient[Any, Any], deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    user = dev_account(2)
    await funded(app, chain_w3, deployment, user, 1_000)
    dest = Account.create().address
    status, doc = await post(client, usdt_body(deployment, user, 250, 1, dest))
    assert status == 202
    first = sender(app)
    await first.start()
    assert await first.sign_ready() == 1  # persisted, then the process "dies"
    nonce_before = await chain_w3.eth.get_transaction_count(OPERATOR.address)
    async with app.sessions() as s:
        (attempt,) = await repo.attempts_of(s, doc["id"])
    assert attempt.state == "signed"

    restarted = fresh_sender(app)
    await restarted.tick()  # start(): gap repair re-sends the same raw tx; tick broadcasts
    await tracker(app).tick()
    for _ in range(4):
        await mine(chain_w3)
        await tracker(app).tick()
    async with app.sessions() as s:
        w = await repo.get(s, doc["id"])
        attempts = await repo.attempts_of(s, doc["id"])
    assert w is not None and w.state == "completed"
    assert [a.tx_hash for a in attempts] == [attempt.tx_hash]
    assert await balance_of(chain_w3, deployment.tokens["USDT"].address, dest) == 250 * 10**18
    assert await chain_w3.eth.get_transaction_count(OPERATOR.address) == nonce_before + 1
    assert len(await withdrawn_events(chain_w3, deployment)) == 1


async def test_crash_after_broadcast_sends_no_second_transaction(
    app: App, client: TestClient[Any, Any], deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    user = dev_account(2)
    await funded(app, chain_w3, deployment, user, 1_000)
    dest = Account.create().address
    _, doc = await post(client, usdt_body(deployment, user, 100, 1, dest))
    first = sender(app)
    await first.start()
    await first.sign_ready()
    nonce_before = await chain_w3.eth.get_transaction_count(OPERATOR.address)
    async with app.sessions() as s:
        (attempt,) = await repo.attempts_of(s, doc["id"])
    # The broadcast reached the node (and was mined), then the process died before
    # recording it: the DB still says "signed".
    await broadcast_raw(app.http, first.network.rpc_urls, [attempt.raw_tx])
    await mine(chain_w3, 2)

    restarted = fresh_sender(app)
    await restarted.tick()
    fresh_tracker = Tracker(
        network=first.network,
        settings=first.settings,
        sessions=app.sessions,
        rpc=first.rpc,
        http=app.http,
        signer=first.signer,
    )
    for _ in range(4):
        await fresh_tracker.tick()
        await mine(chain_w3)
    async with app.sessions() as s:
        w = await repo.get(s, doc["id"])
        attempts = await repo.attempts_of(s, doc["id"])
    assert w is not None and w.state == "completed"
    assert len(attempts) == 1 and attempts[0].state == "confirmed"
    assert await chain_w3.eth.get_transaction_count(OPERATOR.address) == nonce_before + 1
    assert await balance_of(chain_w3, deployment.tokens["USDT"].address, dest) == 100 * 10**18


async def test_stuck_transaction_is_bumped_and_mined_once(
    app: App, client: TestClient[Any, Any], deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    user = dev_account(2)
    await funded(app, chain_w3, deployment, user, 1_000)
    dest = Account.create().address
    _, doc = await post(client, usdt_body(deployment, user, 100, 1, dest))
    nonce_before = await chain_w3.eth.get_transaction_count(OPERATOR.address)
    await chain_w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        await sender(app).tick()
        track = tracker(app)
        await track.tick()
        async with app.sessions() as s:
            (old,) = await repo.attempts_of(s, doc["id"])
        assert old.state == "broadcast"
        track.clock = lambda: time.time() + 3600  # stuck_after_seconds (60) has passed
        await track.tick()
        assert track.last.replaced == 1
        async with app.sessions() as s:
            old2, new = await repo.attempts_of(s, doc["id"])
        assert (old2.state, new.state) == ("replaced", "broadcast")
        assert new.nonce == old.nonce
        assert new.max_fee_per_gas >= old.max_fee_per_gas * 115 // 100
        assert new.max_priority_fee_per_gas >= old.max_priority_fee_per_gas * 115 // 100
        await mine(chain_w3)
    finally:
        await chain_w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    track.clock = time.time
    await track_rounds(app, chain_w3, 4)
    async with app.sessions() as s:
        w = await repo.get(s, doc["id"])
        attempts = {a.tx_hash: a.state for a in await repo.attempts_of(s, doc["id"])}
    assert w is not None and w.state == "completed" and w.tx_hash == new.tx_hash
    assert attempts == {old.tx_hash: "dropped", new.tx_hash: "confirmed"}
    assert await chain_w3.eth.get_transaction_receipt(new.tx_hash)
    assert await chain_w3.eth.get_transaction_count(OPERATOR.address) == nonce_before + 1
    assert await balance_of(chain_w3, deployment.tokens["USDT"].address, dest) == 100 * 10**18


async def test_operator_retry_of_a_broadcast_withdrawal_bumps_it_next_tick(
    app: App, client: TestClient[Any, Any], deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    user = dev_account(2)
    await funded(app, chain_w3, deployment, user, 1_000)
    dest = Account.create().address
    _, doc = await post(client, usdt_body(deployment, user, 100, 1, dest))
    await chain_w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        await sender(app).tick()
        track = tracker(app)
        await track.tick()
        assert track.last.replaced == 0  # not stuck yet (60 s, no block limit)
        await withdrawal_ops.retry(app.sessions, doc["id"])
        await track.tick()
        assert track.last.replaced == 1
        async with app.sessions() as s:
            old, new = await repo.attempts_of(s, doc["id"])
        assert (old.state, new.state, new.nonce) == ("replaced", "broadcast", old.nonce)
        await mine(chain_w3)
    finally:
        await chain_w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    await track_rounds(app, chain_w3, 4)
    async with app.sessions() as s:
        w = await repo.get(s, doc["id"])
    assert w is not None and w.state == "completed" and w.tx_hash == new.tx_hash
    assert await balance_of(chain_w3, deployment.tokens["USDT"].address, dest) == 100 * 10**18


async def test_paused_vault_queues_with_alarm_and_drains_after_unpause(
    app: App, client: TestClient[Any, Any], deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    """A vault its guardian paused: nothing is signed or sent (no nonce spent, no
    co-signature asked), the withdrawal waits queued with reason vault_paused, the hold
    stays, an alarm latches and the vault's state says paused; after the unpause the
    queue drains by itself and pays once."""
    user = dev_account(2)
    await funded(app, chain_w3, deployment, user, 1_000)
    # One paid first: the hot wallet's nonce has moved on when the vault pauses.
    _, first = await post(client, usdt_body(deployment, user, 10, 1, Account.create().address))
    await run_pipeline(app, chain_w3)
    async with app.sessions() as s:
        paid = await repo.get(s, first["id"])
    assert paid is not None and paid.state == "completed"
    vault = chain_w3.eth.contract(address=deployment.vault, abi=load_artifact("Vault").abi)  # type: ignore[call-overload]
    await transact(chain_w3, dev_account(0), vault.functions.pause())
    dest = Account.create().address
    _, doc = await post(client, usdt_body(deployment, user, 400, 2, dest))
    await run_pipeline(app, chain_w3)
    async with app.sessions() as s:
        w = await repo.get(s, doc["id"])
        after = await ledger.balances(s, user.address)
        attempts = await repo.attempts_of(s, doc["id"])
        alarms = {a.kind for a in await active_alarms(s)}
        state = await vaults.get(s, deployment.chain_id)
    assert w is not None and w.state == "queued" and (w.reason or "").startswith("vault_paused")
    assert attempts == []
    assert after[("USDT", HOLD)] == 400 * 10**8
    assert "vault_paused" in alarms
    assert state is not None and state.paused

    await transact(chain_w3, dev_account(0), vault.functions.unpause())  # the guardian
    await run_pipeline(app, chain_w3)
    async with app.sessions() as s:
        w = await repo.get(s, doc["id"])
        state = await vaults.get(s, deployment.chain_id)
    assert w is not None and w.state == "completed"
    assert state is not None and not state.paused
    assert await balance_of(chain_w3, deployment.tokens["USDT"].address, dest) == 400 * 10**18


async def test_low_vault_funds_queue_with_alarm_until_funds_arrive(
    app: App, client: TestClient[Any, Any], deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    user = dev_account(2)
    await credit(app, user.address, "ETH", 5 * 10**8, "test:eth-ledger-only")
    dest = Account.create().address
    body = signed_body(
        user,
        deployment,
        token=ZERO_ADDRESS,
        amount="1",
        amount_units=10**18,
        destination=dest,
        nonce=1,
    )
    status, doc = await post(client, body)
    assert status == 202
    await sender(app).tick()
    async with app.sessions() as s:
        w = await repo.get(s, doc["id"])
        alarms = await active_alarms(s)
    assert w is not None and w.state == "queued" and "vault lacks ETH" in (w.reason or "")
    assert [a.kind for a in alarms] == ["hot_wallet_low"]
    await deposit_native(chain_w3, dev_account(3), deployment, 2 * 10**18)
    await run_pipeline(app, chain_w3)
    assert await balance_of(chain_w3, ZERO_ADDRESS, dest) == 10**18
    async with app.sessions() as s:
        w = await repo.get(s, doc["id"])
    assert w is not None and w.state == "completed"


async def test_review_threshold_waits_for_approval(
    app: App, client: TestClient[Any, Any], deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    from watcher.services import withdrawal_ops

    user = dev_account(2)
    await funded(app, chain_w3, deployment, user, 9_000)
    _, big = await post(client, usdt_body(deployment, user, 6_000, 1, Account.create().address))
    _, small = await post(client, usdt_body(deployment, user, 1_000, 2, Account.create().address))
    assert (big["state"], small["state"]) == ("review", "requested")
    await run_pipeline(app, chain_w3, rounds=5)
    async with app.sessions() as s:
        waiting = await repo.get(s, big["id"])
        done = await repo.get(s, small["id"])
        count = len(list(await s.scalars(select(TxAttempt))))
    assert waiting is not None and waiting.state == "review"
    assert done is not None and done.state == "completed" and count == 1
    with pytest.raises(withdrawal_ops.OperatorError):
        await withdrawal_ops.cancel(app.sessions, small["id"], "ops")
    await withdrawal_ops.approve(app.sessions, big["id"], "ops")
    await run_pipeline(app, chain_w3, rounds=5)
    async with app.sessions() as s:
        approved = await repo.get(s, big["id"])
    assert approved is not None and approved.state == "completed"


async def test_receipts_are_asked_only_for_nonces_the_node_has_mined(
    app: App,
    client: TestClient[Any, Any],
    deployment: Deployment,
    chain_w3: AsyncWeb3[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With mining off, two broadcast withdrawals sit in the node's pool: the tracker
    reads the wallet's mined count and asks no receipt (their nonces are not below it).
    Once mined, it asks for exactly those two and completes them."""
    user = dev_account(2)
    await funded(app, chain_w3, deployment, user, 1_000)
    ids = []
    for nonce in (1, 2):
        _, doc = await post(
            client, usdt_body(deployment, user, 10, nonce, Account.create().address)
        )
        ids.append(doc["id"])
    track = tracker(app)
    asked: list[str] = []
    real_batch = track.rpc.batch

    async def batch(calls: Any, *args: Any, **kwargs: Any) -> Any:
        asked.extend(params[0] for method, params in calls if method == "eth_getTransactionReceipt")
        return await real_batch(calls, *args, **kwargs)

    monkeypatch.setattr(track.rpc, "batch", batch)
    await chain_w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        await sender(app).tick()
        async with app.sessions() as s:
            hashes = {a.tx_hash for i in ids for a in await repo.attempts_of(s, i)}
        assert len(hashes) == 2
        await track.tick()
        assert asked == []
        async with app.sessions() as s:
            assert [(await repo.get(s, i)).state for i in ids] == ["broadcast"] * 2  # type: ignore[union-attr]
        await mine(chain_w3)
    finally:
        await chain_w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    await track_rounds(app, chain_w3, 3)
    assert set(asked) == hashes and len(asked) == 2  # asked once each, when mined
    async with app.sessions() as s:
        assert [(await repo.get(s, i)).state for i in ids] == ["completed"] * 2  # type: ignore[union-attr]
