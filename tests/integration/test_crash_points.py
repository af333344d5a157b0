"""Crash points on purpose: for every named point (watcher/crashpoints.py) a real
`watcher run` process is made to exit hard there, is started again without it, and the
work settles: the deposit credited once, the payout made once on chain, the ledger
balanced, `watcher reconcile` clean. And the switch is refused outside tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_account import Account
from sqlalchemy import func, select
from web3 import AsyncWeb3

from tests.fixtures_db import drop_database_url, make_database_url
from tests.helpers import watcher_cli, write_config
from tests.integration.deposit_support import assert_ledger_consistent
from tests.integration.withdrawal_support import (
    balance_of,
    deposit_native,
    operator_key,
    signed_body,
    withdrawn_events,
)
from watcher.app import build
from watcher.chain.devnet import Deployment, dev_account, free_port
from watcher.chain.vault import ZERO_ADDRESS
from watcher.crashpoints import EXIT_CODE, POINTS
from watcher.services.reconciler import reconcile
from watcher.settings import load_settings
from watcher.store.db import create_engine, session_factory
from watcher.store.models import Deposit, JournalTransaction, Withdrawal

pytestmark = pytest.mark.usefixtures("chain_snapshot")

DEPOSIT_WEI = 10**18  # 1 ETH
WITHDRAW_WEI = 4 * 10**17  # 0.4 ETH


def _daemon_env(db_url: str, state: Path, crash: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    env.update(
        WATCHER_DATABASE_URL=db_url,
        WATCHER_SIGNER_KEY=operator_key(),
        WATCHER_ADMIN_TOKEN="crash-test-token",
        WATCHER_STATE_DIR=str(state),
        WATCHER_LOG_LEVEL="INFO",
    )
    if crash is not None:
        env.update(WATCHER_CRASH_AT=crash, WATCHER_CRASH_POINTS="test")
    return env


@contextlib.asynccontextmanager
async def miner(w3: AsyncWeb3[Any], every: float = 0.1) -> AsyncIterator[None]:
    """A block every ``every`` seconds (confirmations come by themselves)."""

    async def run() -> None:
        while True:
            await w3.provider.make_request("anvil_mine", ["0x1"])  # type: ignore[arg-type]
            await asyncio.sleep(every)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _post(http: aiohttp.ClientSession, port: int, body: dict[str, Any]) -> int | None:
    """The withdrawal's id, or None when the daemon is not there to answer."""
    try:
        async with http.post(f"http://127.0.0.1:{port}/v1/withdrawals", json=body) as resp:
            assert resp.status < 500, await resp.text()
            if resp.status in (200, 202):
                return int((await resp.json())["id"])
            raise AssertionError(f"refused {resp.status}: {await resp.text()}")
    except (TimeoutError, aiohttp.ClientConnectionError):
        return None


