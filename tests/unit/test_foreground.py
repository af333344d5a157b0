"""The foreground gate: a background chunk waits while the intake has work, until it
is done or for the limit at most (never starved), and not at all when it is idle."""

from __future__ import annotations

import asyncio
import time

import pytest

from watcher.services.foreground import SATURATED_AFTER, Foreground


async def test_idle_means_no_wait() -> None:
    gate = Foreground()
    started = time.monotonic()
    await gate.yield_to(5.0)
    assert time.monotonic() - started < 0.05
    assert not gate.busy


async def test_waits_until_the_foreground_work_is_done() -> None:
    gate = Foreground()
    gate.enter()
    gate.enter()  # two batches in a row
    waiter = asyncio.create_task(gate.yield_to(5.0))
    await asyncio.sleep(0.02)
    gate.leave()
    await asyncio.sleep(0.02)
    assert not waiter.done()  # one still busy
    gate.leave()
    await asyncio.wait_for(waiter, 1.0)
    assert not gate.busy


async def test_never_waits_longer_than_the_limit() -> None:
    gate = Foreground()
    gate.enter()  # busy for good
    started = time.monotonic()
    await gate.yield_to(0.05)
    waited = time.monotonic() - started
    assert 0.04 <= waited < 0.5
    assert gate.busy


async def test_chunks_are_small_while_requests_come_in() -> None:
    gate = Foreground(small_chunk=16, recent_s=0.1)
    assert gate.chunk_size(64) == 64  # the intake never had work
    gate.enter()
    assert gate.chunk_size(64) == 16
    assert gate.chunk_size(8) == 8  # never more than asked for
    gate.leave()
    assert gate.chunk_size(64) == 16  # it had work a moment ago
    await asyncio.sleep(0.15)
    assert gate.chunk_size(64) == 64  # quiet again: full chunks


def test_small_chunk_must_be_positive() -> None:
    with pytest.raises(ValueError, match="small_chunk"):
        Foreground(small_chunk=0)


async def test_full_chunks_when_the_intake_never_goes_quiet() -> None:
    gate = Foreground(small_chunk=16, recent_s=10.0)
    gate.enter()
    await gate.yield_to(0.02)  # ran out once: a blip
    assert gate.chunk_size(64) == 16
    for _ in range(SATURATED_AFTER - 1):
        await gate.yield_to(0.02)
    assert gate.chunk_size(64) == 64  # saturated: payouts keep their pace
    gate.leave()
    gate.enter()
    waiter = asyncio.create_task(gate.yield_to(5.0))
    await asyncio.sleep(0.01)
    gate.leave()
    await waiter  # this time it went quiet before the limit
    assert gate.chunk_size(64) == 16  # and requests came in recently


async def test_chunks_walk_the_items_in_order() -> None:
    gate = Foreground(small_chunk=2, recent_s=10.0)
    items = [1, 2, 3, 4, 5]
    assert [list(c) async for c in gate.chunks(items, 4)] == [[1, 2, 3, 4], [5]]  # quiet
    assert [list(c) async for c in gate.chunks([], 4)] == []
    assert [list(c) async for c in gate.chunks([], 4, at_least_one=True)] == [[]]
    gate.enter()
    gate.leave()  # requests came in: small chunks
    assert [list(c) async for c in gate.chunks(items, 4)] == [[1, 2], [3, 4], [5]]
