"""End to end on a real anvil: deposit → credited by the real listener → signed withdrawal
over HTTP → sender → tracker → tokens at the destination → ledger settled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account
from web3 import AsyncWeb3

from tests.integration.withdrawal_support import (
    balance_of,
    deposit_native,
    deposit_token,
    mine,
    run_pipeline,
    service,
    signed_body,
    withdrawal_app,
)
from watcher.api.server import make_web_app
from watcher.app import App
from watcher.chain.devnet import Deployment, dev_account
from watcher.chain.vault import ZERO_ADDRESS
from watcher.domain.journal import CROSS, HOLD, vault_account
from watcher.store import ledger
from watcher.store import withdrawals as repo

pytestmark = pytest.mark.usefixtures("chain_snapshot")

FEE_TOML = """
[withdrawals]
poll_interval_seconds = "1"
stuck_after_seconds = 60
"""


@pytest.fixture
async def app(tmp_path: Path, deployment: Deployment, db_url: str) -> AsyncIterator[App]:
    async with withdrawal_app(tmp_path, deployment, db_url) as a:
        yield a


@pytest.fixture
async def client(app: App) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_web_app(app))) as c:
        yield c


async def listen_until_credited(app: App, w3: AsyncWeb3[Any]) -> None:
    listener = service(app, "deposits:")
    await listener.tick()
    await mine(w3, 3)
    await listener.tick()
    await listener.tick()


async def test_token_deposit_withdraw_end_to_end(
    app: App, client: TestClient[Any, Any], deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    user = dev_account(3)
    usdt = deployment.tokens["USDT"].address
    await deposit_token(chain_w3, user, deployment, "USDT", 100 * 10**18)
    await listen_until_credited(app, chain_w3)
    async with app.sessions() as s:
        assert (await ledger.balances(s, user.address))[("USDT", CROSS)] == 100 * 10**8

    destination = Account.create().address
    body = signed_body(
        user,
        deployment,
        token=usdt,
        amount="40.5",
        amount_units=405 * 10**17,
        destination=destination,
        nonce=1,
    )
    resp = await client.post("/v1/withdrawals", json=body)
    assert resp.status == 202, await resp.text()
    doc = await resp.json()
    assert doc["state"] == "requested"
    assert doc["amount"] == "40.5"
    again = await client.post("/v1/withdrawals", json=body)
    assert again.status == 200
    assert (await again.json())["id"] == doc["id"]
    async with app.sessions() as s:
        held = await ledger.balances(s, user.address)
    assert held[("USDT", CROSS)] == 595 * 10**7
    assert held[("USDT", HOLD)] == 405 * 10**7

    await run_pipeline(app, chain_w3)

    resp = await client.get(f"/v1/withdrawals/{doc['id']}")
    final = await resp.json()
    assert final["state"] == "completed", final
    assert final["txHash"] and final["confirmations"] >= 3
    assert await balance_of(chain_w3, usdt, destination) == 405 * 10**17
    async with app.sessions() as s:
        after = await ledger.balances(s, user.address)
        vault = await ledger.balances(s, vault_account(deployment.chain_id))
        attempts = await repo.attempts_of(s, doc["id"])
    assert after[("USDT", CROSS)] == 595 * 10**7
    assert after[("USDT", HOLD)] == 0
    assert vault[("USDT", CROSS)] == -595 * 10**7  # what the vault still owes the user
    assert [a.state for a in attempts] == ["confirmed"]


async def test_native_deposit_withdraw_end_to_end(
    app: App, client: TestClient[Any, Any], deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    user = dev_account(4)
    await deposit_native(chain_w3, user, deployment, 2 * 10**18)
    await listen_until_credited(app, chain_w3)
    destination = Account.create().address
    body = signed_body(
        user,
        deployment,
        token=ZERO_ADDRESS,
        amount="1.25",
        amount_units=125 * 10**16,
        destination=destination,
        nonce=7,
    )
    resp = await client.post("/v1/withdrawals", json=body)
    assert resp.status == 202, await resp.text()
    wid = (await resp.json())["id"]
    await run_pipeline(app, chain_w3)
    final = await (await client.get(f"/v1/withdrawals/{wid}")).json()
    assert final["state"] == "completed", final
    assert final["asset"] == "ETH"
    assert await balance_of(chain_w3, ZERO_ADDRESS, destination) == 125 * 10**16
    async with app.sessions() as s:
        after = await ledger.balances(s, user.address)
    assert after[("ETH", CROSS)] == 75 * 10**6
    assert after[("ETH", HOLD)] == 0
