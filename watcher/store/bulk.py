"""Bulk inserts at driver speed, stored exactly as SQLAlchemy would store them.

SQLAlchemy Core's ``executemany`` spends most of its time per row and per parameter
in Python (bind processing, default handling). For the bulk paths (a backfill
credits tens of thousands of deposits in one step) :func:`insert_many` converts each
column's values once with that column type's own bind processor for the session's
dialect, so the stored representation is byte-identical to an ORM or Core insert
(``BigAmount`` as canonical decimal text on SQLite and ``NUMERIC(78,0)`` on
PostgreSQL, ``UtcDateTime`` in UTC, and the type's checks, e.g. "amount exceeds 78
digits", still raise), and hands the rows to the driver's own ``executemany`` in the
dialect's paramstyle (``?`` for sqlite3, ``$n`` for asyncpg).

Guarantees:

* Runs in the caller's DB transaction (the session's connection); commits nothing.
* Every column of the table must be given except an autoincrement integer primary
  key, so no Python-side column default is silently skipped.
* Values that are the same in every row (a timestamp, a chain id, a state) are given
  once in ``same`` and converted once.
* A driver executemany binds each row separately, so asyncpg's limit of 32,767
  parameters per statement does not apply; rows are still sent in chunks of
  :data:`CHUNK` to bound memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["CHUNK", "insert_many", "insert_sql", "processor"]

CHUNK = 5000


def processor(table: Table, column: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The bind processor SQLAlchemy applies to ``table.column`` on ``dialect``."""
    col_type = table.c[column].type
    proc: Callable[[Any], Any] | None = col_type.dialect_impl(dialect).bind_processor(dialect)
    return proc


def insert_sql(table: Table, columns: Sequence[str], dialect: Dialect, suffix: str = "") -> str:
    """``INSERT INTO t (a, b) VALUES (?, ?)`` in the dialect's paramstyle and quoting,
    followed by ``suffix`` (e.g. an ``ON CONFLICT`` clause)."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    style = dialect.paramstyle
    if style == "qmark":
        marks = ", ".join("?" for _ in columns)
    elif style in ("numeric_dollar", "numeric"):
        sign = "$" if style == "numeric_dollar" else ":"
        marks = ", ".join(f"{sign}{i}" for i in range(1, len(columns) + 1))
    elif style == "format":
        marks = ", ".join("%s" for _ in columns)
    else:  # pragma: no cover - pyformat/named drivers are not used by the watcher
        raise NotImplementedError(f"bulk insert: paramstyle {style!r}")
    sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"
    return f"{sql} {suffix}" if suffix else sql


def _check_columns(table: Table, given: set[str]) -> None:
    unknown = given - set(table.c.keys())
    if unknown:
        raise ValueError(f"{table.name}: no column(s) {sorted(unknown)}")
    for col in table.c:
        if col.name in given or col.server_default is not None:
            continue
        if col.primary_key and col is table.autoincrement_column:
            continue
        raise ValueError(f"{table.name}: bulk insert needs a value for {col.name!r}")


async def insert_many(
    session: AsyncSession,
    table: Table,
    columns: Mapping[str, Sequence[Any]],
    same: Mapping[str, Any] | None = None,
    *,
    suffix: str = "",
) -> int:
    """Insert one row per index of the ``columns`` lists (all of equal length), with
    the values of ``same`` in every row, in the order given. ``suffix`` is appended to
    the statement (an ``ON CONFLICT`` clause, written for both dialects). Returns the
    number of rows sent."""
    same = same or {}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"{table.name}: columns of different lengths {sorted(lengths)}")
    count = lengths.pop() if lengths else 0
    if count == 0:
        return 0
    overlap = set(columns) & set(same)
    if overlap:
        raise ValueError(f"{table.name}: {sorted(overlap)} given twice")
    names = [*columns, *same]
    _check_columns(table, set(names))
    conn = await session.connection()
    dialect = conn.dialect
    converted: list[Sequence[Any] | repeat[Any]] = []
    for name, values in columns.items():
        proc = processor(table, name, dialect)
        converted.append(values if proc is None else [proc(v) for v in values])
    for name, value in same.items():
        proc = processor(table, name, dialect)
        converted.append(repeat(value if proc is None else proc(value)))
    rows = list(zip(*converted, strict=False))
    sql = insert_sql(table, names, dialect, suffix)
    for start in range(0, count, CHUNK):
        await conn.exec_driver_sql(sql, rows[start : start + CHUNK])
    return count
