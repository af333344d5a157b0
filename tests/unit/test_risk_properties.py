"""Properties of the risk gate and rebalance over generated accounts (hypothesis).

* the max withdrawable is never negative;
* withdrawing exactly the max leaves A ≥ 0 and B ≥ 0; one base unit more makes A or B
  negative (or is more than the balance) and the gate rejects it;
* rebalance never debits more than an asset holds, and the USD credited is at most the
  USD received at price × rate, and short of it by less than one base unit per asset.
"""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_brackets import BTC, ETH
from watcher.domain.account import (
    MARGIN_MODES,
    AccountSnapshot,
    AssetInfo,
    MarginMode,
    OpenOrderMargin,
    Position,
    exact,
    quantum,
)
from watcher.domain.brackets import BracketTable
from watcher.domain.collateral import account_breakdown, max_withdrawable
from watcher.domain.rebalance import plan_rebalance
from watcher.domain.risk import decide_isolated_transfer, decide_withdrawal, isolated_limits

ASSETS = {
    "USDT": AssetInfo("USDT", 8, D("0.9999"), D("0.975")),
    "BTC": AssetInfo("BTC", 8, D("0.95"), D("0.975")),
    "ETH": AssetInfo("ETH", 8, D("0.95"), D("0.975")),
    "POL": AssetInfo("POL", 8, D("0.9"), D("0.95")),
    "AAA": AssetInfo("AAA", 2, D("0.5"), D("0.1")),
}
TABLES: dict[str, BracketTable] = {"BTCUSDT": BTC, "ETHUSDT": ETH}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decimals(lo: int, hi: int, places: int) -> st.SearchStrategy[D]:
    """Exact decimals lo..hi (in units of 10^-places)."""
    return st.integers(lo, hi).map(lambda n: D(n).scaleb(-places))


@st.composite
def positions(
    draw: st.DrawFn, symbol: str, max_abs_size: int, price_lo: int, price_hi: int
) -> Position:
    table = TABLES[symbol]
    size = draw(decimals(-max_abs_size, max_abs_size, 4))
    entry = draw(decimals(price_lo, price_hi, 2))
    with exact():
        entry_notional = abs(size) * entry
    leverage = draw(st.integers(1, table.max_leverage(entry_notional)))
    mode: MarginMode = draw(st.sampled_from(MARGIN_MODES))
    wallet = draw(decimals(0, 10**10, 4)) if mode == "isolated" else D(0)
    return Position(symbol, size, entry, leverage, mode, wallet)


