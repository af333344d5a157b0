"""Database fixtures: every store test runs on a fresh SQLite file and, when
``WATCHER_TEST_DATABASE_URL`` points at a PostgreSQL server (CI does), on a fresh
PostgreSQL database created for the test and dropped after it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from watcher.store.db import SessionFactory, create_engine, session_factory
from watcher.store.migrate import upgrade

PG_URL = os.environ.get("WATCHER_TEST_DATABASE_URL", "")
BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]


async def _create_pg_database() -> str:
    base = make_url(PG_URL)
    name = f"watcher_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(url: str) -> None:
    name = make_url(url).database
    admin = create_async_engine(
        make_url(PG_URL).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


async def make_database_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'watcher.db'}"
    return await _create_pg_database()


async def drop_database_url(url: str) -> None:
    if url.startswith("postgresql"):
        await _drop_pg_database(url)


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database on each backend."""
    url = await make_database_url(request.param, tmp_path)
    engine = create_engine(url)
    await upgrade(engine)
    await engine.dispose()
    yield url
    await drop_database_url(url)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return session_factory(engine)
