"""Leases and fencing on the real databases (store/leases.py): takeover only after
expiry, a token that grows on every takeover, and a stale holder's commit refused in
its own transaction (PostgreSQL; SQLite has one daemon per file)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import runs_until_cancelled
from watcher.store import leases
from watcher.store.alarms import AlarmKind, raise_alarm
from watcher.store.db import SessionFactory
from watcher.store.models import Alarm


async def take(
    engine: AsyncEngine, role: str, me: str, token: int | None, ttl: float
) -> int | None:
    async with engine.connect() as conn:
        return await leases.acquire(conn, role, me, token, ttl)


async def test_one_holder_until_expiry_and_token_grows(engine: AsyncEngine) -> None:
    a = await take(engine, "sender:devnet", "A", None, 0.6)
    assert a is not None
    assert await take(engine, "sender:devnet", "B", None, 0.6) is None  # held by A
    assert await take(engine, "sender:devnet", "A", a, 0.6) == a  # renewal keeps it
    await asyncio.sleep(0.8)
    b = await take(engine, "sender:devnet", "B", None, 5)
    assert b == a + 1  # a takeover
    assert await take(engine, "sender:devnet", "A", a, 0.6) is None  # A's renewal too late
    async with engine.connect() as conn:
        (view,) = await leases.all_leases(conn)
    assert (view.holder, view.token, view.held) == ("B", b, True)
    async with engine.connect() as conn:
        await leases.release(conn, "sender:devnet", "B", b)
    async with engine.connect() as conn:
        (view,) = await leases.all_leases(conn)
    assert not view.held
    c = await take(engine, "sender:devnet", "A", None, 5)  # at once after a release
    assert c == b + 1


async def test_stale_holder_cannot_commit(engine: AsyncEngine, sessions: SessionFactory) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("fencing guards PostgreSQL replicas; SQLite runs one daemon per file")
    a = await take(engine, "notifier", "A", None, 0.5)
    assert a is not None

    async def write(fence: leases.Fence, key: str) -> None:
        token = leases.CURRENT_FENCE.set(fence)
        try:
            async with sessions.begin() as s:
                await raise_alarm(s, AlarmKind.RPC_DOWN, key, "test")
        finally:
            leases.CURRENT_FENCE.reset(token)

    await write(leases.Fence("notifier", "A", a), "while-held")  # passes
    await asyncio.sleep(0.7)
    b = await take(engine, "notifier", "B", None, 5)
    assert b == a + 1
    with pytest.raises(leases.Fenced):
        await write(leases.Fence("notifier", "A", a), "after-takeover")
    await write(leases.Fence("notifier", "B", b), "new-holder")
    # Expired but not taken: still refused (the database's clock decides).
    c = await take(engine, "reconciler", "A", None, 0.3)
    assert c is not None
    await asyncio.sleep(0.5)
    with pytest.raises(leases.Fenced):
        await write(leases.Fence("reconciler", "A", c), "expired")
    async with sessions() as s:
        keys = set(await s.scalars(select(Alarm.key)))
        assert await s.scalar(select(func.count()).select_from(Alarm)) == 2
    assert keys == {"while-held", "new-holder"}


async def test_takeover_waits_for_a_commit_in_flight(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    """The guard share-locks the lease row until the commit: a takeover cannot slip
    between the guard and the commit."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    a = await take(engine, "tracker:devnet", "A", None, 0.3)
    assert a is not None
    fence = leases.Fence("tracker:devnet", "A", a)
    async with sessions() as s:
        await s.begin()
        await s.execute(leases.GUARD_SQL, {"role": "tracker:devnet", "holder": "A", "token": a})
        await asyncio.sleep(0.5)  # the lease expires while the row is share-locked
        assert await take(engine, "tracker:devnet", "B", None, 5) is None  # lock_timeout
        assert fence.token == a
        await s.rollback()
    assert await take(engine, "tracker:devnet", "B", None, 5) == a + 1


async def test_single_node_takes_a_dead_daemons_rows(engine: AsyncEngine) -> None:
    """SQLite under its flock: a restarted daemon (new replica id) takes the rows a
    killed one left unexpired, at once."""
    if engine.dialect.name != "sqlite":
        pytest.skip("single-node mode is SQLite's")
    old = await take(engine, "deposits:devnet", "host-1", None, 60)
    async with engine.connect() as conn:
        new = await leases.acquire(conn, "deposits:devnet", "host-2", None, 60, single_node=True)
    assert old is not None and new == old + 1


