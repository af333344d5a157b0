"""Hot statements built once, run on the session's connection.

Building a statement is most of what a small one costs: constructing the
``select()``/``update()`` objects, generating their cache key, then the ORM session's
execution layers (measured on SQLite, in the caller's transaction: a keyed lookup
~92 µs built per call through the ORM session, ~43 µs built once and run on the
connection, ~22 µs for the ``sqlite3`` call itself; an ``UPDATE .. RETURNING`` of 8
accounts ~225 µs against ~57 µs). The withdrawal intake's batch and the sender's and
tracker's chunks run a dozen such statements each, so the paths that run per batch or
per chunk take theirs from here:

* :class:`Prepared` builds a statement once per dialect (the builder gets the dialect
  name) and keeps it; the statement is ordinary SQLAlchemy Core, so binds and results
  go through the columns' types as everywhere else (``BigAmount`` text <-> ``int`` on
  SQLite, ``NUMERIC`` on PostgreSQL, UTC datetimes).
* :func:`run` executes it on the session's connection (Core), inside the caller's
  transaction, after flushing the session's pending ORM changes if it has any (what
  the ORM's autoflush does). The identity map is not touched: an ``UPDATE`` here does
  not refresh ORM objects the session holds (callers use it for rows they do not hold
  as objects, as the set-based paths with ``synchronize_session=False`` did).
* :func:`any_of` with a :class:`ValueList` parameter passes a list as ONE parameter (a JSON array
  read by ``json_each`` on SQLite, an array on PostgreSQL), so the statement text is
  the same whatever the number of values and one compiled form serves every call
  (an expanding ``IN`` renders a new text per length).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import CursorResult, Executable
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


class Prepared:
    """A statement built on first use per dialect by ``build(dialect_name)``."""

    __slots__ = ("_build", "_built")

    def __init__(self, build: Callable[[str], Executable]) -> None:
        self._build = build
        self._built: dict[str, Executable] = {}

    def statement(self, dialect: str) -> Executable:
        stmt = self._built.get(dialect)
        if stmt is None:
            stmt = self._built[dialect] = self._build(dialect)
        return stmt


class ValueList(tuple[Any, ...]):
    """The value of an :func:`any_of` parameter: sent as an array on PostgreSQL, as a
    JSON array on SQLite."""

    __slots__ = ()


async def connection(session: AsyncSession) -> AsyncConnection:
    """``session.connection()``, asked of SQLAlchemy once per transaction: each ask is a
    trip through a new greenlet (~20 µs), and a batch's statements asked a dozen times.
    The first ask of a transaction begins it on the connection (``BEGIN IMMEDIATE`` on
    SQLite, db.py); the session keeps that connection until the transaction ends, and
    the cache is keyed by the transaction object, which it holds."""
    transaction = session.sync_session.get_transaction()
    cached = session.info.get(_CONNECTION)
    if transaction is not None and cached is not None and cached[0] is transaction:
        conn: AsyncConnection = cached[1]
        return conn
    conn = await session.connection()
    session.info[_CONNECTION] = (session.sync_session.get_transaction(), conn)
    return conn


_CONNECTION = "watcher.prepared.connection"


async def run(
    session: AsyncSession,
    prepared: Prepared,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> CursorResult[Any]:
    """Execute ``prepared`` on the session's connection, in its transaction (a list of
    parameter sets: once per set, the driver's executemany). Pending ORM changes of the
    session are flushed first (as the ORM's autoflush would)."""
    if session.new or session.deleted or session.dirty:
        await session.flush()
    conn = await connection(session)
    dialect = conn.dialect.name
    stmt = prepared.statement(dialect)
    if isinstance(params, Sequence):
        return await conn.execute(stmt, [_bound(dialect, p) for p in params])
    return await conn.execute(stmt, _bound(dialect, params or {}))


def _bound(dialect: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with each :class:`ValueList` in the dialect's form."""
    bound: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, ValueList):
            value = list(value) if dialect == "postgresql" else json.dumps(list(value))
        bound[name] = value
    return bound


async def rows(
    session: AsyncSession, prepared: Prepared, params: Mapping[str, Any] | None = None
) -> Sequence[Any]:
    """:func:`run`, all rows (they unpack as tuples)."""
    result = await run(session, prepared, params)
    found: Sequence[Any] = result.all()
    return found


def any_of(dialect: str, column: str, param: str, pg_array: str) -> str:
    """SQL text: ``column`` equals one of the values of the :class:`ValueList`
    parameter ``param``; ``pg_array`` is its PostgreSQL array type (``bigint[]``...)."""
    if dialect == "postgresql":
        return f"{column} = ANY(CAST(:{param} AS {pg_array}))"
    return f"{column} IN (SELECT value FROM json_each(:{param}))"
