"""Engine-side routes: bearer auth, idempotent entries, and every bad input → a clear
4xx ``{code, message, details}`` with the state unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.integration.api_support import ADMIN_TOKEN, ALICE, ENGINE, Api, asset_of, running_api
from watcher.store.models import JournalTransaction, Price


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(db_url, tmp_path) as running:
        yield running


async def _seeded(api: Api) -> None:
    await api.entry(ALICE, "USDT", "1000", "seed")
    await api.prices(BTCUSDT="60000", ETHUSDT="3000", BTC="60000")
    await api.positions(
        ALICE,
        [
            {
                "symbol": "BTCUSDT",
                "positionAmt": "-0.1",
                "entryPrice": "61000",
                "leverage": 10,
                "marginMode": "cross",
            }
        ],
    )
    await api.orders(ALICE, [{"symbol": "ETHUSDT", "marginMode": "cross", "initialMargin": "30"}])


async def _observed(api: Api) -> dict[str, Any]:
    async with api.app.sessions() as s:
        prices = {(p.kind, p.key): p.price for p in await s.scalars(select(Price))}
        txs = await s.scalar(select(func.count()).select_from(JournalTransaction))
    return {**(await api.everything(ALICE)), "prices": prices, "txs": txs}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    ],
)
async def test_engine_routes_need_the_admin_token(api: Api, headers: dict[str, str]) -> None:
    before = await _observed(api)
    calls: list[tuple[str, str, Any]] = [
        (
            "POST",
            "/v1/engine/entries",
            {"account": ALICE, "asset": "USDT", "amount": "1", "kind": "commission", "refId": "x"},
        ),
        ("PUT", f"/v1/engine/positions/{ALICE}", []),
        ("PUT", f"/v1/engine/open-orders/{ALICE}", []),
        ("PUT", "/v1/engine/prices", [{"symbol": "BTCUSDT", "markPrice": "1"}]),
        ("PUT", f"/v1/engine/accounts/{ALICE}/mode", {"multiAssetMode": True}),
    ]
    for method, path, body in calls:
        status, err = await api.call(method, path, body, headers=headers)
        assert status == 401, (path, err)
        assert err["code"] == "UNAUTHORIZED" and ADMIN_TOKEN not in err["message"]
    assert await _observed(api) == before


async def test_entries_are_idempotent_on_ref_id(api: Api) -> None:
    body = {
        "account": ALICE.lower(),
        "asset": "USDT",
        "amount": "-12.34567891",
        "kind": "funding_fee",
        "refId": "fund-1",
    }
    status, first = await api.call("POST", "/v1/engine/entries", body, headers=ENGINE)
    assert status == 201, first
    assert first["account"] == ALICE and first["amount"] == "-12.34567891"
    status, again = await api.call("POST", "/v1/engine/entries", body, headers=ENGINE)
    assert (status, again) == (200, first)
    before = await _observed(api)
    for change in ({"amount": "-12.3456789"}, {"kind": "commission"}, {"asset": "USDC"}):
        status, err = await api.call(
            "POST", "/v1/engine/entries", {**body, **change}, headers=ENGINE
        )
        assert status == 409 and err["code"] == "REF_ID_CONFLICT", err
        assert err["details"]["stored"]["amount"] == "-12.34567891"
    assert await _observed(api) == before
    # The entry drove the balance negative: allowed for engine entries.
    acc = await api.account(ALICE)
    assert asset_of(acc, "USDT")["walletBalance"] == "-12.34567891"
    assert acc["negativeAssets"] == ["USDT"] and acc["canWithdraw"] is False


ENTRY = {"account": ALICE, "asset": "USDT", "amount": "5", "kind": "commission", "refId": "e"}


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"asset": "DOGE"}, 400, "UNKNOWN_ASSET"),
        ({"amount": "1.000000001"}, 400, "AMOUNT_PRECISION"),
        ({"amount": "0"}, 400, "INVALID_AMOUNT"),
        ({"amount": "1e3"}, 400, "INVALID_AMOUNT"),
        ({"amount": 5}, 400, "INVALID_REQUEST"),
        ({"amount": "--5"}, 400, "INVALID_AMOUNT"),
        ({"account": "0xabc"}, 400, "INVALID_ADDRESS"),
        ({"kind": "deposit"}, 400, "INVALID_REQUEST"),
        ({"refId": ""}, 400, "INVALID_REQUEST"),
        ({"extra": 1}, 400, "INVALID_REQUEST"),
    ],
)
async def test_bad_entries_change_nothing(
    api: Api, change: dict[str, Any], status: int, code: str
) -> None:
    await _seeded(api)
    before = await _observed(api)
    got, err = await api.call("POST", "/v1/engine/entries", {**ENTRY, **change}, headers=ENGINE)
    assert (got, err["code"]) == (status, code), err
    assert err["message"] and isinstance(err["details"], dict)
    assert await _observed(api) == before


def _pos(**over: Any) -> dict[str, Any]:
    row = {
        "symbol": "BTCUSDT",
        "positionAmt": "1",
        "entryPrice": "55000",
        "leverage": 100,
        "marginMode": "cross",
    }
    row.update(over)
    return {k: v for k, v in row.items() if v is not None}


@pytest.mark.parametrize(
    ("rows", "status", "code"),
    [
        ([_pos(symbol="DOGEUSDT")], 400, "UNKNOWN_SYMBOL"),
        # Mark 60,000: notional 60,000 is bracket 2, max 100×.
        ([_pos(leverage=101)], 422, "LEVERAGE_TOO_HIGH"),
        ([_pos(leverage=125, entryPrice="45000")], 422, "LEVERAGE_TOO_HIGH"),
        # Entry notional 0.6 × 90,000 = 54,000 is bracket 2 even though the mark one is not.
        ([_pos(positionAmt="0.6", entryPrice="90000", leverage=125)], 422, "LEVERAGE_TOO_HIGH"),
        ([_pos(positionAmt="30000")], 422, "NOTIONAL_ABOVE_BRACKETS"),
        ([_pos(symbol="ETHUSDT", leverage=10), _pos(symbol="ETHUSDT")], 400, "DUPLICATE_SYMBOL"),
        ([_pos(entryPrice="0")], 400, "INVALID_PRICE"),
        ([_pos(entryPrice="-1")], 400, "INVALID_PRICE"),
        ([_pos(positionAmt=1)], 400, "INVALID_REQUEST"),
        ([_pos(positionAmt=None)], 400, "INVALID_REQUEST"),
        ([_pos(size="1")], 400, "INVALID_REQUEST"),
        ([_pos(marginMode="portfolio")], 400, "INVALID_REQUEST"),
        ([_pos(leverage="10")], 400, "INVALID_REQUEST"),
        ([_pos(leverage=0)], 400, "INVALID_REQUEST"),
        ({"symbol": "BTCUSDT"}, 400, "INVALID_REQUEST"),
        ([_pos(isolatedWallet="100")], 409, "ISOLATED_WALLET_MISMATCH"),
        ([_pos(marginMode="isolated", leverage=10, isolatedWallet="5")], 409,
         "ISOLATED_WALLET_MISMATCH"),
    ],
)  # fmt: skip
async def test_bad_positions_change_nothing(api: Api, rows: Any, status: int, code: str) -> None:
    await _seeded(api)
    before = await _observed(api)
    got, err = await api.call("PUT", f"/v1/engine/positions/{ALICE}", rows, headers=ENGINE)
    assert (got, err["code"]) == (status, code), err
    assert err["message"]
    assert await _observed(api) == before


async def test_positions_replace_the_whole_list(api: Api) -> None:
    await _seeded(api)
    doc = await api.positions(
        ALICE,
        [
            _pos(symbol="ETHUSDT", positionAmt="2", entryPrice="3000", leverage=20),
            _pos(positionAmt="0"),  # size 0: dropped
        ],
    )
    assert doc["positions"] == [
        {
            "symbol": "ETHUSDT",
            "positionAmt": "2",
            "entryPrice": "3000",
            "leverage": 20,
            "marginMode": "cross",
        }
    ]
    acc = await api.account(ALICE)
    assert [p["symbol"] for p in acc["positions"]] == ["ETHUSDT"]
    # isolatedWallet equal to the ledger's (0 for a cross position) is accepted
    await api.positions(ALICE, [_pos(isolatedWallet="0")])
    assert [p["symbol"] for p in (await api.account(ALICE))["positions"]] == ["BTCUSDT"]
    await api.positions(ALICE, [])
    assert (await api.account(ALICE))["positions"] == []


async def test_position_needs_a_mark_price_first(api: Api) -> None:
    await api.entry(ALICE, "USDT", "1", "s")
    before = await _observed(api)
    status, err = await api.call("PUT", f"/v1/engine/positions/{ALICE}", [_pos()], headers=ENGINE)
    assert status == 422 and err["code"] == "MISSING_MARK_PRICE"
    assert await _observed(api) == before


@pytest.mark.parametrize(
    ("rows", "status", "code"),
    [
        ([{"symbol": "BTCUSDT", "markPrice": "0"}], 400, "INVALID_PRICE"),
        ([{"symbol": "BTCUSDT", "markPrice": "-1"}], 400, "INVALID_PRICE"),
        ([{"asset": "BTC", "price": "0"}], 400, "INVALID_PRICE"),
        ([{"symbol": "BTCUSDT", "markPrice": 60000}], 400, "INVALID_REQUEST"),
        ([{"symbol": "BTCUSDT", "markPrice": 60000.5}], 400, "INVALID_REQUEST"),
        ([{"symbol": "DOGEUSDT", "markPrice": "1"}], 400, "UNKNOWN_SYMBOL"),
        ([{"asset": "DOGE", "price": "1"}], 400, "UNKNOWN_ASSET"),
        ([{"symbol": "BTCUSDT", "asset": "BTC", "price": "1"}], 400, "INVALID_REQUEST"),
        ([{"symbol": "BTCUSDT"}], 400, "INVALID_REQUEST"),
        # a valid row first: nothing of the request is applied
        ([{"asset": "BTC", "price": "70000"}, {"symbol": "BTCUSDT", "markPrice": "0"}], 400,
         "INVALID_PRICE"),
        ([{"asset": "BTC", "price": "1"}, {"asset": "BTC", "price": "2"}], 400,
         "DUPLICATE_SYMBOL"),
        ({"asset": "BTC", "price": "1"}, 400, "INVALID_REQUEST"),
    ],
)  # fmt: skip
async def test_bad_prices_change_nothing(api: Api, rows: Any, status: int, code: str) -> None:
    await _seeded(api)
    before = await _observed(api)
    got, err = await api.call("PUT", "/v1/engine/prices", rows, headers=ENGINE)
    assert (got, err["code"]) == (status, code), err
    assert await _observed(api) == before


@pytest.mark.parametrize(
    ("rows", "status", "code"),
    [
        ([{"symbol": "DOGEUSDT", "marginMode": "cross", "initialMargin": "1"}], 400,
         "UNKNOWN_SYMBOL"),
        ([{"symbol": "BTCUSDT", "marginMode": "cross", "initialMargin": "-1"}], 400,
         "INVALID_AMOUNT"),
        ([{"symbol": "BTCUSDT", "marginMode": "cross", "initialMargin": 1}], 400,
         "INVALID_REQUEST"),
        ([{"symbol": "BTCUSDT", "marginMode": "cross", "initialMargin": "1"},
          {"symbol": "BTCUSDT", "marginMode": "cross", "initialMargin": "2"}], 400,
         "DUPLICATE_SYMBOL"),
    ],
)  # fmt: skip
async def test_bad_orders_change_nothing(api: Api, rows: Any, status: int, code: str) -> None:
    await _seeded(api)
    before = await _observed(api)
    got, err = await api.call("PUT", f"/v1/engine/open-orders/{ALICE}", rows, headers=ENGINE)
    assert (got, err["code"]) == (status, code), err
    assert await _observed(api) == before


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        (f"/v1/engine/accounts/{ALICE}/mode", {"multiAssetMode": "true"}, "INVALID_REQUEST"),
        (f"/v1/engine/accounts/{ALICE}/mode", {"multiAssetMode": 1}, "INVALID_REQUEST"),
        (f"/v1/engine/accounts/{ALICE}/mode", {}, "INVALID_REQUEST"),
        ("/v1/engine/accounts/0xnope/mode", {"multiAssetMode": True}, "INVALID_ADDRESS"),
        ("/v1/engine/positions/0x1234", [], "INVALID_ADDRESS"),
        ("/v1/engine/open-orders/0x1234", [], "INVALID_ADDRESS"),
    ],
)
async def test_bad_mode_and_addresses_change_nothing(
    api: Api, path: str, body: Any, code: str
) -> None:
    await _seeded(api)
    before = await _observed(api)
    got, err = await api.call("PUT", path, body, headers=ENGINE)
    assert (got, err["code"]) == (400, code), err
    assert await _observed(api) == before


async def test_malformed_json_is_400(api: Api) -> None:
    async with api.client.put(
        "/v1/engine/prices",
        data=b"{not json",
        headers={**ENGINE, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == "MALFORMED_JSON"


async def test_open_orders_and_mode_feed_the_views(api: Api) -> None:
    await _seeded(api)
    # Short 0.1 BTC from 61,000, mark 60,000, 10×: uPnL +100, IM 600, MM 6,000 × 0.4% = 24.
    # Cross order IM 30 → B = 1,000 + 100 − 630 = 470, A = 1,000 − 24 = 976.
    doc = await api.max_withdraw(ALICE, "USDT")
    assert (doc["breakdown"]["A"], doc["breakdown"]["B"], doc["maxWithdrawAmount"]) == (
        "976",
        "470",
        "470",
    )
    await api.orders(ALICE, [])
    assert (await api.max_withdraw(ALICE, "USDT"))["maxWithdrawAmount"] == "500"
    assert (await api.mode(ALICE, True))["multiAssetMode"] is True
    assert (await api.account(ALICE))["multiAssetMode"] is True
