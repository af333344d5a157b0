"""The reconciler reads the vault's balance at the listener's cursor block, then the
ledger. A listener step that credits deposits above that block in between (found by
`make chaos`: a critical `reconciliation_mismatch` "vault shortfall" raised while
nothing was wrong) must not be reported: the comparison is made again at the new
cursor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from tests.helpers import write_config
from tests.integration.deposit_support import Chain
from tests.integration.withdrawal_support import (
    credit,
    deposit_token,
    mine,
    sender,
    usdt_body,
    withdrawal_app,
)
from watcher.api.server import make_web_app
from watcher.app import build
from watcher.chain.devnet import AnvilNode, Deployment, dev_account
from watcher.services import reconciler
from watcher.settings import load_settings
from watcher.store.alarms import active_alarms
from watcher.store.models import NetworkCursor, Withdrawal

pytestmark = pytest.mark.usefixtures("chain_snapshot")


async def test_credits_committed_during_a_reconciliation_are_not_a_shortfall(
    tmp_path: Path,
    anvil: AnvilNode,
    deployment: Deployment,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    app = await build(load_settings(cfg, env={}, database_url=db_url))
    try:
        listener = next(s for s in app.services if s.name == "deposits:devnet")
        usdt = deployment.tokens["USDT"].address
        async with aiohttp.ClientSession() as http:
            chain = Chain(anvil.url, deployment, http)
            await chain.approve(2, usdt)
            await chain.receipt(await chain.deposit_token(2, usdt, 100 * 10**18))
            await chain.mine(3)
            await listener.tick()  # credited; the cursor at the head
            assert (await reconciler.reconcile(app)).ok
            await chain.receipt(await chain.deposit_token(2, usdt, 50 * 10**18))
            head = await chain.mine(3)

        original = reconciler._onchain_balance
        stepped: list[int] = []

        async def balance_then_step(*args: Any) -> int:
            found = await original(*args)
            if not stepped:  # the listener credits the 50 while we compare at the old block
                await listener.tick()
                stepped.append(1)
            return found

        monkeypatch.setattr(reconciler, "_onchain_balance", balance_then_step)
        report = await reconciler.reconcile(app)
        assert stepped, "the listener step did not run inside the reconciliation"
        assert report.ok, report.as_dict()
        async with app.sessions() as s:
            cursor = await s.get(NetworkCursor, deployment.chain_id)
            assert cursor is not None and cursor.scanned_block == head
            assert [r.block for r in report.networks] == [head]
            assert await active_alarms(s) == []
    finally:
        await app.close()


async def test_a_payout_mined_before_the_tracker_saw_it_is_not_a_shortfall(
    tmp_path: Path, chain_w3: Any, deployment: Deployment, db_url: str
) -> None:
    """The vault paid at or below the compared block, the withdrawal is still
    `broadcast` (the tracker has not read its receipt): the vault's withdrawn(id) at
    that block counts it as mined (was: a critical "vault shortfall" of its amount)."""
    async with withdrawal_app(tmp_path, deployment, db_url, confirmations=1) as app:
        listener = next(s for s in app.services if s.name == "deposits:devnet")
        user = dev_account(2)
        await deposit_token(chain_w3, user, deployment, "USDT", 30 * 10**18)
        await mine(chain_w3, 2)
        await listener.tick()
        assert (await reconciler.reconcile(app)).ok
        body = usdt_body(deployment, user, 12, 1, user.address)
        async with TestClient(TestServer(make_web_app(app))) as client:
            resp = await client.post("/v1/withdrawals", json=body)
            assert resp.status == 202, await resp.text()
        await sender(app).tick()  # signed and broadcast; automine pays it
        await mine(chain_w3, 2)
        await listener.tick()  # the cursor passes the payout's block; no tracker tick
        async with app.sessions() as s:
            states = {w.state for w in await s.scalars(select(Withdrawal))}
        assert states == {"broadcast"}
        report = await reconciler.reconcile(app)
        assert report.ok, report.as_dict()
        usdt = next(a for n in report.networks for a in n.assets if a.asset == "USDT")
        assert usdt.breakdown["minedUnsettled"] == str(12 * 10**18)


async def test_a_posting_committed_during_the_integrity_check_is_not_a_mismatch(
    tmp_path: Path, deployment: Deployment, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL (READ COMMITTED by default): the journal is read, another transaction
    posts, then the balances are read. Read as one snapshot, they agree (was: a
    critical "ledger integrity: balance != journal" alarm under `make chaos`)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite transactions are BEGIN IMMEDIATE: already one snapshot")
    async with withdrawal_app(tmp_path, deployment, db_url, signer=False) as app:
        await credit(app, dev_account(2).address, "USDT", 5 * 10**8, "test:first")
        original = reconciler.ledger_integrity

        class PostsBeforeBalances:
            """The session, but another transaction commits before its balance read."""

            def __init__(self, session: Any) -> None:
                self.session = session

            def __getattr__(self, name: str) -> Any:
                return getattr(self.session, name)

            async def scalars(self, *args: Any, **kwargs: Any) -> Any:
                await credit(app, dev_account(3).address, "USDT", 7 * 10**8, "test:between")
                return await self.session.scalars(*args, **kwargs)

        async def interleaved(session: Any) -> Any:
            return await original(PostsBeforeBalances(session))

        monkeypatch.setattr(reconciler, "ledger_integrity", interleaved)
        report = await reconciler.reconcile(app)
        assert report.integrity == [], report.as_dict()
