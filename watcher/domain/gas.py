"""EIP-1559 fee choice for withdrawal transactions, pure integers in wei.

First attempt: tip = min(node's suggestion, tip cap); max fee = min(2 × base fee + tip,
max-fee cap). Two times the base fee survives six full blocks of +12.5 % base-fee
growth, so an ordinary attempt is not priced out by a short burst.

Replacement under the same nonce (a stuck attempt): nodes accept it only if *both*
fee fields rise by at least 10 % (geth's and anvil's price bump), so each field
becomes max(old × (100 + bump) / 100 rounded up, old + 1, what the market asks now),
with bump ≥ 10. If a cap stops either field short of that minimum the replacement
would be refused anyway: :func:`bumped_fees` returns None and the caller raises an
alarm instead of sending.

Worked example: old tip 1 gwei, old max 20 gwei, bump 15 %, base now 12 gwei, node
tip 1 gwei → tip 1.15 gwei, max max(23, 25.15) = 25.15 gwei (under a 500 gwei cap).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

GWEI = 10**9
NODE_MIN_BUMP_PERCENT = 10


class FeeConfigError(ValueError):
    """A fee cap in gwei that is not a whole number of wei."""


def gwei_to_wei(value: Decimal) -> int:
    wei = value * GWEI
    if wei != wei.to_integral_value():
        raise FeeConfigError(f"{value} gwei is not a whole number of wei")
    return int(wei)


@dataclass(frozen=True, slots=True)
class Fees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


@dataclass(frozen=True, slots=True)
class FeeCaps:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


def _up(value: int, percent: int) -> int:
    return -(-value * (100 + percent) // 100)


def initial_fees(base_fee: int, node_tip: int, caps: FeeCaps) -> Fees:
    tip = min(node_tip, caps.max_priority_fee_per_gas)
    max_fee = min(2 * base_fee + tip, caps.max_fee_per_gas)
    return Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=min(tip, max_fee))


def bumped_fees(
    old: Fees, base_fee: int, node_tip: int, bump_percent: int, caps: FeeCaps
) -> Fees | None:
    """Fees for a replacement of ``old``, or None when the caps forbid a valid bump."""
    percent = max(bump_percent, NODE_MIN_BUMP_PERCENT)
    min_tip = max(_up(old.max_priority_fee_per_gas, percent), old.max_priority_fee_per_gas + 1)
    min_max = max(_up(old.max_fee_per_gas, percent), old.max_fee_per_gas + 1)
    tip = max(min_tip, min(node_tip, caps.max_priority_fee_per_gas))
    max_fee = max(min_max, 2 * base_fee + tip)
    max_fee = min(max_fee, caps.max_fee_per_gas)
    if tip > caps.max_priority_fee_per_gas or max_fee < min_max or tip > max_fee:
        return None
    return Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip)
