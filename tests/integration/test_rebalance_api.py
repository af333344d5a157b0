"""Rebalance: the user-signed endpoint (signature checks, replay guard, proportional
split) and the operator command `watcher rebalance ACCOUNT` as a real process."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.api_support import (
    ALICE,
    ALICE_KEY,
    BOB_KEY,
    Api,
    asset_of,
    future,
    rebalance_body,
    running_api,
)

URL = f"/v1/accounts/{ALICE}/rebalance"


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(db_url, tmp_path) as running:
        yield running


async def _two_sources(api: Api) -> None:
    # USDT −1,000; BTC 0.01 at 60,000 and ETH 0.2 at 3,000: 600 USD each, so each
    # covers 500 USD at price × 0.975:
    #   BTC ceil(500 / 58,500, 1e-8) = 0.00854701, ETH ceil(500 / 2,925, 1e-8) = 0.17094018.
    await api.entry(ALICE, "BTC", "0.01", "btc")
    await api.entry(ALICE, "ETH", "0.2", "eth")
    await api.entry(ALICE, "USDT", "-1000", "loss", kind="realized_pnl")
    await api.prices(BTC="60000", ETH="3000")


async def test_proportional_split_across_assets(api: Api) -> None:
    await _two_sources(api)
    status, doc = await api.call("POST", URL, rebalance_body(ALICE_KEY, ALICE, nonce=1))
    assert status == 200, doc
    assert doc["changes"] == [
        {"asset": "BTC", "amount": "-0.00854701"},
        {"asset": "ETH", "amount": "-0.17094018"},
        {"asset": "USDT", "amount": "1000"},
    ]
    (conv,) = doc["conversions"]
    assert conv["asset"] == "USDT" and conv["covered"] is True and conv["shortfallUsd"] == "1000"
    acc = await api.account(ALICE)
    assert acc["canWithdraw"] is True
    assert asset_of(acc, "BTC")["walletBalance"] == "0.00145299"
    assert asset_of(acc, "ETH")["walletBalance"] == "0.02905982"
    assert asset_of(acc, "USDT")["walletBalance"] == "0"


def _with(**over: Any) -> Any:
    return {**rebalance_body(ALICE_KEY, ALICE, nonce=3), **over}


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: rebalance_body(BOB_KEY, ALICE, nonce=3), 401, "WRONG_SIGNER"),
        (lambda: rebalance_body(ALICE_KEY, ALICE, nonce=3, deadline=future(-5)), 401,
         "SIGNATURE_EXPIRED"),
        (lambda: _with(nonce=4), 401, "WRONG_SIGNER"),
        (lambda: _with(signature="0x" + "zz" * 65), 401, "BAD_SIGNATURE"),
        (lambda: _with(chainId=56), 400, "UNKNOWN_CHAIN"),
        (lambda: _with(chainId="31337"), 400, "INVALID_REQUEST"),
        (lambda: _with(nonce=-1), 400, "INVALID_REQUEST"),
        (lambda: {"nonce": 3}, 400, "INVALID_REQUEST"),
    ],
)  # fmt: skip
async def test_bad_signed_requests_change_nothing(
    api: Api, make: Any, status: int, code: str
) -> None:
    await _two_sources(api)
    before = await api.everything(ALICE)
    got, err = await api.call("POST", URL, make())
    assert (got, err["code"]) == (status, code), err
    assert await api.everything(ALICE) == before
    # the nonce is still free
    assert (await api.call("POST", URL, rebalance_body(ALICE_KEY, ALICE, nonce=3)))[0] == 200


async def test_malformed_address_in_path(api: Api) -> None:
    status, err = await api.call("POST", "/v1/accounts/0xdead/rebalance", {})
    assert status == 400 and err["code"] == "INVALID_ADDRESS"


async def test_missing_price_is_422_and_changes_nothing(api: Api) -> None:
    await api.entry(ALICE, "ETH", "1", "eth")
    await api.entry(ALICE, "USDT", "-10", "loss")
    before = await api.everything(ALICE)
    status, err = await api.call("POST", URL, rebalance_body(ALICE_KEY, ALICE, nonce=1))
    assert status == 422 and err["code"] == "ACCOUNT_STATE_INCOMPLETE", err
    assert await api.everything(ALICE) == before


async def test_operator_command_rebalances(api: Api, tmp_path: Path) -> None:
    await _two_sources(api)
    settings = api.app.settings
    env_cmd = [
        sys.executable,
        "-m",
        "watcher",
        "rebalance",
        ALICE.lower(),
        "--json",
        "--config",
        str(settings.config_dir),
        "--database-url",
        settings.database.url,
    ]

    async def run() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *env_cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    code, out = await run()
    assert code == 0, out
    doc = json.loads(out)
    assert doc["type"] == "auto-conversion" and doc["account"] == ALICE
    assert doc["balancesAfter"]["USDT"] == "0"
    hist = await api.history(ALICE)
    assert {h["asset"] for h in hist if h["type"] == "auto-conversion"} == {"BTC", "ETH", "USDT"}
    assert (await api.account(ALICE))["canWithdraw"] is True
    code, out = await run()
    assert code == 1 and json.loads(out)["converted"] is False
