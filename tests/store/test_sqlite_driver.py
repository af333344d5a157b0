"""The inline SQLite driver behaves as the sqlite3 module does, seen through SQLAlchemy:
rows, row counts, last row ids, executemany, errors, streaming; statements and commits
run on the event loop's thread with no trip to aiosqlite's (the reason it exists); and
a write lock held by another connection (another process) is waited for in the worker
thread while the loop keeps running, up to a limit, then fails without writing."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from watcher.store import sqlite_driver
from watcher.store.db import create_engine
from watcher.store.sqlite_driver import InlineCursor


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, n INTEGER)"
        )
    yield engine
    await engine.dispose()


async def test_engine_uses_the_inline_cursor(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        cursor = raw.dbapi_connection.cursor()  # type: ignore[union-attr]
        assert isinstance(cursor, InlineCursor)
        cursor.close()


async def test_rows_counts_and_ids(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        first = await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 1)"))
        assert first.lastrowid == 1
        await conn.exec_driver_sql(
            "INSERT INTO t (name, n) VALUES (?, ?)", [("b", 2), ("c", 3), ("d", 4)]
        )
        updated = await conn.execute(text("UPDATE t SET n = n * 10 WHERE n >= 2"))
        assert updated.rowcount == 3
        rows = (await conn.execute(text("SELECT name, n FROM t ORDER BY id"))).all()
        assert [tuple(r) for r in rows] == [("a", 1), ("b", 20), ("c", 30), ("d", 40)]
        bump = "UPDATE t SET n = n + 1 WHERE name IN ('a', 'd') RETURNING name"
        returned = (await conn.execute(text(bump))).scalars()
        assert sorted(returned) == ["a", "d"]
        empty = await conn.execute(text("SELECT name FROM t WHERE n > 1000"))
        assert empty.all() == []
        # fetchmany / fetchone on a buffered result
        result = await conn.execute(text("SELECT id FROM t ORDER BY id"))
        assert [r[0] for r in result.fetchmany(2)] == [1, 2]
        assert result.fetchone()[0] == 3  # type: ignore[index]


async def test_streaming_results_still_work(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO t (name, n) VALUES (?, ?)", [(f"r{i}", i) for i in range(50)]
        )
        stream = await conn.stream(text("SELECT n FROM t ORDER BY n"))
        assert [r[0] async for r in stream] == list(range(50))


async def test_errors_are_the_dbapi_errors_and_roll_back(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO t (name, n) VALUES ('x', 1)"))
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name, n) VALUES ('y', 2)"))
            await conn.execute(text("INSERT INTO t (name, n) VALUES ('x', 3)"))
    with pytest.raises(OperationalError, match="no such table"):
        async with engine.connect() as conn:
            await conn.execute(text("SELECT * FROM missing"))
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT name FROM t"))).scalars().all()
    assert names == ["x"]  # 'y' went with its transaction


@pytest.fixture
async def trips(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The calls run in aiosqlite's worker thread from now on (counted)."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))  # connection set up (PRAGMAs) first
    trips: list[Any] = []
    real = aiosqlite.core.Connection._execute

    async def counting(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(fn)
        return await real(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counting)
    return trips


async def test_no_thread_trip_per_statement_or_commit(
    engine: AsyncEngine, trips: list[Any]
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 1)"))
        rows = (await conn.execute(text("SELECT name FROM t UNION ALL SELECT 'b'"))).all()
    assert [r[0] for r in rows] == ["a", "b"]
    assert trips == []  # BEGIN, INSERT, SELECT, COMMIT all ran on the loop's thread


async def test_a_statement_with_thousands_of_parameters_runs_in_the_worker(
    engine: AsyncEngine, trips: list[Any]
) -> None:
    """A bulk insert above INLINE_MAX_PARAMETERS makes one trip (the loop keeps serving
    while it runs); the same rows in small statements make none."""
    width = sqlite_driver.INLINE_MAX_PARAMETERS // 2 + 1  # rows of 2 parameters: just over
    rows = [(f"n{i}", i) for i in range(width)]
    async with engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO t (name, n) VALUES (?, ?)", rows)
    assert len(trips) == 1
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DELETE FROM t")
        for start in range(0, width, 100):
            await conn.exec_driver_sql(
                "INSERT INTO t (name, n) VALUES (?, ?)", rows[start : start + 100]
            )
    assert len(trips) == 1  # no more
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()
    assert count == width


def _lock_from_elsewhere(db: Path) -> sqlite3.Connection:
    """Another process's connection (a plain sqlite3 one) holding the write lock."""
    other = sqlite3.connect(db, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (name, n) VALUES ('other', 0)")
    return other


async def test_a_lock_held_elsewhere_is_waited_for_off_the_loop(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    other = _lock_from_elsewhere(tmp_path / "driver.db")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def write() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name, n) VALUES ('mine', 1)"))

    beat = asyncio.create_task(ticker())
    writer = asyncio.create_task(write())
    await asyncio.sleep(0.3)
    assert not writer.done()  # waiting for the other connection's lock ...
    assert ticks >= 10  # ... while the event loop kept running
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(writer, 5)
    beat.cancel()
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT name FROM t ORDER BY id"))).scalars().all()
    assert names == ["other", "mine"]


async def test_a_lock_held_past_the_limit_fails_and_writes_nothing(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver, "BUSY_LIMIT_S", 0.2)
    other = _lock_from_elsewhere(tmp_path / "driver.db")
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t (name, n) VALUES ('mine', 1)"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()
    assert count == 0


async def test_a_caller_cancelled_while_waiting_leaves_no_transaction_behind(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Cancelled while its BEGIN waits for another process's lock: the worker stops
    retrying at once (the cancellation is not held up for the 30 s busy limit) and lets
    go of the connection before SQLAlchemy cleans it up, so no BEGIN lands afterwards
    (which would leave the connection in a transaction, holding the write lock)."""
    db = tmp_path / "driver.db"
    other = _lock_from_elsewhere(db)

    async def write() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name, n) VALUES ('cancelled', 1)"))

    writer = asyncio.create_task(write())
    await asyncio.sleep(0.2)
    writer.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert time.monotonic() - cancelled_at < 2  # not the 30 s busy limit
    other.execute("COMMIT")
    await asyncio.sleep(0.2)  # a retry that was still due would have run by now
    third = sqlite3.connect(db, isolation_level=None, timeout=0)
    try:
        third.execute("BEGIN IMMEDIATE")  # nobody holds the write lock
        third.execute("ROLLBACK")
    finally:
        third.close()
        other.close()
    async with engine.begin() as conn:  # and the engine's connection works
        await conn.execute(text("INSERT INTO t (name, n) VALUES ('after', 2)"))
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT name FROM t ORDER BY id"))).scalars().all()
    assert names == ["other", "after"]