async def _scenario(
    point: str, tmp_path: Path, deployment: Deployment, chain_w3: AsyncWeb3[Any], db_url: str
) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    default = cfg / "default.toml"
    default.write_text(
        default.read_text()
        .replace(
            '[listener]\npoll_interval_seconds = "1"', '[listener]\npoll_interval_seconds = "0.2"'
        )
        .replace(
            '[withdrawals]\npoll_interval_seconds = "1"',
            '[withdrawals]\npoll_interval_seconds = "0.2"',
        )
    )
    state = tmp_path / "state"
    user = dev_account(2)
    dest = Account.create().address
    body = signed_body(
        user,
        deployment,
        token=ZERO_ADDRESS,
        amount="0.4",
        amount_units=WITHDRAW_WEI,
        destination=dest,
        nonce=1,
    )
    engine = create_engine(db_url)
    sessions = session_factory(engine)

    async def deposit_state() -> str | None:
        try:
            async with sessions() as s:
                return await s.scalar(select(Deposit.state).limit(1))
        except Exception:  # not migrated yet
            return None

    async def withdrawal_state() -> str | None:
        try:
            async with sessions() as s:
                return await s.scalar(select(Withdrawal.state).limit(1))
        except Exception:
            return None

    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        miner(chain_w3),
    ):
        port = free_port()
        first = await watcher_cli(
            "run",
            "--config",
            str(cfg),
            "--port",
            str(port),
            env=_daemon_env(db_url, state, point),
            log_file=tmp_path / "first.log",
        )
        try:
            await deposit_native(chain_w3, user, deployment, DEPOSIT_WEI)
            deadline = time.monotonic() + 60
            posted = False
            while first.returncode is None and time.monotonic() < deadline:
                if not posted and await deposit_state() == "credited":
                    posted = (
                        await _post(http, port, body) is not None or first.returncode is not None
                    )
                await asyncio.sleep(0.1)
            assert first.returncode == EXIT_CODE, (
                f"{point}: the first daemon did not stop at the point "
                f"(rc {first.returncode}): {(tmp_path / 'first.log').read_text()[-3000:]}"
            )
        finally:
            if first.returncode is None:
                first.kill()
            await first.wait()

        port = free_port()
        second = await watcher_cli(
            "run",
            "--config",
            str(cfg),
            "--port",
            str(port),
            env=_daemon_env(db_url, state, None),
            log_file=tmp_path / "second.log",
        )
        try:
            deadline = time.monotonic() + 90
            withdrawal_id = None
            while time.monotonic() < deadline:
                assert second.returncode is None, (tmp_path / "second.log").read_text()[-3000:]
                if withdrawal_id is None and await deposit_state() == "credited":
                    # The same signed request again: it is stored once whatever the crash.
                    withdrawal_id = await _post(http, port, body)
                if withdrawal_id is not None and await withdrawal_state() == "completed":
                    break
                await asyncio.sleep(0.2)
            assert await withdrawal_state() == "completed", (
                f"{point}: not settled: {(tmp_path / 'second.log').read_text()[-3000:]}"
            )
            # Vault against ledger, as `watcher reconcile` does (in process: the CLI's
            # own start would add seconds per point).
            settings = load_settings(cfg, env=_daemon_env(db_url, state, None))
            view = await build(settings, migrate=False, services=False)
            try:
                report = await reconcile(view)
            finally:
                await view.close()
            assert report.as_dict()["ok"], report.as_dict()
        finally:
            second.terminate()
            await second.wait()

    try:
        async with sessions() as s:
            deposits = list(await s.scalars(select(Deposit)))
            credits = await s.scalar(
                select(func.count())
                .select_from(JournalTransaction)
                .where(JournalTransaction.kind == "deposit")
            )
            withdrawals = list(await s.scalars(select(Withdrawal)))
        assert [d.state for d in deposits] == ["credited"] and credits == 1, point
        assert [w.state for w in withdrawals] == ["completed"], point
        wid = withdrawals[0].id
        paid = [
            e
            for e in await withdrawn_events(chain_w3, deployment)
            if int.from_bytes(bytes(e["topics"][1]), "big") == wid
        ]
        assert len(paid) == 1, f"{point}: paid {len(paid)} times"
        assert await balance_of(chain_w3, ZERO_ADDRESS, dest) == WITHDRAW_WEI
        await assert_ledger_consistent(sessions)
    finally:
        await engine.dispose()


#: Points reached by the run above (every one but the migrations').
RUN_POINTS = sorted(p for p in POINTS if not p.startswith("migrations."))
#: On PostgreSQL (when the suite has one) the points whose recovery depends on what the
#: database kept: one per role and both sides of the broadcast; SQLite runs them all.
PG_POINTS = {
    "listener.persist.before_commit",
    "intake.batch.after_commit",
    "sender.persist.after_commit",
    "sender.broadcast.after_send",
    "tracker.settle.before_commit",
}


def test_every_point_has_a_test() -> None:
    assert {*RUN_POINTS, "migrations.after_step"} == set(POINTS)


@pytest.mark.parametrize("point", RUN_POINTS)
async def test_crash_at_point_then_restart_settles_exactly_once(
    point: str,
    tmp_path: Path,
    deployment: Deployment,
    chain_w3: AsyncWeb3[Any],
    db_url: str,
) -> None:
    if db_url.startswith("postgresql") and point not in PG_POINTS:
        pytest.skip("on PostgreSQL a subset of the points runs (PG_POINTS); SQLite runs all")
    await _scenario(point, tmp_path, deployment, chain_w3, db_url)


async def test_crash_during_migrations_then_restart_migrates_and_settles(
    tmp_path: Path, deployment: Deployment, chain_w3: AsyncWeb3[Any], db_url: str
) -> None:
    # A database no daemon has migrated yet (db_url's is already at the head).
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    fresh = await make_database_url(backend, tmp_path / "fresh")
    try:
        await _scenario("migrations.after_step:2", tmp_path, deployment, chain_w3, fresh)
    finally:
        await drop_database_url(fresh)


async def test_the_switch_is_refused_outside_tests_and_off_devnets(
    tmp_path: Path, deployment: Deployment, db_url: str
) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    # Without the opt-in: refused, nothing started.
    env = _daemon_env(db_url, tmp_path / "state", "sender.persist.after_commit")
    del env["WATCHER_CRASH_POINTS"]
    proc = await watcher_cli("run", "--config", str(cfg), "--port", str(free_port()), env=env)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2, (out + err).decode()
    assert "test-only switch" in err.decode()
    # A non-devnet chain id: refused even with the opt-in.
    other = write_config(tmp_path / "other", [("devnet", deployment, 3)])
    net = other / "networks" / "devnet.toml"
    net.write_text(net.read_text().replace("chain_id = 31337", "chain_id = 8453"))
    env = _daemon_env(db_url, tmp_path / "state", "sender.persist.after_commit")
    proc = await watcher_cli("run", "--config", str(other), "--port", str(free_port()), env=env)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2, (out + err).decode()
    assert "non-devnet chains [8453]" in err.decode()
