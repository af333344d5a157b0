"""Rows by composite key, many keys in one statement, found through the index.

``(a, b) IN ((?, ?), (?, ?), ...)`` is the obvious way to ask for many composite keys
at once, and SQLite plans it as a scan of the whole table with the list checked per
row (``EXPLAIN QUERY PLAN``: ``SCAN balances``): the withdrawal intake's replay check
and balance reads took ~0.4 ms each with ~3,000 rows, and would grow with the table.
An OR of equalities is searched in the index, but building it costs SQLAlchemy more
than the scan did.

So the keys travel as *one* parameter, joined to the table: a JSON array read by
``json_each`` on SQLite (``CROSS JOIN``: the keys are the outer loop, each one a
search in the primary or unique index), one array per key column read by ``unnest``
on PostgreSQL. The statement text depends only on the table and columns, so it is
compiled once, whatever the number of keys. Duplicate keys are dropped first (a join
would return their row twice).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.selectable import TextualSelect

from watcher.store.prepared import connection


@dataclass(frozen=True)
class KeyColumn:
    name: str
    pg_array: str  # the PostgreSQL array type its values are sent as: bigint[], text[], ...
    pg_cast: str | None = None  # then cast to this array type (text[] -> numeric[])


def by_keys(
    dialect: str,
    table: str,
    key: Sequence[KeyColumn],
    returned: Sequence[str],
) -> TextClause:
    """``SELECT returned FROM table`` for the rows whose ``key`` is one of ``:keys``
    (bind with :func:`keys_params`). Names come from code, never from input."""
    cols = ", ".join(f"t.{name}" for name in returned)
    if dialect == "postgresql":
        arrays = ", ".join(
            f"CAST(:k{i} AS {c.pg_array})" + (f"::{c.pg_cast}" if c.pg_cast else "")
            for i, c in enumerate(key)
        )
        names = ", ".join(f"k{i}" for i in range(len(key)))
        on = " AND ".join(f"t.{c.name} = k.k{i}" for i, c in enumerate(key))
        return text(f"SELECT {cols} FROM unnest({arrays}) AS k({names}) JOIN {table} AS t ON {on}")
    on = " AND ".join(f"t.{c.name} = json_extract(k.value, '$[{i}]')" for i, c in enumerate(key))
    return text(f"SELECT {cols} FROM json_each(:keys) AS k CROSS JOIN {table} AS t ON {on}")


def keys_params(dialect: str, width: int, keys: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    unique = sorted(set(keys))
    for k in unique:
        if len(k) != width:
            raise ValueError(f"a key of {len(k)} values for {width} columns")
    if dialect == "postgresql":
        return {f"k{i}": [k[i] for k in unique] for i in range(width)}
    return {"keys": json.dumps([list(k) for k in unique])}


async def select_by_keys(
    session: AsyncSession,
    table: str,
    key: Sequence[KeyColumn],
    returned: Sequence[ColumnClause[Any]],
    keys: Sequence[tuple[Any, ...]],
) -> list[Any]:
    """The rows of ``table`` whose ``key`` columns equal one of ``keys``; the
    ``returned`` columns typed as the model's (so amounts come back as ``int``). Runs on
    the session's connection (Core): pending ORM changes are not flushed first."""
    if not keys:
        return []
    conn = await connection(session)
    dialect = conn.dialect.name
    stmt = _typed_by_keys(dialect, table, tuple(key), tuple(returned))
    rows = await conn.execute(stmt, keys_params(dialect, len(key), keys))
    return list(rows.all())


def rows_by_keys(dialect: str, table: Table, key: Sequence[KeyColumn]) -> TextualSelect:
    """:func:`by_keys` returning every column of ``table``, typed as the model's, for
    ``select(Model).from_statement(...)`` (ORM objects by key; bind with
    :func:`keys_params`). Built once per shape."""
    return _typed_by_keys(dialect, table.name, tuple(key), tuple(table.c))


@functools.lru_cache(maxsize=64)
def _typed_by_keys(
    dialect: str,
    table: str,
    key: tuple[KeyColumn, ...],
    returned: tuple[ColumnClause[Any], ...],
) -> TextualSelect:
    """:func:`by_keys` typed by ``returned``, built once per shape (its text is parsed
    for binds when built: most of what a small lookup cost)."""
    return by_keys(dialect, table, key, [c.name for c in returned]).columns(*returned)
