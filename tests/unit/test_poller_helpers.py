"""poller helpers: _together (both results, or the first failure at once with the other
cancelled) and _HeaderPrefetch (headers of the blocks a raw answer names, as hints)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from watcher.chain.errors import RetryableRpcError
from watcher.chain.rpc import RpcClient
from watcher.domain.reorg import BlockRef
from watcher.services.poller import _HeaderPrefetch, _together, read_heads


async def test_both_results_in_order() -> None:
    async def later(value: str) -> str:
        await asyncio.sleep(0.01)
        return value

    assert await _together(later("a"), asyncio.sleep(0, result=2)) == ("a", 2)


async def test_a_failure_cancels_the_other_and_is_raised_as_is() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        await asyncio.wait_for(_together(slow(), fails()), timeout=5)
    assert cancelled.is_set()


class FakeClient:
    max_batch_size = 2

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.asked: list[list[int]] = []

    async def get_blocks(self, numbers: list[int]) -> list[BlockRef]:
        self.asked.append(list(numbers))
        await asyncio.sleep(0)
        if self.fail:
            raise RetryableRpcError("endpoint down")
        return [BlockRef(n, f"0x{n:064x}", f"0x{n - 1:064x}", 1000 + n) for n in numbers]


RAW: list[dict[str, Any]] = [
    {"blockNumber": "0xb"},
    {"blockNumber": "0xb"},
    {"blockNumber": "0xa"},  # already asked for (the window)
    {"blockNumber": "0xc"},
    {"blockNumber": "0xd"},
    {"blockNumber": "0x64"},  # outside the range: never fetched on a node's word
    {"blockNumber": "zz"},  # malformed: left to the decoder
    {"blockNumber": None},
    {"blockNumber": "0xe", "removed": True},
]


async def test_prefetch_reads_the_named_blocks_in_range_in_batches() -> None:
    client = FakeClient()
    prefetch = _HeaderPrefetch(cast(RpcClient, client), {10}, 5, 20)
    await prefetch(RAW)
    await prefetch(RAW)  # a second endpoint naming the same blocks asks for nothing new
    got = await prefetch.collect()
    await prefetch.close()
    assert client.asked == [[11, 12], [13]]
    assert sorted(got) == [11, 12, 13] and got[12].hash == f"0x{12:064x}"


async def test_a_failed_prefetch_is_only_a_missed_hint() -> None:
    client = FakeClient(fail=True)
    prefetch = _HeaderPrefetch(cast(RpcClient, client), set(), 5, 20)
    await prefetch(RAW)
    assert await prefetch.collect() == {}
    await prefetch.close()


async def test_close_cancels_what_is_still_running() -> None:
    class Slow(FakeClient):
        async def get_blocks(self, numbers: list[int]) -> list[BlockRef]:
            await asyncio.sleep(30)
            return []

    prefetch = _HeaderPrefetch(cast(RpcClient, Slow()), set(), 5, 20)
    await prefetch(RAW)
    await asyncio.wait_for(prefetch.close(), timeout=5)
    assert all(t.cancelled() for t in prefetch.tasks)


class _Heads:
    """A stand-in client: fixed head votes per endpoint, and the failover read."""

    def __init__(self, votes: dict[int, int | RetryableRpcError], fallback: int = 7) -> None:
        self.votes = votes
        self.fallback = fallback
        self.fallback_reads = 0

    @property
    def usable_endpoints(self) -> list[int]:
        return list(self.votes)

    async def head_votes(self) -> dict[int, int | RetryableRpcError]:
        return self.votes

    async def block_number(self) -> int:
        self.fallback_reads += 1
        return self.fallback


@pytest.mark.parametrize(
    ("votes", "scan_to", "best"),
    [
        ({0: 120, 1: 110, 2: 121}, 120, 121),  # the head two endpoints reached
        ({0: 110, 1: 120}, 110, 120),  # two endpoints: the lower one (both can vouch)
        ({0: RetryableRpcError("down"), 1: 120}, 120, 120),  # one answer: its head
        ({0: 100, 1: 100, 2: RetryableRpcError("hang")}, 100, 100),
    ],
)
async def test_read_heads_scans_to_the_head_a_quorum_reached(
    votes: dict[int, int | RetryableRpcError], scan_to: int, best: int
) -> None:
    heads = await read_heads(cast(RpcClient, _Heads(votes)))
    assert (heads.scan_to, heads.best) == (scan_to, best)
    assert set(heads.failures) == {i for i, v in votes.items() if not isinstance(v, int)}


async def test_read_heads_falls_back_to_failover_when_no_vote_answers() -> None:
    client = _Heads({0: RetryableRpcError("a"), 1: RetryableRpcError("b")})
    heads = await read_heads(cast(RpcClient, client))
    assert (heads.scan_to, heads.best, client.fallback_reads) == (7, 7, 1)
