"""Fencing in the real sender, in process on PostgreSQL: a sender whose lease was taken
over (a stale token) signs and persists nothing, whatever point of its tick it resumes
at; the new holder sends. The daemon-level tests (test_replicas.py) also stop such a
replica locally first; this one checks the database's refusal on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account
from sqlalchemy import func, select
from web3 import AsyncWeb3

from tests.integration.withdrawal_support import (
    credit,
    deposit_token,
    sender,
    usdt_body,
    withdrawal_app,
)
from watcher.api.server import make_web_app
from watcher.app import App
from watcher.chain.devnet import Deployment, dev_account
from watcher.services.registry import role_of
from watcher.store import leases
from watcher.store.models import TxAttempt, Withdrawal

pytestmark = pytest.mark.usefixtures("chain_snapshot")


@pytest.fixture
async def app(tmp_path: Path, deployment: Deployment, db_url: str) -> AsyncIterator[App]:
    if not db_url.startswith("postgresql"):
        pytest.skip("fencing guards PostgreSQL replicas (SQLite: one daemon per file)")
    async with withdrawal_app(tmp_path, deployment, db_url) as a:
        yield a


async def take(app: App, role: str, me: str, ttl: float) -> int:
    async with app.engine.connect() as conn:
        token = await leases.acquire(conn, role, me, None, ttl)
    assert token is not None
    return token


async def run_as(fence: leases.Fence, tick: Any) -> None:
    mark = leases.CURRENT_FENCE.set(fence)
    try:
        await tick()
    finally:
        leases.CURRENT_FENCE.reset(mark)


async def attempts(app: App) -> int:
    async with app.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(TxAttempt)) or 0)


async def test_stale_sender_persists_nothing_new_holder_sends(
    app: App, deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    user = dev_account(5)
    # The vault holds the tokens on chain; the ledger credit stands for the listener's.
    await deposit_token(chain_w3, user, deployment, "USDT", 100 * 10**18)
    await credit(app, user.address, "USDT", 100 * 10**8, "fund-fencing")
    the_sender = sender(app)
    role = role_of(the_sender)
    async with TestClient(TestServer(make_web_app(app))) as client:

        async def request(nonce: int) -> int:
            body = usdt_body(deployment, user, 3, nonce, Account.create().address)
            resp = await client.post("/v1/withdrawals", json=body)
            assert resp.status == 202, await resp.text()
            return int((await resp.json())["id"])

        first = await request(1)
        a = await take(app, role, "A", 0.8)
        await run_as(leases.Fence(role, "A", a), the_sender.tick)  # A sends the first
        assert await attempts(app) == 1

        second = await request(2)
        await asyncio.sleep(1.0)  # A is paused past its lease ...
        b = await take(app, role, "B", 30)  # ... and B takes over
        assert b == a + 1
        with pytest.raises(leases.Fenced):  # A resumes: its commit is refused
            await run_as(leases.Fence(role, "A", a), the_sender.tick)
        assert await attempts(app) == 1  # nothing signed was persisted (nor sent)
        async with app.sessions() as s:
            w = await s.get(Withdrawal, second)
            assert w is not None and w.state not in ("signed", "broadcast")

        the_sender.forget()  # B's own process state starts from the database
        await run_as(leases.Fence(role, "B", b), the_sender.tick)
        assert await attempts(app) == 2
        async with app.sessions() as s:
            nonces = sorted(await s.scalars(select(TxAttempt.nonce)))
            states = {i: (await s.get(Withdrawal, i)).state for i in (first, second)}  # type: ignore[union-attr]
        assert nonces[1] == nonces[0] + 1  # no nonce lost or used twice
        assert set(states.values()) <= {"signed", "broadcast"}, states
