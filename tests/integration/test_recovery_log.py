"""The recovery log: on start the daemon says what it found and resumes (cursor,
deposits pending, withdrawals by state, attempts signed but not broadcast), and the
sender says which attempts it re-sends."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import select
from web3 import AsyncWeb3

from tests.helpers import eventually, watcher_cli, write_config
from tests.integration.withdrawal_support import (
    credit,
    deposit_token,
    fresh_sender,
    operator_key,
    sender,
    usdt_body,
    withdrawal_app,
)
from watcher.api.server import make_web_app
from watcher.chain.devnet import AnvilNode, Deployment, dev_account, free_port
from watcher.services.recovery import log_recovery
from watcher.store.db import create_engine, session_factory
from watcher.store.models import NetworkCursor

pytestmark = [pytest.mark.usefixtures("chain_snapshot")]


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def messages(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


async def test_signed_but_unbroadcast_and_review_are_named_then_resent(
    tmp_path: Path,
    deployment: Deployment,
    db_url: str,
    chain_w3: AsyncWeb3[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    extra = '[withdrawals.review_threshold]\nUSDT = "5000"\n'
    async with withdrawal_app(tmp_path, deployment, db_url, extra_toml=extra) as app:
        user = dev_account(2)
        await deposit_token(chain_w3, user, deployment, "USDT", 20_000 * 10**18)
        await credit(app, user.address, "USDT", 20_000 * 10**8, "test:recovery")
        dest = Account.create().address
        async with TestClient(TestServer(make_web_app(app))) as client:
            small = await client.post(
                "/v1/withdrawals", json=usdt_body(deployment, user, 250, 1, dest)
            )
            big = await client.post(
                "/v1/withdrawals", json=usdt_body(deployment, user, 6000, 2, dest)
            )
            assert small.status == 202 and big.status == 202
            small_id = (await small.json())["id"]
        first = sender(app)
        await first.start()
        assert await first.sign_ready() == 1  # persisted, then the process "dies"

        caplog.set_level(logging.INFO)
        found = await log_recovery(app.settings, app.sessions)
        chain_id = deployment.chain_id
        assert found[chain_id].attempts == {"signed": 1}
        (line,) = messages(caplog, "resuming devnet")
        assert f"(chain {chain_id})" in line
        assert "withdrawals in flight: review=1 signed=1" in line
        assert (
            "1 attempt(s) signed but not broadcast, re-sent first byte for byte "
            f"(withdrawals {small_id})" in line
        )

        restarted = fresh_sender(app)
        await restarted.tick()
        (resent,) = messages(caplog, "re-sending")
        assert (
            "re-sending 1 attempt(s) signed before this start, byte for byte: "
            f"withdrawals {small_id}" in resent
        )
        # The next tick of the same process has nothing left from before its start.
        caplog.clear()
        await restarted.tick()
        assert messages(caplog, "re-sending") == []


async def test_a_real_daemon_logs_what_it_resumes(
    tmp_path: Path, anvil: AnvilNode, deployment: Deployment, db_url: str
) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    env = {
        **os.environ,
        "WATCHER_DATABASE_URL": db_url,
        "WATCHER_LOG_LEVEL": "INFO",
        "WATCHER_SIGNER_KEY": operator_key(),
    }
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"

    async def run_until(log_file: Path, needle: str) -> str:
        proc = await watcher_cli(
            "run", "--config", str(cfg), "--port", str(free_port()), env=env, log_file=log_file
        )
        try:
            for _ in range(300):
                text = _read(log_file)
                if needle in text or proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
            return _read(log_file)
        finally:
            proc.kill()  # SIGKILL: the next start is a recovery
            await proc.wait()

    text = await run_until(first_log, "deposits pending")
    assert "resuming devnet" in text and "no cursor yet" in text, text[-2000:]
    # A run whose listener writes its cursor, killed; the next start resumes from it.
    engine = create_engine(db_url)
    try:

        async def cursor_written() -> bool:
            try:
                async with session_factory(engine)() as s:
                    return await s.scalar(select(NetworkCursor.scanned_block)) is not None
            except Exception:  # not migrated yet
                return False

        proc = await watcher_cli(
            "run", "--config", str(cfg), "--port", str(free_port()), env=env, log_file=first_log
        )
        try:
            await eventually(cursor_written, within=30)
        finally:
            proc.kill()
            await proc.wait()
    finally:
        await engine.dispose()
    text = await run_until(second_log, "deposits pending")
    assert "resuming devnet" in text, text[-2000:]
    assert "cursor at block" in text and "no withdrawal in flight" in text, text[-2000:]
