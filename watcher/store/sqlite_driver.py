"""The SQLite driver under the async engine: statements run on the event loop's thread.

SQLite is a library, not a server: a statement here is a function call that takes
tens to hundreds of microseconds (WAL, ``synchronous=NORMAL``: a commit does not wait
for the disk). aiosqlite runs each call in its own thread and hands the result back
to the event loop; every such trip waits for the worker to get the GIL and then for
the loop to come back to the caller after whatever callbacks are queued before it.
With one writer connection (``store/db.py``) that waiting is held *with the
connection*: measured under the withdrawal benchmark, the connection was in use 98 %
of the time while SQLite itself ran for 13–15 % of it (~800 trips/s of ~1.2 ms each,
~0.17 ms of it in SQLite). Every other transaction queued behind those waits.

So :class:`InlineCursor` runs the ``sqlite3`` calls directly, on the loop's thread (a
cursor opened, executed, drained and closed in one call), and keeps the rows, the
description, the row count and the last row id, which is all SQLAlchemy reads from a
buffered cursor; ``commit``/``rollback`` are direct calls too. Semantics are those of
the ``sqlite3`` module; only where the call runs changes.

The one wait that must not happen on the loop's thread is another *process* holding
the write lock (``watcher withdrawals approve``, a second daemon): the connection's
busy timeout is 0, so such a statement fails at once with ``SQLITE_BUSY`` without
having done anything, and is then retried in aiosqlite's worker thread with short
sleeps for up to :data:`BUSY_LIMIT_S` (the loop keeps serving meanwhile). A busy
statement has no effect, and a busy ``COMMIT`` leaves the transaction open (SQLite's
documented behaviour), so the retry is exact. A statement with thousands of parameters
(a backfill step's bulk insert) also runs in the worker thread, so the loop keeps
serving while it runs. Server-side (streaming) cursors keep aiosqlite's own path.

The sqlite3 connection is opened by aiosqlite in its thread with
``check_same_thread=False`` and is never used by two threads at once: the engine has
one connection, SQLAlchemy uses it from one task at a time, and each call completes
before the next starts (a caller cancelled while its call is in the worker thread
waits for the worker to let go of the connection before SQLAlchemy rolls back).

It is wired in through ``create_async_engine(..., module=...)``: the dialect stays
``sqlite+aiosqlite`` and the URL is the user's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

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
#: How long a statement waits for another process's write lock before failing.
BUSY_LIMIT_S = 30.0
#: A statement with more parameters than this (a bulk insert of thousands of rows in a
#: backfill step) runs in the worker thread, as aiosqlite would: it takes long enough
#: that the loop should keep serving (``/healthz``, other requests) meanwhile, and one
#: trip is nothing next to it. The withdrawal pipeline's statements stay far below.
INLINE_MAX_PARAMETERS = 4096
_BUSY_FIRST_SLEEP_S = 0.001
_BUSY_MAX_SLEEP_S = 0.05

_Result = tuple[Any, list[Any] | None, int, int | None]
T = TypeVar("T")


def _statement(conn: sqlite3.Connection, operation: Any, parameters: Any, many: bool) -> _Result:
    """The whole statement in one call: executed, drained, the cursor closed."""
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


def is_busy(error: BaseException) -> bool:
    """``SQLITE_BUSY``: another connection holds the lock this call needs."""
    return (
        isinstance(error, sqlite3.OperationalError)
        and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
    )


def _retry_while_busy(call: Callable[[], T], limit_s: float, stop: threading.Event) -> T:
    """Runs in aiosqlite's worker thread: ``call`` again after short sleeps while busy,
    until ``stop`` is set (the caller was cancelled)."""
    deadline = time.monotonic() + limit_s
    pause = _BUSY_FIRST_SLEEP_S
    while True:
        if stop.is_set():
            raise sqlite3.OperationalError("cancelled while waiting for the database lock")
        try:
            return call()
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, _BUSY_MAX_SLEEP_S)


async def _already_done() -> None:
    return None


async def _worker_call(connection: aiosqlite.Connection, call: Callable[[], T]) -> T:
    stop = threading.Event()
    work = asyncio.ensure_future(
        connection._execute(  # type: ignore[no-untyped-call]
            lambda: _retry_while_busy(call, BUSY_LIMIT_S, stop)
        )
    )
    try:
        result: T = await asyncio.shield(work)
    except asyncio.CancelledError:
        # The caller goes away (and SQLAlchemy rolls back, on this thread, right after):
        # the worker must be done with the connection first, or a retried BEGIN or the
        # rest of an executemany could run after that rollback, outside any transaction.
        stop.set()
        with contextlib.suppress(BaseException):
            await work
        raise
    return result


def _in_worker(connection: aiosqlite.Connection, call: Callable[[], T]) -> T:
    """``call`` in aiosqlite's worker thread (waiting there if the lock is held)."""
    return await_(_worker_call(connection, call))