async def test_replicas_migrating_together(db_url: str) -> None:
    """Several replicas starting at once on one fresh database: one migrates, the
    others wait for it (PostgreSQL advisory lock) and find nothing left to do."""
    from sqlalchemy import text

    from watcher.store.db import create_engine
    from watcher.store.migrate import upgrade

    engines = [create_engine(db_url) for _ in range(3)]
    try:
        async with engines[0].begin() as conn:  # back to 0007's schema
            for index in (
                "ix_deposits_account_seen",
                "ix_withdrawals_account_created",
                "ix_journal_transactions_account_kind_created",
                "ix_withdrawals_state_chain_block",
            ):
                await conn.execute(text(f"DROP INDEX {index}"))
            await conn.execute(text("CREATE INDEX ix_withdrawals_state ON withdrawals (state)"))
            await conn.execute(text("CREATE INDEX ix_deposits_account ON deposits (account)"))
            await conn.execute(
                text(
                    "CREATE INDEX ix_journal_transactions_account_id"
                    " ON journal_transactions (account_id)"
                )
            )
            await conn.execute(text("DROP TABLE IF EXISTS leases"))
            await conn.execute(text("DROP TABLE IF EXISTS vault_states"))
            await conn.execute(text("ALTER TABLE withdrawals DROP COLUMN payout_deadline"))
            await conn.execute(text("ALTER TABLE withdrawals DROP COLUMN cosignatures"))
            await conn.execute(text("UPDATE alembic_version SET version_num = '0007'"))
        await asyncio.gather(*(upgrade(e) for e in engines))
        async with engines[0].connect() as conn:
            assert await conn.scalar(text("SELECT version_num FROM alembic_version")) == "0011"
            assert await conn.scalar(text("SELECT count(*) FROM leases")) == 0
    finally:
        for e in engines:
            await e.dispose()


async def test_role_without_holder_over_budget_alarms(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    """Any replica (an API-only one too) raises lease_unheld once a role has had no
    holder for longer than its budget, once per episode."""
    from watcher.metrics import Metrics
    from watcher.services.leases import LeaseKeeper

    gone = await take(engine, "sender:devnet:0xabc", "dead-replica", None, 0.2)
    assert gone is not None
    keeper = LeaseKeeper(
        engine=engine,
        sessions=sessions,
        replica_id="api-1",
        lease_seconds=6,
        unheld_budget_seconds=1,
        metrics=Metrics(),
        chain=False,
    )
    try:
        await keeper.round()
        async with sessions() as s:
            assert await s.scalar(select(func.count()).select_from(Alarm)) == 0  # not yet
        await asyncio.sleep(1.3)
        await keeper.round()
        await keeper.round()
        async with sessions() as s:
            alarms = list(await s.scalars(select(Alarm)))
        assert [(a.kind, a.key, a.count) for a in alarms] == [
            ("lease_unheld", "sender:devnet:0xabc", 1)
        ]
        assert keeper.held_roles() == []  # an API replica takes nothing
    finally:
        await keeper.stop()


async def test_a_cancelled_leased_tick_returns_after_its_inner_tick_unwound(
    engine: AsyncEngine, sessions: SessionFactory
) -> None:
    """A stop cancels the scheduler's tick; the role's own tick runs in a task of its
    own, and must be off the database before the stop closes the engines."""
    from watcher.metrics import Metrics
    from watcher.services.leases import LeasedService, LeaseKeeper

    unwound = asyncio.Event()

    class Slow:
        name = "slow"
        interval_seconds = 1.0

        async def tick(self) -> None:
            await runs_until_cancelled(unwound)

    keeper = LeaseKeeper(
        engine=engine,
        sessions=sessions,
        replica_id="chain-1",
        lease_seconds=6,
        unheld_budget_seconds=60,
        metrics=Metrics(),
        chain=True,
    )
    leased = LeasedService(Slow(), keeper, "slow:devnet")
    try:
        await keeper.round()
        assert keeper.fence("slow:devnet") is not None
        outer = asyncio.create_task(leased.tick())
        await asyncio.sleep(0.2)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        assert unwound.is_set()
    finally:
        await keeper.stop()
