"""Reorg detection and fork-point search, as tables of small chains."""

from __future__ import annotations

import pytest

from watcher.domain.confirmations import ConfirmationRule
from watcher.domain.reorg import (
    BlockRef,
    Found,
    InconsistentHeaders,
    NeedHashes,
    ReorgDepthExceeded,
    WindowExhausted,
    check_continuity,
    compare,
    fork_point_step,
    is_deep,
    reorg_depth,
)


def h(label: str) -> str:
    """A readable fake 32-byte hash: h("a100") → 0x…a100."""
    return "0x" + label.encode().hex().rjust(64, "0")


def chain(numbers: range, fork: str = "") -> dict[int, BlockRef]:
    """Headers of a fake chain; `fork` relabels blocks from a fork height."""
    out: dict[int, BlockRef] = {}
    for n in numbers:
        out[n] = BlockRef(n, h(f"{fork}{n}"), h(f"{fork}{n - 1}"), 1_700_000_000 + n)
    return out


def fork_chain(numbers: range, fork_at: int) -> dict[int, BlockRef]:
    """Canonical up to fork_at, then blocks labelled x<n> above it."""
    out: dict[int, BlockRef] = {}
    for n in numbers:
        label = f"x{n}" if n > fork_at else f"{n}"
        parent = f"x{n - 1}" if n - 1 > fork_at else f"{n - 1}"
        out[n] = BlockRef(n, h(label), h(parent), 1_700_000_000 + n)
    return out


STORED = {n: h(str(n)) for n in range(100, 111)}  # window 100..110, tip 110


def test_compare_is_case_insensitive_and_none_never_matches() -> None:
    assert compare("0xABcd", "0xabCD")
    assert not compare("0xab", "0xac")
    assert not compare(None, "0xab")
    assert not compare("0xab", None)


@pytest.mark.parametrize(
    ("case", "headers", "ok", "mismatch_at"),
    [
        ("extends-tip", [chain(range(111, 112))[111]], True, None),
        ("extends-by-3", list(chain(range(111, 114)).values()), True, None),
        ("re-reads-window", list(chain(range(108, 112)).values()), True, None),
        # New block 111 whose parent is not our 110: 110 was replaced.
        ("parent-mismatch", [fork_chain(range(111, 112), 109)[111]], False, 110),
        # The node has another block at 108 itself.
        ("hash-mismatch", [fork_chain(range(108, 109), 107)[108]], False, 108),
        # Fork at 105: headers 104..111 from the new chain; lowest mismatch 106.
        ("deeper", list(fork_chain(range(104, 112), 105).values()), False, 106),
        ("empty", [], True, None),
        # Headers far above the window cannot be compared: nothing to say.
        ("gap", [chain(range(200, 201))[200]], True, None),
    ],
)
def test_check_continuity(
    case: str, headers: list[BlockRef], ok: bool, mismatch_at: int | None
) -> None:
    result = check_continuity(STORED, headers)
    assert result.ok is ok
    assert result.mismatch_at == mismatch_at
    assert bool(result.reason) is not ok


def test_check_continuity_catches_headers_from_two_forks() -> None:
    # 111 from the canonical chain, 112 from a fork: they do not link.
    headers = [chain(range(111, 112))[111], fork_chain(range(112, 113), 110)[112]]
    headers[1] = BlockRef(112, h("y112"), h("y111"), 0)
    result = check_continuity(STORED, headers)
    assert not result.ok
    assert result.mismatch_at == 111
    assert "do not link" in result.reason


def run_search(
    stored: dict[int, str], node: dict[int, BlockRef], batch: int = 4, start: int | None = None
) -> tuple[object, list[tuple[int, ...]]]:
    """Drive the step function like the async listener does, recording fetches."""
    fetched: dict[int, BlockRef] = {}
    requests: list[tuple[int, ...]] = []
    for _ in range(100):
        step = fork_point_step(stored, fetched, batch=batch, start=start)
        if not isinstance(step, NeedHashes):
            return step, requests
        requests.append(step.numbers)
        for n in step.numbers:
            fetched[n] = node[n]
    raise AssertionError("search did not terminate")


