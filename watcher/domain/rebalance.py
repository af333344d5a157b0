"""Auto-conversion of negative balances (DOMAIN.md §3).

For each negative asset N (in name order; each sees what earlier ones left):

* shortfall S = |balance_N| × price_N in USD;
* S is split across the positive assets P in proportion to their USD value
  v_P = balance_P × price_P; P's share is converted at price_P × autoExchangeRate_P,
  so the quantity debited is ``ceil(S × v_P / (Σv × price_P × rate_P))`` to P's
  precision — one directed division, so the ceil is of the exact quotient;
* an asset whose share exceeds its balance is converted entirely and the rest of S is
  split again over the remaining assets (their shares only grow, so this terminates
  after at most one round per asset): no asset is ever debited more than it holds;
* covered: N is credited exactly |balance_N| and ends at 0; the rounding-up surplus
  (< one base unit per debited asset) goes to the exchange's conversion account;
* not covered (every positive asset converted entirely): N is credited the USD value
  actually received divided by price_N, floored to N's precision, and stays negative.

Worked example: USDT −10,000; BTC 0.5 at 60,000, rate 0.975 →
ceil(10,000 / 58,500, 1e-8) = 0.17094018 BTC debited, USDT 0, BTC 0.32905982.

The plan's ``legs`` are the account's side of one ``auto_conversion`` journal
transaction; the caller posts the opposite of each leg on the conversion account,
so every asset balances within the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from watcher.domain.account import (
    ZERO,
    AccountSnapshot,
    SnapshotError,
    ceil_to,
    div_ceil,
    div_floor,
    exact,
    floor_to,
)


@dataclass(frozen=True)
class RebalanceLeg:
    """A signed change of one asset of the account (+ credit, − debit)."""

    asset: str
    delta: Decimal


@dataclass(frozen=True)
class ConversionDebit:
    asset: str
    quantity: Decimal
    price: Decimal
    rate: Decimal
    value_usd: Decimal  # quantity × price × rate, exact


@dataclass(frozen=True)
class Conversion:
    """How one negative asset was (partly) cleared."""

    asset: str
    balance_before: Decimal
    credit: Decimal
    price: Decimal
    shortfall_usd: Decimal
    received_usd: Decimal
    debits: tuple[ConversionDebit, ...]

    @property
    def covered(self) -> bool:
        with exact():
            return self.balance_before + self.credit == 0


@dataclass(frozen=True)
class RebalancePlan:
    conversions: tuple[Conversion, ...]
    legs: tuple[RebalanceLeg, ...]
    balances_after: Mapping[str, Decimal]

    @property
    def is_empty(self) -> bool:
        return not self.legs

    @property
    def fully_covered(self) -> bool:
        return all(c.covered for c in self.conversions)

    @property
    def remaining_negative(self) -> tuple[str, ...]:
        return tuple(sorted(a for a, q in self.balances_after.items() if q < 0))


@dataclass(frozen=True)
class _Source:
    asset: str
    balance: Decimal
    price: Decimal
    rate: Decimal
    precision: int

    @property
    def usd_value(self) -> Decimal:
        with exact():
            return self.balance * self.price

    @property
    def conversion_value(self) -> Decimal:
        with exact():
            return self.balance * self.price * self.rate


def _sources(snapshot: AccountSnapshot, balances: Mapping[str, Decimal]) -> list[_Source]:
    """Positive assets that can be converted (price and rate above 0), by name."""
    out: list[_Source] = []
    for asset in sorted(balances):
        qty = balances[asset]
        if qty <= 0:
            continue
        info = snapshot.asset_info(asset)
        price = snapshot.price_of(asset)
        if price > 0 and info.auto_exchange_rate > 0:
            out.append(_Source(asset, qty, price, info.auto_exchange_rate, info.precision))
    return out


def _debits(
    shortfall: Decimal, sources: list[_Source]
) -> tuple[list[tuple[_Source, Decimal]], bool]:
    """Quantities to debit for ``shortfall`` USD; the flag tells whether they cover it."""
    fully: list[tuple[_Source, Decimal]] = []
    active = list(sources)
    remaining = shortfall
    while active:
        with exact():
            total_value = sum((s.usd_value for s in active), ZERO)
        needs: list[tuple[_Source, Decimal]] = []
        for s in active:
            with exact():
                numerator = remaining * s.usd_value
                denominator = total_value * s.price * s.rate
            needs.append((s, ceil_to(div_ceil(numerator, denominator), s.precision)))
        over = [s for s, need in needs if need > s.balance]
        if not over:
            return fully + [(s, q) for s, q in needs if q > 0], True
        for s in over:
            fully.append((s, s.balance))
            with exact():
                remaining -= s.conversion_value
        active = [s for s in active if s not in over]
    return fully, remaining <= 0


def plan_rebalance(snapshot: AccountSnapshot) -> RebalancePlan:
    """Conversions that bring every negative asset of the account to 0 (or as near as possible)."""
    balances = dict(snapshot.balances)
    conversions: list[Conversion] = []
    for asset in snapshot.negative_assets():
        before = balances[asset]
        price = snapshot.price_of(asset)
        info = snapshot.asset_info(asset)
        if price <= 0:
            raise SnapshotError(f"cannot rebalance {asset}: its price is {price}")
        with exact():
            shortfall = -before * price
        picked, covered = _debits(shortfall, _sources(snapshot, balances))
        debits = []
        received = ZERO
        for source, qty in sorted(picked, key=lambda item: item[0].asset):
            with exact():
                value = qty * source.price * source.rate
                received += value
                balances[source.asset] -= qty
            debits.append(ConversionDebit(source.asset, qty, source.price, source.rate, value))
        if covered:
            credit = -before
        else:
            credit = min(-before, floor_to(div_floor(received, price), info.precision))
        with exact():
            balances[asset] = before + credit
        conversions.append(
            Conversion(asset, before, credit, price, shortfall, received, tuple(debits))
        )
    net: dict[str, Decimal] = {}
    for conversion in conversions:
        with exact():
            net[conversion.asset] = net.get(conversion.asset, ZERO) + conversion.credit
            for debit in conversion.debits:
                net[debit.asset] = net.get(debit.asset, ZERO) - debit.quantity
    legs = tuple(RebalanceLeg(a, d) for a, d in sorted(net.items()) if d != 0)
    return RebalancePlan(tuple(conversions), legs, balances)
