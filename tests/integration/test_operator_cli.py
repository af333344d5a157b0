"""The operator CLI beside real `watcher run` processes: it finds its daemon with no
flags, a clean stop is reported as stopped at once, and the ways a start can be
refused (empty config dir, port in use, a second daemon on one SQLite file) are one
line each, a non-zero exit, and nothing started."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp

from tests.fixtures_chain import DevnetFactory
from tests.helpers import eventually, watcher_cli, write_config
from watcher.chain.devnet import Deployment, free_port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHER_CONFIG_DIR",)}
    env.pop("WATCHER_DATABASE_URL", None)
    env.update(extra)
    return env


async def _run_to_end(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await watcher_cli(*args, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _healthz(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            return resp.status in (200, 503)
    except aiohttp.ClientError:
        return False


_PROBE = """
import io, json, sys
from contextlib import redirect_stdout
from watcher.cli.root import app
out = io.StringIO()
with redirect_stdout(out):
    try:
        app(["status", "--json"])
    except SystemExit as exc:
        rc = exc.code
heavy = [m for m in ("sqlalchemy.ext.asyncio", "web3", "watcher.app") if m in sys.modules]
print(json.dumps({"rc": rc, "doc": json.loads(out.getvalue()), "heavy": heavy}))
"""


async def _status_probe(env: dict[str, str]) -> tuple[int, dict[str, object], list[str]]:
    """`watcher status --json` in a process that then says which heavy modules it
    imported (the fast path asks the daemon and imports none of them)."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PROBE, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    result = json.loads(out.decode().strip().splitlines()[-1])
    return int(result["rc"]), result["doc"], list(result["heavy"])


def _one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


async def test_status_finds_the_daemon_and_says_stopped_after_sigterm(
    tmp_path: Path, devnet_factory: DevnetFactory
) -> None:
    state = tmp_path / "state"
    async with devnet_factory(chain_id=31391) as (_node, dep):
        cfg = write_config(tmp_path, [("devnet", dep, 3)])
        db = tmp_path / "found.db"
        port = free_port()
        env = _env(WATCHER_STATE_DIR=str(state), WATCHER_DATABASE_URL=f"sqlite+aiosqlite:///{db}")
        proc = await watcher_cli(
            "run", "--config", str(cfg), "--port", str(port), env=env, log_file=tmp_path / "d.log"
        )
        try:
            await eventually(lambda: _healthz(port), within=30)
            # No --config, no $WATCHER_CONFIG_DIR, no $WATCHER_DATABASE_URL: the CLI
            # finds the daemon through its record in the state directory.
            plain = _env(WATCHER_STATE_DIR=str(state))

            async def reports_running() -> bool:
                rc, out, _ = await _run_to_end("status", "--json", env=plain)
                doc = json.loads(out)
                return rc in (0, 1) and doc["daemon"]["running"] is True

            await eventually(reports_running, within=30, every=0.5)
            # The running daemon answers for itself (GET /v1/status): the CLI imports
            # neither SQLAlchemy's engine nor web3 for it.
            rc, doc, heavy = await _status_probe(plain)
            assert rc in (0, 1) and doc["daemon"]["pid"] == proc.pid
            assert heavy == [], heavy
            # A daemon that does not answer (stopped by SIGSTOP): after the wait the CLI
            # reads the database itself and still gives the document.
            proc.send_signal(signal.SIGSTOP)
            try:
                rc, doc, heavy = await _status_probe(plain)
            finally:
                proc.send_signal(signal.SIGCONT)
            assert rc in (0, 1, 2) and "daemon" in doc
            assert "sqlalchemy.ext.asyncio" in heavy
            rc, out, _ = await _run_to_end("status", env=plain)
            assert rc in (0, 1), out
            assert "devnet" in out and "31391" in out
            # Rendered for people: no Python reprs, empty sections in one line.
            assert "None" not in out and "{'" not in out
            assert "Latched alarms: none" in out or "Latched alarms (" in out
            assert "Withdrawals in progress: none" in out

            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
            stopped = time.monotonic()
            rc, out, _ = await _run_to_end("status", "--json", env=plain)
            doc = json.loads(out)
            # The first status after the exit already says stopped (no 30 s of a
            # stale heartbeat counting as healthy).
            assert rc == 2
            assert doc["daemon"]["running"] is False
            assert "stoppedAt" in doc["daemon"]
            assert any("stopped at" in r for r in doc["reasons"]), doc["reasons"]
            assert time.monotonic() - stopped < 15  # one CLI start, not a timeout
            rc, out, _ = await _run_to_end("status", env=plain)
            assert rc == 2 and "stopped at" in out
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_second_daemon_on_one_sqlite_file_is_refused(
    tmp_path: Path, deployment: Deployment
) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    db = tmp_path / "one.db"
    state = tmp_path / "state"
    env = _env(WATCHER_STATE_DIR=str(state), WATCHER_DATABASE_URL=f"sqlite+aiosqlite:///{db}")
    first_port, second_port = free_port(), free_port()
    first = await watcher_cli(
        "run", "--config", str(cfg), "--port", str(first_port), env=env, log_file=tmp_path / "1.log"
    )
    try:
        await eventually(lambda: _healthz(first_port), within=30)
        rc, _out, err = await _run_to_end(
            "run", "--config", str(cfg), "--port", str(second_port), env=env
        )
        assert rc == 2
        line = _one_line_error(err)
        assert "in use by another watcher daemon" in line and f"pid {first.pid}" in line
        # Nothing of the second one started: its port is free, no record of it.
        assert not await _healthz(second_port)
        records = [json.loads(p.read_text()) for p in (state / "daemons").glob("*.json")]
        assert [r["pid"] for r in records] == [first.pid]
        # The first one is unaffected.
        assert await _healthz(first_port)
    finally:
        first.send_signal(signal.SIGTERM)
        await asyncio.wait_for(first.wait(), timeout=30)
    # Once the first has stopped, the file is free again (the lock died with it).
    again_port = free_port()
    again = await watcher_cli(
        "run", "--config", str(cfg), "--port", str(again_port), env=env, log_file=tmp_path / "3.log"
    )
    try:
        await eventually(lambda: _healthz(again_port), within=30)
    finally:
        again.send_signal(signal.SIGTERM)
        await asyncio.wait_for(again.wait(), timeout=30)


