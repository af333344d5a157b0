"""Crash points: named places where a TEST can make the real process exit hard.

The FoundationDB "buggify" idea, kept small. Each persist boundary of the chain roles
calls :func:`crash_point` with its name; the call does nothing unless the daemon was
started with::

    WATCHER_CRASH_AT=sender.persist.after_commit      # name[:nth][,name[:nth]...]
    WATCHER_CRASH_POINTS=test-only                    # the second, explicit opt-in

and every enabled network is a devnet (chain id 31337). Then the n-th time (default
the first) the named point is reached, the process calls ``os._exit(EXIT_CODE)``: no
``finally``, no rollback by us, no flush, as a kill -9 at that line would. A test sees
exit code 86, restarts the daemon without the variable and checks that everything
settles exactly once (tests/integration/test_crash_points.py).

Production refuses it: ``watcher run`` with ``WATCHER_CRASH_AT`` set and no opt-in,
or on any network that is not a devnet, does not start (:func:`arm` raises
:class:`CrashPointsRefused`). The variables are read once, by :func:`arm`, at start;
before that and when unarmed a crash point is one dict lookup of an empty dict.

This module is a leaf: it imports nothing of the project, so every layer may use it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

ENV_POINTS = "WATCHER_CRASH_AT"
ENV_OPT_IN = "WATCHER_CRASH_POINTS"
OPT_IN_VALUE = "test-only"
EXIT_CODE = 86
DEVNET_CHAIN_IDS = frozenset({31337})

#: Every crash point, with where it is. A test lists this registry: a point added here
#: without a scenario in tests/integration/test_crash_points.py fails the suite.
POINTS: dict[str, str] = {
    "migrate.between_steps": "after one migration is applied, before the next one",
    "listener.step.before_commit": "listener step: deposits, credits, cursor written, "
    "transaction not committed",
    "listener.step.after_commit": "listener step committed, before its log lines",
    "intake.before_commit": "withdrawal request: hold and row written, not committed",
    "intake.after_commit": "withdrawal request committed, before the client is answered",
    "sender.persist.before_commit": "signed transactions written, not committed",
    "sender.persist.after_commit": "signed transactions committed, not broadcast",
    "sender.broadcast.after_send": "broadcast to the node, not marked broadcast",
    "sender.broadcast.after_mark": "marked broadcast",
    "tracker.receipt.before_commit": "receipt seen and written (mined), not committed",
    "tracker.receipt.after_commit": "receipt committed (mined), before the settlement",
    "tracker.settle.before_commit": "withdrawal completed and hold settled, not committed",
    "tracker.settle.after_commit": "settlement committed",
    "tracker.replace.after_commit": "fee-bumped replacement committed (signed), not broadcast",
    "tracker.replace.after_send": "replacement broadcast, not marked broadcast",
}


class CrashPointsRefused(RuntimeError):
    """``WATCHER_CRASH_AT`` is set where crash points must not be honoured."""


_armed: dict[str, int] = {}  # point → hits left before the exit


def parse(spec: str) -> dict[str, int]:
    """``name[:nth][,name[:nth]...]`` → {name: nth}; unknown names are an error."""
    out: dict[str, int] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, nth = item.partition(":")
        if name not in POINTS:
            raise CrashPointsRefused(
                f"{ENV_POINTS}: unknown crash point {name!r} (known: {', '.join(POINTS)})"
            )
        if nth and not (nth.isascii() and nth.isdigit() and int(nth) >= 1):
            raise CrashPointsRefused(f"{ENV_POINTS}: {item!r}: nth must be a whole number >= 1")
        out[name] = int(nth) if nth else 1
    return out


def arm(chain_ids: Iterable[int], env: Mapping[str, str] | None = None) -> list[str]:
    """Read the variables once, at the daemon's start. Nothing set: nothing armed.
    Set without the opt-in or with a network that is not a devnet: refused (the daemon
    must not start, never silently ignore it). Returns the armed point names."""
    env = os.environ if env is None else env
    spec = env.get(ENV_POINTS, "")
    _armed.clear()
    if not spec.strip():
        return []
    if env.get(ENV_OPT_IN) != OPT_IN_VALUE:
        raise CrashPointsRefused(
            f"{ENV_POINTS} is set but {ENV_OPT_IN}={OPT_IN_VALUE} is not: crash points make "
            f"the process exit on purpose and are for tests only; unset {ENV_POINTS}"
        )
    foreign = sorted(set(chain_ids) - DEVNET_CHAIN_IDS)
    if foreign:
        raise CrashPointsRefused(
            f"{ENV_POINTS} is set but chain id(s) {foreign} are not a devnet "
            f"({sorted(DEVNET_CHAIN_IDS)}): crash points are refused outside tests; "
            f"unset {ENV_POINTS}"
        )
    _armed.update(parse(spec))
    return sorted(_armed)


def disarm() -> None:
    _armed.clear()


def crash_point(name: str) -> None:
    """Exit the process with :data:`EXIT_CODE` if ``name`` is armed and this is its n-th
    hit; otherwise nothing."""
    if not _armed:
        return
    left = _armed.get(name)
    if left is None:
        return
    if left > 1:
        _armed[name] = left - 1
        return
    sys.stderr.write(f"crash point {name}: exiting with {EXIT_CODE}\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE)
