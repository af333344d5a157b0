"""RPC economy of the listener: a backfill of final blocks reads the logs per range and
no header per block holding a deposit; blocks in the header window (not yet final, plus
the margin) keep a header each; a final block's logs must agree on one block hash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.faultproxy import FaultProxy
from tests.fixtures_chain import DevnetFactory
from tests.integration.deposit_support import Chain, make_listener, make_settings
from tests.integration.test_deposits_faults import Ledger
from watcher.chain.errors import InconsistentLogsError
from watcher.chain.logs import DepositLog
from watcher.domain.reorg import BlockRef
from watcher.services import poller
from watcher.services.listener import REORG_MARGIN
from watcher.store.db import SessionFactory

DEPTH = 3
WINDOW = DEPTH + REORG_MARGIN


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_backfill_of_final_blocks_reads_no_header_per_deposit_block(
    tmp_path: Path, devnet_factory: DevnetFactory, sessions: SessionFactory, db_url: str, http
) -> None:
    async with devnet_factory() as (node, dep), FaultProxy(node.url) as proxy:
        chain = Chain(node.url, dep, http)
        book = Ledger(chain)
        # 40 blocks with deposits (3 each), then enough empty blocks that all of them
        # are final and below the header window.
        await chain.automine(False)
        deposit_blocks = []
        for i in range(40):
            for j in range(3):
                await book.deposit(2 + (i + j) % 4, 10**16 * (i + 1) + j, wait=False)
            deposit_blocks.append(await chain.mine(1))
        await chain.automine(True)
        await chain.mine(WINDOW + 10)

        settings = make_settings(tmp_path, [("devnet", dep, DEPTH)], db_url)
        listener = make_listener(settings, "devnet", sessions, urls=[proxy.url], http=http)
        proxy.clear_stats()
        await listener.tick()
        await book.check(sessions)  # every deposit credited once, in the backfill

        asked = set(proxy.blocks_asked)
        assert not asked & set(deposit_blocks), sorted(asked & set(deposit_blocks))
        # The header window (plus the range's end and link) and nothing per deposit.
        assert proxy.requests["eth_getBlockByNumber"] <= WINDOW + 3, proxy.requests
        assert proxy.requests["eth_getLogs"] == 1
        total = sum(proxy.requests.values())
        print(f"backfill of {max(asked)} blocks: {total} calls {dict(proxy.requests)}")
        blocks = listener.metrics.blocks_scanned.labels("devnet")._value.get()
        assert blocks == max(asked)  # blocks 1..head in one range
        per_1000 = listener.metrics.rpc_per_1000_blocks.labels("devnet")._value.get()
        assert per_1000 == pytest.approx(1000 * total / blocks, rel=0.05)

        # Steady state: a new block with a deposit is in the window: its header is read
        # and its deposit waits for its confirmations.
        before = len(proxy.blocks_asked)
        await book.deposit(3, 10**18)
        block = await chain.head()
        await listener.tick()
        assert block in proxy.blocks_asked[before:]
        await chain.mine(DEPTH)
        await listener.tick()
        await book.check(sessions)


def _log(block: int, block_hash: str, index: int) -> DepositLog:
    return DepositLog(
        chain_id=31337,
        block_number=block,
        block_hash=block_hash,
        tx_hash="0x" + f"{block:030x}{index:034x}",
        log_index=index,
        account="0x" + "11" * 20,
        token="0x" + "00" * 20,
        amount=1,
    )


def test_logs_of_a_final_block_without_header_must_agree_on_its_hash() -> None:
    a, b = "0x" + "aa" * 32, "0x" + "bb" * 32
    # Below the window (sparse_upto 100): one hash per block is enough.
    assert poller._matches([_log(50, a, 0), _log(50, a, 1), _log(51, b, 0)], {}, 100)
    # Two hashes for one final block: refused.
    assert not poller._matches([_log(50, a, 0), _log(50, b, 1)], {}, 100)
    # Above it, a header is required and must match.
    assert not poller._matches([_log(150, a, 0)], {}, 100)
    header = {150: BlockRef(150, a, "0x" + "00" * 32, 0)}
    assert poller._matches([_log(150, a, 0)], header, 100)
    assert not poller._matches([_log(150, b, 0)], header, 100)


async def test_endpoints_naming_two_hashes_for_one_final_block_fail_the_step() -> None:
    a, b = "0x" + "aa" * 32, "0x" + "bb" * 32
    one = [_log(50, a, 0)]
    other = [_log(50, b, 1)]  # another log of the same block, on another fork
    with pytest.raises(InconsistentLogsError, match="two hashes for final block 50"):
        await poller._merge(None, 1, 60, {}, 100, [one, other], [], 2)  # type: ignore[arg-type]
