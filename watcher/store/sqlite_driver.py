"""The SQLite driver under the async engine: aiosqlite, with one thread hop per statement.

aiosqlite runs every call of the ``sqlite3`` module in its own thread and hands the
result back to the event loop. SQLAlchemy's adapter makes four such calls for a
statement (open a cursor, execute, fetch the rows, close the cursor), and each one
waits twice: for the worker thread to get the GIL, then for the event loop to resume
the caller after whatever callbacks are queued before it. Measured under the
withdrawal benchmark's load: ~5.7 hops per withdrawal, ~250 us of waiting each on
average (p99 ~5 ms), more than the statements' own time in SQLite; with one writer
connection that waiting is held by the connection and limits every transaction.

:class:`OneHopCursor` does the four calls in one function in the worker thread (a
``sqlite3`` cursor opened, executed, drained and closed there) and keeps the rows,
the description, the row count and the last row id, which is all SQLAlchemy reads
from a buffered cursor. Semantics are those of the ``sqlite3`` module; only the
number of round trips changes. Server-side (streaming) cursors keep aiosqlite's own.

It is wired in through ``create_async_engine(..., module=...)``: the dialect stays
``sqlite+aiosqlite`` and the URL is the user's.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

#: ``fetchmany()`` without a size (the DB-API default).
ARRAYSIZE = 1

_Result = tuple[Any, list[Any] | None, int, int | None]


def _one_hop(conn: sqlite3.Connection, operation: Any, parameters: Any, many: bool) -> _Result:
    """Runs in aiosqlite's worker thread: the whole statement, the cursor closed."""
    cur = conn.cursor()
    try:
        if many:
            cur.executemany(operation, parameters)
        elif parameters is None:
            cur.execute(operation)
        else:
            cur.execute(operation, parameters)
        description = cur.description
        rows = cur.fetchall() if description else None
        return description, rows, cur.rowcount, cur.lastrowid
    finally:
        cur.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement is one call into the worker thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    # Nothing to close after the statement: the sqlite3 cursor was closed in the hop.
    _awaitable_cursor_close = False

    def __init__(self, adapt_connection: Any) -> None:
        # Deliberately not the base __init__: it opens an aiosqlite cursor (a hop).
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = ARRAYSIZE

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run(operation, parameters, many=False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            return await_(self._run(operation, seq_of_parameters, many=True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        conn: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        async with self._adapt_connection._execute_mutex:
            # aiosqlite's own way of running a function in its thread (what each of
            # its methods does); ``_conn`` is the sqlite3 connection, read there.
            result: _Result = await conn._execute(  # type: ignore[no-untyped-call]
                lambda: _one_hop(conn._conn, operation, parameters, many)
            )
        description, rows, self._rowcount, self._lastrowid = result
        self._description = description
        self._rows = collections.deque(rows) if rows else collections.deque()


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor


class OneHopDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DB-API adapter, handing out :class:`OneHopConnection`."""

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        adapted = super().connect(*arg, **kw)
        return OneHopConnection(self, adapted._connection)


def dbapi() -> OneHopDbapi:
    return OneHopDbapi(aiosqlite, sqlite3)
