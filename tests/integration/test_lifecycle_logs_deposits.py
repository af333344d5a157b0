"""Lifecycle log lines of deposits on a real anvil and SQLite: seen (pending n/N) and
credited in steady state, orphaned/reversed with "reorg detected" and the alarm, a
backfill step summarised in one line, and the JSON-lines form carrying the fields."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures_chain import DevnetFactory
from tests.integration.deposit_support import (
    Chain,
    addr,
    deposit_rows,
    make_listener,
    make_settings,
)
from watcher import logs
from watcher.services import listener as listener_module
from watcher.store.db import SessionFactory

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def lines(caplog: pytest.LogCaptureFixture, *needles: str) -> list[str]:
    """The captured messages containing every needle, in order."""
    return [r.getMessage() for r in caplog.records if all(n in r.getMessage() for n in needles)]


async def test_deposit_seen_pending_then_credited(
    tmp_path: Path,
    devnet_factory: DevnetFactory,
    sessions: SessionFactory,
    db_url: str,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with devnet_factory() as (node, dep):
        chain = Chain(node.url, dep, http)
        listener = make_listener(
            make_settings(tmp_path, [("devnet", dep, 3)], db_url), "devnet", sessions
        )
        await listener.tick()  # from the deployment block: nothing yet
        tx = await chain.deposit_native(2, 15 * 10**17)
        block = int((await chain.receipt(tx))["blockNumber"], 16)
        await chain.mine(1)
        await listener.tick()
        [seen] = lines(caplog, "deposit seen", tx)
        assert seen == (
            f"deposit seen chain={dep.chain_id} tx={tx} log=0 block={block} "
            f"account={addr(2)} asset=ETH amount=1.5 (pending 2/3)"
        )
        assert lines(caplog, "deposit credited", tx) == []
        await chain.mine(1)
        await listener.tick()
        [credited] = lines(caplog, "deposit credited", tx)
        assert f"chain={dep.chain_id} tx={tx} log=0 block={block}" in credited
        assert f"account={addr(2)} asset=ETH amount=1.5" in credited
        assert [r.state for r in await deposit_rows(sessions)] == ["credited"]

        # The JSON-lines form carries the chain and the tx hash as keys.
        [record] = [r for r in caplog.records if "deposit credited" in r.getMessage()]
        doc = json.loads(logs._JsonLines().format(record))
        assert (doc["chain_id"], doc["tx_hash"], doc["level"]) == (dep.chain_id, tx, "info")


async def test_reorg_logs_detected_orphaned_reversed_and_the_alarm(
    tmp_path: Path,
    devnet_factory: DevnetFactory,
    sessions: SessionFactory,
    db_url: str,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with devnet_factory() as (node, dep):
        chain = Chain(node.url, dep, http)
        listener = make_listener(
            make_settings(tmp_path, [("devnet", dep, 3)], db_url), "devnet", sessions
        )
        credited = await chain.deposit_native(4, 2 * 10**18)
        await chain.receipt(credited)
        await chain.mine(2)
        pending = await chain.deposit_native(5, 10**18)
        await chain.receipt(pending)
        await listener.tick()
        assert [r.state for r in await deposit_rows(sessions)] == ["credited", "pending"]

        await chain.rpc("anvil_reorg", 5, [])  # both deposits' blocks replaced
        await listener.tick()
        assert [r.state for r in await deposit_rows(sessions)] == ["reversed", "orphaned"]
        [detected] = lines(caplog, "reorg detected")
        assert f"chain={dep.chain_id} network=devnet depth=" in detected
        assert "1 deposit(s) orphaned, 1 reversed" in detected
        [orphaned] = lines(caplog, "deposit orphaned", pending)
        assert f"account={addr(5)} asset=ETH amount=1" in orphaned
        [reversed_] = [r for r in caplog.records if "deposit reversed" in r.getMessage()]
        assert credited in reversed_.getMessage() and reversed_.levelno == logging.WARNING
        [alarm] = lines(caplog, "alarm raised", "kind=finality_violated")
        assert f"key=chain:{dep.chain_id}" in alarm


async def test_a_backfill_step_is_one_summary_line_not_one_per_deposit(
    tmp_path: Path,
    devnet_factory: DevnetFactory,
    sessions: SessionFactory,
    db_url: str,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with devnet_factory() as (node, dep):
        chain = Chain(node.url, dep, http)
        listener = make_listener(
            make_settings(tmp_path, [("devnet", dep, 1)], db_url), "devnet", sessions
        )
        await chain.automine(False)
        txs = [await chain.deposit_native(who, 10**18) for who in (2, 3, 4)]
        await chain.mine(1)
        await chain.automine(True)
        await chain.mine(20)
        listener.max_range = 4  # the head is far beyond one range: a backfill
        await listener.tick()
        assert [r.state for r in await deposit_rows(sessions)] == ["credited"] * 3
        for tx in txs:
            assert lines(caplog, tx) == []  # no line per deposit
        summaries = lines(caplog, "devnet backfill: block")
        assert summaries, "no backfill progress line"
        assert [s for s in summaries if ": 3 deposits seen, 3 credited" in s]


async def test_a_crowded_steady_state_step_is_one_summary_line(
    tmp_path: Path,
    devnet_factory: DevnetFactory,
    sessions: SessionFactory,
    db_url: str,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(listener_module, "PER_EVENT_LOG_LIMIT", 2)
    async with devnet_factory() as (node, dep):
        chain = Chain(node.url, dep, http)
        listener = make_listener(
            make_settings(tmp_path, [("devnet", dep, 3)], db_url), "devnet", sessions
        )
        await listener.tick()
        await chain.automine(False)
        txs = [await chain.deposit_native(who, 10**18) for who in (2, 3, 4)]
        block = await chain.mine(1)
        await chain.automine(True)
        await listener.tick()
        assert [r.state for r in await deposit_rows(sessions)] == ["pending"] * 3
        for tx in txs:
            assert lines(caplog, tx) == []
        [summary] = lines(caplog, "deposits chain=")
        assert summary == (
            f"deposits chain={dep.chain_id} blocks={block}..{block}: 3 seen, 0 credited "
            "(summary: 3 events in one step)"
        )
