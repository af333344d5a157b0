"""Isolated-margin transfers over HTTP: user-signed (EIP-712) or engine-sent, checked
against the isolated max transfer-in/out, moving cross ↔ iso:<SYMBOL> in the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.api_support import (
    ALICE,
    ALICE_KEY,
    BOB_KEY,
    ENGINE,
    Api,
    asset_of,
    future,
    isolated_body,
    running_api,
)
from watcher.api.openapi import ISOLATED_LIMITS_EXAMPLE
from watcher.store import ledger

URL = f"/v1/accounts/{ALICE}/isolated-margin"


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(db_url, tmp_path) as running:
        yield running


async def _isolated_long(api: Api) -> None:
    # CWB 10,000; isolated long 0.1 BTC at 60,000, 10×: IM 600, MM 6,000 × 0.4% = 24.
    # Transfer-in max = min(10,000 − 600 − 0, B = 10,000) = 9,400.
    await api.entry(ALICE, "USDT", "10000", "seed")
    await api.prices(BTCUSDT="60000", ETHUSDT="3000")
    await api.positions(
        ALICE,
        [
            {
                "symbol": "BTCUSDT",
                "positionAmt": "0.1",
                "entryPrice": "60000",
                "leverage": 10,
                "marginMode": "isolated",
            }
        ],
    )


async def _ledger(api: Api) -> dict[tuple[str, str], int]:
    async with api.app.sessions() as s:
        return await ledger.balances(s, ALICE)


async def test_add_and_reduce_at_the_exact_limits(api: Api) -> None:
    await _isolated_long(api)
    before = await api.everything(ALICE)
    status, err = await api.call(
        "POST", URL, isolated_body(ALICE_KEY, ALICE, "BTCUSDT", 1, "9400.00000001", nonce=1)
    )
    assert status == 422 and err["code"] == "INSUFFICIENT_TRANSFERABLE"
    assert err["details"]["maxTransferAmount"] == "9400"
    assert await api.everything(ALICE) == before

    status, doc = await api.call(
        "POST", URL, isolated_body(ALICE_KEY, ALICE, "BTCUSDT", 1, "1000", nonce=1)
    )
    assert status == 200, doc
    assert (doc["isolatedWallet"], doc["crossWalletBalance"], doc["asset"]) == (
        "1000",
        "9000",
        "USDT",
    )
    assert await _ledger(api) == {
        ("USDT", "cross"): 900_000_000_000,
        ("USDT", "iso:BTCUSDT"): 100_000_000_000,
    }
    acc = await api.account(ALICE)
    assert asset_of(acc, "USDT")["walletBalance"] == "10000"
    assert asset_of(acc, "USDT")["crossWalletBalance"] == "9000"
    assert acc["positions"][0]["isolatedWallet"] == "1000"

    # Transfer-out: isoWB 1,000, MM 24, uPnL 0, IM 600 → min(976, 400) = 400.
    before = await api.everything(ALICE)
    body = {"symbol": "BTCUSDT", "type": 2, "amount": "400.00000001", "refId": "r-over"}
    status, err = await api.call("POST", URL, body, headers=ENGINE)
    assert status == 422 and err["code"] == "INSUFFICIENT_TRANSFERABLE"
    assert (
        err["details"]["walletMinusMaintenance"],
        err["details"]["walletPlusUnPnlMinusInitial"],
    ) == ("976", "400")
    assert await api.everything(ALICE) == before
    body = {"symbol": "BTCUSDT", "type": 2, "amount": "400", "refId": "r-1"}
    status, doc = await api.call("POST", URL, body, headers=ENGINE)
    assert status == 200, doc
    assert doc["isolatedWallet"] == "600" and doc["crossWalletBalance"] == "9400"
    # engine refId: same body → same result; another body → 409
    assert await api.call("POST", URL, body, headers=ENGINE) == (200, doc)
    status, err = await api.call("POST", URL, {**body, "amount": "1"}, headers=ENGINE)
    assert status == 409 and err["code"] == "REF_ID_CONFLICT"
    hist = await api.history(ALICE)
    assert [(h["type"], h["amount"]) for h in hist[:2]] == [
        ("isolated-transfer", "400"),
        ("isolated-transfer", "-1000"),
    ]
    # The longest refId the document allows is idempotent too (on PostgreSQL it was a 500:
    # the journal ref outgrew its column).
    long_body = {**body, "type": 1, "amount": "1", "refId": "r" * 150}
    status, long_doc = await api.call("POST", URL, long_body, headers=ENGINE)
    assert status == 200, long_doc
    assert await api.call("POST", URL, long_body, headers=ENGINE) == (200, long_doc)
    status, err = await api.call("POST", URL, {**long_body, "amount": "2"}, headers=ENGINE)
    assert status == 409 and err["code"] == "REF_ID_CONFLICT"


async def test_domain_example_short_transfer_out_is_zero(api: Api) -> None:
    # DOMAIN.md §2: short −0.5 BTC, entry 60,000, mark 63,000, 10×, isoWB 3,100 →
    # MM 126, terms 2,974 and −1,550 → transfer-out 0.
    await api.entry(ALICE, "USDT", "10000", "seed")
    await api.prices(BTCUSDT="60000")
    await api.positions(
        ALICE,
        [
            {
                "symbol": "BTCUSDT",
                "positionAmt": "-0.5",
                "entryPrice": "60000",
                "leverage": 10,
                "marginMode": "isolated",
            }
        ],
    )
    body = {"symbol": "BTCUSDT", "type": 1, "amount": "3100"}
    assert (await api.call("POST", URL, body, headers=ENGINE))[0] == 200
    await api.prices(BTCUSDT="63000")
    status, err = await api.call(
        "POST", URL, {"symbol": "BTCUSDT", "type": 2, "amount": "0.00000001"}, headers=ENGINE
    )
    assert status == 422 and err["code"] == "INSUFFICIENT_TRANSFERABLE"
    d = err["details"]
    assert (d["maxTransferAmount"], d["maintenanceMargin"]) == ("0", "126")
    assert (d["walletMinusMaintenance"], d["walletPlusUnPnlMinusInitial"]) == ("2974", "-1550")


async def test_closing_returns_the_leftover_margin_once(api: Api) -> None:
    await _isolated_long(api)
    ok = await api.call(
        "POST", URL, {"symbol": "BTCUSDT", "type": 1, "amount": "700"}, headers=ENGINE
    )
    assert ok[0] == 200
    assert (await _ledger(api))[("USDT", "iso:BTCUSDT")] == 70_000_000_000
    # The engine closes the position: the 700 goes back to cross in the same request.
    closed = await api.positions(ALICE, [])
    (returned,) = closed["returnedIsolatedMargin"]
    assert (returned["symbol"], returned["asset"], returned["amount"]) == (
        "BTCUSDT",
        "USDT",
        "700",
    )
    balances = await _ledger(api)
    assert balances[("USDT", "cross")] == 1_000_000_000_000
    assert balances.get(("USDT", "iso:BTCUSDT"), 0) == 0
    acc = await api.account(ALICE)
    assert acc["positions"] == []
    assert asset_of(acc, "USDT")["crossWalletBalance"] == "10000"
    returns = [h for h in await api.history(ALICE) if h["type"] == "isolated-transfer"]
    assert [h["amount"] for h in returns] == ["700", "-700"]  # newest first
    # The same update again (a retry): nothing more moves, nothing more is journaled.
    again = await api.positions(ALICE, [])
    assert again["returnedIsolatedMargin"] == []
    assert await _ledger(api) == balances
    assert len([h for h in await api.history(ALICE) if h["type"] == "isolated-transfer"]) == 2
    # Nothing is left to take out by hand.
    status, err = await api.call(
        "POST", URL, {"symbol": "BTCUSDT", "type": 2, "amount": "1"}, headers=ENGINE
    )
    assert status == 422 and err["code"] == "NO_ISOLATED_POSITION"


@pytest.mark.parametrize("how", ["size zero", "now cross"])
async def test_size_zero_or_mode_switch_closes_the_isolated_position(api: Api, how: str) -> None:
    await _isolated_long(api)
    assert (
        await api.call(
            "POST", URL, {"symbol": "BTCUSDT", "type": 1, "amount": "250.5"}, headers=ENGINE
        )
    )[0] == 200
    row = {
        "symbol": "BTCUSDT",
        "positionAmt": "0" if how == "size zero" else "0.1",
        "entryPrice": "60000",
        "leverage": 10,
        "marginMode": "isolated" if how == "size zero" else "cross",
    }
    first = await api.positions(ALICE, [row])
    assert [r["amount"] for r in first["returnedIsolatedMargin"]] == ["250.5"]
    second = await api.positions(ALICE, [row])
    assert second["returnedIsolatedMargin"] == []
    balances = await _ledger(api)
    assert balances[("USDT", "cross")] == 1_000_000_000_000
    assert balances.get(("USDT", "iso:BTCUSDT"), 0) == 0


async def test_an_open_isolated_position_keeps_its_margin(api: Api) -> None:
    await _isolated_long(api)
    assert (
        await api.call(
            "POST", URL, {"symbol": "BTCUSDT", "type": 1, "amount": "700"}, headers=ENGINE
        )
    )[0] == 200
    row = {
        "symbol": "BTCUSDT",
        "positionAmt": "0.2",
        "entryPrice": "60000",
        "leverage": 10,
        "marginMode": "isolated",
    }
    assert (await api.positions(ALICE, [row]))["returnedIsolatedMargin"] == []
    assert (await _ledger(api))[("USDT", "iso:BTCUSDT")] == 70_000_000_000


def _sig_body(**over: Any) -> Any:
    return isolated_body(ALICE_KEY, ALICE, "BTCUSDT", 1, "10", nonce=5, **over)


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: isolated_body(BOB_KEY, ALICE, "BTCUSDT", 1, "10", nonce=5), 401, "WRONG_SIGNER"),
        (lambda: _sig_body(deadline=future(-1)), 401, "SIGNATURE_EXPIRED"),
        (lambda: _sig_body(signed_amount=11 * 10**18), 401, "WRONG_SIGNER"),
        (lambda: {**_sig_body(), "signature": "0x1234"}, 401, "BAD_SIGNATURE"),
        (lambda: {**_sig_body(), "signature": "0x" + "00" * 65}, 401, "BAD_SIGNATURE"),
        (lambda: _sig_body(chain_id=1), 400, "UNKNOWN_CHAIN"),
        (lambda: {k: v for k, v in _sig_body().items() if k != "signature"}, 400,
         "INVALID_REQUEST"),
        (lambda: isolated_body(ALICE_KEY, ALICE, "DOGEUSDT", 1, "10", nonce=5), 400,
         "UNKNOWN_SYMBOL"),
        (lambda: isolated_body(ALICE_KEY, ALICE, "BTCUSDT", 1, "0.000000001", nonce=5), 400,
         "AMOUNT_PRECISION"),
        (lambda: isolated_body(ALICE_KEY, ALICE, "BTCUSDT", 1, "0", nonce=5), 400,
         "INVALID_AMOUNT"),
        (lambda: isolated_body(ALICE_KEY, ALICE, "BTCUSDT", 3, "1", nonce=5), 400,
         "INVALID_REQUEST"),
        (lambda: isolated_body(ALICE_KEY, ALICE, "ETHUSDT", 1, "10", nonce=5), 422,
         "NO_ISOLATED_POSITION"),
    ],
)  # fmt: skip
async def test_bad_requests_change_nothing(api: Api, make: Any, status: int, code: str) -> None:
    await _isolated_long(api)
    before = await api.everything(ALICE)
    got, err = await api.call("POST", URL, make())
    assert (got, err["code"]) == (status, code), err
    assert err["message"]
    assert await api.everything(ALICE) == before
    # the rejected nonce was not consumed
    status, _ = await api.call("POST", URL, _sig_body())
    assert status == 200


async def test_signed_replay_and_nonce_reuse(api: Api) -> None:
    await _isolated_long(api)
    body = _sig_body()
    status, first = await api.call("POST", URL, body)
    assert status == 200
    assert await api.call("POST", URL, body) == (200, first)
    other = isolated_body(ALICE_KEY, ALICE, "BTCUSDT", 1, "11", nonce=5)
    status, err = await api.call("POST", URL, other)
    assert status == 409 and err["code"] == "NONCE_REUSED"
    assert (await _ledger(api))[("USDT", "iso:BTCUSDT")] == 10 * 10**8


async def test_negative_balance_blocks_add_but_not_reduce(api: Api) -> None:
    await _isolated_long(api)
    assert (
        await api.call(
            "POST", URL, {"symbol": "BTCUSDT", "type": 1, "amount": "1000"}, headers=ENGINE
        )
    )[0] == 200
    await api.entry(ALICE, "USDT", "-9100", "big-loss")
    status, err = await api.call(
        "POST", URL, {"symbol": "BTCUSDT", "type": 1, "amount": "1"}, headers=ENGINE
    )
    assert status == 422 and err["code"] == "NEGATIVE_BALANCE"
    assert err["details"]["negativeAssets"] == ["USDT"]
    status, _ = await api.call(
        "POST", URL, {"symbol": "BTCUSDT", "type": 2, "amount": "100"}, headers=ENGINE
    )
    assert status == 200
    assert asset_of(await api.account(ALICE), "USDT")["crossWalletBalance"] == "0"


async def test_concurrent_http_transfers_never_pass_the_limit(api: Api) -> None:
    # 50 adds of 200 at once; the limit is 9,400 − (what earlier adds took): 47 fit.
    await _isolated_long(api)

    async def add(i: int) -> int:
        body = {"symbol": "BTCUSDT", "type": 1, "amount": "200", "refId": f"c-{i}"}
        status, _ = await api.call("POST", URL, body, headers=ENGINE)
        return status

    statuses = await asyncio.gather(*(add(i) for i in range(50)))
    assert sorted(statuses).count(200) == 47 and statuses.count(422) == 3
    balances = await _ledger(api)
    assert balances[("USDT", "iso:BTCUSDT")] == 9_400 * 10**8
    assert balances[("USDT", "cross")] == 600 * 10**8


async def _limits(api: Api, symbol: str = "BTCUSDT") -> Any:
    status, doc = await api.get(f"{URL}?symbol={symbol}")
    assert status == 200, doc
    return doc


def _plus_unit(amount: str) -> str:
    from decimal import Decimal

    return format(Decimal(amount) + Decimal("0.00000001"), "f")


async def _check_limit(api: Api, kind: int, limit: str) -> None:
    """One unit over the shown limit is refused (nothing changes); the limit passes."""
    before = await api.everything(ALICE)
    status, err = await api.call(
        "POST",
        URL,
        {"symbol": "BTCUSDT", "type": kind, "amount": _plus_unit(limit)},
        headers=ENGINE,
    )
    assert status == 422 and err["code"] == "INSUFFICIENT_TRANSFERABLE", err
    assert err["details"]["maxTransferAmount"] == limit
    assert await api.everything(ALICE) == before
    if limit != "0":
        status, doc = await api.call(
            "POST", URL, {"symbol": "BTCUSDT", "type": kind, "amount": limit}, headers=ENGINE
        )
        assert status == 200, doc


async def test_limits_view_matches_the_transfer_rule(api: Api) -> None:
    await _isolated_long(api)
    first = await _limits(api)
    assert (first["symbol"], first["isolatedWallet"], first["maxAdd"], first["maxReduce"]) == (
        "BTCUSDT",
        "0",
        "9400",
        "0",
    )
    assert first["breakdown"]["cross"]["crossWalletBalance"] == "10000"
    assert first["breakdown"]["isolated"]["maintenanceMargin"] == "24"
    assert (first["addBlockedBy"], first["reduceBlockedBy"]) == (None, None)
    assert (
        await api.call(
            "POST", URL, {"symbol": "BTCUSDT", "type": 1, "amount": "1000"}, headers=ENGINE
        )
    )[0] == 200
    # iso 1,000: reduce = min(1,000 − 24, 1,000 + 0 − 600) = 400; add = min(9,000 − 600, 9,000)
    view = await _limits(api)
    assert (view["isolatedWallet"], view["maxAdd"], view["maxReduce"]) == ("1000", "8400", "400")
    # the OpenAPI example is this very state
    assert view == {**ISOLATED_LIMITS_EXAMPLE, "account": ALICE}
    await _check_limit(api, 2, view["maxReduce"])
    # a price move and an odd open-order margin: the view follows, and still matches
    await api.prices(BTCUSDT="61234.57")
    await api.orders(
        ALICE, [{"symbol": "ETHUSDT", "marginMode": "cross", "initialMargin": "3.33333333"}]
    )
    view = await _limits(api)
    await _check_limit(api, 2, view["maxReduce"])
    view = await _limits(api)
    await _check_limit(api, 1, view["maxAdd"])
    view = await _limits(api)
    assert view["maxAdd"] == "0"
    await _check_limit(api, 1, "0")


async def test_limits_view_names_what_blocks(api: Api) -> None:
    await api.entry(ALICE, "USDT", "100", "seed")
    await api.prices(BTCUSDT="60000")
    view = await _limits(api)
    assert (view["maxAdd"], view["maxReduce"], view["addBlockedBy"]) == (
        "0",
        "0",
        "NO_ISOLATED_POSITION",
    )
    status, err = await api.get(f"{URL}?symbol=NOPE")
    assert status == 400 and err["code"] == "UNKNOWN_SYMBOL"
    status, err = await api.get(URL)
    assert status == 400 and err["code"] == "INVALID_REQUEST"


async def test_the_same_closing_update_twice_at_once_returns_once(api: Api) -> None:
    await _isolated_long(api)
    assert (
        await api.call(
            "POST", URL, {"symbol": "BTCUSDT", "type": 1, "amount": "700"}, headers=ENGINE
        )
    )[0] == 200
    path = f"/v1/engine/positions/{ALICE}"
    results = await asyncio.gather(*(api.call("PUT", path, [], headers=ENGINE) for _ in range(4)))
    assert all(status == 200 for status, _ in results), results
    returned = [r for _, doc in results for r in doc["returnedIsolatedMargin"]]
    assert [r["amount"] for r in returned] == ["700"]
    balances = await _ledger(api)
    assert balances[("USDT", "cross")] == 1_000_000_000_000
    assert balances.get(("USDT", "iso:BTCUSDT"), 0) == 0
    history = [h for h in await api.history(ALICE) if h["type"] == "isolated-transfer"]
    assert [h["amount"] for h in history] == ["700", "-700"]
