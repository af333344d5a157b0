"""Confirmation rules (DOMAIN §5) as tables."""

from __future__ import annotations

from decimal import Decimal

import pytest

from watcher.domain.confirmations import (
    ConfirmationRule,
    confirmations,
    eta_seconds,
    final_upto,
    is_final,
    remaining_blocks,
)

DEVNET = ConfirmationRule.of_depth(3)
ETHEREUM = ConfirmationRule.of_depth(12)
BSC = ConfirmationRule.of_depth(15)
FINALIZED = ConfirmationRule.of_tag("finalized")
SAFE = ConfirmationRule.of_tag("safe")


@pytest.mark.parametrize(
    ("head", "block", "expected"),
    [
        (100, 100, 1),  # the block itself is the first confirmation
        (102, 100, 3),
        (99, 100, 0),  # head behind the log's block (lagging node): 0, never negative
        (0, 0, 1),
        (1_000, 1, 1_000),
    ],
)
def test_confirmations(head: int, block: int, expected: int) -> None:
    assert confirmations(head, block) == expected


@pytest.mark.parametrize(
    ("rule", "block", "head", "tagged", "expected"),
    [
        (DEVNET, 100, 101, None, False),  # 2 confirmations
        (DEVNET, 100, 102, None, True),  # 3 confirmations
        (DEVNET, 100, 150, None, True),
        (ETHEREUM, 100, 110, None, False),  # 11
        (ETHEREUM, 100, 111, None, True),  # 12
        (BSC, 1_000, 1_014, None, True),  # 15
        (BSC, 1_000, 1_013, None, False),  # 14
        (ConfirmationRule.of_depth(1), 7, 7, None, True),
        (ConfirmationRule.of_depth(1), 7, 6, None, False),
        # Tag rules ignore the depth and compare with the tagged block.
        (FINALIZED, 100, 200, 100, True),
        (FINALIZED, 100, 200, 99, False),
        (FINALIZED, 100, 200, None, False),  # node has no finalized block yet
        (SAFE, 50, 60, 60, True),
        (SAFE, 61, 61, 60, False),
    ],
)
def test_is_final(
    rule: ConfirmationRule, block: int, head: int, tagged: int | None, expected: bool
) -> None:
    assert is_final(rule, block, head, tagged) is expected


@pytest.mark.parametrize(
    ("rule", "head", "tagged", "expected"),
    [
        (DEVNET, 102, None, 100),  # block 100 has its 3 confirmations at head 102
        (DEVNET, 2, None, 0),
        (DEVNET, 1, None, None),  # no block has 3 confirmations yet
        (FINALIZED, 120, 88, 88),
        (FINALIZED, 120, None, None),  # the node has no finalized block yet
        (SAFE, 90, 95, 90),  # a tagged block above the head counts as the head
    ],
)
def test_final_upto(
    rule: ConfirmationRule, head: int, tagged: int | None, expected: int | None
) -> None:
    assert final_upto(rule, head, tagged) == expected
    if expected is not None:  # agrees with is_final at the boundary
        assert is_final(rule, expected, head, tagged)
        assert not is_final(rule, expected + 1, head, tagged) or expected == head


@pytest.mark.parametrize(
    ("rule", "block", "head", "block_time", "tagged", "blocks", "seconds"),
    [
        # Ethereum, 12 confirmations, 6 so far: 6 × 12 s.
        (ETHEREUM, 100, 105, 12, None, 6, 72),
        (ETHEREUM, 100, 111, 12, None, 0, 0),
        # Arbitrum 20 confirmations at 0.25 s: 19 left → 4.75 s → ceil 5.
        (ConfirmationRule.of_depth(20), 500, 500, Decimal("0.25"), None, 19, 5),
        # BSC 15 at 0.75 s, just seen: 14 × 0.75 = 10.5 → 11.
        (BSC, 10, 10, "0.75", None, 14, 11),
        # Devnet 3 confirmations at 1 s, head still behind the block: 3 blocks.
        (DEVNET, 10, 9, 1, None, 3, 3),
        # finalized lags the head by 64 on anvil: block 150, finalized 100 → 50 blocks.
        (FINALIZED, 150, 164, 12, 100, 50, 600),
        (FINALIZED, 90, 164, 12, 100, 0, 0),
        (SAFE, 101, 132, Decimal("2"), 100, 1, 2),
    ],
)
def test_eta(
    rule: ConfirmationRule,
    block: int,
    head: int,
    block_time: Decimal | int | str,
    tagged: int | None,
    blocks: int,
    seconds: int,
) -> None:
    assert remaining_blocks(rule, block, head, tagged) == blocks
    result = eta_seconds(rule, block, head, block_time, tagged=tagged)
    assert result == seconds
    assert type(result) is int


def test_eta_rejects_float_and_missing_tag() -> None:
    with pytest.raises(TypeError):
        eta_seconds(DEVNET, 1, 1, 0.25)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finalized"):
        eta_seconds(FINALIZED, 1, 1, 12)
    with pytest.raises(ValueError):
        eta_seconds(DEVNET, 1, 1, Decimal("NaN"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, ConfirmationRule(depth=12)),
        ("3", ConfirmationRule(depth=3)),
        ("finalized", ConfirmationRule(tag="finalized")),
        ("safe", ConfirmationRule(tag="safe")),
    ],
)
def test_rule_parse(value: int | str, expected: ConfirmationRule) -> None:
    assert ConfirmationRule.parse(value) == expected


@pytest.mark.parametrize("value", [0, -1, "latest", "", "1.5"])
def test_rule_parse_rejects(value: int | str) -> None:
    with pytest.raises(ValueError):
        ConfirmationRule.parse(value)


def test_rule_needs_exactly_one_of_depth_or_tag() -> None:
    with pytest.raises(ValueError):
        ConfirmationRule()
    with pytest.raises(ValueError):
        ConfirmationRule(depth=3, tag="safe")
    with pytest.raises(ValueError):
        ConfirmationRule(tag="pending")  # type: ignore[arg-type]
    assert str(ETHEREUM) == "12 confirmations"
    assert str(FINALIZED) == "finalized"