async def test_port_in_use_is_one_line_and_starts_nothing(
    tmp_path: Path, deployment: Deployment
) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    db = tmp_path / "never.db"
    env = _env(
        WATCHER_STATE_DIR=str(tmp_path / "state"), WATCHER_DATABASE_URL=f"sqlite+aiosqlite:///{db}"
    )
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        rc, _out, err = await _run_to_end("run", "--config", str(cfg), "--port", str(port), env=env)
    assert rc == 2
    line = _one_line_error(err)
    assert f"127.0.0.1:{port}" in line and "already in use" in line
    assert not db.exists()  # no migration, no database
    assert not (tmp_path / "state" / "daemons").exists() or not list(
        (tmp_path / "state" / "daemons").glob("*.json")
    )


async def test_empty_or_networkless_config_dir_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _env(WATCHER_STATE_DIR=str(tmp_path / "state"))
    for command in (["run"], ["status"]):
        rc, _out, err = await _run_to_end(*command, "--config", str(empty), env=env)
        assert rc == 2, (command, err)
        line = _one_line_error(err)
        assert str(empty) in line and "no networks/*.toml" in line
    # A config whose networks are all disabled: `run` has nothing to watch.
    disabled = tmp_path / "disabled"
    (disabled / "networks").mkdir(parents=True)
    (disabled / "networks" / "off.toml").write_text(
        'name = "off"\nchain_id = 56\nenabled = false\nconfirmations = 15\n'
        'block_time_seconds = "3"\nnative_asset = "BNB"\nrpc_urls = []\n'
    )
    rc, _out, err = await _run_to_end(
        "run",
        "--config",
        str(disabled),
        "--database-url",
        f"sqlite+aiosqlite:///{tmp_path / 'off.db'}",
        env=env,
    )
    assert rc == 2, err
    line = _one_line_error(err)
    assert str(disabled) in line and "no enabled network" in line
    assert not (tmp_path / "off.db").exists()
