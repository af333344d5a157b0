"""Bulk inserts at driver speed, stored exactly as SQLAlchemy would store them.

SQLAlchemy Core's ``executemany`` spends most of its time per row and per parameter
in Python (bind processing, default handling). For the bulk paths (a backfill
credits tens of thousands of deposits in one step) :func:`insert_many` converts each
column's values once with that column type's own bind processor for the session's
dialect, so the stored representation is byte-identical to an ORM or Core insert
(``BigAmount`` as canonical decimal text on SQLite and ``NUMERIC(78,0)`` on
PostgreSQL, ``UtcDateTime`` in UTC, and the type's checks, e.g. "amount exceeds 78
digits", still raise), and sends the values straight to the driver in the
dialect's paramstyle (``?`` for sqlite3, ``$n`` for asyncpg):

* SQLite: multi-row ``INSERT .. VALUES (..), (..), ..`` of :data:`SQLITE_PARAMETERS`
  parameters each (one statement step per few hundred rows instead of one per row;
  about 15% less time in SQLite than ``executemany`` for the deposit tables);
* PostgreSQL: ``INSERT .. SELECT .. FROM unnest($1::type[], $2::type[], ..)``: one
  array parameter per column, so one statement (one prepared statement, one round
  trip, one executor run) per :data:`CHUNK` rows instead of one execution per row;
  the values of ``same`` travel once as scalar parameters. The arrays are cast to the
  column types without their length or precision (``varchar[]``, ``numeric[]``), so
  the insert's assignment cast checks those exactly as for a single-row insert (a
  too-long string is refused, not truncated by an explicit cast). ``BigAmount``
  columns travel as text cast to ``numeric[]`` by the server (exact; the driver's
  binary ``numeric`` encoding of a ``Decimal`` cost more than the insert), after the
  type's own checks (:func:`watcher.store.types.amount_text`). Integer, string and
  timestamp columns whose values are all of the right Python type travel as ONE
  string each, the array's text form (``{1,2}``, ``{"a","b"}``, parsed by the
  server: ``$1::TEXT::BIGINT[]``), instead of the driver's binary array, which
  checks and encodes every element in Python-level calls; any other column keeps the
  binary form and the driver's own type checks (:func:`_pg_mode`).

Guarantees:

* Runs in the caller's DB transaction (the session's connection); commits nothing.
* Rows are inserted in the order given (an ``ON CONFLICT .. DO UPDATE`` suffix takes
  its row locks in that order on PostgreSQL: with a suffix the ``unnest`` rows are
  ordered by their ordinality explicitly; without one the function scan returns
  the arrays in order).
* Every column of the table must be given except an autoincrement integer primary
  key, so no Python-side column default is silently skipped.
* Values that are the same in every row (a timestamp, a chain id, a state) are given
  once in ``same`` and converted once.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import Table, TextClause, text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.store.prepared import connection
from watcher.store.types import BigAmount, amount_text

__all__ = [
    "CHUNK",
    "SQLITE_PARAMETERS",
    "insert_many",
    "insert_sql",
    "pg_type",
    "processor",
    "reserve_ids",
    "unnest_sql",
]

CHUNK = 5000
# Rows per unnest statement on PostgreSQL (its chunks are pipelined, see insert_many).
PG_CHUNK = 2000
# Parameters per multi-row INSERT on SQLite: its limit is 32,766 since 3.32 (999 before).
SQLITE_PARAMETERS = 8000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


def processor(table: Table, column: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The bind processor SQLAlchemy applies to ``table.column`` on ``dialect``."""
    col_type = table.c[column].type
    proc: Callable[[Any], Any] | None = col_type.dialect_impl(dialect).bind_processor(dialect)
    return proc


