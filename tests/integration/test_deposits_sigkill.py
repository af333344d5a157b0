"""SIGKILL, not a cancelled task: `watcher run` is killed with SIGKILL at random moments
while it backfills and credits deposits in small steps, and started again each time.
In the end every deposit is credited exactly once and the ledger holds exactly the
expected sums (tests/integration/test_deposits_restart.py cuts at chosen points inside
one tick; this one lets the operating system pick the moment)."""

from __future__ import annotations

import asyncio
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from tests.helpers import watcher_cli, write_config
from tests.integration.deposit_support import Chain, addr, assert_ledger_consistent, cross
from watcher.chain.devnet import AnvilNode, Deployment, free_port
from watcher.store.db import create_engine, session_factory
from watcher.store.models import Deposit, JournalTransaction

pytestmark = pytest.mark.usefixtures("chain_snapshot")

BLOCKS = 300
PER_BLOCK = 2
KILLS = 5


async def make_deposits(chain: Chain, usdc: str) -> dict[tuple[str, str], int]:
    """BLOCKS blocks of PER_BLOCK deposits (native ETH and USDC from two accounts);
    returns the expected ledger units per (account, asset)."""
    for who in (2, 3):
        await chain.approve(who, usdc)
    expected: dict[tuple[str, str], int] = defaultdict(int)
    await chain.automine(False)
    try:
        n = 0
        for _ in range(BLOCKS):
            for k in range(PER_BLOCK):
                n += 1
                who = 2 + k % 2
                if k == 0:
                    units = 1_000 + n  # ETH: 18 decimals, ledger precision 8
                    await chain.deposit_native(who, units * 10**10)
                    expected[(addr(who), "ETH")] += units
                else:
                    units = 5_000 + n  # USDC: 6 decimals → ×100 in the ledger
                    await chain.deposit_token(who, usdc, units)
                    expected[(addr(who), "USDC")] += units * 100
            await chain.mine(1)
        await chain.mine(3)
    finally:
        await chain.automine(True)
    return expected


async def test_sigkill_at_random_moments_credits_exactly_once(
    tmp_path: Path, anvil: AnvilNode, deployment: Deployment, db_url: str
) -> None:
    async with aiohttp.ClientSession() as http:
        chain = Chain(anvil.url, deployment, http)
        expected = await make_deposits(chain, deployment.tokens["USDC"].address)
    total = BLOCKS * PER_BLOCK

    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    default = cfg / "default.toml"
    # One block per step, polled fast: hundreds of transactions to land in, and a run
    # takes seconds, so a kill a moment after a run starts crediting lands mid-work.
    default.write_text(
        default.read_text()
        .replace(
            '[listener]\npoll_interval_seconds = "1"', '[listener]\npoll_interval_seconds = "0.05"'
        )
        .replace("max_log_range = 2000", "max_log_range = 1")
    )
    env = {**os.environ, "WATCHER_DATABASE_URL": db_url, "WATCHER_LOG_LEVEL": "WARNING"}
    engine = create_engine(db_url)
    sessions = session_factory(engine)
    rng = random.Random(20261121)

    async def credited() -> int:
        try:
            async with sessions() as s:
                n = await s.scalar(
                    select(func.count()).select_from(Deposit).where(Deposit.state == "credited")
                )
        except Exception:  # not migrated yet by the first daemon
            return 0
        return int(n or 0)

    async def start() -> Any:
        return await watcher_cli(
            "run",
            "--config",
            str(cfg),
            "--port",
            str(free_port()),
            env=env,
            log_file=tmp_path / "daemon.log",
        )

    progress = []
    try:
        for _ in range(KILLS):
            before = await credited()
            proc = await start()
            try:
                # Wait until this run is crediting, then kill it a random moment later.
                for _ in range(600):
                    if await credited() > before or proc.returncode is not None:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(rng.uniform(0.0, 0.1))
            finally:
                proc.kill()  # SIGKILL: no drain, no rollback by us
                await proc.wait()
            progress.append(await credited())
        # Most kills must land while there was still work (else nothing was tested).
        assert sum(p < total for p in progress) >= 3, f"killed too late: {progress}"
        print("credited after each kill:", progress)

        proc = await start()
        try:
            for _ in range(3000):
                if await credited() >= total:
                    break
                await asyncio.sleep(0.02)
        finally:
            proc.kill()
            await proc.wait()

        async with sessions() as s:
            rows = list(await s.scalars(select(Deposit)))
            credits = await s.scalar(
                select(func.count())
                .select_from(JournalTransaction)
                .where(JournalTransaction.kind == "deposit")
            )
        assert len(rows) == total
        assert {r.state for r in rows} == {"credited"}
        assert credits == total  # one journal transaction per deposit, never two
        for (account, asset), units in expected.items():
            assert (await cross(sessions, account)).get(asset) == units, (account, asset)
        await assert_ledger_consistent(sessions)
    finally:
        await engine.dispose()
