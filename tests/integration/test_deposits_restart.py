"""Restart safety: a tick cut at an await point inside its DB transaction (what a
SIGKILL or a cancelled task does) leaves nothing behind; the restarted listener
credits every deposit exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from tests.fixtures_chain import DevnetFactory
from tests.integration.deposit_support import (
    Chain,
    addr,
    assert_ledger_consistent,
    cross,
    deposit_rows,
    make_listener,
    make_settings,
)
from watcher.store import deposits as deposits_store
from watcher.store.db import SessionFactory
from watcher.store.models import JournalTransaction, NetworkCursor


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def cut_inside(monkeypatch: pytest.MonkeyPatch, tick: Callable[[], Awaitable[None]]) -> None:
    """Run ``tick`` until it has posted journal entries inside its transaction, then
    cancel it there, as a kill would."""
    reached = asyncio.Event()
    original = deposits_store.post_pairs

    async def post_then_hang(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        reached.set()
        await asyncio.Event().wait()  # never returns: we are "killed" here
        return result

    monkeypatch.setattr(deposits_store, "post_pairs", post_then_hang)
    task = asyncio.create_task(tick())
    await asyncio.wait_for(reached.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.setattr(deposits_store, "post_pairs", original)


async def journal_count(sessions: SessionFactory) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(JournalTransaction)) or 0)


async def scanned(sessions: SessionFactory) -> int | None:
    async with sessions() as s:
        row = await s.get(NetworkCursor, 31337)
        return None if row is None else row.scanned_block


async def test_killed_mid_tick_then_restarted_credits_exactly_once(
    tmp_path: Path,
    devnet_factory: DevnetFactory,
    sessions: SessionFactory,
    db_url: str,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with devnet_factory() as (node, dep):
        chain = Chain(node.url, dep, http)
        settings = make_settings(tmp_path, [("devnet", dep, 3)], db_url)
        usdc = dep.tokens["USDC"].address
        await chain.approve(2, usdc)
        expected = {addr(2): {"USDC": 0}, addr(3): {"ETH": 0}}
        for i in range(4):
            await chain.receipt(await chain.deposit_token(2, usdc, 1_000_001 * (i + 1)))
            await chain.receipt(await chain.deposit_native(3, 10**15 * (i + 1)))
            expected[addr(2)]["USDC"] += 100_000_100 * (i + 1)
            expected[addr(3)]["ETH"] += 100_000 * (i + 1)
        await chain.mine(3)

        # Cut 1: the backfill step that sees the already-final deposits and credits
        # them in the same transaction. Nothing of it may remain.
        first = make_listener(settings, "devnet", sessions, http=http)
        await cut_inside(monkeypatch, first.tick)
        assert await deposit_rows(sessions) == []
        assert await journal_count(sessions) == 0
        assert await scanned(sessions) == dep.deploy_block - 1

        # Restart: a new listener (fresh memory) resumes from the DB cursor.
        second = make_listener(settings, "devnet", sessions, http=http)
        await second.tick()
        assert await cross(sessions, addr(2)) == expected[addr(2)]
        assert await cross(sessions, addr(3)) == expected[addr(3)]
        assert await journal_count(sessions) == 8

        # Cut 2: pending deposits reaching N confirmations, killed while crediting.
        await chain.receipt(await chain.deposit_native(3, 10**16))
        await chain.receipt(await chain.deposit_token(2, usdc, 5))
        await second.tick()
        pending_cursor = await scanned(sessions)
        assert sorted(r.state for r in await deposit_rows(sessions))[-2:] == [
            "pending",
            "pending",
        ]
        await chain.mine(2)
        await cut_inside(monkeypatch, second.tick)
        assert await scanned(sessions) == pending_cursor
        assert await journal_count(sessions) == 8

        third = make_listener(settings, "devnet", sessions, http=http)
        await third.tick()
        expected[addr(3)]["ETH"] += 1_000_000
        expected[addr(2)]["USDC"] += 500
        assert await cross(sessions, addr(2)) == expected[addr(2)]
        assert await cross(sessions, addr(3)) == expected[addr(3)]
        assert {r.state for r in await deposit_rows(sessions)} == {"credited"}
        assert await journal_count(sessions) == 10
        await assert_ledger_consistent(sessions)
