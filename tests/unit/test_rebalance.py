"""Auto-conversion of negative balances (DOMAIN.md §3)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal as D

import pytest

from watcher.domain.account import AccountSnapshot, AssetInfo, SnapshotError
from watcher.domain.rebalance import RebalanceLeg, plan_rebalance

ASSETS = {
    "USDT": AssetInfo("USDT", 8, D("0.9999"), D("0.975")),
    "USDC": AssetInfo("USDC", 8, D("0.9999"), D("0.975")),
    "BTC": AssetInfo("BTC", 8, D("0.95"), D("0.975")),
    "ETH": AssetInfo("ETH", 8, D("0.95"), D("0.975")),
    "POL": AssetInfo("POL", 8, D("0.9"), D("0.95")),
    "AAA": AssetInfo("AAA", 2, D("0.5"), D("0.1")),  # poor conversion rate
    "TRI": AssetInfo("TRI", 2, D("0.5"), D(1)),
    "LOCK": AssetInfo("LOCK", 8, D(0), D(0)),  # not convertible
}
PRICES = {
    "BTC": "60000",
    "ETH": "3000",
    "POL": "0.5",
    "USDC": "1",
    "AAA": "10",
    "TRI": "3",
    "LOCK": "1",
}


def snap(balances: Mapping[str, str], prices: Mapping[str, str] | None = None) -> AccountSnapshot:
    return AccountSnapshot(
        balances={a: D(q) for a, q in balances.items()},
        positions=(),
        open_orders=(),
        mark_prices={},
        asset_prices={a: D(p) for a, p in {**PRICES, **(prices or {})}.items()},
        brackets={},
        assets=ASSETS,
        multi_asset_mode=True,
    )


def test_domain_worked_example() -> None:
    plan = plan_rebalance(snap({"USDT": "-10000", "BTC": "0.5"}))
    assert plan.legs == (RebalanceLeg("BTC", D("-0.17094018")), RebalanceLeg("USDT", D(10000)))
    assert plan.balances_after == {"USDT": D(0), "BTC": D("0.32905982")}
    assert plan.fully_covered
    (conversion,) = plan.conversions
    assert conversion.shortfall_usd == D(10000)
    assert conversion.received_usd == D("10000.00053")  # 0.17094018 × 58,500
    assert conversion.covered


# (balances, extra prices, balances after, covered)
CASES = [
    pytest.param(
        {"USDT": "-10000", "BTC": "0.5"}, {},
        {"USDT": "0", "BTC": "0.32905982"}, True, id="domain-example",
    ),
    pytest.param(
        # split 6,000 : 4,000 → BTC ceil(600 / 58,500) = 0.01025642, ETH ceil(400 / 1,950)
        {"USDT": "-1000", "BTC": "0.1", "ETH": "2"}, {"ETH": "2000"},
        {"USDT": "0", "BTC": "0.08974358", "ETH": "1.79487179"}, True, id="proportional-two",
    ),
    pytest.param(
        # V = 600 + 300 + 100: BTC 60 / 58,500, ETH 30 / 2,925, POL 10 / 0.475 (each ceil)
        {"USDT": "-100", "BTC": "0.01", "ETH": "0.1", "POL": "200"}, {},
        {"USDT": "0", "BTC": "0.00897435", "ETH": "0.08974358", "POL": "178.94736842"}, True,
        id="proportional-three-rates",
    ),
    pytest.param(
        # partial: BTC 0.1 converts to 5,850 only → USDT −4,150
        {"USDT": "-10000", "BTC": "0.1"}, {},
        {"USDT": "-4150", "BTC": "0"}, False, id="partial-one",
    ),
    pytest.param(
        # partial: 2,925 + 1,950 = 4,875 → USDT −5,125
        {"USDT": "-10000", "BTC": "0.05", "ETH": "1"}, {"ETH": "2000"},
        {"USDT": "-5125", "BTC": "0", "ETH": "0"}, False, id="partial-two",
    ),
    pytest.param(
        # AAA's share 428.57 USD needs 428.57 AAA > 100 → all 100 AAA (= 100 USD), the
        # remaining 2,900 from BTC: ceil(2,900 / 58,500) = 0.04957265
        {"USDT": "-3000", "AAA": "100", "BTC": "0.1"}, {},
        {"USDT": "0", "AAA": "0", "BTC": "0.05042735"}, True, id="capped-then-redistributed",
    ),
    pytest.param(
        # negative BTC covered by USDT: 600 USD / 0.975 = 615.384615… → 615.38461539
        {"BTC": "-0.01", "USDT": "1000"}, {},
        {"BTC": "0", "USDT": "384.61538461"}, True, id="negative-btc",
    ),
    pytest.param(
        # partial credit floored to BTC precision: 975 / 70,000 = 0.013928571… → 0.01392857
        {"BTC": "-1", "USDT": "1000"}, {"BTC": "70000"},
        {"BTC": "-0.98607143", "USDT": "0"}, False, id="partial-credit-floored",
    ),
    pytest.param(
        # ETH first (name order): 200 / 58,500 → 0.00341881; then USDT 100 / 58,500 → 0.00170941
        {"USDT": "-100", "ETH": "-0.1", "BTC": "0.01"}, {"ETH": "2000"},
        {"USDT": "0", "ETH": "0", "BTC": "0.00487178"}, True, id="two-negatives",
    ),
    pytest.param(
        # LOCK has rate 0: never converted; BTC ceil(10 / 58,500) = 0.00017095
        {"USDT": "-10", "LOCK": "100", "BTC": "0.01"}, {},
        {"USDT": "0", "LOCK": "100", "BTC": "0.00982905"}, True, id="zero-rate-skipped",
    ),
    pytest.param(
        # precision 2: ceil(1 / 3, 0.01) = 0.34
        {"USDT": "-1", "TRI": "10"}, {}, {"USDT": "0", "TRI": "9.66"}, True, id="precision-2-ceil",
    ),
    pytest.param(
        # need exactly the whole balance: 58.5 / 58,500 = 0.001
        {"USDT": "-58.5", "BTC": "0.001"}, {}, {"USDT": "0", "BTC": "0"}, True, id="exact-balance",
    ),
    pytest.param(
        # USDC 50 / 0.975 = 51.282051282… → 51.28205129
        {"USDT": "-50", "USDC": "100"}, {},
        {"USDT": "0", "USDC": "48.71794871"}, True, id="stablecoin",
    ),
    pytest.param(
        {"USDT": "-5"}, {}, {"USDT": "-5"}, False, id="nothing-to-convert",
    ),
    pytest.param(
        {"USDT": "10", "BTC": "0.1"}, {}, {"USDT": "10", "BTC": "0.1"}, True, id="nothing-negative",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("balances", "prices", "after", "covered"), CASES)
def test_rebalance_table(
    balances: dict[str, str], prices: dict[str, str], after: dict[str, str], covered: bool
) -> None:
    snapshot = snap(balances, prices)
    plan = plan_rebalance(snapshot)
    assert {a: q for a, q in plan.balances_after.items()} == {a: D(q) for a, q in after.items()}
    assert plan.fully_covered is covered
    # legs are exactly the change of each balance
    for leg in plan.legs:
        assert snapshot.balance(leg.asset) + leg.delta == plan.balances_after[leg.asset]
    changed = {a for a in after if D(after[a]) != D(balances[a])}
    assert {leg.asset for leg in plan.legs} == changed
    # never more than held, never below zero for a converted asset
    for conversion in plan.conversions:
        for debit in conversion.debits:
            assert 0 < debit.quantity <= snapshot.balance(debit.asset)
        credit_usd = conversion.credit * conversion.price
        assert credit_usd <= conversion.received_usd


def test_two_negatives_legs() -> None:
    plan = plan_rebalance(snap({"USDT": "-100", "ETH": "-0.1", "BTC": "0.01"}, {"ETH": "2000"}))
    assert plan.legs == (
        RebalanceLeg("BTC", D("-0.00512822")),
        RebalanceLeg("ETH", D("0.1")),
        RebalanceLeg("USDT", D(100)),
    )
    assert [c.asset for c in plan.conversions] == ["ETH", "USDT"]


def test_partial_plan_reports_remaining_negative() -> None:
    plan = plan_rebalance(snap({"USDT": "-10000", "BTC": "0.1"}))
    assert plan.remaining_negative == ("USDT",)
    (conversion,) = plan.conversions
    assert conversion.credit == D(5850)
    assert conversion.received_usd == D(5850)
    assert not conversion.covered


def test_empty_plan() -> None:
    plan = plan_rebalance(snap({"USDT": "10"}))
    assert plan.is_empty
    assert plan.conversions == ()
    assert plan.remaining_negative == ()


def test_missing_price_of_a_source_is_an_error() -> None:
    snapshot = AccountSnapshot(
        balances={"USDT": D(-1), "BTC": D(1)},
        positions=(),
        open_orders=(),
        mark_prices={},
        asset_prices={},
        brackets={},
        assets=ASSETS,
        multi_asset_mode=False,
    )
    with pytest.raises(SnapshotError, match="BTC"):
        plan_rebalance(snapshot)