@pytest.mark.parametrize(
    ("case", "fork_at", "batch", "expected", "requests"),
    [
        # Fork at 108: 109, 110 replaced. Depth 110 - 108 = 2.
        ("depth-2", 108, 4, Found(108, h("108")), [(110, 109, 108, 107)]),
        ("depth-1", 109, 1, Found(109, h("109")), [(110,), (109,)]),
        ("no-reorg", 110, 2, Found(110, h("110")), [(110, 109)]),
        ("depth-5-batched", 105, 3, Found(105, h("105")), [(110, 109, 108), (107, 106, 105)]),
        # Everything in the window replaced: the fork point is below 100.
        (
            "window-exhausted",
            90,
            8,
            WindowExhausted(lowest_checked=100, tip=110),
            [(110, 109, 108, 107, 106, 105, 104, 103), (102, 101, 100)],
        ),
    ],
)
def test_fork_point_search(
    case: str,
    fork_at: int,
    batch: int,
    expected: object,
    requests: list[tuple[int, ...]],
) -> None:
    node = fork_chain(range(90, 120), fork_at)
    result, made = run_search(STORED, node, batch=batch)
    assert result == expected
    assert made == requests


def test_fork_point_search_with_plain_hashes_and_start() -> None:
    node = {n: b.hash for n, b in fork_chain(range(90, 120), 104).items()}
    # Continuity already told us 106 is replaced: start there.
    assert fork_point_step(STORED, {}, start=106, batch=2) == NeedHashes((106, 105))
    fetched = {106: node[106], 105: node[105]}
    assert fork_point_step(STORED, fetched, start=106, batch=2) == NeedHashes((104, 103))
    fetched |= {104: node[104]}
    assert fork_point_step(STORED, fetched, start=106) == Found(104, h("104"))


def test_fork_point_search_skips_holes_in_the_window() -> None:
    stored = {100: h("100"), 101: h("101"), 104: h("104")}
    node = fork_chain(range(95, 110), 101)
    result, made = run_search(stored, node, batch=10)
    assert result == Found(101, h("101"))
    assert made == [(104, 101, 100)]


def test_fork_point_search_detects_node_switching_forks() -> None:
    fetched = {
        110: fork_chain(range(110, 111), 105)[110],
        109: BlockRef(109, h("z109"), h("z108"), 0),  # not the parent of the 110 we got
    }
    step = fork_point_step(STORED, fetched)
    assert isinstance(step, InconsistentHeaders)
    assert step.number == 109


def test_fork_point_step_validates_input() -> None:
    with pytest.raises(ValueError):
        fork_point_step({}, {})
    with pytest.raises(ValueError):
        fork_point_step(STORED, {}, batch=0)


@pytest.mark.parametrize(
    ("tip", "ancestor", "depth"),
    [(110, 108, 2), (110, 110, 0), (5, 0, 5)],
)
def test_reorg_depth(tip: int, ancestor: int, depth: int) -> None:
    assert reorg_depth(tip, ancestor) == depth


def test_reorg_depth_rejects_ancestor_above_tip() -> None:
    with pytest.raises(ValueError):
        reorg_depth(10, 11)


@pytest.mark.parametrize(
    ("depth", "rule", "tip", "tagged", "deep"),
    [
        # Devnet 3 confirmations, tip 110: depth 2 replaces 109..110, which had at
        # most 2 confirmations → nothing credited.
        (2, ConfirmationRule.of_depth(3), 110, None, False),
        # Depth 3 replaces 108, which had 3 confirmations → credited → deep.
        (3, ConfirmationRule.of_depth(3), 110, None, True),
        (0, ConfirmationRule.of_depth(1), 110, None, False),
        (1, ConfirmationRule.of_depth(1), 110, None, True),
        (11, ConfirmationRule.of_depth(12), 110, None, False),
        (12, ConfirmationRule.of_depth(12), 110, None, True),
        # finalized at 100, tip 164: replacing 101..164 (depth 64) is allowed…
        (64, ConfirmationRule.of_tag("finalized"), 164, 100, False),
        # …replacing 100 itself (depth 65) broke finality.
        (65, ConfirmationRule.of_tag("finalized"), 164, 100, True),
        (5, ConfirmationRule.of_tag("safe"), 164, None, False),
    ],
)
def test_is_deep(
    depth: int, rule: ConfirmationRule, tip: int, tagged: int | None, deep: bool
) -> None:
    assert is_deep(depth, rule, tip=tip, tagged_block_number=tagged) is deep


def test_is_deep_validates() -> None:
    with pytest.raises(ValueError):
        is_deep(-1, ConfirmationRule.of_depth(3))
    with pytest.raises(ValueError):
        is_deep(3, ConfirmationRule.of_tag("finalized"))


def test_reorg_depth_exceeded_message() -> None:
    err = ReorgDepthExceeded(
        chain_id=31337, tip=110, depth=4, rule=ConfirmationRule.of_depth(3), ancestor=106
    )
    assert "reorg of 4 blocks below tip 110" in str(err)
    assert "common ancestor 106" in str(err)
    assert err.depth == 4
    assert err.ancestor == 106
