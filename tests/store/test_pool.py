"""The PostgreSQL pool without ``pool_pre_ping``: a pooled connection whose server
end was closed while it sat in the pool is replaced when it is checked out, so the
next transaction runs instead of failing on a dead connection; and checking a
connection out sends nothing to the server."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from watcher.store.db import session_factory


@pytest.fixture
def pg(engine: AsyncEngine) -> AsyncEngine:
    if engine.dialect.name != "postgresql":
        pytest.skip("the PostgreSQL pool; SQLite's is one in-process connection")
    return engine


async def backend_pid(engine: AsyncEngine) -> int:
    async with session_factory(engine).begin() as s:
        return int((await s.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_the_server_ended_is_replaced_at_checkout(pg: AsyncEngine) -> None:
    first = await backend_pid(pg)
    admin = create_async_engine(pg.url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            # Waits (up to 5 s) until the backend has exited and closed its socket.
            ended = await conn.execute(
                text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": first}
            )
            assert ended.scalar_one() is True
    finally:
        await admin.dispose()
    await asyncio.sleep(0.2)  # the pooled connection's socket reads the close
    second = await backend_pid(pg)  # no error: a new connection took its place
    assert second != first
    assert await backend_pid(pg) == second  # and that one stays in the pool


async def test_checkout_asks_the_server_nothing(
    pg: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ping per transaction (``pool_pre_ping`` was three round trips each)."""
    pings: list[object] = []
    ping = pg.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return bool(ping(dbapi_connection))

    monkeypatch.setattr(pg.dialect, "do_ping", counted)
    pid = await backend_pid(pg)
    for _ in range(5):
        assert await backend_pid(pg) == pid
    assert pings == []