def _parameter_count(parameters: Any, many: bool) -> int:
    """Parameters of one call; for ``many``, ``parameters`` is a list of rows."""
    if parameters is None:
        return 0
    if many:
        return len(parameters) * (len(parameters[0]) if parameters else 0)
    return len(parameters)


def run_inline(connection: aiosqlite.Connection, call: Callable[[], T]) -> T:
    """``call`` on this thread; if another process holds the lock, wait in the worker."""
    # SQLAlchemy's async layer insists that a statement awaits something (it cannot
    # otherwise tell an async driver from a blocking one); awaiting a coroutine that
    # is already done satisfies it without giving the loop a turn.
    await_(_already_done())
    try:
        return call()
    except sqlite3.OperationalError as error:
        if not is_busy(error):
            raise
    return _in_worker(connection, call)


class InlineCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement is one direct call into ``sqlite3``."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    # Nothing to close after the statement: the sqlite3 cursor was closed in the call.
    _awaitable_cursor_close = False

    def __init__(self, adapt_connection: Any) -> None:
        # Deliberately not the base __init__: it opens an aiosqlite cursor (a trip).
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
        self._run(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._run(operation, seq_of_parameters, many=True)

    def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        conn: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        try:
            raw = conn._conn  # type: ignore[no-untyped-call]
            if many and not isinstance(parameters, list | tuple):
                parameters = list(parameters)  # counted below, then executed
            params = parameters

            def statement() -> _Result:
                return _statement(raw, operation, params, many)

            if _parameter_count(params, many) > INLINE_MAX_PARAMETERS:
                result = _in_worker(conn, statement)
            else:
                result = run_inline(conn, statement)
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        description, rows, self._rowcount, self._lastrowid = result
        self._description = description
        self._rows = collections.deque(rows) if rows else collections.deque()


class InlineConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = InlineCursor

    def commit(self) -> None:
        self._end(commit=True)

    def rollback(self) -> None:
        self._end(commit=False)

    def _end(self, *, commit: bool) -> None:
        conn: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        raw = conn._connection
        if raw is None:  # closed: nothing to end (what SQLAlchemy's adapter does)
            return
        try:
            run_inline(conn, raw.commit if commit else raw.rollback)
        except Exception as error:
            self._handle_exception(error)


class InlineDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DB-API adapter, handing out :class:`InlineConnection`."""

    def connect(self, *arg: Any, **kw: Any) -> InlineConnection:
        # Used from the loop's thread as well as aiosqlite's (never at the same time).
        kw["check_same_thread"] = False
        # No sleeping busy handler on the loop's thread: run_inline waits in the worker.
        kw["timeout"] = 0
        adapted = super().connect(*arg, **kw)
        return InlineConnection(self, adapted._connection)


def dbapi() -> InlineDbapi:
    return InlineDbapi(aiosqlite, sqlite3)
