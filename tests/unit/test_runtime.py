"""The daemon registry and the SQLite lock (watcher/runtime.py), with real processes
and real file locks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.runtime import (
    RuntimeProblem,
    SqliteLock,
    find_daemon,
    masked_url,
    register,
    sqlite_lock_for,
)


def _record(state: Path, pid: int, started: str, config: Path) -> Path:
    folder = state / "daemons"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}.json"
    path.write_text(
        json.dumps(
            {
                "pid": pid,
                "host": socket.gethostname(),
                "configDir": str(config),
                "apiUrl": "http://127.0.0.1:1",
                "databaseUrl": "sqlite+aiosqlite:////x.db",
                "startedAt": started,
            }
        )
    )
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_register_writes_a_record_without_the_password(tmp_path: Path) -> None:
    env = {"WATCHER_STATE_DIR": str(tmp_path)}
    path = register(
        config_dir=tmp_path,
        api_host="0.0.0.0",
        api_port=8081,
        database_url="postgresql+asyncpg://watcher:s3cret-pw@db:5432/watcher",
        env=env,
    )
    text = path.read_text()
    assert "s3cret-pw" not in text
    doc = json.loads(text)
    assert doc["pid"] == os.getpid()
    assert doc["apiUrl"] == "http://127.0.0.1:8081"
    assert doc["databaseHasPassword"] is True
    found = find_daemon(env)
    assert found is not None and found.pid == os.getpid() and found.config_dir == tmp_path
    assert masked_url("sqlite+aiosqlite:////a/b.db") == "sqlite+aiosqlite:////a/b.db"


def test_two_live_daemons_need_a_choice_and_dead_ones_are_swept(tmp_path: Path) -> None:
    env = {"WATCHER_STATE_DIR": str(tmp_path)}
    old_dead = _record(tmp_path, _dead_pid(), "2026-01-01T00:00:00+00:00", tmp_path)
    newer_dead = _record(tmp_path, _dead_pid(), "2026-01-02T00:00:00+00:00", tmp_path)
    # Only dead ones: the newest is still found (status then says it stopped), the
    # older one is removed.
    found = find_daemon(env)
    assert found is not None and found.path == newer_dead
    assert not old_dead.exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _record(tmp_path, os.getpid(), "2026-01-03T00:00:00+00:00", tmp_path)
        found = find_daemon(env)
        assert found is not None and found.pid == os.getpid()  # live beats dead
        _record(tmp_path, sleeper.pid, "2026-01-04T00:00:00+00:00", tmp_path)
        with pytest.raises(RuntimeProblem, match="2 watcher daemons are running"):
            find_daemon(env)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_sqlite_lock_is_exclusive_and_dies_with_its_process(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    lock = sqlite_lock_for(f"sqlite+aiosqlite:///{db}")
    assert lock is not None
    assert sqlite_lock_for("postgresql+asyncpg://u@h/d") is None
    assert sqlite_lock_for("sqlite+aiosqlite:///:memory:") is None
    # Another process holds it: refused, naming that process.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from watcher.runtime import SqliteLock;"
            f"SqliteLock(Path({str(db)!r})).acquire(); print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        with pytest.raises(RuntimeProblem, match=f"pid {holder.pid}"):
            lock.acquire()
    finally:
        holder.kill()
        holder.wait()
    # Killed (no clean release): the kernel dropped its lock.
    lock.acquire()
    with pytest.raises(RuntimeProblem):
        SqliteLock(db).acquire()
    lock.release()
    SqliteLock(db).acquire()
