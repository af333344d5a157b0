"""Operations against real parts: status verdicts and exit codes (real anvil, real
daemon heartbeat rows), alarm webhooks against a real local HTTP server, the alarms
CLI, and secret redaction in logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.faultproxy import FaultProxy
from tests.helpers import status_json, write_config
from watcher import logs
from watcher.app import App, beat, build
from watcher.chain.devnet import Deployment, dev_account, free_port
from watcher.domain.amounts import format_amount
from watcher.services.notifier import Notifier
from watcher.services.status import collect_status
from watcher.settings import load_settings
from watcher.store.alarms import AlarmKind, active_alarms, raise_alarm
from watcher.store.models import Heartbeat, NetworkCursor, utcnow

pytestmark = pytest.mark.usefixtures("chain_snapshot")


async def _app(tmp_path: Path, db_url: str, dep: Deployment, extra: str = "") -> App:
    cfg = write_config(tmp_path, [("devnet", dep, 3)], default_toml_extra=extra)
    settings = load_settings(cfg, env={}, database_url=db_url)
    return await build(settings)


@pytest.fixture
async def app(tmp_path: Path, db_url: str, deployment: Deployment) -> AsyncIterator[App]:
    a = await _app(tmp_path, db_url, deployment)
    yield a
    await a.close()


async def _scanned(app: App, block: int) -> None:
    async with app.sessions.begin() as s:
        s.add(NetworkCursor(chain_id=31337, name="devnet", scanned_block=block, head=block))


async def test_status_down_without_daemon_then_healthy_then_degraded(app: App) -> None:
    doc = await collect_status(app)
    assert doc["status"] == "down" and doc["exitCode"] == 2
    assert any("daemon is not running" in r for r in doc["reasons"])

    await beat(app)
    head = int(await app.rpc["devnet"].call("eth_blockNumber", []), 16)
    await _scanned(app, head)
    doc = await collect_status(app)
    assert doc["status"] == "healthy", doc["reasons"]
    assert doc["exitCode"] == 0
    net = doc["networks"][0]
    assert net["chainId"] == 31337 and net["head"] == head and net["cursor"] == head
    assert net["rpc"][0]["ok"] is True
    assert doc["daemon"]["running"] is True

    async with app.sessions.begin() as s:
        await raise_alarm(s, AlarmKind.LAG_OVER_BUDGET, "devnet", "test alarm")
    doc = await collect_status(app)
    assert doc["status"] == "degraded" and doc["exitCode"] == 1


async def test_status_down_when_heartbeat_is_stale(app: App) -> None:
    await beat(app)
    head = int(await app.rpc["devnet"].call("eth_blockNumber", []), 16)
    await _scanned(app, head)
    async with app.sessions.begin() as s:
        row = await s.get(Heartbeat, "daemon")
        assert row is not None
        row.at = utcnow() - timedelta(minutes=5)
    doc = await collect_status(app)
    assert doc["exitCode"] == 2
    assert any("last heartbeat" in r for r in doc["reasons"])


async def test_status_down_when_no_rpc_answers(
    tmp_path: Path, db_url: str, deployment: Deployment
) -> None:
    dead = replace(deployment, rpc_url=f"http://127.0.0.1:{free_port()}")
    app = await _app(tmp_path, db_url, dead)
    try:
        await beat(app)
        doc = await collect_status(app)
        assert doc["exitCode"] == 2
        assert any("no RPC endpoint answers" in r for r in doc["reasons"])
        assert doc["networks"][0]["rpc"][0]["ok"] is False
    finally:
        await app.close()


async def test_status_shows_the_hot_wallets_gas_from_the_key_or_the_heartbeat(
    tmp_path: Path, db_url: str, deployment: Deployment
) -> None:
    """The hot wallet's gas sits beside the vault's balances: the configured key's
    wallet, or (a shell without the key) the wallet the daemon's heartbeat names; the
    balances are probed while the database is read, and an RPC batch that fails is
    shown as that network's error, the probes themselves still answered."""
    hot = dev_account(6)
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    keyed = await build(
        load_settings(cfg, env={"WATCHER_SIGNER_KEY": hot.key.hex()}, database_url=db_url)
    )
    try:
        await beat(keyed)  # names the wallet in the heartbeat
        wei = int(await keyed.rpc["devnet"].call("eth_getBalance", [hot.address, "latest"]), 16)
        doc = await collect_status(keyed)
        (wallet,) = doc["balances"]
        assert wallet["hotWallet"] == hot.address
        assert wallet["gas"] == format_amount(wei, 18)
        assert {a["asset"] for a in wallet["assets"]} >= {"ETH", "USDT"}
    finally:
        await keyed.close()

    keyless = await build(load_settings(cfg, env={}, database_url=db_url))
    try:
        doc = await collect_status(keyless)
        (wallet,) = doc["balances"]
        assert wallet["hotWallet"] == hot.address and wallet["gas"] == format_amount(wei, 18)
        assert hot.key.hex() not in json.dumps(doc)
    finally:
        await keyless.close()

    async with FaultProxy(deployment.rpc_url) as proxy:
        proxied = replace(deployment, rpc_url=proxy.url)
        broken = await _app(tmp_path / "proxied", db_url, proxied)
        try:
            proxy.fail_method("eth_call", code=-32000, message="execution aborted")
            doc = await collect_status(broken)
            assert doc["networks"][0]["rpc"][0]["ok"] is True
            (wallet,) = doc["balances"]
            assert wallet["error"] and "gas" not in wallet and wallet["assets"] == []
        finally:
            await broken.close()


