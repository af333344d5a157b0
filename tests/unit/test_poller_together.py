"""poller._together: both results, or the first failure at once with the other cancelled."""

from __future__ import annotations

import asyncio

import pytest

from watcher.services.poller import _together


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
