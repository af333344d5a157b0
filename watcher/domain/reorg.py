"""Reorg detection and the common-ancestor search, as pure steps.

Pure: no I/O. The async listener owns the fetching; this module only decides
what to compare and what to fetch next, so every branch is tested with tables.

The stored *canonical window* maps block number → block hash for the last
blocks the watcher has processed (principle 4: hashes, not only numbers).
Because a block hash commits to its parent hash, two chains that agree on the
hash at height ``n`` agree on every block below ``n``. So:

* **Detect**: a fresh header ``h`` continues the window iff
  ``h.parent_hash == stored[h.number - 1]`` (and, if we stored ``h.number``
  itself, ``h.hash == stored[h.number]``).
* **Find the fork point**: walk down from the stored tip, comparing the stored
  hash with the canonical hash the node now reports for that height; the first
  (highest) match is the common ancestor. :func:`fork_point_step` is that walk
  as a step function: give it what has been fetched so far, it answers
  :class:`NeedHashes` (fetch these numbers, highest first), :class:`Found`, or
  :class:`WindowExhausted` (no match in the window: deeper than we can see).

Worked example: stored {100: a, 101: b, 102: c}, node now has 101: b', 102: c'
(so 100 still is ``a``). Step 1 → NeedHashes(102, 101, 100); after fetching,
step 2 → Found(100, a); depth = tip − ancestor = 102 − 100 = 2 blocks replaced.

With 3 confirmations (devnet) a deposit in block 101 had 102 − 101 + 1 = 2
confirmations at tip 102 — not yet credited, so the reorg is shallow; in block
100 or below it would have been untouched. :func:`is_deep` says whether a
reorg may have replaced a block whose deposits were already credited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from watcher.domain.confirmations import ConfirmationRule

__all__ = [
    "BlockRef",
    "Continuity",
    "ForkStep",
    "Found",
    "InconsistentHeaders",
    "NeedHashes",
    "ReorgDepthExceeded",
    "WindowExhausted",
    "check_continuity",
    "compare",
    "fork_point_step",
    "is_deep",
    "reorg_depth",
]


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block header reduced to what the watcher stores and compares.

    Hashes are lowercase ``0x``-prefixed hex strings.
    """

    number: int
    hash: str
    parent_hash: str
    timestamp: int


def _norm(h: str) -> str:
    return h.lower()


def compare(stored_hash: str | None, fetched_hash: str | None) -> bool:
    """Same block? Case-insensitive; an unknown side (``None``) never matches."""
    if stored_hash is None or fetched_hash is None:
        return False
    return _norm(stored_hash) == _norm(fetched_hash)


@dataclass(frozen=True, slots=True)
class Continuity:
    """Result of :func:`check_continuity`.

    ``ok`` → the headers extend (or re-confirm) the stored window.
    Otherwise ``mismatch_at`` is the lowest height whose stored block is no
    longer canonical: the fork point lies below it.
    """

    ok: bool
    mismatch_at: int | None = None
    reason: str = ""


def check_continuity(stored: Mapping[int, str], headers: Sequence[BlockRef]) -> Continuity:
    """Do freshly fetched ``headers`` agree with the stored window?

    ``headers`` are consecutive or not, in any order; each is checked against
    the stored hash at its own height and its parent's height, and consecutive
    fetched headers are checked against each other (a node answering from two
    forks in one response is caught here as a mismatch, not silently mixed).

    Example: stored {10: a, 11: b}; header 12 with parent ``b`` → ok;
    header 12 with parent ``x`` → mismatch_at 11 (block 11 was replaced).
    """
    by_number = {h.number: h for h in headers}
    lowest_mismatch: int | None = None
    reasons: list[str] = []

    def note(height: int, why: str) -> None:
        nonlocal lowest_mismatch
        if lowest_mismatch is None or height < lowest_mismatch:
            lowest_mismatch = height
        reasons.append(why)

    for h in sorted(by_number.values(), key=lambda b: b.number):
        own = stored.get(h.number)
        if own is not None and not compare(own, h.hash):
            note(h.number, f"block {h.number}: stored {own}, node has {h.hash}")
        parent = stored.get(h.number - 1)
        if parent is not None and not compare(parent, h.parent_hash):
            note(h.number - 1, f"block {h.number} has parent {h.parent_hash}, stored {parent}")
        prev = by_number.get(h.number - 1)
        if prev is not None and not compare(prev.hash, h.parent_hash):
            # The node's own answers do not link: treat the lower one as suspect.
            note(h.number - 1, f"fetched blocks {h.number - 1} and {h.number} do not link")
    if lowest_mismatch is None:
        return Continuity(ok=True)
    return Continuity(ok=False, mismatch_at=lowest_mismatch, reason="; ".join(reasons))


# --- common-ancestor search -------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeedHashes:
    """Fetch the canonical hashes of these heights (highest first), then step again."""

    numbers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Found:
    """The common ancestor: the highest stored block that still is canonical."""

    number: int
    hash: str


