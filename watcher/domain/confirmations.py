"""When a deposit's block is final enough to credit (DOMAIN §5).

Pure: no I/O. A network's rule is either

* a depth ``N >= 1``: a log in block ``b`` is final when
  ``head - b + 1 >= N`` (the block itself counts as the first confirmation), or
* a tag, ``"finalized"`` or ``"safe"``: final when ``b <= number(tag block)``.

For tag rules the caller must also check that the hash it stored for ``b``
still is the canonical one (the reorg machinery in :mod:`watcher.domain.reorg`
does that for every stored block); this module only compares numbers.

Worked example (devnet, 3 confirmations): a deposit in block 100 has 1
confirmation at head 100, 3 at head 102 and is then final.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, TypeAlias

__all__ = [
    "ConfirmationRule",
    "FinalityTag",
    "confirmations",
    "eta_seconds",
    "final_upto",
    "is_final",
    "remaining_blocks",
]

FinalityTag: TypeAlias = Literal["finalized", "safe"]
_TAGS: frozenset[str] = frozenset({"finalized", "safe"})


@dataclass(frozen=True, slots=True)
class ConfirmationRule:
    """Either ``depth`` (N confirmations) or ``tag`` (a finality tag), never both."""

    depth: int | None = None
    tag: FinalityTag | None = None

    def __post_init__(self) -> None:
        if (self.depth is None) == (self.tag is None):
            raise ValueError("a confirmation rule is either a depth or a tag, exactly one")
        if self.depth is not None:
            if isinstance(self.depth, bool) or not isinstance(self.depth, int):
                raise TypeError(f"depth must be an int, got {type(self.depth).__name__}")
            if self.depth < 1:
                raise ValueError(f"confirmation depth must be >= 1, got {self.depth}")
        if self.tag is not None and self.tag not in _TAGS:
            raise ValueError(f"finality tag must be 'finalized' or 'safe', got {self.tag!r}")

    @classmethod
    def of_depth(cls, n: int) -> ConfirmationRule:
        return cls(depth=n)

    @classmethod
    def of_tag(cls, tag: FinalityTag) -> ConfirmationRule:
        return cls(tag=tag)

    @classmethod
    def parse(cls, value: int | str) -> ConfirmationRule:
        """From configuration: ``12`` / ``"12"`` → depth 12, ``"finalized"`` → tag."""
        if isinstance(value, str):
            if value in _TAGS:
                return cls(tag=value)  # type: ignore[arg-type]
            if value.isdigit():
                return cls(depth=int(value))
            raise ValueError(f"not a confirmation rule: {value!r}")
        return cls(depth=value)

    @property
    def is_tag(self) -> bool:
        return self.tag is not None

    def __str__(self) -> str:
        if self.tag is not None:
            return self.tag
        return f"{self.depth} confirmations"


def confirmations(head: int, block_number: int) -> int:
    """``max(0, head - block_number + 1)``: the block itself is confirmation 1."""
    return max(0, head - block_number + 1)


def is_final(
    rule: ConfirmationRule,
    block_number: int,
    head: int,
    tagged_block_number: int | None = None,
) -> bool:
    """Whether a log in ``block_number`` may be credited now.

    ``tagged_block_number`` is the number of the block the node reports for the
    rule's tag (``eth_getBlockByNumber("finalized")``); ``None`` (the node has no
    such block yet) means nothing is final under a tag rule.
    """
    if rule.depth is not None:
        return confirmations(head, block_number) >= rule.depth
    if tagged_block_number is None:
        return False
    return block_number <= tagged_block_number


def final_upto(
    rule: ConfirmationRule, head: int, tagged_block_number: int | None = None
) -> int | None:
    """The highest block number that is final now, or None when no block is yet (a
    depth larger than the chain, or a tag the node has no block for). A tagged block
    above ``head`` counts as ``head``.

    >>> final_upto(ConfirmationRule.of_depth(3), 102)
    100
    """
    if rule.depth is not None:
        newest = head - rule.depth + 1
        return newest if newest >= 0 else None
    if tagged_block_number is None:
        return None
    return min(tagged_block_number, head)


def remaining_blocks(
    rule: ConfirmationRule,
    block_number: int,
    head: int,
    tagged: int | None = None,
) -> int:
    """Blocks still to be produced before ``block_number`` is final.

    For tag rules the tag is assumed to keep its current lag behind the head:
    the tagged block reaches ``b`` after ``b - tagged`` more blocks.
    """
    if rule.depth is not None:
        return max(0, rule.depth - confirmations(head, block_number))
    if tagged is None:
        raise ValueError(f"the {rule.tag!r} block number is needed to estimate a tag rule")
    return max(0, block_number - tagged)


def eta_seconds(
    rule: ConfirmationRule,
    block_number: int,
    head: int,
    block_time_seconds: Decimal | int | str,
    tagged: int | None = None,
) -> int:
    """Estimated whole seconds until final: ``ceil(remaining_blocks × block time)``.

    ``block_time_seconds`` is exact (``Decimal("0.25")`` for Arbitrum, or a
    string from configuration); floats are refused so the estimate is
    reproducible. Example: 12 confirmations on Ethereum, deposit in block 100,
    head 105 → 6 confirmations, 6 blocks × 12 s = 72 s.
    """
    if isinstance(block_time_seconds, float):
        raise TypeError("block_time_seconds must be a Decimal, int or str, not float")
    block_time = Decimal(block_time_seconds)
    if not block_time.is_finite() or block_time < 0:
        raise ValueError(f"block time must be a finite non-negative number, got {block_time}")
    blocks = remaining_blocks(rule, block_number, head, tagged)
    return math.ceil(blocks * block_time)
