"""The daemon's SQLite writer leaves the write-ahead log's checkpoints to the
checkpointer's own connection (store/checkpoint.py): its commits never copy the log
into the database file, whatever the log's size; the checkpointer copies all of it,
and the writer then starts the log over. Without the setting, SQLite's commits
checkpoint by themselves every ~1,000 pages."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from watcher.store.checkpoint import WalCheckpointer
from watcher.store.db import create_engine, sqlite_file

PAGES = 2_000  # frames written: twice SQLite's automatic checkpoint threshold


async def write_pages(engine: AsyncEngine, pages: int) -> None:
    """``pages`` pages of new rows, in transactions of 40 (each a commit)."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS filler (b BLOB)"))
    for _ in range(pages // 40):
        async with engine.begin() as conn:
            for _ in range(40):
                await conn.execute(text("INSERT INTO filler VALUES (randomblob(3900))"))


async def test_the_daemon_writer_leaves_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'daemon.db'}"
    path = sqlite_file(url)
    assert path is not None
    engine = create_engine(url, checkpoint_in_commits=False)
    checkpointer = WalCheckpointer(path)
    try:
        await write_pages(engine, PAGES)
        first = await checkpointer.run()
        # Every frame written since the start is still in the log: no commit copied it.
        assert first.log_frames >= PAGES and first.copied_frames == first.log_frames
        assert not first.busy
        await write_pages(engine, 80)  # the writer starts the copied log over
        second = await checkpointer.run()
        assert 80 <= second.log_frames < 200 and second.copied_frames == second.log_frames
    finally:
        await checkpointer.close()
        await engine.dispose()


async def test_other_writers_keep_sqlites_own_checkpoints(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    path = sqlite_file(url)
    assert path is not None
    engine = create_engine(url)  # an operator command's or a test's engine
    checkpointer = WalCheckpointer(path)
    try:
        await write_pages(engine, PAGES)
        found = await checkpointer.run()
        assert found.log_frames < 1_100  # the commits checkpointed every ~1,000 pages
    finally:
        await checkpointer.close()
        await engine.dispose()


def test_only_a_sqlite_file_has_one() -> None:
    assert sqlite_file("sqlite+aiosqlite:////var/lib/watcher/watcher.db") == (
        "/var/lib/watcher/watcher.db"
    )
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_file("postgresql+asyncpg://u@db/watcher") is None
