"""`watcher run` as a real process against a real anvil: migrations on start, /healthz
answers, SIGTERM stops it cleanly; a bad config stops it before anything starts."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp

from tests.fixtures_chain import DevnetFactory
from tests.helpers import eventually, status_json, watcher_cli, write_config
from watcher.chain.devnet import AnvilNode, Deployment, free_port


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def test_run_serves_health_and_stops_on_sigterm(
    tmp_path: Path, anvil: AnvilNode, deployment: Deployment
) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    port = free_port()
    db = tmp_path / "daemon.db"
    env = {
        **os.environ,
        "WATCHER_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "WATCHER_ADMIN_TOKEN": "test-admin-token",
    }
    proc = await watcher_cli(
        "run", "--config", str(cfg), "--port", str(port), env=env, merge_stderr=True
    )
    try:

        async def healthy() -> bool:
            try:
                status, _ = await _get(f"http://127.0.0.1:{port}/healthz")
            except aiohttp.ClientError:
                return False
            return status in (200, 503)

        await eventually(healthy, within=30)
        status, body = await _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200, body
        assert db.exists()
        # The real daemon serves its API reference from the installed package, and JSON
        # errors for what no route answers.
        status, page = await _get(f"http://127.0.0.1:{port}/docs")
        assert status == 200 and 'src="/docs/static/swagger-ui-bundle.js"' in page
        status, script = await _get(f"http://127.0.0.1:{port}/docs/static/swagger-ui-bundle.js")
        assert status == 200 and "SwaggerUIBundle" in script
        status, body = await _get(f"http://127.0.0.1:{port}/no-such-route")
        assert status == 404 and '"code": "NOT_FOUND"' in body
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), timeout=30)
        out = (await proc.stdout.read()).decode() if proc.stdout else ""
        assert rc == 0, out
        assert "stopped" in out
        assert "test-admin-token" not in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_bad_config_fails_fast_and_starts_nothing(
    tmp_path: Path, deployment: Deployment
) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    path = cfg / "networks" / "devnet.toml"
    path.write_text(path.read_text().replace("confirmations = 3", "confirmations = 0"))
    db = tmp_path / "never.db"
    proc = await watcher_cli(
        "run",
        "--config",
        str(cfg),
        "--port",
        str(free_port()),
        env={**os.environ, "WATCHER_DATABASE_URL": f"sqlite+aiosqlite:///{db}"},
        merge_stderr=True,
    )
    rc = await asyncio.wait_for(proc.wait(), timeout=30)
    out = (await proc.stdout.read()).decode() if proc.stdout else ""
    assert rc == 2
    assert "devnet.toml" in out and "confirmations" in out
    assert not db.exists()


async def test_status_beside_the_running_daemon_flips_when_anvil_stops(
    tmp_path: Path, devnet_factory: DevnetFactory
) -> None:
    port = free_port()
    db = tmp_path / "daemon.db"
    env = {**os.environ, "WATCHER_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    proc = None
    try:
        async with devnet_factory(chain_id=31377) as (_node, dep):
            cfg = write_config(tmp_path, [("devnet", dep, 3)])
            proc = await watcher_cli(
                "run",
                "--config",
                str(cfg),
                "--port",
                str(port),
                env=env,
                log_file=tmp_path / "daemon.log",
            )

            async def healthy() -> bool:
                code, _ = await status_json(cfg, env)
                return code == 0

            await eventually(healthy, within=30, every=0.5)
            code, doc = await status_json(cfg, env)
            assert code == 0 and doc["status"] == "healthy"
            assert doc["daemon"]["running"] is True  # type: ignore[index]
        # anvil is stopped now; the daemon still runs.
        code, doc = await status_json(cfg, env)
        assert code == 2
        assert any("no RPC endpoint answers" in r for r in doc["reasons"])  # type: ignore[attr-defined]
    finally:
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), timeout=30)
