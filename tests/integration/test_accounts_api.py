"""Account views through the HTTP API alone: the engine sets balances (entries),
positions, open-order margin and prices; the user reads exact maxWithdrawAmount and
breakdowns; a negative balance blocks until a rebalance or a deposit clears it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.api_support import (
    ALICE,
    ALICE_KEY,
    BOB,
    ENGINE,
    Api,
    asset_of,
    rebalance_body,
    running_api,
)
from watcher.domain.journal import Leg, TxKind, vault_account
from watcher.services.risk_gate import AccountStateError, withdrawal_hold
from watcher.store import ledger
from watcher.store.alarms import AlarmKind, active_alarms
from watcher.store.models import Deposit, utcnow


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(db_url, tmp_path) as running:
        yield running


async def test_cross_breakdown_exact_numbers(api: Api) -> None:
    # CWB 10,000; long 1 BTC 60k → mark 55k at 20×: IM 2,750, uPnL −5,000,
    # MM 55,000 × 0.5% − 50 = 225; cross order IM 100; isolated order IM 150.
    # A = 10,000 − 150 − 225 = 9,625; B = 10,000 − 5,000 − 2,850 − 150 = 2,000.
    await api.entry(ALICE, "USDT", "10000", "seed-1")
    await api.prices(BTCUSDT="55000", ETHUSDT="3000")
    await api.positions(
        ALICE,
        [
            {
                "symbol": "BTCUSDT",
                "positionAmt": "1",
                "entryPrice": "60000",
                "leverage": 20,
                "marginMode": "cross",
            }
        ],
    )
    await api.orders(
        ALICE,
        [
            {"symbol": "BTCUSDT", "marginMode": "cross", "initialMargin": "100"},
            {"symbol": "ETHUSDT", "marginMode": "isolated", "initialMargin": "150"},
        ],
    )
    doc = await api.max_withdraw(ALICE.lower(), "USDT")
    assert doc["asset"] == "USDT"
    assert doc["maxWithdrawAmount"] == "2000"
    assert doc["breakdown"] == {
        "A": "9625",
        "B": "2000",
        "crossWalletBalance": "10000",
        "crossUnPnl": "-5000",
        "crossInitialMargin": "2850",
        "isolatedOpenOrderInitialMargin": "150",
        "crossMaintenanceMargin": "225",
    }
    acc = await api.account(ALICE.lower())
    assert acc["account"] == ALICE  # checksummed
    assert acc["canWithdraw"] is True and acc["negativeAssets"] == []
    assert asset_of(acc, "USDT") == {
        "asset": "USDT",
        "walletBalance": "10000",
        "crossWalletBalance": "10000",
        "crossUnPnl": "-5000",
        "availableBalance": "2000",
        "maxWithdrawAmount": "2000",
        "onHold": "0",
    }
    (pos,) = acc["positions"]
    assert pos == {
        "symbol": "BTCUSDT",
        "positionAmt": "1",
        "entryPrice": "60000",
        "markPrice": "55000",
        "leverage": 20,
        "marginMode": "cross",
        "isolatedWallet": "0",
        "notional": "55000",
        "initialMargin": "2750",
        "maintMargin": "225",
        "unRealizedProfit": "-5000",
        "bracket": 2,
        # (10,000 + 50 − 60,000) / (0.005 − 1) = 50,201.00502512562814…, rounded up
        "liquidationPrice": "50201.005025125629",
        "marginBalance": "5000",  # 10,000 − 5,000
        "marginRatio": "0.045",  # 225 / 5,000
    }
    assert (acc["crossMarginBalance"], acc["crossMaintMargin"], acc["marginRatio"]) == (
        "5000",
        "225",
        "0.045",
    )

    # A price move is all it takes: mark 62,000 → uPnL +2,000, IM 3,100,
    # MM 62,000 × 0.5% − 50 = 260. A = 10,000 − 150 − 260 = 9,590;
    # B = 10,000 + 2,000 − 3,200 − 150 = 8,650 → max 8,650 (unrealized profit never leaves).
    await api.prices(BTCUSDT="62000")
    doc = await api.max_withdraw(ALICE, "USDT")
    assert (doc["maxWithdrawAmount"], doc["breakdown"]["A"], doc["breakdown"]["B"]) == (
        "8650",
        "9590",
        "8650",
    )


async def test_domain_example_a_is_9600(api: Api) -> None:
    # DOMAIN.md §2: CWB 10,000, iso order IM 150 + 50, cross MM 120.5 + 79.5 → A = 9,600.
    # Only the sums matter; one position per symbol, so the cross MM of 200 comes from
    # 1 BTC at 50,000: the top of bracket 1 (cap inclusive), 0.4% × 50,000 = 200.
    await api.entry(ALICE, "USDT", "10000", "seed")
    await api.prices(BTCUSDT="50000", ETHUSDT="3000")
    await api.positions(
        ALICE,
        [
            {
                "symbol": "BTCUSDT",
                "size": "1",
                "entryPrice": "50000",
                "leverage": 125,
                "marginMode": "cross",
            }
        ],
    )
    await api.orders(
        ALICE,
        [
            {"symbol": "BTCUSDT", "marginMode": "isolated", "initialMargin": "150"},
            {"symbol": "ETHUSDT", "marginMode": "isolated", "initialMargin": "50"},
        ],
    )
    doc = await api.max_withdraw(ALICE, "USDT")
    assert doc["breakdown"]["A"] == "9600"
    assert doc["breakdown"]["crossMaintenanceMargin"] == "200"
    assert doc["breakdown"]["isolatedOpenOrderInitialMargin"] == "200"
    # B = 10,000 + 0 − 400 − 200 = 9,400 → the max is B.
    assert doc["breakdown"]["B"] == "9400"
    assert doc["maxWithdrawAmount"] == "9400"


async def test_multi_asset_mode_values_collateral_with_haircuts(api: Api) -> None:
    # USDT 1,000 × 0.9999 + BTC 0.5 × 60,000 × 0.95 = 29,499.9 (CWB in USD).
    # Long 1 BTC at 60,000, 10×: IM 6,000, MM 250 → A 29,249.9, B 23,499.9.
    # BTC max = 23,499.9 / 57,000 = 0.41227894…; USDT max = its balance, 1,000.
    await api.entry(ALICE, "USDT", "1000", "u")
    await api.entry(ALICE, "BTC", "0.5", "b")
    await api.prices(BTCUSDT="60000", BTC="60000")
    await api.mode(ALICE, True)
    await api.positions(
        ALICE,
        [
            {
                "symbol": "BTCUSDT",
                "positionAmt": "1",
                "entryPrice": "60000",
                "leverage": 10,
                "marginMode": "cross",
            }
        ],
    )
    btc = await api.max_withdraw(ALICE, "BTC")
    assert btc["maxWithdrawAmount"] == "0.41227894"
    assert btc["multiAssetMode"] is True
    assert btc["breakdown"]["crossWalletBalance"] == "29499.9"
    assert btc["breakdown"]["A"] == "29249.9"
    assert btc["breakdown"]["B"] == "23499.9"
    usdt = await api.max_withdraw(ALICE, "USDT")
    assert usdt["maxWithdrawAmount"] == "1000"
    acc = await api.account(ALICE)
    assert acc["multiAssetMode"] is True
    assert asset_of(acc, "BTC")["maxWithdrawAmount"] == "0.41227894"
    assert asset_of(acc, "BTC")["availableBalance"] == "0.41227894"
    # Back to single-asset mode: BTC is not collateral, USDT alone backs the position.
    await api.mode(ALICE, False)
    assert (await api.max_withdraw(ALICE, "BTC"))["maxWithdrawAmount"] == "0.5"
    # B = 1,000 − 6,000 < 0 → nothing.
    assert (await api.max_withdraw(ALICE, "USDT"))["maxWithdrawAmount"] == "0"


async def test_negative_balance_blocks_until_rebalance(api: Api) -> None:
    # DOMAIN.md §3: USDT −10,000, BTC 0.5 at 60,000, rate 0.975 →
    # BTC debited ceil(10,000 / 58,500, 1e-8) = 0.17094018; USDT 0, BTC 0.32905982.
    await api.entry(ALICE, "BTC", "0.5", "btc-in")
    await api.entry(ALICE, "USDT", "-10000", "loss-1", kind="realized_pnl")
    await api.prices(BTC="60000")
    acc = await api.account(ALICE)
    assert acc["canWithdraw"] is False
    assert acc["negativeAssets"] == ["USDT"]
    assert asset_of(acc, "BTC")["maxWithdrawAmount"] == "0"
    mw = await api.max_withdraw(ALICE, "BTC")
    assert mw["maxWithdrawAmount"] == "0" and mw["limitedBy"] == "negative_balance"

    # The withdrawal path (the same locked decision) refuses with NEGATIVE_BALANCE.
    async with api.app.sessions.begin() as s:
        gate = await withdrawal_hold(
            s, api.app.settings, account=ALICE, asset="BTC", units=1, ref="w-blocked"
        )
    assert not gate.allowed and gate.reason == "NEGATIVE_BALANCE"
    assert gate.details["negativeAssets"] == ["USDT"]

    body = rebalance_body(ALICE_KEY, ALICE, nonce=7)
    status, result = await api.call("POST", f"/v1/accounts/{ALICE}/rebalance", body)
    assert status == 200, result
    assert result["type"] == "auto-conversion"
    assert result["changes"] == [
        {"asset": "BTC", "amount": "-0.17094018"},
        {"asset": "USDT", "amount": "10000"},
    ]
    assert result["balancesAfter"] == {"BTC": "0.32905982", "USDT": "0"}
    assert result["fullyCovered"] is True and result["negativeAssets"] == []

    acc = await api.account(ALICE)
    assert acc["canWithdraw"] is True and acc["negativeAssets"] == []
    assert asset_of(acc, "USDT")["walletBalance"] == "0"
    assert asset_of(acc, "BTC")["walletBalance"] == "0.32905982"
    assert asset_of(acc, "BTC")["maxWithdrawAmount"] == "0.32905982"
    async with api.app.sessions.begin() as s:
        gate = await withdrawal_hold(
            s, api.app.settings, account=ALICE, asset="BTC", units=32905982, ref="w-ok"
        )
    assert gate.allowed, gate.details

    hist = await api.history(ALICE)
    conv = [h for h in hist if h["type"] == "auto-conversion"]
    assert sorted((h["asset"], h["amount"]) for h in conv) == [
        ("BTC", "-0.17094018"),
        ("USDT", "10000"),
    ]
    assert all(h["state"] == "completed" for h in conv)

    # The same signed request again returns the same conversion; the nonce cannot be
    # reused for another request (a later deadline is a different signed message).
    again = await api.call("POST", f"/v1/accounts/{ALICE}/rebalance", body)
    assert again == (200, result)
    other = rebalance_body(ALICE_KEY, ALICE, nonce=7, deadline=body["deadline"] + 1)
    status, err = await api.call("POST", f"/v1/accounts/{ALICE}/rebalance", other)
    assert status == 409 and err["code"] == "NONCE_REUSED"
    # Nothing is negative any more: a fresh nonce is refused and consumes nothing.
    status, err = await api.call(
        "POST", f"/v1/accounts/{ALICE}/rebalance", rebalance_body(ALICE_KEY, ALICE, nonce=8)
    )
    assert status == 422 and err["code"] == "NOTHING_TO_REBALANCE"


async def test_a_deposit_that_covers_the_negative_clears_it(api: Api) -> None:
    await api.entry(ALICE, "USDT", "-5.5", "fee-1", kind="commission")
    assert (await api.account(ALICE))["canWithdraw"] is False
    # What the deposit pipeline does on credit: a deposit row and a vault → user credit.
    async with api.app.sessions.begin() as s:
        s.add(
            Deposit(
                chain_id=31337,
                tx_hash="0x" + "ab" * 32,
                log_index=0,
                block_number=10,
                block_hash="0x" + "cd" * 32,
                account=ALICE,
                token="0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
                amount=5_500_000_000_000_000_000,
                asset="USDT",
                ledger_amount=550_000_000,
                state="credited",
                credited_at=utcnow(),
            )
        )
        await ledger.post(
            s,
            kind=TxKind.DEPOSIT,
            ref="deposit:31337:0xab:0",
            legs=[
                Leg(ALICE, "USDT", 550_000_000),
                Leg(vault_account(31337), "USDT", -550_000_000),
            ],
            account_key=ALICE,
        )
    acc = await api.account(ALICE)
    assert acc["canWithdraw"] is True and acc["negativeAssets"] == []
    assert asset_of(acc, "USDT")["walletBalance"] == "0"
    hist = await api.history(ALICE)
    assert [(h["type"], h["amount"]) for h in hist] == [("deposit", "5.5"), ("commission", "-5.5")]
    assert hist[0]["txHash"] == "0x" + "ab" * 32 and hist[0]["chainId"] == 31337
    assert hist[0]["state"] == "credited"


async def test_history_is_newest_first_with_engine_entries(api: Api) -> None:
    await api.entry(ALICE, "USDT", "100", "r1", kind="realized_pnl")
    await api.entry(ALICE, "USDT", "-0.25", "f1", kind="funding_fee")
    await api.entry(ALICE, "USDT", "-0.1", "c1", kind="commission")
    await api.entry(BOB, "USDT", "1", "bob-1")
    hist = await api.history(ALICE)
    assert [(h["type"], h["asset"], h["amount"], h["refId"]) for h in hist] == [
        ("commission", "USDT", "-0.1", "c1"),
        ("funding_fee", "USDT", "-0.25", "f1"),
        ("realized_pnl", "USDT", "100", "r1"),
    ]
    for h in hist:
        assert h["state"] == "completed" and h["txHash"] is None and h["chainId"] is None
        assert h["time"].endswith("Z")
    assert await api.history(BOB.lower()) != []


async def test_unknown_account_reads_as_empty(api: Api) -> None:
    acc = await api.account(BOB)
    assert acc["assets"] == [
        {
            "asset": "USDT",
            "walletBalance": "0",
            "crossWalletBalance": "0",
            "crossUnPnl": "0",
            "availableBalance": "0",
            "maxWithdrawAmount": "0",
            "onHold": "0",
        }
    ]
    assert acc["positions"] == [] and acc["canWithdraw"] is True
    assert await api.history(BOB) == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/accounts/0x123",
        "/v1/accounts/not-an-address",
        "/v1/accounts/0x70997970c51812dc3A010C7d01b50e0d17dc79C8",  # bad EIP-55 checksum
        "/v1/accounts/0x70997970C51812dc3A010C7d01b50e0d17dc79C8zz/history",
        "/v1/accounts/0x12/max-withdraw?asset=USDT",
    ],
)
async def test_malformed_address_is_400(api: Api, path: str) -> None:
    status, err = await api.get(path)
    assert status == 400
    assert err["code"] == "INVALID_ADDRESS" and err["message"] and "details" in err


async def test_max_withdraw_needs_a_known_asset(api: Api) -> None:
    status, err = await api.get(f"/v1/accounts/{ALICE}/max-withdraw?asset=DOGE")
    assert status == 400 and err["code"] == "UNKNOWN_ASSET"
    status, err = await api.get(f"/v1/accounts/{ALICE}/max-withdraw")
    assert status == 400 and err["code"] == "INVALID_REQUEST"


async def test_missing_price_in_multi_asset_mode_fails_closed(api: Api) -> None:
    await api.entry(ALICE, "ETH", "1", "eth")
    await api.mode(ALICE, True)
    # The view still answers: balances, evaluable false and why; nothing can leave.
    acc = await api.account(ALICE)
    assert acc["evaluable"] is False and acc["canWithdraw"] is False
    ((problem),) = acc["problems"]
    assert problem["code"] == "ACCOUNT_STATE_INCOMPLETE" and "ETH" in problem["message"]
    eth = asset_of(acc, "ETH")
    assert (eth["walletBalance"], eth["maxWithdrawAmount"], eth["availableBalance"]) == (
        "1",
        "0",
        None,
    )
    status, err = await api.get(f"/v1/accounts/{ALICE}/max-withdraw?asset=ETH")
    assert status == 422 and err["code"] == "ACCOUNT_STATE_INCOMPLETE"
    assert "ETH" in err["message"]
    assert await _unevaluable_alarms(api) == [(ALICE, 1)]
    await api.prices(ETH="3000")
    acc = await api.account(ALICE)
    # 1 ETH × 3,000 × 0.95 = 2,850 of collateral, no positions → all of it.
    assert asset_of(acc, "ETH")["maxWithdrawAmount"] == "1"


async def test_huge_balances_are_exact_in_every_view(api: Api) -> None:
    # 123456789012345678901.23456789 USDT with 0.00000002 of open-order margin: the max
    # is …901.23456787 exactly (a 28-digit context printed …901.2345679, 3e-8 too much).
    big = "123456789012345678901.23456789"
    await api.entry(ALICE, "USDT", big, "huge")
    await api.prices(BTCUSDT="60000", ETHUSDT="3000")
    await api.orders(
        ALICE, [{"symbol": "BTCUSDT", "marginMode": "cross", "initialMargin": "0.00000002"}]
    )
    acc = await api.account(ALICE)
    usdt = asset_of(acc, "USDT")
    assert usdt["walletBalance"] == big and usdt["crossWalletBalance"] == big
    assert usdt["maxWithdrawAmount"] == "123456789012345678901.23456787"
    assert usdt["availableBalance"] == "123456789012345678901.23456787"
    assert acc["crossMarginBalance"] == big
    quote = await api.max_withdraw(ALICE, "USDT")
    assert quote["maxWithdrawAmount"] == "123456789012345678901.23456787"
    assert quote["breakdown"]["B"] == "123456789012345678901.23456787"
    (entry,) = [h for h in await api.history(ALICE) if h["type"] == "realized_pnl"]
    assert entry["amount"] == big
    # an isolated position holding most of it: the limits view and the transfer agree
    await api.positions(
        ALICE,
        [
            {
                "symbol": "BTCUSDT",
                "positionAmt": "1",
                "entryPrice": "60000",
                "leverage": 10,
                "marginMode": "isolated",
            }
        ],
    )
    status, limits = await api.get(f"/v1/accounts/{ALICE}/isolated-margin?symbol=BTCUSDT")
    assert status == 200, limits
    # add = min(CWB − iso IM 6,000, B = CWB − 0.00000002)
    assert limits["maxAdd"] == "123456789012345672901.23456789"
    status, doc = await api.call(
        "POST",
        f"/v1/accounts/{ALICE}/isolated-margin",
        {"symbol": "BTCUSDT", "type": 1, "amount": limits["maxAdd"]},
        headers=ENGINE,
    )
    assert status == 200, doc
    assert doc["isolatedWallet"] == "123456789012345672901.23456789"
    assert doc["crossWalletBalance"] == "6000"
    (pos,) = (await api.account(ALICE))["positions"]
    assert pos["isolatedWallet"] == "123456789012345672901.23456789"
    assert pos["liquidationPrice"] is None  # that margin covers a fall to 0


async def test_liquidation_price_and_margin_ratios_in_the_account_view(api: Api) -> None:
    # DOMAIN.md's isolated example (long 1 BTC at 84,000 with 8,400) next to a cross
    # short: CWB 20,000 − 8,400 = 11,600; ETH short 10 at 3,000, mark 3,100.
    await api.entry(ALICE, "USDT", "20000", "seed")
    await api.prices(BTCUSDT="84000", ETHUSDT="3100")
    await api.positions(
        ALICE,
        [
            {
                "symbol": "BTCUSDT",
                "positionAmt": "1",
                "entryPrice": "84000",
                "leverage": 10,
                "marginMode": "isolated",
            },
            {
                "symbol": "ETHUSDT",
                "positionAmt": "-10",
                "entryPrice": "3000",
                "leverage": 10,
                "marginMode": "cross",
            },
        ],
    )
    status, _ = await api.call(
        "POST",
        f"/v1/accounts/{ALICE}/isolated-margin",
        {"symbol": "BTCUSDT", "type": 1, "amount": "8400"},
        headers=ENGINE,
    )
    assert status == 200
    acc = await api.account(ALICE)
    btc, eth = sorted(acc["positions"], key=lambda p: p["symbol"])
    assert btc["liquidationPrice"] == "75929.648241206031"
    # isolated MB 8,400 + 0; MM 84,000 × 0.5 % − 50 = 370 → 370 / 8,400 = 0.04404761…↑
    assert (btc["marginBalance"], btc["marginRatio"]) == ("8400", "0.04404762")
    # cross: MB = 11,600 − 1,000 = 10,600; MM = 31,000 × 0.65 % − 15 = 186.5
    assert (acc["crossMarginBalance"], acc["crossMaintMargin"]) == ("10600", "186.5")
    assert acc["marginRatio"] == eth["marginRatio"] == "0.01759434"  # 0.0175943396…↑
    # ETH alone in cross: (11,600 + cum + 30,000) / (10 × MMR + 10), bracket 2 (0.65 %, 15)
    # = 41,615 / 10.065 = 4,134.6249…; notional 41,346 ∈ (10,000, 100,000]; short: ↓
    assert eth["liquidationPrice"] == "4134.624937903626"


async def _unevaluable_alarms(api: Api) -> list[tuple[str, int]]:
    async with api.app.sessions() as s:
        return [
            (a.key, a.count)
            for a in await active_alarms(s)
            if a.kind == AlarmKind.ACCOUNT_UNEVALUABLE
        ]


async def test_a_price_past_the_brackets_is_kept_and_named(api: Api) -> None:
    # Long 20,000 BTC at 60,000 (1.2e9 notional, the last bracket: 1×, cap 1.5e9).
    await api.entry(ALICE, "USDT", "2000000000", "seed")
    await api.entry(BOB, "USDT", "100", "seed-bob")
    await api.prices(BTCUSDT="60000", ETHUSDT="3000")
    btc = {
        "symbol": "BTCUSDT",
        "positionAmt": "20000",
        "entryPrice": "60000",
        "leverage": 1,
        "marginMode": "cross",
    }
    eth = {
        "symbol": "ETHUSDT",
        "positionAmt": "1",
        "entryPrice": "3000",
        "leverage": 10,
        "marginMode": "isolated",
    }
    await api.positions(ALICE, [btc, eth])
    status, _ = await api.call(
        "POST",
        f"/v1/accounts/{ALICE}/isolated-margin",
        {"symbol": "ETHUSDT", "type": 1, "amount": "500"},
        headers=ENGINE,
    )
    assert status == 200
    await api.positions(BOB, [{**btc, "positionAmt": "0.001", "leverage": 10}])
    # The market moves to 80,000: notional 1.6e9 > 1.5e9. The price is accepted.
    moved = await api.prices(BTCUSDT="80000")
    assert moved["markPrices"] == {"BTCUSDT": "80000"}
    ((flagged),) = moved["unevaluableAccounts"]
    assert (flagged["account"], flagged["symbol"], flagged["code"]) == (
        ALICE,
        "BTCUSDT",
        "NOTIONAL_ABOVE_BRACKETS",
    )
    # The account view says which position and why (200, not a 422 on every read).
    acc = await api.account(ALICE)
    assert acc["evaluable"] is False and acc["canWithdraw"] is False
    ((problem),) = acc["problems"]
    assert (problem["symbol"], problem["code"]) == ("BTCUSDT", "NOTIONAL_ABOVE_BRACKETS")
    assert "1600000000" in problem["message"] and "1500000000" in problem["message"]
    pos, other = acc["positions"]
    assert pos["problem"] == problem and pos["notional"] == "1600000000"
    assert other["symbol"] == "ETHUSDT" and other["problem"] is None
    assert asset_of(acc, "USDT")["maxWithdrawAmount"] == "0"
    # Bob's small position is untouched by it.
    assert (await api.account(BOB))["evaluable"] is True
    # Withdrawals and transfers answer 422 with that reason.
    status, err = await api.get(f"/v1/accounts/{ALICE}/max-withdraw?asset=USDT")
    assert status == 422 and err["code"] == "ACCOUNT_STATE_INCOMPLETE"
    assert err["details"]["problems"] == [problem]
    for kind in (1, 2):
        status, err = await api.call(
            "POST",
            f"/v1/accounts/{ALICE}/isolated-margin",
            {"symbol": "ETHUSDT", "type": kind, "amount": "1"},
            headers=ENGINE,
        )
        assert status == 422 and err["code"] == "ACCOUNT_STATE_INCOMPLETE"
        assert "BTCUSDT" in err["message"] and "1500000000" in err["message"]
    status, err = await api.get(f"/v1/accounts/{ALICE}/isolated-margin?symbol=ETHUSDT")
    assert status == 422 and err["details"]["problems"] == [problem]
    with pytest.raises(AccountStateError, match="BTCUSDT"):
        async with api.app.sessions.begin() as s:
            await withdrawal_hold(
                s, api.app.settings, account=ALICE, asset="USDT", units=1, ref="w-past"
            )
    # One alarm names the account, however many reads and price updates meet it.
    await api.prices(BTCUSDT="80001")
    for _ in range(3):
        await api.account(ALICE)
    assert await _unevaluable_alarms(api) == [(ALICE, 1)]
    # The price comes back: the account is evaluable again.
    await api.prices(BTCUSDT="70000")
    back = await api.account(ALICE)
    assert back["evaluable"] is True and back["problems"] == []
