"""Latency-bound work first: the withdrawal intake's batches before background chunks.

Everything runs on one event loop. A user waits for the intake's answer; nobody waits
for the sender's or the tracker's next chunk of 64 (signing, persisting, settling: each
holds the loop for several milliseconds). :class:`Foreground` lets the intake say when
it has requests queued or a batch being written, and lets a background role wait for
that to pass before its next chunk, for at most ``limit_s``: the intake goes first, and
the background still moves at least one chunk per ``limit_s`` however busy the intake
is (never starved).

It also sizes the background chunks: while requests are coming in (a batch queued or
written now, or within the last ``recent_s``), a chunk is at most ``small_chunk``
withdrawals, so the loop is never held for long between two of the intake's turns
(a chunk of 64 holds it for 10-20 ms: signing, one DB transaction, JSON of the
receipts); when the intake is quiet, or saturated, the full size (fewer transactions,
fewer round trips to the node). With the intake's linger (services/intake.py),
interleaved A/B on the withdrawal bench at 500 requests/s: p50 15-25 -> 11-14 ms, p99
44-62 -> 32-49 ms, end to end unchanged (README). Chunks of 16 at all times had cost a
sixth of the end-to-end rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

T = TypeVar("T")

#: How long a background chunk waits at most for the intake to go quiet.
YIELD_LIMIT_S = 0.05
#: A background chunk's size at most while requests are coming in.
SMALL_CHUNK = 16
#: "Coming in": the intake had work this recently (seconds).
RECENT_S = 0.25
#: Waits for the intake in a row that ran out before it counts as saturated.
SATURATED_AFTER = 3


class Foreground:
    def __init__(self, *, small_chunk: int = SMALL_CHUNK, recent_s: float = RECENT_S) -> None:
        if small_chunk < 1:
            raise ValueError(f"small_chunk must be at least 1, not {small_chunk}")
        self.small_chunk = small_chunk
        self.recent_s = recent_s
        self._busy = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._last = float("-inf")  # time.monotonic() of the last enter or leave
        self._ran_out = 0  # waits in a row that ran out: the intake never went quiet

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def enter(self) -> None:
        self._last = time.monotonic()
        self._busy += 1
        self._quiet.clear()

    def leave(self) -> None:
        self._last = time.monotonic()
        self._busy -= 1
        if self._busy <= 0:
            self._busy = 0
            self._quiet.set()

    async def yield_to(self, limit_s: float = YIELD_LIMIT_S) -> None:
        """Return when no foreground work is pending, or after ``limit_s``."""
        if not self._busy:
            self._ran_out = 0
            return
        try:
            await asyncio.wait_for(self._quiet.wait(), limit_s)
        except TimeoutError:
            self._ran_out += 1
        else:
            self._ran_out = 0

    def chunk_size(self, full: int) -> int:
        """How many items the next background chunk takes: at most ``small_chunk``
        while the intake is busy or was within ``recent_s``, unless it is saturated
        (``SATURATED_AFTER`` waits for it in a row ran out: its latency is queueing then,
        and small chunks at one per ``limit_s`` would hold payouts to ~300/s; one wait
        running out is a blip, and a full chunk right after it would make it longer);
        otherwise ``full``."""
        if self._ran_out >= SATURATED_AFTER:
            return full
        if self._busy or time.monotonic() - self._last < self.recent_s:
            return min(full, self.small_chunk)
        return full

    async def chunks(
        self, items: Sequence[T], full: int, *, at_least_one: bool = False
    ) -> AsyncIterator[Sequence[T]]:
        """``items`` in consecutive chunks for a background role: before each one, the
        intake goes first (:meth:`yield_to`), then the chunk takes :meth:`chunk_size`
        of ``full``. With ``at_least_one``, an empty ``items`` gives one empty chunk."""
        start = 0
        while start < len(items) or (at_least_one and start == 0):
            await self.yield_to()
            chunk = items[start : start + self.chunk_size(full)]
            yield chunk
            start += max(len(chunk), 1)
