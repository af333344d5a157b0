"""The listener behind a fault-injecting JSON-RPC proxy: errors, HTTP failures,
timeouts, range limits, a lagging node, a wrong chain id and truncated log lists.
Whatever the faults, once they stop every deposit is credited exactly once."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.faultproxy import FaultProxy
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
from watcher.chain.errors import RetryableRpcError, RpcError
from watcher.domain.reorg import BlockRef
from watcher.services.listener import DepositListener
from watcher.services.reorgs import confirm_mismatch
from watcher.store.db import SessionFactory
from watcher.store.models import NetworkCursor

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Ledger:
    """What the chain says the users deposited (native, ledger units of ETH)."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.expected: dict[str, int] = defaultdict(int)
        self.count = 0

    async def deposit(self, who: int, wei: int, *, wait: bool = True) -> str:
        tx = await self.chain.deposit_native(who, wei)
        if wait:
            await self.chain.receipt(tx)
        self.expected[addr(who)] += wei // 10**10
        self.count += 1
        return tx

    async def check(self, sessions: SessionFactory) -> None:
        rows = [r for r in await deposit_rows(sessions) if r.state != "orphaned"]
        assert len(rows) == self.count, "a deposit was missed or doubled"
        assert {r.state for r in rows} == {"credited"}
        for who, units in self.expected.items():
            assert await cross(sessions, who) == {"ETH": units}
        await assert_ledger_consistent(sessions)


async def cursor_of(sessions: SessionFactory, chain_id: int) -> int:
    async with sessions() as s:
        row = await s.get(NetworkCursor, chain_id)
        assert row is not None
        return row.scanned_block


async def failing_tick(listener: DepositListener) -> None:
    with pytest.raises(RpcError):
        await listener.tick()


async def catch_up(listener: DepositListener, chain: Chain) -> None:
    await chain.mine(3)
    await listener.tick()


async def test_single_endpoint_faults_miss_nothing_and_double_nothing(
    tmp_path: Path, devnet_factory: DevnetFactory, sessions: SessionFactory, db_url: str, http
) -> None:
    async with devnet_factory() as (node, dep), FaultProxy(node.url) as proxy:
        chain = Chain(node.url, dep, http)
        book = Ledger(chain)
        settings = make_settings(tmp_path, [("devnet", dep, 3)], db_url)
        listener = make_listener(
            settings, "devnet", sessions, urls=[proxy.url], timeout=0.5, http=http
        )
        await listener.tick()

        # Transient JSON-RPC errors and HTTP 503s: absorbed by the retry policy.
        await book.deposit(2, 10**18 + 1)
        proxy.fail_next(1)
        proxy.http_error_next(1, 503)
        await listener.tick()
        proxy.reset()

        # eth_getLogs keeps failing: the tick fails and the cursor does not move.
        before = await cursor_of(sessions, 31337)
        await book.deposit(3, 2 * 10**18)
        proxy.fail_method("eth_getLogs", message="header not found")
        await failing_tick(listener)
        await failing_tick(listener)
        assert await cursor_of(sessions, 31337) == before
        proxy.reset()
        await catch_up(listener, chain)
        await book.check(sessions)

        # Timeouts (the proxy answers after the client gave up), then recovery.
        await book.deposit(4, 3 * 10**18)
        proxy.delay = 1.0
        await failing_tick(listener)
        assert any("all RPC endpoints down" in r for r in listener.health_reasons())
        proxy.reset()
        await catch_up(listener, chain)
        assert listener.health_reasons() == []

        # A provider range limit: ranges are halved down to what it accepts.
        listener.max_range = 50
        async with sessions.begin() as s:  # re-read everything from the deployment
            row = await s.get(NetworkCursor, 31337)
            assert row is not None
            row.scanned_block = dep.deploy_block - 1
        proxy.max_logs_range = 4
        for i in range(6):
            await book.deposit(2 + i % 3, (i + 1) * 10**16)
        await catch_up(listener, chain)
        assert max(high - low + 1 for low, high in proxy.logs_ranges[-5:]) <= 4
        proxy.reset()
        await book.check(sessions)

        # A lagging node (head below our cursor) is not a reorg: nothing is orphaned.
        proxy.lag_blocks = 6
        await book.deposit(5, 10**18)
        await listener.tick()
        await listener.tick()
        assert {r.state for r in await deposit_rows(sessions)} <= {"credited", "pending"}
        assert listener.metrics.reorgs.labels("devnet")._value.get() == 0
        proxy.reset()
        await catch_up(listener, chain)
        await book.check(sessions)


