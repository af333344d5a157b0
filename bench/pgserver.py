"""A PostgreSQL database for a bench run (not a test).

``--database postgresql`` in the bench scripts gets its database from here:

* the server is ``--database-url`` if given, else ``$BENCH_DATABASE_URL``, else
  ``$WATCHER_TEST_DATABASE_URL``, else a throwaway cluster started for the run with
  ``scripts/pg-throwaway.sh`` (as CI does: fsync off, on a free local port) and
  stopped after it;
* on that server a fresh database ``watcher_bench_<random>`` is created for the run
  and dropped after it (``WITH (FORCE)``), so runs never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from watcher.chain.devnet import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pg-throwaway.sh"


async def _script(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"pg-throwaway.sh {args[0]} failed: {err.decode().strip()}")
    return out.decode().strip()


@asynccontextmanager
async def postgres_server(url: str | None = None) -> AsyncIterator[tuple[str, str]]:
    """(server URL, where it comes from): the one given or in the environment, or a
    throwaway cluster started here and stopped on exit."""
    given = (
        url or os.environ.get("BENCH_DATABASE_URL") or os.environ.get("WATCHER_TEST_DATABASE_URL")
    )
    if given:
        if not given.startswith("postgresql"):
            raise SystemExit(f"not a postgresql+asyncpg:// URL: {given.split('@')[-1]}")
        yield given, "given server"
        return
    # Not under a 0700 temporary directory: the cluster runs as the postgres user.
    data = tempfile.mkdtemp(prefix="watcher-bench-pg.")
    try:
        started = await _script("start", data, str(free_port()))
        try:
            yield started, "throwaway cluster (scripts/pg-throwaway.sh)"
        finally:
            await _script("stop", data)
    finally:
        shutil.rmtree(data, ignore_errors=True)


@asynccontextmanager
async def fresh_database(server: str) -> AsyncIterator[str]:
    """The URL of a new database on ``server``, dropped on exit."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"watcher_bench_{uuid.uuid4().hex[:10]}"
    admin_url = make_url(server).set(database="postgres").render_as_string(False)
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server).set(database=name).render_as_string(False)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@asynccontextmanager
async def bench_database(
    kind: str, sqlite_file: Path, url: str | None = None
) -> AsyncIterator[tuple[str, str]]:
    """(database URL, description) for ``--database kind``: the SQLite file, or a fresh
    database on a PostgreSQL server (:func:`postgres_server`)."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{sqlite_file}", "SQLite file"
        return
    async with postgres_server(url) as (server, where), fresh_database(server) as db:
        yield db, f"PostgreSQL, {where}"


@asynccontextmanager
async def bench_workdir(
    prefix: str, kind: str, url: str | None = None
) -> AsyncIterator[tuple[Path, str]]:
    """(a temporary directory, database URL) for one bench run: the directory removed
    after it, the database from :func:`bench_database` (its SQLite file ``watcher.db``
    in that directory); says where the database is."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp)
        async with bench_database(kind, root / "watcher.db", url) as (db_url, where):
            print(f"database: {where}", flush=True)
            yield root, db_url


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class ServerCpu:
    """CPU seconds used by a local PostgreSQL server: its postmaster's children
    (backends, WAL writer, checkpointer...), read from /proc. ``None`` when the server
    is not on this machine (or /proc is not readable)."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster

    @classmethod
    async def of(cls, url: str) -> ServerCpu:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                backend = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
                return cls(_parent(backend))  # read while the backend still exists
        finally:
            await engine.dispose()

    def seconds(self) -> float | None:
        if self.postmaster is None:
            return None
        total = 0.0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            if _parent(int(entry)) == self.postmaster:
                try:
                    total += _cpu_seconds(int(entry))
                except (OSError, ValueError, IndexError):
                    continue
        return total