def insert_sql(
    table: Table, columns: Sequence[str], dialect: Dialect, suffix: str = "", rows: int = 1
) -> str:
    """``INSERT INTO t (a, b) VALUES (?, ?)[, (?, ?) ...]`` (``rows`` tuples) in the
    dialect's paramstyle and quoting, followed by ``suffix`` (e.g. ``ON CONFLICT``)."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    style, width = dialect.paramstyle, len(columns)
    if style == "qmark":
        one = "(" + ", ".join("?" * width) + ")"
        values = ", ".join([one] * rows)
    elif style in ("numeric_dollar", "numeric"):
        sign = "$" if style == "numeric_dollar" else ":"
        values = ", ".join(
            "(" + ", ".join(f"{sign}{r * width + i}" for i in range(1, width + 1)) + ")"
            for r in range(rows)
        )
    elif style == "format":
        one = "(" + ", ".join(["%s"] * width) + ")"
        values = ", ".join([one] * rows)
    else:  # pragma: no cover - pyformat/named drivers are not used by the watcher
        raise ValueError(f"bulk insert: the driver's paramstyle {style!r} is not supported")
    sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES {values}"
    return f"{sql} {suffix}" if suffix else sql


def _convert(proc: Callable[[Any], Any] | None, values: Sequence[Any]) -> Sequence[Any]:
    """``proc`` over ``values``; a column that repeats the same objects (a timestamp
    or a state on most rows) converts each distinct object once."""
    if proc is None:
        return values
    if len(set(map(id, values))) * 2 > len(values):
        return [proc(v) for v in values]
    # ``values`` holds every object for the whole loop, so no id is reused meanwhile.
    done: dict[int, Any] = {}
    return [done[i] if (i := id(v)) in done else done.setdefault(i, proc(v)) for v in values]


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


@functools.lru_cache(maxsize=128)
def _processors(
    table: Table, names: tuple[str, ...], dialect: Dialect
) -> tuple[Callable[[Any], Any] | None, ...]:
    """The checked column list's bind processors, once per (table, columns, dialect)
    (on PostgreSQL ``BigAmount`` columns convert to text, see :func:`unnest_sql`)."""
    _check_columns(table, set(names))
    if dialect.name == "postgresql":
        return tuple(_pg_processor(table, n, dialect) for n in names)
    return tuple(processor(table, n, dialect) for n in names)


def pg_type(table: Table, column: str, dialect: Dialect) -> str:
    """The PostgreSQL type a column's values are cast to in :func:`unnest_sql`: the
    column's type without length or precision (``VARCHAR(66)`` -> ``VARCHAR``,
    ``NUMERIC(78, 0)`` -> ``NUMERIC``); the insert into the column then checks both."""
    compiled = table.c[column].type.compile(dialect=dialect)
    return re.sub(r"\s*\([^)]*\)", "", compiled)


def _pg_cast(table: Table, column: str, dialect: Dialect, array: bool) -> str:
    """``::type`` (``::type[]`` for an array) for a parameter of ``column``;
    ``BigAmount`` values are sent as text (:func:`_pg_processor`)."""
    brackets = "[]" if array else ""
    target = pg_type(table, column, dialect) + brackets
    if isinstance(table.c[column].type, BigAmount):
        return f"::TEXT{brackets}::{target}"
    return f"::{target}"


def _pg_processor(table: Table, column: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    if isinstance(table.c[column].type, BigAmount):
        return amount_text
    return processor(table, column, dialect)


# How a column's values travel to PostgreSQL (see _pg_mode): as the text form of an
# array of integers, strings or timestamps, one string the server parses; or as the
# driver's binary array.
INTEGERS, STRINGS, TIMES, BINARY = "integers", "strings", "times", "binary"
_INTEGER_TYPES = frozenset({"SMALLINT", "INTEGER", "BIGINT"})
# NUMERIC: BigAmount's checked text (amount_text); the schema has no other NUMERIC column.
_TEXT_TYPES = frozenset({"VARCHAR", "TEXT", "NUMERIC"})


def _literal_text(values: Sequence[str | None]) -> str:
    """The text form of a one-dimensional array of strings: every element quoted (a
    backslash or a double quote escaped by a backslash), ``NULL`` unquoted."""
    if None not in values:
        body = '","'.join(values)  # type: ignore[arg-type]
        # Only a value with a quote or a backslash needs escaping; the joined text has
        # exactly the separators' quotes unless one does.
        if "\\" not in body and body.count('"') == 2 * (len(values) - 1):
            return '{"' + body + '"}'
    parts = [
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values
    ]
    return "{" + ",".join(parts) + "}"


@functools.lru_cache(maxsize=128)
def _pg_types(table: Table, columns: tuple[str, ...], dialect: Dialect) -> tuple[str, ...]:
    return tuple(pg_type(table, c, dialect) for c in columns)


def _pg_mode(target: str, values: Sequence[Any]) -> str:
    """How the values of a column of PostgreSQL type ``target`` (see :func:`pg_type`)
    travel: the array's text form (:data:`INTEGERS`, :data:`STRINGS`, :data:`TIMES`)
    for integer, string and timestamp columns whose values are all exactly of the
    Python type the driver would demand (or ``None``; timestamps aware); else
    :data:`BINARY`, the driver's own array encoding, which checks each value as for
    any parameter.

    The text form is one string for the driver to copy and the server to parse. The
    driver's binary array costs a Python-level check per element against the
    ``Iterable`` and ``Sized`` ABCs (for nested arrays) and an encoder call: most of
    the bench process's CPU in a PostgreSQL backfill step's inserts (20,000 deposits
    are 560,000 array elements)."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if target in _INTEGER_TYPES and kinds <= {int}:
        return INTEGERS
    if target in _TEXT_TYPES and kinds <= {str}:
        return STRINGS
    # Timestamps only aware: the server would read a naive time's text in its session
    # time zone, the driver's binary form in this process's local one.
    if (
        target.startswith("TIMESTAMP")
        and kinds <= {datetime}
        and all(v.tzinfo is not None for v in values if v is not None)
    ):
        return TIMES
    return BINARY


