"""Crash points: named places where a test makes the real daemon exit hard.

FoundationDB's "buggify", kept small. A random ``kill -9`` rarely lands in the narrow
windows that matter (a signed transaction saved but not broadcast, broadcast but not
marked, a cursor written but its credits not); these points land there on purpose.
Each is a call ``crash_point("sender.persist.after_commit")`` at a persistence
boundary; when armed for that name the process ends at once with ``os._exit(86)``: no
``finally``, no rollback by us, no flush — what a power cut leaves.

Armed only by a test, never in production: ``WATCHER_CRASH_AT=name[:n]`` (exit at the
n-th time the point is reached, default 1; several names separated by commas) is honoured
only with ``WATCHER_CRASH_POINTS=test`` as well and only when every enabled network is a
local devnet chain. Set on any other configuration, ``watcher run`` refuses to start
(:func:`arm`). Unarmed, a point costs one ``is None`` check.

This module imports nothing of the project, so every layer may call it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

ENV = "WATCHER_CRASH_AT"
OPT_IN = "WATCHER_CRASH_POINTS"
OPT_IN_VALUE = "test"
EXIT_CODE = 86

#: Every crash point, and the window it opens. A test covers each (a new point without
#: a test fails tests/integration/test_crash_points.py).
POINTS: dict[str, str] = {
    "migrations.after_step": "a migration step applied, the upgrade's transaction open",
    "listener.persist.before_commit": "a listener step's rows written, not committed",
    "listener.persist.after_commit": "a listener step committed (cursor and credits)",
    "intake.batch.before_commit": "withdrawals and holds written, not committed",
    "intake.batch.after_commit": "withdrawals committed, the client not answered",
    "sender.persist.before_commit": "signed attempts written, not committed",
    "sender.persist.after_commit": "signed attempts committed, nothing broadcast",
    "sender.broadcast.after_send": "broadcast to the node, not marked broadcast",
    "tracker.mined.after_commit": "a receipt recorded (mined), not settled",
    "tracker.settle.before_commit": "completion and settlement written, not committed",
    "tracker.settle.after_commit": "a payout settled and committed",
}


class CrashPointRefused(Exception):
    """The crash switch is set where it must not be honoured."""


_armed: dict[str, int] | None = None  # name -> hits left before the exit


def parse(value: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, _, nth = item.partition(":")
        if name not in POINTS:
            raise CrashPointRefused(f"{ENV}: unknown crash point {name!r}")
        if nth and not (nth.isascii() and nth.isdigit() and int(nth) > 0):
            raise CrashPointRefused(f"{ENV}: {item!r}: the count must be a positive integer")
        armed[name] = int(nth) if nth else 1
    return armed


def arm(env: Mapping[str, str], chain_ids: Iterable[int], local_chain_ids: Iterable[int]) -> None:
    """Arm the points named in ``env`` (a daemon calls this first thing). Refused unless
    explicitly opted in for tests and every chain is a local devnet."""
    global _armed
    value = env.get(ENV, "")
    if not value:
        _armed = None
        return
    if env.get(OPT_IN) != OPT_IN_VALUE:
        raise CrashPointRefused(
            f"{ENV} is set but {OPT_IN} is not {OPT_IN_VALUE!r}: crash points are a test-only "
            f"switch that kills the daemon; unset {ENV}"
        )
    local = set(local_chain_ids)
    foreign = sorted(set(chain_ids) - local)
    if foreign:
        raise CrashPointRefused(
            f"{ENV} is set on a configuration with non-devnet chains {foreign}: crash points "
            f"are honoured on local devnets only; unset {ENV}"
        )
    _armed = parse(value)


def disarm() -> None:
    global _armed
    _armed = None


def crash_point(name: str) -> None:
    """Exit the process at once here when armed for ``name`` (see the module doc)."""
    if _armed is None:
        return
    left = _armed.get(name)
    if left is None:
        return
    if left > 1:
        _armed[name] = left - 1
        return
    os.write(2, f"crash point {name}: exiting with {EXIT_CODE}\n".encode())
    os._exit(EXIT_CODE)
