"""A stop's drain (watcher/app.py Runner.drain): no tick may still be running when it
returns, since the database engines are closed right after. A 1M-deposit SQLite daemon
hung on SIGTERM: its reconciliation outlasted the wait, was cancelled only when the
event loop closed, and its cancellation waited on a connection whose thread was gone."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.helpers import runs_until_cancelled
from watcher.app import Runner


async def _ticking(runner: Runner, name: str, tick: object) -> asyncio.Task[None]:
    task = asyncio.create_task(runner.run(name, tick))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)  # it is in flight
    return task


async def test_an_interruptible_tick_is_cancelled_at_once() -> None:
    runner = Runner(interruptible={"reconciler"})

    async def audit() -> None:
        await asyncio.sleep(30)

    async def work() -> None:
        await asyncio.sleep(0.3)

    audit_task = await _ticking(runner, "reconciler", audit)
    work_task = await _ticking(runner, "sender", work)
    started = time.monotonic()
    await runner.drain(limit_seconds=10)
    assert time.monotonic() - started < 2  # the sender's 0.3 s, not the audit's 30
    # Ended by the stop: not a failure, nothing raised for the scheduler to report.
    assert audit_task.done() and audit_task.exception() is None
    assert work_task.done() and not work_task.cancelled()
    assert runner.stats["sender"].failures == 0 == runner.stats["reconciler"].failures
    assert runner.inflight == {}


async def test_a_late_tick_is_cancelled_and_has_unwound_when_drain_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Runner()
    unwound = asyncio.Event()

    task = await _ticking(runner, "deposits:devnet", lambda: runs_until_cancelled(unwound))
    with caplog.at_level(logging.WARNING, logger="watcher.app"):
        await runner.drain(limit_seconds=0.2, cancel_wait_s=5)
    assert unwound.is_set() and task.done() and task.exception() is None
    assert "cancelled: deposits:devnet" in caplog.text


async def test_a_tick_that_does_not_unwind_is_reported_not_waited_for_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Runner()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                continue  # swallows the cancellation (a bug this stop must survive)

    task = await _ticking(runner, "tracker:devnet", stubborn)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="watcher.app"):
        await runner.drain(limit_seconds=0.1, cancel_wait_s=0.3)
    assert time.monotonic() - started < 2
    assert "did not unwind" in caplog.text and "tracker:devnet" in caplog.text
    release.set()
    task.cancel()
    await asyncio.wait({task})


async def test_no_new_tick_starts_once_stopping() -> None:
    runner = Runner()
    await runner.drain(limit_seconds=1)
    ran = []

    async def tick() -> None:
        ran.append(1)

    await runner.run("heartbeat", tick)
    assert ran == []


async def test_a_cancel_outside_a_stop_is_not_swallowed() -> None:
    runner = Runner()

    async def tick() -> None:
        await asyncio.sleep(30)

    task = await _ticking(runner, "listener", tick)
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()
