"""The watchdog latches rpc_down and lag_over_budget alarms from the listeners' live
health, once per onset (no repeat while the condition lasts)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.helpers import write_config
from watcher.app import build
from watcher.chain.devnet import Deployment, free_port
from watcher.chain.errors import RpcError
from watcher.services.listener import DepositListener
from watcher.services.watchdog import Watchdog
from watcher.settings import load_settings
from watcher.store.alarms import active_alarms


async def test_rpc_down_is_latched_once(
    tmp_path: Path, db_url: str, deployment: Deployment
) -> None:
    dead = dataclasses.replace(deployment, rpc_url=f"http://127.0.0.1:{free_port()}")
    cfg = write_config(tmp_path, [("devnet", dead, 3)])
    app = await build(load_settings(cfg, env={}, database_url=db_url))
    try:
        listener = next(s for s in app.services if isinstance(s, DepositListener))
        watchdog = next(s for s in app.services if isinstance(s, Watchdog))
        with pytest.raises(RpcError):
            await listener.tick()
        await watchdog.tick()
        await watchdog.tick()
        async with app.sessions() as s:
            alarms = await active_alarms(s)
        assert [(a.kind, a.key, a.count) for a in alarms] == [("rpc_down", "devnet", 1)]
        assert "all RPC endpoints down" in alarms[0].message
    finally:
        await app.close()


async def test_lag_alarm_only_when_stalled(
    tmp_path: Path, db_url: str, deployment: Deployment
) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    app = await build(load_settings(cfg, env={}, database_url=db_url))
    try:
        listener = next(s for s in app.services if isinstance(s, DepositListener))
        watchdog = next(s for s in app.services if isinstance(s, Watchdog))
        await listener.tick()
        assert listener.seen.cursor is not None and listener.seen.head == listener.seen.cursor
        # Injected: the node reports a head 100 blocks ahead while the cursor cannot move
        # (a real stall needs a node whose logs fail for minutes).
        cursor = listener.seen.cursor
        listener.seen.head = cursor + 100
        await watchdog.tick()  # first look at this lag: catching up is not an alarm yet
        async with app.sessions() as s:
            assert await active_alarms(s) == []
        listener.seen.cursor = cursor  # still not moved: stalled
        await watchdog.tick()
        await watchdog.tick()
        async with app.sessions() as s:
            alarms = await active_alarms(s)
        assert [(a.kind, a.count) for a in alarms] == [("lag_over_budget", 1)]
        listener.seen.cursor = cursor + 60  # advancing again: a backfill, not a stall
        await watchdog.tick()
        async with app.sessions() as s:
            assert [a.count for a in await active_alarms(s)] == [1]
    finally:
        await app.close()