@st.composite
def accounts(draw: st.DrawFn, multi: bool, allow_negative: bool = False) -> AccountSnapshot:
    lo = -(10**11) if allow_negative else 0
    balances = {"USDT": draw(decimals(lo, 10**13, 8))}
    if multi:
        balances["BTC"] = draw(decimals(lo // 10**4, 10**9, 8))
        balances["ETH"] = draw(decimals(lo // 10**3, 10**10, 8))
    pos: list[Position] = []
    if draw(st.booleans()):
        pos.append(draw(positions("BTCUSDT", 50000, 1_000_000, 10_000_000)))
    if draw(st.booleans()):
        pos.append(draw(positions("ETHUSDT", 500000, 50_000, 500_000)))
    orders = draw(
        st.lists(
            st.builds(
                OpenOrderMargin,
                st.sampled_from(["BTCUSDT", "ETHUSDT"]),
                st.sampled_from(["cross", "isolated"]),
                decimals(0, 500000, 2),
            ),
            max_size=2,
        )
    )
    return AccountSnapshot(
        balances=balances,
        positions=pos,
        open_orders=orders,
        mark_prices={
            "BTCUSDT": draw(decimals(1_000_000, 10_000_000, 2)),
            "ETHUSDT": draw(decimals(50_000, 500_000, 2)),
        },
        asset_prices={
            "BTC": draw(decimals(1_000_000, 10_000_000, 2)),
            "ETH": draw(decimals(50_000, 500_000, 2)),
        },
        brackets=TABLES,
        assets=ASSETS,
        multi_asset_mode=multi,
    )


@SETTINGS
@given(st.booleans().flatmap(lambda m: accounts(m, allow_negative=True)))
def test_max_withdrawable_never_negative(snap: AccountSnapshot) -> None:
    for asset in ("USDT", "BTC", "ETH"):
        quote = max_withdrawable(snap, asset)
        assert quote.quantity >= 0
        assert quote.quantity == quote.quantity.quantize(quantum(8))
    breakdown = account_breakdown(snap)
    assert breakdown.max_withdraw_amount >= 0
    assert breakdown.available_balance >= 0


def _check_boundary(snap: AccountSnapshot, asset: str) -> None:
    unit = quantum(ASSETS[asset].precision)
    balance = snap.balance(asset)
    m = max_withdrawable(snap, asset).quantity
    if m > 0:
        assert decide_withdrawal(snap, asset, m).allowed
        after = account_breakdown(snap.with_balance(asset, balance - m))
        assert after.a >= 0
        assert after.b >= 0
    over = m + unit
    decision = decide_withdrawal(snap, asset, over)
    assert not decision.allowed
    assert decision.reason == "INSUFFICIENT_WITHDRAWABLE"
    worse = account_breakdown(snap.with_balance(asset, balance - over))
    assert worse.a < 0 or worse.b < 0 or balance - over < 0


@SETTINGS
@given(accounts(multi=False))
def test_single_mode_max_is_the_boundary(snap: AccountSnapshot) -> None:
    _check_boundary(snap, "USDT")


@SETTINGS
@given(accounts(multi=True), st.sampled_from(["USDT", "BTC", "ETH"]))
def test_multi_mode_max_is_the_boundary(snap: AccountSnapshot, asset: str) -> None:
    _check_boundary(snap, asset)


@st.composite
def rebalance_accounts(draw: st.DrawFn) -> AccountSnapshot:
    balances = {
        "USDT": draw(decimals(-(10**13), 10**13, 8)),
        "BTC": draw(decimals(-(10**8), 10**9, 8)),
        "ETH": draw(decimals(-(10**9), 10**10, 8)),
        "POL": draw(decimals(-(10**12), 10**13, 8)),
        "AAA": draw(decimals(-(10**5), 10**6, 2)),
    }
    prices = {
        "BTC": draw(decimals(1_000_000, 10_000_000, 2)),
        "ETH": draw(decimals(50_000, 500_000, 2)),
        "POL": draw(decimals(1, 10**6, 6)),
        "AAA": draw(decimals(1, 10**5, 2)),
    }
    return AccountSnapshot(
        balances=balances,
        positions=(),
        open_orders=(),
        mark_prices={},
        asset_prices=prices,
        brackets={},
        assets=ASSETS,
        multi_asset_mode=True,
    )


@SETTINGS
@given(rebalance_accounts())
def test_rebalance_never_overdraws_and_conserves_value(snap: AccountSnapshot) -> None:
    plan = plan_rebalance(snap)
    after = plan.balances_after
    for asset, before in snap.balances.items():
        if before >= 0:
            assert 0 <= after[asset] <= before  # debited at most what it held
        else:
            assert before <= after[asset] <= 0  # credited at most up to 0
            covered = [c for c in plan.conversions if c.asset == asset]
            assert len(covered) == 1
            if covered[0].covered:
                assert after[asset] == 0
    for leg in plan.legs:
        with exact():
            assert snap.balance(leg.asset) + leg.delta == after[leg.asset]
    for conversion in plan.conversions:
        with exact():
            credited_usd = conversion.credit * conversion.price
            received = sum(
                (d.quantity * snap.price_of(d.asset) * ASSETS[d.asset].auto_exchange_rate
                 for d in conversion.debits),
                D(0),
            )  # fmt: skip
            tolerance = quantum(ASSETS[conversion.asset].precision) * conversion.price + sum(
                (quantum(ASSETS[d.asset].precision) * d.price * d.rate for d in conversion.debits),
                D(0),
            )
            assert received == conversion.received_usd
            assert credited_usd <= received
            assert received - credited_usd < tolerance
        for debit in conversion.debits:
            assert debit.quantity > 0
            assert debit.quantity == debit.quantity.quantize(quantum(ASSETS[debit.asset].precision))
    # nothing left unconverted while a negative remains
    if plan.remaining_negative:
        for asset, qty in after.items():
            assert qty <= 0 or ASSETS[asset].auto_exchange_rate == 0


@SETTINGS
@given(st.booleans().flatmap(lambda m: accounts(m, allow_negative=True)))
def test_isolated_limits_view_is_the_transfer_boundary(snap: AccountSnapshot) -> None:
    unit = quantum(ASSETS["USDT"].precision)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        limits = isolated_limits(snap, symbol)
        for kind, limit, blocked in (
            ("add", limits.max_add, limits.add_blocked_by),
            ("reduce", limits.max_reduce, limits.reduce_blocked_by),
        ):
            assert limit >= 0
            if limit > 0:
                assert blocked is None
                assert decide_isolated_transfer(snap, symbol, kind, limit).allowed
            over = decide_isolated_transfer(snap, symbol, kind, limit + unit)
            assert not over.allowed
            assert over.reason == (blocked or "INSUFFICIENT_TRANSFERABLE")
            if blocked is None:
                assert over.details["maxTransferAmount"] == limit
