"""SQLite WAL checkpoints on a thread of their own, not inside the writer's commits.

By default SQLite checkpoints from the committing connection: the commit that takes
the write-ahead log past 1,000 pages also copies those pages into the database file
and syncs it. The daemon's writer runs its statements on the event loop's thread
(store/sqlite_driver.py), so that copy held every request, tick and lease round
behind one commit. On a large database each commit dirties index pages all over the
file, the copies come more often and take longer. Measured on the scale bench at
1,000,000 deposits (bench/README.md): the intake's p50 at 500 requests/s was
77-82 ms with checkpoints in the commits, 30 ms with none during the run.

The daemon's writer therefore turns the automatic checkpoint off (``PRAGMA
wal_autocheckpoint=0``, :func:`watcher.store.db.create_engine`) and
:class:`WalCheckpointer` runs ``PRAGMA wal_checkpoint(PASSIVE)`` every second on its
own connection, in aiosqlite's worker thread: SQLite releases the GIL while it copies,
so the loop keeps serving. A passive checkpoint never waits for a lock and never
blocks the writer; it copies what no open read still needs, and the writer starts the
log over once everything was copied. What is durable when is unchanged: a commit is
in the log, the log is synced and copied by the checkpoint. The checkpointer's
connection has SQLite's default ``synchronous=FULL``, so its checkpoints sync the
log before copying and the database file after.

Operator commands and tests keep SQLite's automatic checkpoint (their writes are few
and they do not run the daemon's scheduler); closing the last connection of a file
checkpoints it as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

#: Seconds between two checkpoints of the daemon's database file.
CHECKPOINT_SECONDS = 1.0


@dataclass(frozen=True)
class Checkpoint:
    busy: bool  # another checkpoint was running (or a reader's lock): try again later
    log_frames: int  # frames in the log
    copied_frames: int  # of which now in the database file


class WalCheckpointer:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None

    async def run(self) -> Checkpoint:
        """One passive checkpoint, in the connection's worker thread."""
        if self._conn is None:
            self._conn = await aiosqlite.connect(self.path, isolation_level=None)
        async with self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)") as cur:
            row = await cur.fetchone()
        assert row is not None
        return Checkpoint(bool(row[0]), int(row[1]), int(row[2]))

    async def tick(self) -> None:
        """The scheduler's job: one checkpoint (the daemon's runner logs a failure)."""
        await self.run()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