async def test_status_asks_probes_and_balances_in_one_round_trip(
    tmp_path: Path, db_url: str, deployment: Deployment
) -> None:
    """A node that answers every request a second late costs status one second, not
    two: the balances are asked beside the probe, not after it (a sequential status
    cannot finish under 2 s here; the margin for the concurrent one is 0.8 s). The
    daemon's client has checked the endpoint's chain id long before (one status
    call does that here); a fresh process pays that one round trip more."""
    async with FaultProxy(deployment.rpc_url) as proxy:
        slow = replace(deployment, rpc_url=proxy.url)
        app = await _app(tmp_path, db_url, slow)
        try:
            await beat(app)
            await collect_status(app)  # the client checks the endpoint's chain id once
            proxy.delay = 1.0
            started = time.monotonic()
            doc = await collect_status(app)
            took = time.monotonic() - started
            assert doc["networks"][0]["rpc"][0]["ok"] is True
            assert "error" not in doc["balances"][0] and doc["balances"][0]["assets"]
            assert proxy.requests["eth_call"] >= 1
            assert took < 1.8, f"status took {took:.2f} s against a node 1 s late"
        finally:
            await app.close()


async def test_status_cli_exit_code_and_json(tmp_path: Path, deployment: Deployment) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    db = tmp_path / "cli.db"
    env = {**os.environ, "WATCHER_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    upgrade = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        "db",
        "upgrade",
        "--config",
        str(cfg),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await upgrade.wait() == 0
    code, doc = await status_json(cfg, env)
    assert code == 2
    assert doc["status"] == "down" and doc["daemon"]["running"] is False


class Hook:
    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.calls: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(await request.json())
        if len(self.calls) <= self.fail_first:
            return web.Response(status=503)
        return web.Response(text="ok")


async def test_alarm_webhook_is_retried_and_delivered_once(
    tmp_path: Path, db_url: str, deployment: Deployment
) -> None:
    hook = Hook(fail_first=2)
    server = web.Application()
    server.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(server)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    extra = f'[alarms]\nwebhooks = {{ "finality_violated" = "http://127.0.0.1:{port}/hook" }}\n'
    app = await _app(tmp_path, db_url, deployment, extra)
    try:
        async with app.sessions.begin() as s:
            await raise_alarm(
                s, AlarmKind.FINALITY_VIOLATED, "31337:0xabc", "credited deposit reorged"
            )
            await raise_alarm(s, AlarmKind.LAG_OVER_BUDGET, "devnet", "no hook for this kind")
        notifier = Notifier(app)
        await notifier.tick()
        assert len(hook.calls) == 3  # two 503s, then delivered
        assert hook.calls[-1]["kind"] == "finality_violated"
        assert hook.calls[-1]["message"] == "credited deposit reorged"
        await notifier.tick()
        assert len(hook.calls) == 3  # not sent again
        async with app.sessions.begin() as s:
            await raise_alarm(s, AlarmKind.FINALITY_VIOLATED, "31337:0xabc", "again")
        await notifier.tick()
        assert len(hook.calls) == 4 and hook.calls[-1]["count"] == 2
    finally:
        await app.close()
        await runner.cleanup()


async def test_alarms_ack_unlatches(app: App) -> None:
    from watcher.store.alarms import acknowledge

    async with app.sessions.begin() as s:
        alarm = await raise_alarm(s, AlarmKind.RPC_DOWN, "devnet", "rpc down")
        again = await raise_alarm(s, AlarmKind.RPC_DOWN, "devnet", "rpc still down")
    assert again.id == alarm.id and again.count == 2
    async with app.sessions.begin() as s:
        await acknowledge(s, alarm.id, "tester")
    async with app.sessions() as s:
        assert await active_alarms(s) == []
    async with app.sessions.begin() as s:
        fresh = await raise_alarm(s, AlarmKind.RPC_DOWN, "devnet", "down again")
    assert fresh.id != alarm.id


def test_secrets_are_redacted_in_both_log_formats(capsys: pytest.CaptureFixture[str]) -> None:
    key = "0x" + "ab" * 32
    logs.register_secret("my-admin-token-123")
    for json_lines in (False, True):
        logs.configure("INFO", json_lines=json_lines)
        log = logging.getLogger("watcher.test")
        log.info("signer key %s", key.replace("0x", "private_key=0x"))
        log.info(
            "auth Bearer my-admin-token-123 url https://user:pw@rpc.example/v3/x?apikey=zzz",
            extra={"chain_id": 31337, "tx_hash": "0x" + "cd" * 32},
        )
        err = capsys.readouterr().err
        assert "ab" * 32 not in err
        assert "my-admin-token-123" not in err
        assert "user:pw" not in err and "zzz" not in err
        assert "cd" * 32 in err  # tx hashes are context, not secrets
        if json_lines:
            line = json.loads(err.strip().splitlines()[-1])
            assert line["chain_id"] == 31337
    logging.getLogger().handlers.clear()


async def test_acknowledged_finding_is_not_raised_again_but_a_new_one_is(app: App) -> None:
    from watcher.store.alarms import acknowledge

    key = "31337:USDT:7000000000000000000"
    async with app.sessions.begin() as s:
        first = await raise_alarm(s, AlarmKind.RECONCILIATION_MISMATCH, key, "inflow 7", once=True)
    assert first is not None
    async with app.sessions.begin() as s:
        await acknowledge(s, first.id, "ops")
    async with app.sessions.begin() as s:
        same = await raise_alarm(s, AlarmKind.RECONCILIATION_MISMATCH, key, "inflow 7", once=True)
        other = await raise_alarm(
            s, AlarmKind.RECONCILIATION_MISMATCH, "31337:USDT:9", "inflow 9", once=True
        )
    assert same is None and other is not None
    async with app.sessions() as s:
        assert [a.key for a in await active_alarms(s)] == ["31337:USDT:9"]


@pytest.mark.parametrize(
    ("args", "url_kind"),
    [
        (["status"], "unmigrated"),
        (["alarms", "list"], "unmigrated"),
        (["withdrawals", "list"], "unmigrated"),
        (["reconcile"], "unreachable"),
    ],
)
async def test_operator_commands_refuse_a_database_that_is_not_the_daemons(
    tmp_path: Path, deployment: Deployment, args: list[str], url_kind: str
) -> None:
    from tests.helpers import watcher_cli

    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    url = (
        f"sqlite+aiosqlite:///{tmp_path}/other.db"
        if url_kind == "unmigrated"
        else f"postgresql+asyncpg://ops:hunter2-secret@127.0.0.1:{free_port()}/x"
    )
    env = {**os.environ, "WATCHER_DATABASE_URL": url}
    proc = await watcher_cli(*args, "--config", str(cfg), env=env, merge_stderr=True)
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 2, out
    expected = "has no watcher schema" if url_kind == "unmigrated" else "cannot read the database"
    assert expected in out
    assert "hunter2-secret" not in out and "Traceback" not in out
