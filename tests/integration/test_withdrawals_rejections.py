"""Every rejection of POST /v1/withdrawals is a 4xx with a reason code and changes
nothing: balances, journal and withdrawals are identical before and after."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account
from sqlalchemy import func, select

from tests.integration.withdrawal_support import credit, signed_body, withdrawal_app
from watcher.api.server import make_web_app
from watcher.app import App
from watcher.chain.devnet import Deployment, dev_account
from watcher.domain.journal import ENGINE_ACCOUNT, Leg, TxKind
from watcher.store import accounts, ledger
from watcher.store.models import Balance, JournalEntry, Withdrawal

USER = dev_account(5)
OTHER = dev_account(6)
DEST = "0x000000000000000000000000000000000000dEaD"


@pytest.fixture
async def app(tmp_path: Path, deployment: Deployment, db_url: str) -> AsyncIterator[App]:
    async with withdrawal_app(tmp_path, deployment, db_url, signer=False) as a:
        await credit(a, USER.address, "USDT", 10_000 * 10**8, "test:usdt")
        await credit(a, USER.address, "ETH", 2 * 10**8, "test:eth")
        yield a


@pytest.fixture
async def client(app: App) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_web_app(app))) as c:
        yield c


async def state(app: App) -> tuple[Any, ...]:
    async with app.sessions() as s:
        balances = sorted(
            (b.account_id, b.asset, b.wallet, b.amount) for b in await s.scalars(select(Balance))
        )
        entries = await s.scalar(select(func.count()).select_from(JournalEntry))
        withdrawals = sorted(
            (w.id, w.state, w.ledger_amount) for w in await s.scalars(select(Withdrawal))
        )
    return tuple(balances), entries, tuple(withdrawals)


def usdt(deployment: Deployment) -> str:
    return deployment.tokens["USDT"].address


async def expect(
    app: App, client: TestClient[Any, Any], body: dict[str, Any], status: int, code: str
) -> dict[str, Any]:
    before = await state(app)
    resp = await client.post("/v1/withdrawals", json=body)
    doc = await resp.json()
    assert (resp.status, doc.get("code")) == (status, code), doc
    assert await state(app) == before
    return doc


def body(deployment: Deployment, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "token": usdt(deployment),
        "amount": "100",
        "amount_units": 100 * 10**18,
        "destination": DEST,
        "nonce": 1,
    }
    args.update(kw)
    user = args.pop("user", USER)
    return signed_body(user, deployment, **args)


async def test_negative_balance(
    app: App, client: TestClient[Any, Any], deployment: Deployment
) -> None:
    async with app.sessions.begin() as s:
        await ledger.post(
            s,
            kind=TxKind.COMMISSION,
            ref="engine:neg",
            legs=[
                Leg(USER.address, "USDT", -20_000 * 10**8),
                Leg(ENGINE_ACCOUNT, "USDT", 20_000 * 10**8),
            ],
            account_key=USER.address,
        )
    from watcher.chain.vault import ZERO_ADDRESS

    doc = await expect(
        app,
        client,
        body(deployment, token=ZERO_ADDRESS, amount="1", amount_units=10**18),
        422,
        "NEGATIVE_BALANCE",
    )
    assert doc["details"]["negativeAssets"] == ["USDT"]


async def test_above_max_withdrawable_with_open_position(
    app: App, client: TestClient[Any, Any], deployment: Deployment
) -> None:
    async with app.sessions.begin() as s:
        await accounts.upsert_prices(s, {"BTCUSDT": Decimal(60_000)}, {})
        await accounts.replace_positions(
            s,
            USER.address,
            [accounts.PositionInput("BTCUSDT", Decimal(1), Decimal(60_000), 10, "cross")],
        )
    # CWB 10,000 − IM 6,000 → max withdrawable 4,000.
    await expect(
        app,
        client,
        body(deployment, amount="4000.00000001", amount_units=400_000_000_001 * 10**10),
        422,
        "INSUFFICIENT_WITHDRAWABLE",
    )
    resp = await client.post(
        "/v1/withdrawals", json=body(deployment, amount="4000", amount_units=4000 * 10**18)
    )
    assert resp.status == 202, await resp.text()


async def test_signature_rejections(
    app: App, client: TestClient[Any, Any], deployment: Deployment
) -> None:
    good = body(deployment)
    bad = dict(good, signature="0x" + "11" * 65)
    await expect(app, client, bad, 401, "BAD_SIGNATURE")
    await expect(app, client, dict(good, signature="0xabc"), 401, "BAD_SIGNATURE")
    await expect(app, client, body(deployment, signer=OTHER), 401, "WRONG_SIGNER")
    # Signed amount differs from the body's amount: the signer does not recover.
    await expect(app, client, dict(good, amount="101"), 401, "WRONG_SIGNER")
    # Signed for another chain id than the one in the body.
    await expect(app, client, body(deployment, sign_chain_id=1), 401, "WRONG_SIGNER")


async def test_wrong_chain_expired_token_decimals(
    app: App, client: TestClient[Any, Any], deployment: Deployment
) -> None:
    await expect(app, client, body(deployment, chain_id=56), 422, "UNSUPPORTED_CHAIN")
    await expect(app, client, body(deployment, chain_id=999), 422, "UNSUPPORTED_CHAIN")
    await expect(
        app, client, body(deployment, deadline=int(time.time()) - 1), 401, "SIGNATURE_EXPIRED"
    )
    await expect(
        app, client, body(deployment, token=Account.create().address), 422, "UNSUPPORTED_TOKEN"
    )
    # USDC has 6 decimals on this chain.
    usdc = deployment.tokens["USDC"].address
    await expect(
        app,
        client,
        body(deployment, token=usdc, amount="1.0000001", amount_units=1),
        400,
        "AMOUNT_PRECISION",
    )
    # USDT has 18 decimals but the ledger keeps 8.
    await expect(
        app,
        client,
        body(deployment, amount="1.000000001", amount_units=1_000_000_001 * 10**9),
        400,
        "AMOUNT_PRECISION",
    )
    await expect(
        app, client, body(deployment, amount="0", amount_units=0), 422, "AMOUNT_NOT_POSITIVE"
    )
    await expect(
        app,
        client,
        body(deployment, amount="0.5", amount_units=5 * 10**17),
        422,
        "BELOW_MIN_WITHDRAWAL",
    )
    await expect(app, client, dict(body(deployment), amount="-1"), 400, "INVALID_AMOUNT")
    await expect(app, client, dict(body(deployment), destination="0x12"), 400, "INVALID_ADDRESS")


async def test_replay(app: App, client: TestClient[Any, Any], deployment: Deployment) -> None:
    first = body(deployment, nonce=42)
    resp = await client.post("/v1/withdrawals", json=first)
    assert resp.status == 202
    wid = (await resp.json())["id"]
    again = await client.post("/v1/withdrawals", json=first)
    assert again.status == 200 and (await again.json())["id"] == wid
    await expect(
        app,
        client,
        body(deployment, nonce=42, amount="99", amount_units=99 * 10**18),
        409,
        "NONCE_REUSED",
    )


async def test_account_that_cannot_be_evaluated_is_refused_cleanly(
    app: App, client: TestClient[Any, Any], deployment: Deployment
) -> None:
    # Multi-asset mode values every asset in USD; ETH has no price yet: fail closed, 422.
    async with app.sessions.begin() as s:
        await accounts.set_multi_asset_mode(s, USER.address, True)
    doc = await expect(app, client, body(deployment), 422, "ACCOUNT_STATE_INCOMPLETE")
    assert "ETH" in doc["message"]
