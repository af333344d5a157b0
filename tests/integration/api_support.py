"""In-process API for the account/risk tests: ``watcher.app.build(settings)`` on a fresh
database (SQLite, and PostgreSQL when ``WATCHER_TEST_DATABASE_URL`` is set), served by
aiohttp's TestServer on a free port, plus small helpers to drive it like the engine and
like a user with a wallet."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account

from watcher.api.server import make_web_app
from watcher.app import App, build
from watcher.chain import eip712
from watcher.settings import DEFAULT_CONFIG_DIR, Settings, load_settings

ADMIN_TOKEN = "test-admin-token-for-accounts"
CHAIN_ID = 31337
VAULT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ENGINE = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

ALICE_KEY = "0x" + "a1" * 32
BOB_KEY = "0x" + "b2" * 32
ALICE = str(Account.from_key(ALICE_KEY).address)
BOB = str(Account.from_key(BOB_KEY).address)


def config_dir(root: Path) -> Path:
    """The repository's config with only the devnet network (enabled, chain 31337)."""
    cfg = root / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEFAULT_CONFIG_DIR / "default.toml", cfg / "default.toml")
    shutil.copyfile(DEFAULT_CONFIG_DIR / "assets.toml", cfg / "assets.toml")
    shutil.copytree(DEFAULT_CONFIG_DIR / "brackets", cfg / "brackets", dirs_exist_ok=True)
    (cfg / "networks").mkdir(exist_ok=True)
    shutil.copyfile(DEFAULT_CONFIG_DIR / "networks" / "devnet.toml", cfg / "networks/devnet.toml")
    return cfg


def make_settings(root: Path, db_url: str) -> Settings:
    return load_settings(
        config_dir(root),
        env={"WATCHER_DATABASE_URL": db_url, "WATCHER_ADMIN_TOKEN": ADMIN_TOKEN},
    )


@dataclass
class Api:
    client: TestClient[Any, Any]
    app: App

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        async with self.client.request(method, path, json=body, headers=headers) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path)

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, doc = await self.call(method, path, body, **kw)
        assert status in (200, 201), (status, doc)
        return doc

    # engine side
    async def entry(
        self, account: str, asset: str, amount: str, ref: str, kind: str = "realized_pnl"
    ) -> Any:
        body = {"account": account, "asset": asset, "amount": amount, "kind": kind, "refId": ref}
        return await self.ok("POST", "/v1/engine/entries", body, headers=ENGINE)

    async def prices(self, **marks: str) -> Any:
        rows = [
            {"symbol": k, "markPrice": v} if k.endswith("USDT") else {"asset": k, "price": v}
            for k, v in marks.items()
        ]
        return await self.ok("PUT", "/v1/engine/prices", rows, headers=ENGINE)

    async def positions(self, account: str, rows: list[dict[str, Any]]) -> Any:
        return await self.ok("PUT", f"/v1/engine/positions/{account}", rows, headers=ENGINE)

    async def orders(self, account: str, rows: list[dict[str, Any]]) -> Any:
        return await self.ok("PUT", f"/v1/engine/open-orders/{account}", rows, headers=ENGINE)

    async def mode(self, account: str, multi: bool) -> Any:
        return await self.ok(
            "PUT", f"/v1/engine/accounts/{account}/mode", {"multiAssetMode": multi}, headers=ENGINE
        )

    # user side
    async def account(self, account: str) -> Any:
        status, doc = await self.get(f"/v1/accounts/{account}")
        assert status == 200, doc
        return doc

    async def max_withdraw(self, account: str, asset: str) -> Any:
        status, doc = await self.get(f"/v1/accounts/{account}/max-withdraw?asset={asset}")
        assert status == 200, doc
        return doc

    async def history(self, account: str) -> list[dict[str, Any]]:
        status, doc = await self.get(f"/v1/accounts/{account}/history")
        assert status == 200, doc
        items: list[dict[str, Any]] = doc["history"]
        return items

    async def everything(self, account: str) -> dict[str, Any]:
        """All an observer can read, to assert that a rejected request changed nothing."""
        _, acc = await self.get(f"/v1/accounts/{account}")
        _, hist = await self.get(f"/v1/accounts/{account}/history")
        return {"account": acc, "history": hist}


def asset_of(doc: dict[str, Any], asset: str) -> dict[str, Any]:
    for row in doc["assets"]:
        if row["asset"] == asset:
            return dict(row)
    raise AssertionError(f"{asset} not in {doc['assets']}")


def signed(
    primary_type: str,
    key: str,
    message: dict[str, Any],
    *,
    chain_id: int = CHAIN_ID,
    vault: str = VAULT,
) -> str:
    return eip712.sign(primary_type, message, chain_id, vault, key)


def future(seconds: int = 3600) -> int:
    return int(time.time()) + seconds


def rebalance_body(key: str, account: str, nonce: int, deadline: int | None = None) -> Any:
    deadline = future() if deadline is None else deadline
    message = {"account": account, "nonce": nonce, "deadline": deadline}
    return {
        "chainId": CHAIN_ID,
        "nonce": nonce,
        "deadline": deadline,
        "signature": signed("Rebalance", key, message),
    }


def isolated_body(
    key: str,
    account: str,
    symbol: str,
    type_: int,
    amount: str,
    nonce: int,
    *,
    deadline: int | None = None,
    signed_amount: int | None = None,
    chain_id: int = CHAIN_ID,
) -> Any:
    from watcher.domain.amounts import parse_decimal_amount

    deadline = future() if deadline is None else deadline
    message = {
        "account": account,
        "symbol": symbol,
        "type": type_,
        "amount": parse_decimal_amount(amount, 18) if signed_amount is None else signed_amount,
        "nonce": nonce,
        "deadline": deadline,
    }
    return {
        "symbol": symbol,
        "type": type_,
        "amount": amount,
        "chainId": chain_id,
        "nonce": nonce,
        "deadline": deadline,
        "signature": signed("IsolatedMargin", key, message, chain_id=chain_id),
    }


@asynccontextmanager
async def running_api(db_url: str, root: Path) -> AsyncIterator[Api]:
    app = await build(make_settings(root, db_url))
    client: TestClient[Any, Any] = TestClient(TestServer(make_web_app(app)))
    await client.start_server()
    try:
        yield Api(client, app)
    finally:
        await client.close()
        await app.close()
