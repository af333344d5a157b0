"""A watcher session stopped between a statement's Execute and its Sync (a process
frozen in the middle of a pipelined ``executemany``) keeps its row locks: the server's
idle-in-transaction timeout does not end it, so :mod:`watcher.store.stalled` does, and
only that: not another application's session, not a watcher session that has waited
less than the bound, not one that is idle (the server's own timeout is for those)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.pgwire import NeedsPassword, RawSession
from watcher.metrics import Metrics
from watcher.services.leases import LeaseKeeper
from watcher.store.db import SessionFactory
from watcher.store.stalled import end_stalled


@pytest.fixture
async def table(engine: AsyncEngine) -> str:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL sessions; SQLite has one process per database file")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE stall_probe (id int PRIMARY KEY, n int)"))
        await conn.execute(text("INSERT INTO stall_probe VALUES (1, 0), (2, 0), (3, 0)"))
    return "stall_probe"


@pytest.fixture
def raw(engine: AsyncEngine) -> Iterator[list[RawSession]]:
    opened: list[RawSession] = []
    yield opened
    for session in opened:
        session.close()


def stop_holding(
    engine: AsyncEngine, opened: list[RawSession], name: str, row: int, *, sync: bool = False
) -> RawSession:
    """A session named ``name`` that locks ``row`` in a transaction and stops before
    the Sync (``sync=True``: after it, idle in the transaction)."""
    url = engine.url.render_as_string(hide_password=False)
    try:
        session = RawSession(url, name, idle_in_transaction_session_timeout="60000")
    except NeedsPassword as exc:
        pytest.skip(f"the raw test client speaks trust authentication only: {exc}")
    opened.append(session)
    session.query("BEGIN")
    sql = f"UPDATE stall_probe SET n = n + 1 WHERE id = {row}"
    if sync:
        session.query(sql)
    else:
        session.execute_without_sync(sql)
    return session


async def locked(engine: AsyncEngine, row: int) -> bool:
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
            await conn.execute(text(f"SELECT 1 FROM stall_probe WHERE id = {row} FOR UPDATE"))
    except DBAPIError as exc:
        if "lock" in str(exc).lower():
            return True
        raise
    return False


async def test_only_a_stalled_watcher_session_is_ended(
    engine: AsyncEngine, table: str, raw: list[RawSession]
) -> None:
    stalled = stop_holding(engine, raw, "watcher r1", 1)
    other_app = stop_holding(engine, raw, "psql", 2)
    idle = stop_holding(engine, raw, "watcher r2", 3, sync=True)
    async with engine.connect() as conn:
        state = dict(
            (
                await conn.execute(
                    text(
                        "SELECT pid, state || '/' || coalesce(wait_event, '') "
                        "FROM pg_stat_activity WHERE datname = current_database()"
                    )
                )
            ).all()
        )
    # What the server shows for a client stopped before its Sync: active, reading.
    assert state[stalled.pid] == "active/ClientRead" == state[other_app.pid]
    assert state[idle.pid].startswith("idle in transaction")
    assert await locked(engine, 1)

    # Under the bound: nobody is ended.
    async with engine.connect() as conn:
        assert await end_stalled(conn, older_than=30) == []
    await asyncio.sleep(1.2)
    async with engine.connect() as conn:
        found = await end_stalled(conn, older_than=1)
    assert [(s.pid, s.application_name, s.ended) for s in found] == [
        (stalled.pid, "watcher r1", True)
    ]
    assert found[0].waited_seconds >= 1
    assert stalled.closed_by_server()
    deadline = time.monotonic() + 5
    while await locked(engine, 1):  # the lock goes with the session
        assert time.monotonic() < deadline, "row 1 still locked after the session ended"
    # The others are untouched: another application's, and an idle one (the server's
    # idle-in-transaction timeout is for that one).
    assert await locked(engine, 2) and await locked(engine, 3)
    async with engine.connect() as conn:
        alive = set(
            (
                await conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
                )
            ).scalars()
        )
    assert {other_app.pid, idle.pid} <= alive and stalled.pid not in alive


async def test_the_lease_keeper_ends_them_each_round(
    engine: AsyncEngine,
    sessions: SessionFactory,
    table: str,
    raw: list[RawSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    keeper = LeaseKeeper(
        engine=engine,
        sessions=sessions,
        replica_id="r2",
        lease_seconds=6,
        unheld_budget_seconds=60,
        metrics=metrics,
        chain=True,
    )
    keeper.stalled_after = 0.5
    try:
        stalled = stop_holding(engine, raw, "watcher r1", 1)
        await asyncio.sleep(0.8)
        with caplog.at_level(logging.WARNING, logger="watcher.leases"):
            await keeper.round()
        assert stalled.closed_by_server()
        assert f"database session {stalled.pid} (watcher r1) ended" in caplog.text
        assert metrics.stalled_sessions_ended._value.get() == 1
    finally:
        await keeper.close()