@dataclass(frozen=True, slots=True)
class WindowExhausted:
    """No stored block is canonical: the fork point is below ``lowest_checked``.

    The reorg is at least ``tip - lowest_checked + 1`` blocks deep; the
    listener must raise the deep-reorg alarm rather than guess.
    """

    lowest_checked: int
    tip: int

    @property
    def min_depth(self) -> int:
        return self.tip - self.lowest_checked + 1


@dataclass(frozen=True, slots=True)
class InconsistentHeaders:
    """The fetched canonical headers do not link to each other; refetch."""

    number: int
    reason: str


ForkStep = NeedHashes | Found | WindowExhausted | InconsistentHeaders


def fork_point_step(
    stored: Mapping[int, str],
    fetched: Mapping[int, str] | Mapping[int, BlockRef],
    *,
    start: int | None = None,
    batch: int = 16,
) -> ForkStep:
    """One step of the common-ancestor walk.

    ``stored``: the canonical window (number → hash). ``fetched``: canonical
    hashes (or headers) the node reported so far during this search. ``start``:
    the highest height to consider (default the stored tip), e.g. the
    ``mismatch_at`` from :func:`check_continuity`.

    Walks down from ``start``: a height not fetched yet → :class:`NeedHashes`
    for up to ``batch`` consecutive missing heights; stored == fetched →
    :class:`Found`; below the window → :class:`WindowExhausted`. When headers
    are given, consecutive ones must link by parent hash.

    Usage from an async loop::

        fetched = {}
        while isinstance(step := fork_point_step(stored, fetched), NeedHashes):
            for b in await client.get_blocks(step.numbers):
                fetched[b.number] = b
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    if not stored:
        raise ValueError("the stored window is empty: nothing to compare against")
    tip = max(stored)
    lowest = min(stored)
    height = tip if start is None else min(start, tip)

    # Headers must link to each other: a node that switches forks mid-search
    # would otherwise make us pick an ancestor from a chain that never existed.
    for n, item in fetched.items():
        if isinstance(item, BlockRef):
            below = fetched.get(n - 1)
            if isinstance(below, BlockRef) and not compare(below.hash, item.parent_hash):
                return InconsistentHeaders(n - 1, f"fetched blocks {n - 1} and {n} do not link")

    n = height
    while n >= lowest:
        if n not in stored:
            # A hole in the window: we cannot compare here, keep walking down.
            n -= 1
            continue
        if n not in fetched:
            missing: list[int] = []
            m = n
            while m >= lowest and len(missing) < batch:
                if m in stored and m not in fetched:
                    missing.append(m)
                m -= 1
            return NeedHashes(tuple(missing))
        got = fetched[n]
        got_hash = got.hash if isinstance(got, BlockRef) else got
        if compare(stored[n], got_hash):
            return Found(n, stored[n])
        n -= 1
    return WindowExhausted(lowest_checked=lowest, tip=tip)


# --- depth and alarms -------------------------------------------------------


def reorg_depth(tip: int, ancestor: int) -> int:
    """Blocks replaced: ``tip - ancestor`` (stored tip 102, ancestor 100 → 2)."""
    if ancestor > tip:
        raise ValueError(f"ancestor {ancestor} is above tip {tip}")
    return tip - ancestor


def is_deep(
    depth: int,
    rule: ConfirmationRule,
    *,
    tip: int | None = None,
    tagged_block_number: int | None = None,
) -> bool:
    """Could the reorg have replaced a block whose deposits were credited?

    Depth rule N: the lowest replaced block is ``tip - depth + 1``; at the old
    tip it had ``depth`` confirmations, so it was credited iff ``depth >= N``.
    Tag rule: deep iff the lowest replaced block is at or below the tagged
    block we last saw (``tip - depth + 1 <= tagged``) — finality was violated.
    """
    if depth < 0:
        raise ValueError(f"reorg depth cannot be negative, got {depth}")
    if depth == 0:
        return False
    if rule.depth is not None:
        return depth >= rule.depth
    if tip is None:
        raise ValueError("tip is needed to judge a reorg under a tag rule")
    if tagged_block_number is None:
        return False
    return tip - depth + 1 <= tagged_block_number


class ReorgDepthExceeded(Exception):
    """A reorg deeper than the credit threshold (principle 4).

    The listener records an alarm that stays until an operator clears it.
    ``ancestor`` is ``None`` when the fork point lies below the stored window.
    """

    def __init__(
        self,
        *,
        chain_id: int,
        tip: int,
        depth: int,
        rule: ConfirmationRule,
        ancestor: int | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.tip = tip
        self.depth = depth
        self.rule = rule
        self.ancestor = ancestor
        where = f"common ancestor {ancestor}" if ancestor is not None else "no common ancestor"
        super().__init__(
            f"chain {chain_id}: reorg of {depth} blocks below tip {tip} ({where}) "
            f"reaches past the credit rule ({rule})"
        )
