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

from tests.helpers import write_config
from tests.integration.deposit_support import Chain
from watcher.app import build
from watcher.chain.devnet import AnvilNode, Deployment
from watcher.services import reconciler
from watcher.settings import load_settings
from watcher.store.alarms import active_alarms
from watcher.store.models import NetworkCursor

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
