"""Latency-bound work first: the withdrawal intake's batches before background chunks.

Everything runs on one event loop. A user waits for the intake's answer; nobody waits
for the sender's or the tracker's next chunk of 64 (signing, persisting, settling: each
holds the loop for several milliseconds). :class:`Foreground` lets the intake say when
it has requests queued or a batch being written, and lets a background role wait for
that to pass before its next chunk, for at most ``limit_s``: the intake goes first, and
the background still moves at least one chunk per ``limit_s`` however busy the intake
is (never starved).
"""

from __future__ import annotations

import asyncio
import contextlib

#: How long a background chunk waits at most for the intake to go quiet.
YIELD_LIMIT_S = 0.05


class Foreground:
    def __init__(self) -> None:
        self._busy = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def enter(self) -> None:
        self._busy += 1
        self._quiet.clear()

    def leave(self) -> None:
        self._busy -= 1
        if self._busy <= 0:
            self._busy = 0
            self._quiet.set()

    async def yield_to(self, limit_s: float = YIELD_LIMIT_S) -> None:
        """Return when no foreground work is pending, or after ``limit_s``."""
        if not self._busy:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), limit_s)
