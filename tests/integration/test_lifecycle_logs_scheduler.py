"""No periodic noise at INFO: a deposit backfill whose ticks overrun their interval
under the daemon's real scheduler writes its progress lines but none of APScheduler's
"maximum number of running instances reached" / "was missed" warnings, while a
failing tick is still logged with its exception each time."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from web3 import AsyncWeb3

from tests.integration.withdrawal_support import mine, withdrawal_app
from watcher.app import CHECKPOINT_JOB, SCHEDULER_LOGGERS, schedule
from watcher.chain.devnet import Deployment
from watcher.services.listener import DepositListener

pytestmark = pytest.mark.usefixtures("chain_snapshot")


@dataclass
class SlowBackfill:
    """The real listener, its interval far below its tick's duration."""

    listener: DepositListener
    name: str = "deposits:slow"
    interval_seconds: float = 0.05

    async def tick(self) -> None:
        await self.listener.tick()
        await asyncio.sleep(0.3)  # a tick overrunning its interval, as a backfill does


@dataclass
class Broken:
    name: str = "broken"
    interval_seconds: float = 0.2

    async def tick(self) -> None:
        raise RuntimeError("tick exploded")


async def test_overrunning_backfill_ticks_write_no_scheduler_warnings(
    tmp_path: Path,
    deployment: Deployment,
    db_url: str,
    chain_w3: AsyncWeb3[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in SCHEDULER_LOGGERS:  # whatever an earlier test left
        logging.getLogger(name).setLevel(logging.NOTSET)
    caplog.set_level(logging.INFO)
    await mine(chain_w3, 30)
    async with withdrawal_app(tmp_path, deployment, db_url) as app:
        listener = next(s for s in app.services if isinstance(s, DepositListener))
        listener.max_range = 2  # the blocks since the deployment are many ranges: a backfill
        slow, broken = SlowBackfill(listener), Broken()
        app.services = [slow, broken]
        scheduler = AsyncIOScheduler()
        schedule(app, scheduler)
        if app.keeper is not None:  # as the daemon does: its roles run under leases
            app.keeper.start()
        scheduler.start()
        try:
            await asyncio.sleep(1.5)
        finally:
            scheduler.shutdown(wait=False)
            await app.runner.drain(limit_seconds=5)
            if app.keeper is not None:  # its renew loop must not outlive this database
                await app.keeper.stop()
    assert app.runner.stats["deposits:slow"].runs >= 2
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "devnet backfill: block" in m]
    noise = [m for m in messages if "maximum number of running instances" in m or "was missed" in m]
    assert noise == []
    failures = [r for r in caplog.records if r.getMessage() == "tick failed: broken"]
    assert len(failures) == app.runner.stats["broken"].failures >= 2
    assert all(r.exc_info and "tick exploded" in str(r.exc_info[1]) for r in failures)
    # The daemon's SQLite log checkpoints: a job of their own (store/checkpoint.py).
    if db_url.startswith("sqlite"):
        done = app.runner.stats[CHECKPOINT_JOB]
        assert done.runs >= 1 and done.failures == 0, done
    else:
        assert CHECKPOINT_JOB not in app.runner.stats


@dataclass
class Counted:
    name: str
    interval_seconds: float
    delay_first: bool = False
    runs: int = 0

    async def tick(self) -> None:
        self.runs += 1


async def test_a_role_taken_ticks_at_once_unless_its_first_run_waits(
    tmp_path: Path, deployment: Deployment, db_url: str
) -> None:
    """A role ticks as soon as this replica takes its lease (takeover time), except one
    whose first run waits an interval on purpose (the reconciler): a daemon's start
    must not read the whole journal while it catches up and serves its first requests."""
    async with withdrawal_app(tmp_path, deployment, db_url) as app:
        assert app.keeper is not None
        at_once, delayed = Counted("at-once", 30), Counted("delayed", 30, delay_first=True)
        app.services = [at_once, delayed]
        scheduler = AsyncIOScheduler()
        schedule(app, scheduler)
        app.keeper.start()
        scheduler.start()
        try:
            for _ in range(100):
                if at_once.runs:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # a kicked job would have run by now
        finally:
            scheduler.shutdown(wait=False)
            await app.runner.drain(limit_seconds=5)
            await app.keeper.stop()
    assert at_once.runs == 1
    assert delayed.runs == 0
