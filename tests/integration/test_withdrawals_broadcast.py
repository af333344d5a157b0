"""Broadcasting a withdrawal to two RPC endpoints of which one fails: the payout still
goes out through the other, once, and the failing node's answer is reported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account
from web3 import AsyncWeb3

from tests.faultproxy import FaultProxy
from tests.integration.withdrawal_support import (
    OPERATOR,
    balance_of,
    credit,
    deposit_token,
    run_pipeline,
    sender,
    signed_body,
    tracker,
    withdrawal_app,
)
from watcher.api.server import make_web_app
from watcher.chain.broadcast import Outcome, broadcast_raw
from watcher.chain.devnet import AnvilNode, Deployment, dev_account
from watcher.store import withdrawals as repo

pytestmark = pytest.mark.usefixtures("chain_snapshot")


@pytest.fixture
async def broken(anvil: AnvilNode) -> AsyncIterator[FaultProxy]:
    """A node in front of the shared anvil that refuses every eth_sendRawTransaction."""
    async with FaultProxy(anvil.url) as proxy:
        proxy.fail_method("eth_sendRawTransaction", code=-32000, message="txpool is full")
        yield proxy


async def test_one_failing_endpoint_does_not_stop_the_broadcast(
    anvil: AnvilNode, broken: FaultProxy, chain_w3: AsyncWeb3[Any], deployment: Deployment
) -> None:
    nonce = await chain_w3.eth.get_transaction_count(OPERATOR.address)
    base_fee = (await chain_w3.eth.get_block("latest"))["baseFeePerGas"]
    raw = OPERATOR.sign_transaction(
        {
            "type": 2,
            "chainId": deployment.chain_id,
            "nonce": nonce,
            "to": OPERATOR.address,
            "value": 0,
            "gas": 21_000,
            "maxFeePerGas": 2 * base_fee + 10**9,  # mineable whatever the chain did before
            "maxPriorityFeePerGas": 10**9,
        }
    )
    async with aiohttp.ClientSession() as http:
        (result,) = await broadcast_raw(
            http, [broken.url, anvil.url], ["0x" + raw.raw_transaction.hex()]
        )
        assert result.outcome is Outcome.ACCEPTED
        assert len(result.messages) == 1 and "txpool is full" in result.messages[0]
        assert broken.requests["eth_sendRawTransaction"] == 1  # it was asked, too
        # Both down: the transaction is reported as not broadcast.
        (alone,) = await broadcast_raw(http, [broken.url], ["0x" + raw.raw_transaction.hex()])
        assert alone.outcome is Outcome.ERROR
    # Mined through the working endpoint (automine mines it shortly after it is accepted).
    receipt = await chain_w3.eth.wait_for_transaction_receipt(raw.hash, timeout=10)
    assert receipt["status"] == 1
    assert await chain_w3.eth.get_transaction_count(OPERATOR.address) == nonce + 1


async def test_withdrawal_is_paid_once_through_the_working_endpoint(
    tmp_path: Path,
    anvil: AnvilNode,
    broken: FaultProxy,
    chain_w3: AsyncWeb3[Any],
    deployment: Deployment,
    db_url: str,
) -> None:
    async with withdrawal_app(tmp_path, deployment, db_url, confirmations=1) as app:
        urls = [broken.url, anvil.url]
        for svc in (sender(app), tracker(app)):
            svc.network = svc.network.model_copy(update={"rpc_urls": urls})
        user = dev_account(2)
        await deposit_token(chain_w3, user, deployment, "USDT", 12 * 10**18)
        await credit(app, user.address, "USDT", 20 * 10**8, "test:two-endpoints")
        dest = Account.create().address
        body = signed_body(
            user,
            deployment,
            token=deployment.tokens["USDT"].address,
            amount="12",
            amount_units=12 * 10**18,
            destination=dest,
            nonce=1,
        )
        async with TestClient(TestServer(make_web_app(app))) as client:
            resp = await client.post("/v1/withdrawals", json=body)
            doc = await resp.json()
        assert resp.status == 202, doc
        await run_pipeline(app, chain_w3, rounds=3)
        async with app.sessions() as s:
            w = await repo.get(s, doc["id"])
            attempts = await repo.attempts_of(s, doc["id"])
        assert w is not None and w.state == "completed"
        assert [a.state for a in attempts] == ["confirmed"]
        assert broken.requests["eth_sendRawTransaction"] >= 1  # the failing node was tried
        assert await balance_of(chain_w3, deployment.tokens["USDT"].address, dest) == 12 * 10**18
