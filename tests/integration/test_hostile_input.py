"""Hostile and lenient input, each case found against a real daemon: no request can
crash the process or get a 5xx, every integer is read by one strict ASCII rule, one
address rule holds in every endpoint, and nothing a refused request carried is written.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from tests.fixtures_chain import DevnetFactory
from tests.helpers import eventually, watcher_cli, write_config
from tests.integration.test_withdrawals_rejections import DEST, USER, body, expect, state
from tests.integration.withdrawal_support import credit, withdrawal_app
from watcher.api.server import make_web_app
from watcher.app import App
from watcher.chain.devnet import Deployment, free_port
from watcher.domain.parsing import InputError, check_json_depth, parse_address, parse_uint
from watcher.store.models import Withdrawal


@pytest.fixture
async def app(tmp_path: Path, deployment: Deployment, db_url: str) -> AsyncIterator[App]:
    async with withdrawal_app(tmp_path, deployment, db_url, signer=False) as a:
        await credit(a, USER.address, "USDT", 10_000 * 10**8, "test:usdt")
        yield a


@pytest.fixture
async def client(app: App) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_web_app(app))) as c:
        yield c


def _bad_checksum(address: str) -> str:
    """The address with the case of its first letter flipped: a wrong EIP-55 checksum."""
    for i, c in enumerate(address[2:], start=2):
        if c.isalpha():
            return address[:i] + c.swapcase() + address[i + 1 :]
    raise AssertionError("no letter to flip")


def test_parsers_refuse_non_ascii_digits_and_lenient_addresses() -> None:
    assert parse_uint("31337", "chainId") == 31337
    assert parse_uint(2**256 - 1, "nonce") == 2**256 - 1
    for bad in ("²", "٣١٣٣٧", "1²", "-1", "+1", " 1", "1.0", "", True, 1.5, None, 2**256):
        with pytest.raises(InputError) as info:
            parse_uint(bad, "nonce")
        assert info.value.code == "INVALID_INTEGER" and info.value.field == "nonce"
    good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55's own example
    assert parse_address(good, "account") == good
    assert parse_address(good.lower(), "account") == good
    assert parse_address("0x" + good[2:].upper(), "account") == good
    for bad in (_bad_checksum(good), "0X" + good[2:], good[2:], good + "0", "0x" + "g" * 40):
        with pytest.raises(InputError) as info:
            parse_address(bad, "destination")
        assert info.value.code == "INVALID_ADDRESS" and info.value.field == "destination"


def test_depth_check_counts_brackets_outside_strings_only() -> None:
    check_json_depth(b'{"a": [[[1]]]}', limit=4)
    check_json_depth(b'{"a": "' + b"[" * 1000 + b'"}', limit=4)  # inside a string
    check_json_depth(b'{"a": "\\"' + b"[" * 1000 + b'"}', limit=4)  # escaped quote
    check_json_depth(b"[" + b"[1]," * 1000 + b"[1]]", limit=4)  # wide, not deep
    with pytest.raises(InputError, match="deeper than 4"):
        check_json_depth(b"[[[[[1]]]]]", limit=4)
    with pytest.raises(InputError):
        check_json_depth(b"[" * 100_000 + b"]" * 100_000)


async def test_paths_and_queries_get_4xx_never_5xx(app: App, client: TestClient[Any, Any]) -> None:
    cases = {
        "/v1/withdrawals/%C2%B2": (404, "WITHDRAWAL_NOT_FOUND"),
        "/v1/withdrawals/999999999999999999999999999999": (404, "WITHDRAWAL_NOT_FOUND"),
        f"/v1/withdrawals/{2**31}": (404, "WITHDRAWAL_NOT_FOUND"),
        f"/v1/accounts/{USER.address}/history?limit=%C2%B2": (400, "INVALID_INTEGER"),
        f"/v1/accounts/{USER.address}/history?limit=0": (400, "INVALID_INTEGER"),
        f"/v1/accounts/{USER.address}/history?limit=1001": (400, "INVALID_INTEGER"),
        f"/v1/accounts/{_bad_checksum(USER.address)}": (400, "INVALID_ADDRESS"),
        f"/v1/accounts/0X{USER.address[2:]}": (400, "INVALID_ADDRESS"),
    }
    for path, (status, code) in cases.items():
        resp = await client.get(path)
        doc = await resp.json()
        assert (resp.status, doc["code"]) == (status, code), (path, doc)
        assert doc["message"]
    resp = await client.get(f"/v1/accounts/{USER.address.lower()}/history?limit=5")
    assert resp.status == 200


async def test_withdrawal_bodies_held_to_the_strict_rules(
    app: App, client: TestClient[Any, Any], deployment: Deployment
) -> None:
    good = body(deployment, nonce=7)
    # Integers: not other scripts' digits, in any integer field.
    doc = await expect(app, client, dict(good, chainId="٣١٣٣٧"), 400, "INVALID_INTEGER")
    assert doc["details"]["field"] == "chainId"
    await expect(app, client, dict(good, nonce="²"), 400, "INVALID_INTEGER")
    await expect(app, client, dict(good, deadline="1²"), 400, "INVALID_INTEGER")
    # Addresses: a wrong checksum or 0X is refused in account, destination and token.
    doc = await expect(
        app, client, dict(good, account=_bad_checksum(USER.address)), 400, "INVALID_ADDRESS"
    )
    assert doc["details"]["field"] == "account"
    doc = await expect(
        app, client, dict(good, destination=_bad_checksum(DEST)), 400, "INVALID_ADDRESS"
    )
    assert doc["details"]["field"] == "destination"
    await expect(app, client, dict(good, destination="0X" + DEST[2:]), 400, "INVALID_ADDRESS")
    usdt = deployment.tokens["USDT"].address
    doc = await expect(app, client, dict(good, token=_bad_checksum(usdt)), 400, "INVALID_ADDRESS")
    assert doc["details"]["field"] == "token"
    # An amount above uint256 in base units is a bad amount, not a bad signature.
    await expect(app, client, dict(good, amount="9" * 60), 400, "INVALID_AMOUNT")
    # The same request written correctly (lower-case destination) is accepted.
    resp = await client.post("/v1/withdrawals", json=dict(good, destination=DEST.lower()))
    assert resp.status == 202, await resp.text()


async def test_withdrawal_body_is_closed_and_whole_numbers_are_integers(
    app: App, client: TestClient[Any, Any], deployment: Deployment
) -> None:
    # Found by the OpenAPI conformance test: the document says the body is closed, the
    # intake took (and ignored) any other field.
    good = body(deployment, nonce=11)
    doc = await expect(app, client, dict(good, memo="x", Amount="1"), 400, "INVALID_REQUEST")
    assert doc["details"]["errors"] == [
        {"field": "Amount", "message": "unknown field"},
        {"field": "memo", "message": "unknown field"},
    ]

    # JSON Schema's integer includes 31337.0: a field documented as an integer takes a
    # whole number written with a fraction or an exponent, and nothing else.
    async def post(nonce: str, chain_id: str) -> tuple[int, Any]:
        raw = json.dumps(dict(good, nonce="N", chainId="C"))
        raw = raw.replace('"N"', nonce).replace('"C"', chain_id)
        resp = await client.post(
            "/v1/withdrawals", data=raw, headers={"Content-Type": "application/json"}
        )
        return resp.status, await resp.json()

    before = await state(app)
    for nonce, chain_id in (("11.5", "31337"), ("11", "31337.5"), ("1e100000", "31337")):
        status, doc = await post(nonce, chain_id)
        assert (status, doc["code"]) == (400, "INVALID_INTEGER"), doc
    assert await state(app) == before
    status, doc = await post("1.1e1", "31337.000")
    assert status == 202, doc
    assert (doc["nonce"], doc["chainId"]) == ("11", 31337)


async def test_json_the_decoder_cannot_take_is_400(app: App, client: TestClient[Any, Any]) -> None:
    before = await state(app)
    for raw in (
        b'{"nonce": ' + b"9" * 5000 + b"}",  # beyond int()'s 4,300-digit limit
        b"[" * 50 + b"]" * 50,
    ):
        resp = await client.post(
            "/v1/withdrawals", data=raw, headers={"Content-Type": "application/json"}
        )
        doc = await resp.json()
        assert resp.status == 400 and doc["code"] == "MALFORMED_JSON", doc
    assert await state(app) == before


async def test_deadline_above_64_bits_is_stored_exactly(
    app: App, client: TestClient[Any, Any], deployment: Deployment
) -> None:
    # A valid uint256 deadline that a BIGINT column could not hold.
    deadline = 2**64 + 12345
    resp = await client.post("/v1/withdrawals", json=body(deployment, nonce=9, deadline=deadline))
    assert resp.status == 202, await resp.text()
    wid = (await resp.json())["id"]
    async with app.sessions() as s:
        row = (await s.scalars(select(Withdrawal).where(Withdrawal.id == wid))).one()
    assert row.deadline == deadline


async def test_deeply_nested_body_does_not_kill_the_daemon(
    tmp_path: Path, devnet_factory: DevnetFactory
) -> None:
    """The repro from the field: 100,000 nested '[' to a JSON endpoint killed the daemon
    (SIGSEGV in the C decoder). Against a real `watcher run` process."""
    port = free_port()
    env = {
        **os.environ,
        "WATCHER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'd.db'}",
        "WATCHER_STATE_DIR": str(tmp_path / "state"),
    }
    async with devnet_factory(chain_id=31392) as (_node, dep):
        cfg = write_config(tmp_path, [("devnet", dep, 3)])
        proc = await watcher_cli(
            "run", "--config", str(cfg), "--port", str(port), env=env, log_file=tmp_path / "d.log"
        )
        try:
            base = f"http://127.0.0.1:{port}"

            async def up() -> bool:
                try:
                    async with aiohttp.ClientSession() as h, h.get(base + "/healthz") as r:
                        return r.status in (200, 503)
                except aiohttp.ClientError:
                    return False

            await eventually(up, within=30)
            raw = b"[" * 100_000 + b"]" * 100_000
            async with aiohttp.ClientSession() as http:
                for path in ("/v1/withdrawals", f"/v1/accounts/{USER.address}/rebalance"):
                    started = time.monotonic()
                    async with http.post(
                        base + path, data=raw, headers={"Content-Type": "application/json"}
                    ) as resp:
                        doc = await resp.json()
                    assert resp.status == 400 and doc["code"] == "MALFORMED_JSON", doc
                    assert time.monotonic() - started < 5
            await asyncio.sleep(0.2)
            assert proc.returncode is None, (tmp_path / "d.log").read_text()
            assert await up()
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), timeout=30)