def _pg_value(mode: str, values: Sequence[Any]) -> Any:
    """The parameter for ``values`` sent as ``mode`` (:func:`_pg_mode`)."""
    if mode == INTEGERS:
        if None not in values:
            return "{" + ",".join(map(str, values)) + "}"
        return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"
    if mode == STRINGS:
        return _literal_text(values)
    if mode == TIMES:
        # Aware datetimes (see _pg_mode): ISO 8601 with the offset.
        return _literal_text([None if v is None else v.isoformat() for v in values])
    return values


@functools.lru_cache(maxsize=128)
def unnest_sql(
    table: Table,
    columns: tuple[str, ...],
    same: tuple[str, ...],
    dialect: Dialect,
    suffix: str,
    modes: tuple[str, ...],
) -> str:
    """``INSERT INTO t (columns, same) SELECT u.c0, .., $k, .. FROM unnest($1::type[], ..)``
    for PostgreSQL (asyncpg's ``$n`` paramstyle): one array parameter per column of
    ``columns``, one scalar parameter per column of ``same``. ``modes`` says per
    column whether its array travels as text (cast ``::TEXT::type[]``) or in the
    driver's binary form (:data:`BINARY`), see :func:`_pg_mode`. With a ``suffix``
    (an ``ON CONFLICT`` clause) the rows are ordered by their position in the arrays."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in (*columns, *same))
    arrays = ", ".join(
        f"${i}{_pg_cast(table, c, dialect, True)}"
        if mode == BINARY
        else f"${i}::TEXT::{pg_type(table, c, dialect)}[]"
        for i, (c, mode) in enumerate(zip(columns, modes, strict=True), start=1)
    )
    scalars = [
        f"${i}{_pg_cast(table, c, dialect, False)}"
        for i, c in enumerate(same, start=len(columns) + 1)
    ]
    aliases = [f"c{i}" for i in range(len(columns))]
    selected = ", ".join([f"u.{a}" for a in aliases] + scalars)
    if suffix:
        source = f"unnest({arrays}) WITH ORDINALITY AS u({', '.join(aliases)}, ord)"
        sql = f"INSERT INTO {quote(table.name)} ({names}) SELECT {selected} FROM {source}"
        return f"{sql} ORDER BY u.ord {suffix}"
    source = f"unnest({arrays}) AS u({', '.join(aliases)})"
    return f"INSERT INTO {quote(table.name)} ({names}) SELECT {selected} FROM {source}"


@functools.lru_cache(maxsize=512)
def _sql(table: Table, names: tuple[str, ...], dialect: Dialect, suffix: str, rows: int) -> str:
    return insert_sql(table, names, dialect, suffix, rows)


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
    names = (*columns, *same)
    conn = await connection(session)
    dialect = conn.dialect
    procs = iter(_processors(table, names, dialect))
    converted = [_convert(next(procs), v) for v in columns.values()]
    scalars = []
    for value in same.values():
        proc = next(procs)
        scalars.append(value if proc is None else proc(value))
    if dialect.name == "postgresql":
        targets = _pg_types(table, tuple(columns), dialect)
        modes = tuple(_pg_mode(t, v) for t, v in zip(targets, converted, strict=True))
        sql = unnest_sql(table, tuple(columns), tuple(same), dialect, suffix, modes)
        # Chunks through the driver's executemany: asyncpg pipelines them (the server
        # inserts one while the next is sent).
        chunks = [
            (
                *[
                    _pg_value(m, v[start : start + PG_CHUNK])
                    for m, v in zip(modes, converted, strict=True)
                ],
                *scalars,
            )
            for start in range(0, count, PG_CHUNK)
        ]
        if len(chunks) == 1:
            await conn.exec_driver_sql(sql, chunks[0])
        else:
            await conn.exec_driver_sql(sql, chunks)
        return count
    converted.extend([value] * count for value in scalars)
    if dialect.name == "sqlite":
        # Multi-row VALUES: one statement (and one release of the GIL by sqlite3) per
        # few hundred rows instead of a step per row; the parameters are laid out
        # row-major by slice assignment, without building a tuple per row.
        width = len(names)
        flat: list[Any] = [None] * (count * width)
        for j, values in enumerate(converted):
            flat[j::width] = values
        per = max(1, SQLITE_PARAMETERS // width)
        for start in range(0, count, per):
            n = min(per, count - start)
            sql = _sql(table, names, dialect, suffix, n)
            await conn.exec_driver_sql(sql, tuple(flat[start * width : (start + n) * width]))
        return count
    rows = zip(*converted, strict=True)
    sql = _sql(table, names, dialect, suffix, 1)
    for _ in range(0, count, CHUNK):
        await conn.exec_driver_sql(sql, list(islice(rows, CHUNK)))
    return count


@functools.lru_cache(maxsize=32)
def _reserve_statement(tables: tuple[Table, ...], postgres: bool) -> TextClause:
    """One statement for the ids of several tables: on SQLite each table's highest id
    (a scalar subquery each), on PostgreSQL ``(which, nextval)`` rows, ``:n0``, ``:n1``,
    .. of each table's sequence. The sequence is looked up once per table (OFFSET 0
    keeps the subquery from being pulled up and evaluated per row): 20,000 ids in ~10 ms
    instead of ~50 ms. Built once per tuple of tables (parsing the text is most of what
    a small reservation costs)."""
    if not postgres:
        return text("SELECT " + ", ".join(f"(SELECT max(id) FROM {t.name})" for t in tables))
    return text(
        " UNION ALL ".join(
            f"SELECT {i} AS which, nextval(s.seq) FROM (SELECT CAST(pg_get_serial_sequence("
            f"'{t.name}', 'id') AS regclass) AS seq OFFSET 0) AS s"
            f" CROSS JOIN generate_series(1, :n{i})"
            for i, t in enumerate(tables)
        )
    )


async def reserve_ids_many(
    session: AsyncSession, wanted: Sequence[tuple[Table, int]]
) -> list[list[int]]:
    """New values of each ``(table, count)``'s integer ``id``, ascending, in the order
    given, for inserts that follow in the same DB transaction (nothing is read back
    after them); ONE statement however many tables (the withdrawal intake takes a
    batch's withdrawal ids and its holds' journal ids together). A table may appear
    once.

    PostgreSQL takes them from the id sequences (safe under concurrency; a rolled back
    transaction leaves a gap, as any insert would). SQLite continues after the highest
    id: the transaction holds the database's single writer lock from its ``BEGIN
    IMMEDIATE``, so no other writer can take them before the commit."""
    tables = tuple(t for t, _ in wanted)
    if len(set(tables)) != len(tables):
        raise ValueError("reserve_ids_many: a table given twice")
    if all(count <= 0 for _, count in wanted):
        return [[] for _ in wanted]
    conn = await connection(session)
    postgres = conn.dialect.name == "postgresql"
    statement = _reserve_statement(tables, postgres)
    if postgres:
        params = {f"n{i}": max(count, 0) for i, (_, count) in enumerate(wanted)}
        out: list[list[int]] = [[] for _ in wanted]
        for which, value in (await conn.execute(statement, params)).all():
            out[which].append(int(value))
        return [sorted(ids) for ids in out]
    highest = (await conn.execute(statement)).one()
    return [
        list(range(int(top or 0) + 1, int(top or 0) + count + 1)) if count > 0 else []
        for top, (_, count) in zip(highest, wanted, strict=True)
    ]


async def reserve_ids(session: AsyncSession, table: Table, count: int) -> list[int]:
    """``count`` new ids of ``table`` (:func:`reserve_ids_many` for one table)."""
    return (await reserve_ids_many(session, [(table, count)]))[0]
