"""Engine and session factory for SQLite (embedded default) and PostgreSQL.

On SQLite every transaction starts with ``BEGIN IMMEDIATE``: it takes the database's
single writer lock up front, so a risk decision and the hold it leads to can never
interleave with another writer (the SQLite counterpart of PostgreSQL's
``SELECT ... FOR UPDATE`` on the account row). WAL keeps readers unblocked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

SessionFactory = async_sessionmaker[AsyncSession]


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL; None for PostgreSQL or in-memory SQLite
    (where a second connection would be another database)."""
    if not is_sqlite(url):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or "mode=memory" in url:
        return None
    return database


#: The server ends a session idle inside a transaction after this long (below); and
#: :mod:`watcher.store.stalled` ends one of ours waiting that long for its client in the
#: middle of a statement sequence, where that timeout does not apply.
IDLE_IN_TRANSACTION_MS = 15_000
#: Every session of the watcher's names itself so (``watcher <replica id>`` for a
#: daemon), which is how :mod:`watcher.store.stalled` tells its own sessions from others'.
APPLICATION_NAME = "watcher"


def create_engine(
    url: str,
    *,
    echo: bool = False,
    application_name: str = APPLICATION_NAME,
    checkpoint_in_commits: bool = True,
) -> AsyncEngine:
    """The database engine. ``checkpoint_in_commits=False`` (the daemon, which runs
    :class:`watcher.store.checkpoint.WalCheckpointer` instead): a SQLite writer whose
    commits never checkpoint the write-ahead log (see store/checkpoint.py)."""
    if is_sqlite(url):
        if (database := sqlite_file(url)) is not None:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # One connection per process: SQLite has one writer anyway, and every
        # transaction here is BEGIN IMMEDIATE. Waiting in SQLAlchemy's asyncio pool
        # queue is FIFO and costs nothing; waiting in SQLite's busy handler sleeps
        # in growing steps (32 concurrent requests: p99 of seconds). Statements run
        # on the loop's thread (store/sqlite_driver.py); a lock held by another
        # process (`watcher withdrawals approve`, the CLI) is waited for in the
        # driver's worker thread, up to 30 s, so the connection's busy timeout is 0.
        from watcher.store.sqlite_driver import dbapi

        engine = create_async_engine(
            url,
            echo=echo,
            module=dbapi(),  # statements on the loop's thread, busy waits in a worker
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
        )

        _sqlite_session_setup(
            engine,
            (
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=NORMAL",
                "PRAGMA foreign_keys=ON",
                "PRAGMA busy_timeout=0",
                *(() if checkpoint_in_commits else ("PRAGMA wal_autocheckpoint=0",)),
            ),
            begin="BEGIN IMMEDIATE",
        )
        return engine
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=10,
        max_overflow=20,
        # No pool_pre_ping: on asyncpg it is three round trips (BEGIN, an empty query,
        # ROLLBACK) before every transaction; _drop_closed_on_checkout does its job.
        # A replica stopped in the middle of a transaction (SIGSTOP, a frozen VM) would
        # hold its row locks, and with them the roles' next holder, forever: the server
        # ends such a session after this long (no transaction here waits between its
        # statements for anything but the database itself). Stopped between a
        # statement's messages and their Sync instead, it is not "idle" to the server:
        # store/stalled.py ends those (it finds them by the application name).
        connect_args={
            "server_settings": {
                "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS),
                "application_name": application_name[:63],
            }
        },
    )
    _drop_closed_on_checkout(engine)
    return engine


def _drop_closed_on_checkout(engine: AsyncEngine) -> None:
    """A pooled PostgreSQL connection whose server end is gone (the server restarted,
    ``pg_terminate_backend``, a proxy closed it) is replaced at checkout instead of
    failing the first statement on it. The driver learns of the close while the
    connection sits in the pool (the event loop reads its socket), so checking its
    flag costs nothing; ``pool_pre_ping`` asked the server, three round trips before
    every transaction (3 of the 18 a withdrawal intake batch made). A connection
    lost without a word (a silent network cut) fails its next statement, and the
    pool then replaces every connection older than that failure, as with any
    disconnect error."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        driver = record.driver_connection
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the server closed this pooled connection")


def create_audit_engine(url: str) -> AsyncEngine | None:
    """A second SQLite connection for long read-only audits (the reconciler's ledger
    integrity check and dust sum, which read whole tables): ``BEGIN`` (deferred) instead
    of ``BEGIN IMMEDIATE``, so it reads a WAL snapshot without taking the writer lock,
    and ``query_only``, so it cannot write. On the single writer connection such an
    audit held the lock for its whole run (seconds with a million deposits), and every
    withdrawal request, listener step and lease round waited behind it (issue 22).
    None where there is nothing to gain: PostgreSQL (its sessions never block each
    other for reads) and in-memory SQLite (a second connection is another database)."""
    if sqlite_file(url) is None:
        return None
    # Plain aiosqlite, not the writer's inline driver: each statement runs in
    # aiosqlite's worker thread, and SQLite releases the GIL while it reads, so the
    # event loop keeps serving while an audit's range is read (inline, a range of
    # 5,000 rows held the loop for milliseconds at a time). A lock wait (rare for a
    # WAL reader) sleeps in that thread too.
    engine = create_async_engine(
        url, pool_size=1, max_overflow=0, pool_timeout=120, connect_args={"timeout": 30}
    )

    _sqlite_session_setup(engine, ("PRAGMA query_only=ON",), begin="BEGIN")
    return engine


def _sqlite_session_setup(engine: AsyncEngine, pragmas: tuple[str, ...], *, begin: str) -> None:
    """Each new SQLite connection of ``engine`` runs ``pragmas`` and gets 16 MiB of page
    cache; SQLAlchemy, not the driver, emits ``begin`` at each transaction's start (the
    writer's ``BEGIN IMMEDIATE``, the audit reader's deferred ``BEGIN``)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # no implicit BEGIN from the driver
        cur = dbapi_conn.cursor()
        for pragma in pragmas:
            cur.execute(pragma)
        # 16 MiB of page cache (default 2 MiB): a backfill step writes ~80,000 rows
        # and their index entries in one transaction; with the default cache SQLite
        # spills dirty pages to the WAL mid-transaction and reads them back.
        cur.execute("PRAGMA cache_size=-16384")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


class DatabaseProblem(Exception):
    """The database cannot be read, or has no watcher schema (not the daemon's)."""


async def require_schema(engine: AsyncEngine) -> None:
    """For operator commands beside the daemon: fail with a plain message (password
    hidden) when the database is unreachable or was never migrated."""
    shown = engine.url.render_as_string(hide_password=True)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseProblem(f"cannot read the database {shown}: {type(exc).__name__}") from None
    if "alembic_version" not in tables:
        raise DatabaseProblem(
            f"the database {shown} has no watcher schema: it is not the daemon's database "
            "(give the same --config / --database-url / WATCHER_DATABASE_URL as "
            "`watcher run`) or it was never migrated (`watcher db upgrade`)"
        )


class FencedSession(Session):
    """PostgreSQL sessions: a commit inside a leased role first passes the role's fence
    (store/leases.py), in the same transaction."""


@event.listens_for(FencedSession, "before_commit")
def _fence_before_commit(session: Session) -> None:
    from watcher.store.leases import guard

    guard(session)


def session_factory(engine: AsyncEngine) -> SessionFactory:
    if engine.dialect.name == "postgresql":
        return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=FencedSession)
    return async_sessionmaker(engine, expire_on_commit=False)
