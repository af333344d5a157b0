"""Lifecycle log lines of withdrawals on a real anvil and SQLite: accepted, signed
(nonce), broadcast, mined and completed with the tx hash; rejected with the reason;
replaced on a fee bump; failed; queued with the alarm raised. And a line queued in a
transaction that rolls back is never written."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account
from web3 import AsyncWeb3

from tests.integration.withdrawal_support import (
    credit,
    deposit_token,
    mine,
    run_pipeline,
    sender,
    signed_body,
    track_rounds,
    tracker,
    usdt_body,
    withdrawal_app,
)
from watcher.api.server import make_web_app
from watcher.app import App
from watcher.chain.devnet import Deployment, dev_account
from watcher.chain.vault import ZERO_ADDRESS
from watcher.store import withdrawals as repo
from watcher.store.alarms import AlarmKind, raise_alarm

pytestmark = pytest.mark.usefixtures("chain_snapshot")


@pytest.fixture
async def app(tmp_path: Path, deployment: Deployment, db_url: str) -> AsyncIterator[App]:
    async with withdrawal_app(tmp_path, deployment, db_url) as a:
        yield a


@pytest.fixture
async def client(app: App) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_web_app(app))) as c:
        yield c


async def funded(app: App, w3: AsyncWeb3[Any], dep: Deployment, user: Any, whole: int) -> None:
    await deposit_token(w3, user, dep, "USDT", whole * 10**18)
    await credit(app, user.address, "USDT", whole * 10**8, f"test:{user.address}:{whole}")


async def post(client: TestClient[Any, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/withdrawals", json=body)
    return resp.status, await resp.json()


def lines(caplog: pytest.LogCaptureFixture, *needles: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if all(n in r.getMessage() for n in needles)]


async def test_a_payout_is_followed_from_accepted_to_completed(
    app: App,
    client: TestClient[Any, Any],
    deployment: Deployment,
    chain_w3: AsyncWeb3[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    user = dev_account(2)
    await funded(app, chain_w3, deployment, user, 1_000)
    dest = Account.create().address
    status, doc = await post(client, usdt_body(deployment, user, 100, 1, dest))
    assert status == 202
    wid = doc["id"]
    await run_pipeline(app, chain_w3)
    async with app.sessions() as s:
        w = await repo.get(s, wid)
        (attempt,) = await repo.attempts_of(s, wid)
    assert w is not None and w.state == "completed"
    tx = attempt.tx_hash
    expected = [
        f"withdrawal accepted id={wid} chain={deployment.chain_id} account={user.address} "
        f"asset=USDT amount=100 fee=",
        f"withdrawal signed id={wid} chain={deployment.chain_id} nonce={attempt.nonce} tx={tx}",
        f"withdrawal broadcast id={wid} tx={tx}",
        f"withdrawal mined id={wid} tx={tx} block={attempt.block_number} status=1",
        f"withdrawal completed id={wid} chain={deployment.chain_id} account={user.address} "
        f"asset=USDT tx={tx}",
    ]
    messages = [r.getMessage() for r in caplog.records]
    at = []
    for prefix in expected:
        found = [i for i, m in enumerate(messages) if m.startswith(prefix)]
        assert len(found) == 1, (prefix, [m for m in messages if "withdrawal" in m])
        at.append(found[0])
    assert at == sorted(at)  # in lifecycle order
    assert f"to={dest} nonce=1 state=requested" in messages[at[0]]
    # Hashes only: the signed bytes never reach the log.
    assert not [m for m in messages if attempt.raw_tx[2:60] in m]


async def test_a_rejected_withdrawal_logs_the_reason(
    app: App,
    client: TestClient[Any, Any],
    deployment: Deployment,
    chain_w3: AsyncWeb3[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    user = dev_account(3)
    await funded(app, chain_w3, deployment, user, 10)
    status, doc = await post(client, usdt_body(deployment, user, 50, 1, Account.create().address))
    assert status == 422, doc
    [line] = lines(caplog, "withdrawal rejected")
    assert line == (
        f"withdrawal rejected chain={deployment.chain_id} account={user.address} asset=USDT "
        f"amount=50 nonce=1 reason=INSUFFICIENT_WITHDRAWABLE"
    )
    assert lines(caplog, "withdrawal accepted") == []


async def test_a_fee_bump_logs_replaced_with_both_hashes(
    app: App,
    client: TestClient[Any, Any],
    deployment: Deployment,
    chain_w3: AsyncWeb3[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    user = dev_account(2)
    await funded(app, chain_w3, deployment, user, 1_000)
    _, doc = await post(client, usdt_body(deployment, user, 100, 1, Account.create().address))
    await chain_w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        await sender(app).tick()
        track = tracker(app)
        await track.tick()
        track.clock = lambda: time.time() + 3600  # stuck_after_seconds has passed
        await track.tick()
        assert track.last.replaced == 1
        await mine(chain_w3)
    finally:
        await chain_w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    track.clock = time.time
    await track_rounds(app, chain_w3, 4)
    async with app.sessions() as s:
        old, new = await repo.attempts_of(s, doc["id"])
    [line] = lines(caplog, "withdrawal replaced")
    assert line.startswith(
        f"withdrawal replaced id={doc['id']} chain={deployment.chain_id} nonce={old.nonce} "
        f"old={old.tx_hash} new={new.tx_hash} max_fee_per_gas={new.max_fee_per_gas} "
    )
    assert lines(caplog, "withdrawal completed", f"tx={new.tx_hash}")


async def test_a_reverted_payout_logs_failed(
    app: App,
    client: TestClient[Any, Any],
    deployment: Deployment,
    chain_w3: AsyncWeb3[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    user = dev_account(2)
    await funded(app, chain_w3, deployment, user, 1_000)
    _, doc = await post(client, usdt_body(deployment, user, 400, 1, Account.create().address))
    # Signed and sent, but mined only after its payout authorization's deadline: the
    # vault refuses it (PayoutExpired), the id stays unpaid, the withdrawal fails.
    await chain_w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        await sender(app).tick()
        later = app.settings.withdrawals.payout_deadline_seconds + 3600
        await chain_w3.provider.make_request("evm_increaseTime", [later])  # type: ignore[arg-type]
        await mine(chain_w3)
    finally:
        await chain_w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    await run_pipeline(app, chain_w3)
    async with app.sessions() as s:
        (attempt,) = await repo.attempts_of(s, doc["id"])
    [line] = lines(caplog, "withdrawal failed")
    assert line.startswith(f"withdrawal failed id={doc['id']} chain={deployment.chain_id} ")
    assert f"reason=transaction {attempt.tx_hash} reverted" in line


async def test_queued_for_funds_logs_queued_and_the_alarm_once(
    app: App,
    client: TestClient[Any, Any],
    deployment: Deployment,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    user = dev_account(2)
    await credit(app, user.address, "ETH", 5 * 10**8, "test:eth-ledger-only")
    body = signed_body(
        user,
        deployment,
        token=ZERO_ADDRESS,
        amount="1",
        amount_units=10**18,
        destination=Account.create().address,
        nonce=1,
    )
    status, doc = await post(client, body)
    assert status == 202
    await sender(app).tick()
    await sender(app).tick()  # still short: the alarm is bumped, not raised again
    [queued] = lines(caplog, "withdrawal queued", f"id={doc['id']}")
    assert "reason=vault lacks ETH" in queued
    [alarm] = [r for r in caplog.records if "alarm raised" in r.getMessage()]
    assert "kind=hot_wallet_low" in alarm.getMessage()
    assert alarm.levelno == logging.WARNING


async def test_a_line_of_a_rolled_back_transaction_is_not_written(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    class Abort(Exception):
        pass

    async with app.sessions() as s:  # one session, two transactions
        with pytest.raises(Abort):
            async with s.begin():
                await raise_alarm(s, AlarmKind.RPC_DOWN, "test:rolled-back", "never committed")
                raise Abort
        assert lines(caplog, "alarm raised") == []
        async with s.begin():
            await raise_alarm(s, AlarmKind.RPC_DOWN, "test:committed", "committed")
            assert lines(caplog, "alarm raised") == []  # not before the commit
    [line] = lines(caplog, "alarm raised")
    assert "kind=rpc_down key=test:committed severity=critical: committed" in line
