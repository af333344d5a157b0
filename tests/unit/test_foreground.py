"""The foreground gate: a background chunk waits while the intake has work, until it
is done or for the limit at most (never starved), and not at all when it is idle."""

from __future__ import annotations

import asyncio
import time

from watcher.services.foreground import Foreground


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
