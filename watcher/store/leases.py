"""Leases of the chain roles, and the fence every leased write passes.

A lease row per role (``leases``): ``holder`` (a replica id), ``token`` (grows by one
on every acquisition that is not a renewal) and ``expires_at``, always on the
DATABASE's clock (``clock_timestamp()``), never a replica's. Acquisition is one
conditional UPDATE: the row is taken when it has expired, or renewed when this
replica holds it under the token it believes it has.

Fencing: while a leased role runs, :data:`CURRENT_FENCE` names (role, holder, token).
On PostgreSQL every transaction that commits in that context first runs
:data:`GUARD_SQL` in the same transaction (``db.py`` installs it as a ``before_commit``
hook): the lease row must still be this holder's, under this token, unexpired, and it
is share-locked until the commit, so a takeover (an UPDATE of that row) waits for the
commit or comes strictly before it and makes the guard fail. A replica paused past
its lease (SIGSTOP, GC, a network partition) and resumed therefore cannot commit a
nonce, a signed attempt, a cursor step or a settlement: the commit raises
:class:`Fenced` and the transaction rolls back. One statement per transaction, not
per row. On SQLite (one daemon per file, flock) there is no guard: the one process
holds every lease.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from watcher.store.models import Lease, table_of, utcnow


class Fenced(Exception):
    """A leased role's write was refused: its lease is no longer this replica's."""


@dataclass(frozen=True)
class Fence:
    role: str
    holder: str
    token: int


CURRENT_FENCE: ContextVar[Fence | None] = ContextVar("watcher_fence", default=None)

GUARD_SQL = text(
    "SELECT 1 FROM leases WHERE role = :role AND holder = :holder AND token = :token "
    "AND expires_at > clock_timestamp() FOR SHARE"
)

_ENSURE_PG = text(
    "INSERT INTO leases (role, holder, token, expires_at) "
    "VALUES (:role, NULL, 0, clock_timestamp()) ON CONFLICT (role) DO NOTHING"
)
# Renewal (same holder, same token, not expired) keeps the token; anything else that
# matches (an expired row) is a takeover: token + 1.
_ACQUIRE_PG = text(
    """
    UPDATE leases SET
      token = CASE WHEN holder = :holder AND token = :token AND expires_at > clock_timestamp()
                   THEN token ELSE token + 1 END,
      acquired_at = CASE WHEN holder = :holder AND token = :token
                              AND expires_at > clock_timestamp()
                         THEN acquired_at ELSE clock_timestamp() END,
      holder = :holder,
      expires_at = clock_timestamp() + make_interval(secs => :ttl)
    WHERE role = :role
      AND (expires_at <= clock_timestamp()
           OR (holder = :holder AND token = :token AND expires_at > clock_timestamp()))
    RETURNING token
    """
)
_RELEASE_PG = text(
    "UPDATE leases SET holder = NULL, expires_at = clock_timestamp() "
    "WHERE role = :role AND holder = :holder AND token = :token"
)


def guard(session: Session) -> None:
    """The fence check, in ``session``'s transaction (sync: called from the session's
    ``before_commit`` hook). No fence in context: nothing to check."""
    fence = CURRENT_FENCE.get()
    if fence is None:
        return
    found = session.execute(
        GUARD_SQL, {"role": fence.role, "holder": fence.holder, "token": fence.token}
    ).first()
    if found is None:
        raise Fenced(
            f"lease {fence.role!r} is no longer held by {fence.holder} under token "
            f"{fence.token}: write refused"
        )


async def acquire(
    conn: AsyncConnection,
    role: str,
    holder: str,
    token: int | None,
    ttl_seconds: float,
    *,
    single_node: bool = False,
) -> int | None:
    """Take or renew ``role`` for ``holder``; the token held now, or None if another
    replica holds it (or its row is locked by a commit in flight: try again later).
    ``token`` is the one this holder believes it has (None: it holds nothing).
    ``single_node`` (SQLite under its flock: no other daemon can be alive) takes the
    role even from an unexpired row, left by a daemon that was killed."""
    if conn.dialect.name == "postgresql":
        try:
            async with conn.begin():
                await conn.execute(text("SET LOCAL lock_timeout = '500ms'"))
                await conn.execute(_ENSURE_PG, {"role": role})
                got = await conn.scalar(
                    _ACQUIRE_PG,
                    {"role": role, "holder": holder, "token": token, "ttl": float(ttl_seconds)},
                )
        except DBAPIError as exc:
            if _sqlstate(exc) == LOCK_NOT_AVAILABLE:
                return None  # a holder's commit in flight has the row: not ours now
            raise
        return int(got) if got is not None else None
    return await _acquire_sqlite(conn, role, holder, token, ttl_seconds, single_node)


LOCK_NOT_AVAILABLE = "55P03"


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code is None and orig is not None and orig.__cause__ is not None:
        code = getattr(orig.__cause__, "sqlstate", None)
    return str(code) if code is not None else None


async def _acquire_sqlite(
    conn: AsyncConnection,
    role: str,
    holder: str,
    token: int | None,
    ttl_seconds: float,
    single_node: bool,
) -> int | None:
    # One daemon per SQLite file (flock): the row only shows who runs what.
    now = utcnow()
    table = table_of(Lease)
    async with conn.begin():
        row = (await conn.execute(select(table).where(table.c.role == role))).first()
        expires = now + timedelta(seconds=ttl_seconds)
        if row is None:
            await conn.execute(
                table.insert().values(
                    role=role, holder=holder, token=1, expires_at=expires, acquired_at=now
                )
            )
            return 1
        renewal = row.holder == holder and row.token == token and row.expires_at > now
        taken = row.expires_at > now and row.holder not in (None, holder)
        if not renewal and taken and not single_node:
            return None
        new = row.token if renewal else row.token + 1
        values: dict[str, Any] = {"holder": holder, "token": new, "expires_at": expires}
        if not renewal:
            values["acquired_at"] = now
        await conn.execute(table.update().where(table.c.role == role).values(**values))
        return int(new)


async def renew_all(conn: AsyncConnection, holder: str, ttl_seconds: float) -> None:
    """SQLite (one daemon per file): push the expiry of every lease ``holder`` has, in
    one transaction."""
    table = table_of(Lease)
    async with conn.begin():
        await conn.execute(
            table.update()
            .where(table.c.holder == holder)
            .values(expires_at=utcnow() + timedelta(seconds=ttl_seconds))
        )


async def release(conn: AsyncConnection, role: str, holder: str, token: int) -> None:
    """Give ``role`` up at once (clean stop): the next replica need not wait for expiry."""
    params = {"role": role, "holder": holder, "token": token}
    async with conn.begin():
        if conn.dialect.name == "postgresql":
            await conn.execute(_RELEASE_PG, params)
        else:
            table = table_of(Lease)
            await conn.execute(
                table.update()
                .where(table.c.role == role, table.c.holder == holder, table.c.token == token)
                .values(holder=None, expires_at=utcnow())
            )


@dataclass(frozen=True)
class LeaseView:
    role: str
    holder: str | None
    token: int
    expires_at: datetime
    acquired_at: datetime | None
    now: datetime  # the database's clock when read

    @property
    def held(self) -> bool:
        return self.holder is not None and self.expires_at > self.now

    @property
    def unheld_seconds(self) -> float:
        """How long the role has had no holder (0 while held)."""
        return 0.0 if self.held else max(0.0, (self.now - self.expires_at).total_seconds())


async def all_leases(conn: AsyncConnection) -> list[LeaseView]:
    table = table_of(Lease)
    rows = (await conn.execute(select(table).order_by(table.c.role))).all()
    if conn.dialect.name == "postgresql":
        now = await conn.scalar(text("SELECT clock_timestamp()"))
    else:
        now = utcnow()
    return [
        LeaseView(
            role=r.role,
            holder=r.holder,
            token=int(r.token),
            expires_at=r.expires_at,
            acquired_at=r.acquired_at,
            now=now,
        )
        for r in rows
    ]
