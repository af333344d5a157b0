"""Helpers for the deposit listener tests: a raw-RPC chain driver for anvil (dev
accounts are unlocked, so eth_sendTransaction needs no signing), listener and
settings builders, and ledger read-outs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from eth_utils.crypto import keccak
from sqlalchemy import select

from tests.helpers import write_config
from watcher.chain.artifacts import load_artifact
from watcher.chain.devnet import Deployment, constructor_data, dev_account
from watcher.chain.retry import RetryPolicy
from watcher.chain.rpc import RpcClient
from watcher.domain.journal import CROSS, vault_account
from watcher.metrics import Metrics
from watcher.services.listener import DepositListener
from watcher.settings import Settings, load_settings
from watcher.store import ledger
from watcher.store.db import SessionFactory
from watcher.store.models import Deposit

FAST = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0, jitter=0.0)
DEPOSIT_NATIVE = "0x" + keccak(text="depositNative()")[:4].hex()
DEPOSIT = "0x" + keccak(text="deposit(address,uint256)")[:4].hex()
APPROVE = "0x" + keccak(text="approve(address,uint256)")[:4].hex()
MINT = "0x" + keccak(text="mint(address,uint256)")[:4].hex()
MAX = 2**256 - 1


def word(value: int | str) -> str:
    if isinstance(value, str):
        return value[2:].lower().rjust(64, "0")
    return hex(value)[2:].rjust(64, "0")


def addr(i: int) -> str:
    return str(dev_account(i).address)


class ChainError(AssertionError):
    pass


@dataclass
class Chain:
    """Drive one anvil over raw JSON-RPC."""

    url: str
    dep: Deployment
    http: aiohttp.ClientSession

    async def rpc(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        async with self.http.post(self.url, json=body) as resp:
            answer = await resp.json(content_type=None)
        if "error" in answer:
            raise ChainError(f"{method}: {answer['error']}")
        return answer["result"]

    async def head(self) -> int:
        return int(await self.rpc("eth_blockNumber"), 16)

    async def mine(self, n: int = 1) -> int:
        await self.rpc("anvil_mine", hex(n))
        return await self.head()

    async def automine(self, on: bool) -> None:
        await self.rpc("evm_setAutomine", on)

    async def send(self, tx: dict[str, Any]) -> str:
        tx_hash: str = await self.rpc("eth_sendTransaction", tx)
        return tx_hash

    async def receipt(self, tx_hash: str) -> dict[str, Any]:
        """The receipt once mined (automine answers a moment after the send)."""
        for _ in range(300):
            result: dict[str, Any] | None = await self.rpc("eth_getTransactionReceipt", tx_hash)
            if result is not None:
                break
            await asyncio.sleep(0.01)
        else:
            raise ChainError(f"{tx_hash} not mined")
        if result["status"] != "0x1":
            raise ChainError(f"{tx_hash} reverted")
        return result

    def native_tx(self, who: int, value: int) -> dict[str, Any]:
        return {
            "from": addr(who),
            "to": self.dep.vault,
            "value": hex(value),
            "data": DEPOSIT_NATIVE,
        }

    def token_tx(self, who: int, token: str, amount: int) -> dict[str, Any]:
        data = DEPOSIT + word(token) + word(amount)
        return {"from": addr(who), "to": self.dep.vault, "data": data, "gas": hex(200_000)}

    async def approve(self, who: int, token: str) -> None:
        tx = {"from": addr(who), "to": token, "data": APPROVE + word(self.dep.vault) + word(MAX)}
        await self.receipt(await self.send(tx))

    async def deposit_native(self, who: int, value: int) -> str:
        tx_hash = await self.send(self.native_tx(who, value))
        return tx_hash

    async def deposit_token(self, who: int, token: str, amount: int) -> str:
        return await self.send(self.token_tx(who, token, amount))

    async def deploy_token(self, symbol: str, decimals: int, holders: list[int]) -> str:
        data = constructor_data(load_artifact("TestToken"), f"{symbol} token", symbol, decimals)
        rcpt = await self.receipt(await self.send({"from": addr(0), "data": data}))
        token = str(rcpt["contractAddress"])
        for who in holders:
            mint = {"from": addr(0), "to": token, "data": MINT + word(addr(who)) + word(10**30)}
            await self.receipt(await self.send(mint))
        return token


def make_settings(
    tmp_path: Path, networks: list[tuple[str, Deployment, int]], db_url: str
) -> Settings:
    cfg = write_config(tmp_path, networks)
    return load_settings(cfg, env={}, database_url=db_url)


def make_listener(
    settings: Settings,
    name: str,
    sessions: SessionFactory,
    *,
    urls: list[str] | None = None,
    metrics: Metrics | None = None,
    timeout: float = 10.0,
    http: aiohttp.ClientSession | None = None,
    cooldown: tuple[float, float] = (0.01, 0.05),
) -> DepositListener:
    network = settings.networks[name]
    client = RpcClient(
        urls or network.rpc_urls,
        chain_id=network.chain_id,
        session=http,
        timeout=timeout,
        policy=FAST,
        cooldown_base=cooldown[0],
        cooldown_max=cooldown[1],
    )
    return DepositListener(
        network, settings.listener, settings.assets, sessions, client, metrics or Metrics()
    )


async def cross(sessions: SessionFactory, key: str) -> dict[str, int]:
    async with sessions() as s:
        return await ledger.wallet_balances(s, key, CROSS)


async def vault_cross(sessions: SessionFactory, chain_id: int) -> dict[str, int]:
    return await cross(sessions, vault_account(chain_id))


async def deposit_rows(sessions: SessionFactory, chain_id: int | None = None) -> list[Deposit]:
    async with sessions() as s:
        q = select(Deposit).order_by(Deposit.block_number, Deposit.log_index)
        if chain_id is not None:
            q = q.where(Deposit.chain_id == chain_id)
        return list(await s.scalars(q))


async def states(sessions: SessionFactory, chain_id: int | None = None) -> dict[str, str]:
    return {f"{d.tx_hash}:{d.log_index}": d.state for d in await deposit_rows(sessions, chain_id)}


async def assert_ledger_consistent(sessions: SessionFactory) -> None:
    """Balances equal the journal sums, and every asset's balances sum to zero."""
    from collections import defaultdict

    from watcher.store.models import Balance

    async with sessions() as s:
        sums = await ledger.journal_sums(s)
        rows = list(await s.scalars(select(Balance)))
    bal = {(r.account_id, r.asset, r.wallet): r.amount for r in rows if r.amount != 0}
    assert bal == {k: v for k, v in sums.items() if v != 0}
    per_asset: dict[str, int] = defaultdict(int)
    for (_a, asset, _w), v in bal.items():
        per_asset[asset] += v
    assert all(v == 0 for v in per_asset.values()), per_asset