async def test_second_endpoint_covers_truncation_lag_and_wrong_chain(
    tmp_path: Path, devnet_factory: DevnetFactory, sessions: SessionFactory, db_url: str, http
) -> None:
    async with (
        devnet_factory() as (node, dep),
        FaultProxy(node.url) as bad,
        FaultProxy(node.url) as good,
    ):
        chain = Chain(node.url, dep, http)
        book = Ledger(chain)
        settings = make_settings(tmp_path, [("devnet", dep, 3)], db_url)
        listener = make_listener(
            settings, "devnet", sessions, urls=[bad.url, good.url], timeout=0.5, http=http
        )
        await listener.tick()

        # The preferred node drops the last log of every answer.
        bad.truncate_logs = 1
        await chain.automine(False)
        for i in range(5):
            for j in range(i % 3 + 1):
                await book.deposit(2 + (i + j) % 4, 10**17 * (i + 1) + j, wait=False)
            await chain.mine(1)
        await chain.automine(True)
        await catch_up(listener, chain)
        await book.check(sessions)
        assert bad.requests["eth_getLogs"] > 0

        # Truncation while the honest node is down for logs: one answer is not enough,
        # the step fails and the cursor stays. A transient failure fails that step (a
        # cross-check asks each endpoint once and leaves a failed one alone for its
        # cooldown); the next tick after the cooldown goes through.
        # (A listener whose client cools down long enough to observe: 0.5 s, doubling,
        # at most 1 s; the shared 10 ms is shorter than a step's own round trips.)
        cooling = make_listener(
            settings,
            "devnet",
            sessions,
            urls=[bad.url, good.url],
            timeout=0.5,
            http=http,
            cooldown=(0.5, 1.0),
        )
        before = await cursor_of(sessions, 31337)
        await book.deposit(3, 10**18)
        good.fail_method("eth_getLogs")
        await failing_tick(cooling)
        assert await cursor_of(sessions, 31337) == before
        good.reset()
        await asyncio.sleep(0.6)  # its cooldown after one failure
        good.fail_next(1, method="eth_getLogs")
        await failing_tick(cooling)
        asked = good.requests["eth_getLogs"]
        await failing_tick(cooling)  # still cooling down: not asked again
        assert good.requests["eth_getLogs"] == asked
        await asyncio.sleep(1.1)  # two failures in a row: 1 s
        await cooling.tick()
        bad.reset()
        await catch_up(listener, chain)
        await book.check(sessions)

        # The preferred node lags 3 blocks behind: no false reorg, nothing missed.
        bad.lag_blocks = 3
        for i in range(3):
            await book.deposit(4, 10**18 + i)
            await listener.tick()
        await catch_up(listener, chain)
        await catch_up(listener, chain)
        bad.reset()
        await book.check(sessions)
        assert listener.metrics.reorgs.labels("devnet")._value.get() == 0

        # A real reorg while the preferred node cannot serve headers: the other
        # endpoint confirms it (the lone silent node has no vote).
        await book.deposit(5, 10**18)
        await listener.tick()
        rows = await deposit_rows(sessions)
        doomed = rows[-1]
        assert doomed.state == "pending"
        bad.fail_method("eth_getBlockByNumber")  # it cannot confirm either way
        await chain.rpc("anvil_reorg", 1, [])
        book.count -= 1
        book.expected[addr(5)] -= 10**8
        await listener.tick()
        bad.reset()
        await listener.tick()
        await catch_up(listener, chain)
        states = {r.tx_hash: r.state for r in await deposit_rows(sessions)}
        assert states[doomed.tx_hash] == "orphaned"
        await book.check(sessions)

        # An endpoint serving another chain is excluded; the other one carries on.
        bad.chain_id = 1
        listener2 = make_listener(
            settings, "devnet", sessions, urls=[bad.url, good.url], timeout=0.5, http=http
        )
        await book.deposit(2, 10**18)
        await catch_up(listener2, chain)
        assert next(h.state for h in listener2.client.health()) == "excluded"
        await book.check(sessions)
        assert await cursor_of(sessions, 31337) == await chain.head()


class _Votes:
    """A stand-in client answering get_block_on_each with fixed per-endpoint answers."""

    def __init__(self, answers: dict[str, BlockRef | RpcError | None]) -> None:
        self.answers = answers

    async def get_block_on_each(self, number: int) -> dict[str, BlockRef | RpcError | None]:
        return self.answers


def _ref(h: str) -> BlockRef:
    return BlockRef(number=10, hash=h, parent_hash="0x" + "00" * 32, timestamp=0)


@pytest.mark.parametrize(
    ("answers", "confirmed"),
    [
        ({"a": _ref("0xnew")}, True),  # one endpoint: the re-read confirms
        ({"a": _ref("0xold")}, False),  # the re-read says ours: a glitch, wait
        ({"a": _ref("0xnew"), "b": _ref("0xold")}, False),  # b still has ours: wait
        ({"a": _ref("0xnew"), "b": None}, True),  # b lags (no such block): no vote
        ({"a": _ref("0xnew"), "b": RetryableRpcError("down")}, True),
        ({"a": None, "b": RetryableRpcError("down")}, False),  # nobody confirms
    ],
)
async def test_a_reorg_is_acted_on_only_when_no_endpoint_still_has_our_block(
    answers: dict[str, BlockRef | RpcError | None], confirmed: bool, db_url: str
) -> None:
    result = await confirm_mismatch(_Votes(answers), 10, "0xold")  # type: ignore[arg-type]
    assert result.confirmed is confirmed
