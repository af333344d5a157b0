"""The audit reader (store/db.py create_audit_engine): on a SQLite file, the reconciler's
whole-table reads run on a second connection that reads one snapshot without the writer
lock, so writers go on meanwhile; it cannot write. PostgreSQL needs none."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from watcher.store import ledger
from watcher.store.db import SessionFactory, create_audit_engine, session_factory
from watcher.store.models import Account


@pytest.mark.asyncio
async def test_audit_reads_a_snapshot_while_the_writer_commits(
    db_url: str, sessions: SessionFactory
) -> None:
    audit = create_audit_engine(db_url)
    if db_url.startswith("postgresql"):
        assert audit is None  # sessions there never block each other for reads
        return
    assert audit is not None
    try:
        async with sessions.begin() as s:
            await ledger.create_accounts(s, ["0x" + "11" * 20])
        readers = session_factory(audit)
        async with readers() as r:
            before = await r.scalar(select(func.count()).select_from(Account))
            assert before == 1
            # The writer commits while the audit's transaction is open: it does not
            # wait for it (on the writer's own single connection it would wait).
            async with asyncio.timeout(5):
                async with sessions.begin() as s:
                    await ledger.create_accounts(s, ["0x" + "22" * 20])
            # The audit still sees its snapshot.
            assert await r.scalar(select(func.count()).select_from(Account)) == 1
        async with readers() as r:
            assert await r.scalar(select(func.count()).select_from(Account)) == 2
            with pytest.raises(OperationalError, match=r"readonly|read-only|query_only"):
                await ledger.create_accounts(r, ["0x" + "33" * 20])
    finally:
        await audit.dispose()
