"""Statements built once (store/prepared.py) on SQLite and PostgreSQL: a list passed as
one parameter selects exactly its rows whatever its length (empty included), the
session's pending ORM changes are flushed first as the ORM's autoflush would, and the
connection is asked of SQLAlchemy once per transaction, afresh in the next one."""

from __future__ import annotations

from typing import Any, cast

import pytest
from sqlalchemy import Table, select, text

from watcher.store.db import SessionFactory
from watcher.store.models import Account
from watcher.store.prepared import Prepared, ValueList, any_of, connection, rows

ACCOUNTS = cast(Table, Account.__table__)
BY_KEYS = Prepared(
    lambda d: (
        select(ACCOUNTS.c.key, ACCOUNTS.c.kind)
        .where(text(any_of(d, "accounts.key", "keys", "text[]")))
        .order_by(ACCOUNTS.c.key)
    )
)


@pytest.fixture
async def ready(sessions: SessionFactory) -> SessionFactory:
    async with sessions.begin() as s:
        s.add_all(Account(key=f"0x{i:040x}", kind="user") for i in range(1, 6))
    return sessions


def key(i: int) -> str:
    return f"0x{i:040x}"


async def test_a_list_parameter_selects_exactly_its_rows(ready: SessionFactory) -> None:
    async with ready() as s:
        found = await rows(s, BY_KEYS, {"keys": ValueList([key(4), key(2), key(99)])})
        assert [tuple(r) for r in found] == [(key(2), "user"), (key(4), "user")]
        assert await rows(s, BY_KEYS, {"keys": ValueList([])}) == []
        every = await rows(s, BY_KEYS, {"keys": ValueList(key(i) for i in range(1, 6))})
        assert len(every) == 5


async def test_pending_orm_changes_are_flushed_first(ready: SessionFactory) -> None:
    async with ready.begin() as s:
        s.add(Account(key=key(7), kind="system"))
        found = await rows(s, BY_KEYS, {"keys": ValueList([key(7)])})
        assert [tuple(r) for r in found] == [(key(7), "system")]


async def test_the_connection_is_asked_once_per_transaction(
    ready: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ready() as s:
        asks = 0
        real = s.connection

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal asks
            asks += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr(s, "connection", counting)
        async with s.begin():
            first = await connection(s)
            assert await connection(s) is first
            await rows(s, BY_KEYS, {"keys": ValueList([key(1)])})
        assert asks == 1
        async with s.begin():
            await connection(s)
        assert asks == 2  # a new transaction asks again
