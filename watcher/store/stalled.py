"""Sessions of the watcher stalled inside a transaction, waiting for their client.

A process stopped in the middle of a transaction (SIGSTOP, a frozen VM, a laptop
lid) keeps its row locks until it resumes. PostgreSQL ends such a session by itself
when it is *idle* in the transaction (``idle_in_transaction_session_timeout``, set on
every connection by :func:`watcher.store.db.create_engine`), but not when the client
stopped between a statement's messages and their Sync (a pipelined ``executemany``,
a large message sent in parts): that backend stays ``active``, waiting on
``ClientRead``, and no server timeout applies (measured on PostgreSQL 15: neither
``idle_in_transaction_session_timeout`` nor ``statement_timeout`` fires). A payout
row locked so stays locked, and the sender that took the role over skips it (``FOR
UPDATE SKIP LOCKED``) for as long as the old holder is stopped.

:func:`end_stalled` ends those sessions with the same bound as the server's own
timeout: a session of the watcher (its application name) of this database, inside a
transaction, active and waiting for its client, whose last statement began more than
``older_than`` seconds ago (each Bind or Execute message restarts that clock, so a long
pipeline that is still being fed is never taken for a stalled one). What it was doing
is rolled back by the server, exactly as after the idle timeout: nothing it had not
committed is lost, and its client finds its connection closed if it ever resumes.

Only sessions the database lets this role see and signal are considered: those of the
same role (or any with ``pg_read_all_stats`` and ``pg_signal_backend``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.store.db import APPLICATION_NAME

_END_STALLED = text(
    """
    SELECT pid, application_name,
           extract(epoch FROM clock_timestamp() - query_start) AS waited,
           pg_terminate_backend(pid) AS ended
    FROM pg_stat_activity
    WHERE datname = current_database()
      AND pid <> pg_backend_pid()
      AND application_name LIKE :prefix
      AND state = 'active'
      AND wait_event = 'ClientRead'
      AND xact_start IS NOT NULL
      AND query_start < clock_timestamp() - make_interval(secs => :older_than)
    """
)


@dataclass(frozen=True)
class Stalled:
    pid: int
    application_name: str
    waited_seconds: float
    ended: bool


async def end_stalled(conn: AsyncConnection, older_than: float) -> list[Stalled]:
    """End this database's watcher sessions stalled inside a transaction for more than
    ``older_than`` seconds (see the module's docstring); the ones found. PostgreSQL
    only (SQLite has one process per database file)."""
    rows = await conn.execute(
        _END_STALLED,
        {"prefix": f"{APPLICATION_NAME}%", "older_than": float(older_than)},
    )
    return [
        Stalled(int(pid), str(name), float(waited), bool(ended))
        for pid, name, waited, ended in rows.all()
    ]
