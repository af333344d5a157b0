"""Deposit listener throughput against the raw eth_getLogs floor (not a test).

    .venv/bin/python bench/deposits.py [--deposits 20000] [--per-block 100] [--fresh]
        [--database sqlite|postgresql] [--database-url URL]

1. Prepares (once) an anvil chain with the vault, the tokens and ``--deposits``
   deposits (half native, half USDT, from 10 accounts), mined in blocks of
   ``--per-block`` (100) with automine off, and saves it with ``--dump-state`` under
   var/bench/ for reuse (``--per-block 8``: the 2,500-block chain of issue 22).
2. Floor: plain aiohttp ``eth_getLogs`` over the deposit range + hand decoding.
3. Watcher: a DepositListener on an empty ledger ticks until every deposit is
   credited (3 confirmations; all are already final, so this is the backfill path).
   The ledger is a SQLite file, or with ``--database postgresql`` a fresh database on
   ``--database-url`` / ``$BENCH_DATABASE_URL`` / ``$WATCHER_TEST_DATABASE_URL``, else
   on a throwaway cluster started for the run (``bench/pgserver.py``). The JSON-RPC
   calls of the backfill (each item of a batch counted) are counted by the client.
4. Steady state: 20 more blocks of 10 deposits, one tick per block; RPC calls per
   new block from the client's own counters.

The last line is ``deposits: watcher <N>/s floor <M>/s ratio <M/N> rss <MB>MB
rpc_per_1000_blocks <c> db sqlite|postgresql``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from eth_utils.crypto import keccak
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pgserver import ServerCpu, bench_database  # noqa: E402
from watcher.chain.devnet import deploy_devnet, dev_account, start_anvil  # noqa: E402
from watcher.chain.logs import DEPOSIT_TOPIC  # noqa: E402
from watcher.chain.rpc import RpcClient  # noqa: E402
from watcher.services.listener import DepositListener  # noqa: E402
from watcher.settings import (  # noqa: E402
    AssetConfig,
    ListenerSettings,
    NetworkConfig,
    TokenConfig,
)
from watcher.store.db import create_engine, session_factory  # noqa: E402
from watcher.store.migrate import upgrade  # noqa: E402
from watcher.store.models import Deposit  # noqa: E402

STATE_DIR = ROOT / "var" / "bench"
CHAIN_ID = 31337
BATCH = 100
ACCOUNTS = 10
DEPOSIT_NATIVE = "0x" + keccak(text="depositNative()")[:4].hex()
DEPOSIT = "0x" + keccak(text="deposit(address,uint256)")[:4].hex()
APPROVE = "0x" + keccak(text="approve(address,uint256)")[:4].hex()


def word(value: int | str) -> str:
    if isinstance(value, str):
        return value[2:].lower().rjust(64, "0")
    return hex(value)[2:].rjust(64, "0")


class Rpc:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url, self.ids = http, url, 0

    async def call(self, method: str, *params: Any) -> Any:
        self.ids += 1
        body = {"jsonrpc": "2.0", "id": self.ids, "method": method, "params": list(params)}
        async with self.http.post(self.url, json=body) as resp:
            answer = await resp.json(content_type=None)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        body = []
        for method, params in calls:
            self.ids += 1
            body.append({"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params})
        async with self.http.post(self.url, json=body) as resp:
            answers = await resp.json(content_type=None)
        errors = [a["error"] for a in answers if "error" in a]
        if errors:
            raise RuntimeError(f"batch: {errors[:3]}")
        return [a["result"] for a in answers]


class Depositor:
    """Sends deposits from the unlocked dev accounts with locally tracked nonces."""

    def __init__(self, rpc: Rpc, vault: str, usdt: str) -> None:
        self.rpc, self.vault, self.usdt = rpc, vault, usdt
        self.nonces: dict[str, int] = {}
        self.sent = 0

    async def setup(self) -> None:
        for i in range(ACCOUNTS):
            who = str(dev_account(i).address)
            self.nonces[who] = int(
                await self.rpc.call("eth_getTransactionCount", who, "pending"), 16
            )
        await self.rpc.call("evm_setAutomine", False)
        calls = []
        for who in self.nonces:
            data = APPROVE + word(self.vault) + word(2**256 - 1)
            calls.append(("eth_sendTransaction", [self._tx(who, self.usdt, data, 0, 80_000)]))
        await self.rpc.batch(calls)
        await self.rpc.call("evm_mine")

    def _tx(self, who: str, to: str, data: str, value: int, gas: int) -> dict[str, Any]:
        nonce = self.nonces[who]
        self.nonces[who] = nonce + 1
        return {
            "from": who,
            "to": to,
            "data": data,
            "value": hex(value),
            "gas": hex(gas),
            "nonce": hex(nonce),
            "maxFeePerGas": hex(50 * 10**9),
            "maxPriorityFeePerGas": hex(10**9),
        }

    async def block(self, n: int) -> None:
        """One block with ``n`` deposits (alternating native and USDT)."""
        calls = []
        accounts = list(self.nonces)
        for k in range(n):
            who = accounts[k % ACCOUNTS]
            self.sent += 1
            if self.sent % 2:
                tx = self._tx(who, self.vault, DEPOSIT_NATIVE, 10**12 + self.sent, 60_000)
            else:
                data = DEPOSIT + word(self.usdt) + word(10**15 + self.sent)
                tx = self._tx(who, self.vault, data, 0, 120_000)
            calls.append(("eth_sendTransaction", [tx]))
        await self.rpc.batch(calls)
        await self.rpc.call("evm_mine")


async def prepare(
    state: Path, meta_path: Path, count: int, per_block: int = BATCH
) -> dict[str, Any]:
    started = time.perf_counter()
    async with (
        start_anvil(chain_id=CHAIN_ID, state_path=state) as node,
        aiohttp.ClientSession() as http,
    ):
        dep = await deploy_devnet(node.url)
        rpc = Rpc(http, node.url)
        depositor = Depositor(rpc, dep.vault, dep.tokens["USDT"].address)
        await depositor.setup()
        first = int(await rpc.call("eth_blockNumber"), 16) + 1
        for _ in range(count // per_block):
            await depositor.block(per_block)
        last = int(await rpc.call("eth_blockNumber"), 16)
        await rpc.call("anvil_mine", hex(3))
        await rpc.call("evm_setAutomine", True)
        meta = {
            "count": count,
            "vault": dep.vault,
            "usdt": dep.tokens["USDT"].address,
            "usdc": dep.tokens["USDC"].address,
            "deploy_block": dep.deploy_block,
            "first": first,
            "last": last,
            "nonces": depositor.nonces,
            "sent": depositor.sent,
        }
    meta_path.write_text(json.dumps(meta))  # noqa: ASYNC240 (a one-off bench script)
    took = time.perf_counter() - started
    print(f"prepared {count} deposits in blocks {first}..{last} in {took:.1f} s")
    return meta


def decode(log: dict[str, Any]) -> tuple[int, str, int, str, str, int]:
    topics = log["topics"]
    return (
        int(log["blockNumber"], 16),
        log["transactionHash"],
        int(log["logIndex"], 16),
        "0x" + topics[1][-40:],
        "0x" + topics[2][-40:],
        int(log["data"], 16),
    )


async def floor(url: str, vault: str, start: int, end: int) -> tuple[float, int]:
    async with aiohttp.ClientSession() as http:
        began = time.perf_counter()
        flt = {
            "address": vault,
            "topics": [DEPOSIT_TOPIC],
            "fromBlock": hex(start),
            "toBlock": hex(end),
        }
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [flt]}
        async with http.post(url, json=body) as resp:
            answer = await resp.json(content_type=None)
        decoded = [decode(x) for x in answer["result"]]
        return time.perf_counter() - began, len(decoded)


def network(meta: dict[str, Any], url: str) -> NetworkConfig:
    return NetworkConfig(
        name="bench",
        chain_id=CHAIN_ID,
        confirmations=3,
        block_time_seconds=Decimal(1),
        rpc_urls=[url],
        vault=meta["vault"],
        start_block=meta["deploy_block"],
        native_asset="ETH",
        tokens=[
            TokenConfig(symbol="USDT", asset="USDT", address=meta["usdt"], decimals=18),
            TokenConfig(symbol="USDC", asset="USDC", address=meta["usdc"], decimals=6),
        ],
    )


async def count_credited(sessions: Any) -> int:
    async with sessions() as s:
        return int(
            await s.scalar(
                select(func.count()).select_from(Deposit).where(Deposit.state == "credited")
            )
            or 0
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deposits", type=int, default=20_000)
    parser.add_argument("--fresh", action="store_true", help="prepare the chain again")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--database-url",
        help="postgresql+asyncpg:// URL of a server where a database may be created "
        "(default: $BENCH_DATABASE_URL, $WATCHER_TEST_DATABASE_URL, else a throwaway cluster)",
    )
    parser.add_argument(
        "--per-block", type=int, default=BATCH, help=f"deposits per block (default {BATCH})"
    )
    args = parser.parse_args()
    if args.per_block < 1:
        parser.error("--per-block must be at least 1")
    per_block = args.per_block
    count = args.deposits - args.deposits % per_block
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    name = f"deposits-{count}" if per_block == BATCH else f"deposits-{count}-per{per_block}"
    state = STATE_DIR / f"{name}.state.json"
    meta_path = STATE_DIR / f"{name}.meta.json"
    if args.fresh or not state.exists() or not meta_path.exists():
        state.unlink(missing_ok=True)
        meta = await prepare(state, meta_path, count, per_block)
    else:
        meta = json.loads(meta_path.read_text())

    # Load a copy, so the steady-state blocks below never end up in the saved chain.
    with tempfile.TemporaryDirectory() as tmp:
        work_state = Path(tmp) / "chain.json"
        work_state.write_bytes(state.read_bytes())
        async with (
            bench_database(args.database, Path(tmp) / "bench.db", args.database_url) as (
                db_url,
                where,
            ),
            start_anvil(chain_id=CHAIN_ID, state_path=work_state) as node,
        ):
            print(f"database: {where}")
            await run(node.url, meta, count, db_url, args.database)


async def run(url: str, meta: dict[str, Any], count: int, db_url: str, kind: str) -> None:
    floor_s, n = await floor(url, meta["vault"], meta["deploy_block"], meta["last"])
    assert n == count, f"floor read {n} logs, expected {count}"
    floor_rate = count / floor_s
    print(f"floor: {count} logs in {floor_s:.3f} s ({floor_rate:,.0f}/s)")

    engine = create_engine(db_url)
    await upgrade(engine)
    sessions = session_factory(engine)
    net = network(meta, url)
    assets = {
        a: AssetConfig(precision=8, collateral_ratio=Decimal(1)) for a in ("ETH", "USDT", "USDC")
    }
    async with aiohttp.ClientSession() as http:
        client = RpcClient([url], chain_id=CHAIN_ID, session=http, timeout=60)
        listener = DepositListener(net, ListenerSettings(), assets, sessions, client)
        head = int(await Rpc(http, url).call("eth_blockNumber"), 16)
        ticks: list[float] = []
        server = await ServerCpu.of(db_url) if kind == "postgresql" else None
        server_before = server.seconds() if server else None
        cpu_before = time.process_time()
        began = time.perf_counter()
        while await count_credited(sessions) < count:
            tick_began = time.perf_counter()
            await listener.tick()
            ticks.append(time.perf_counter() - tick_began)
        watcher_s = time.perf_counter() - began
        cpu_s = time.process_time() - cpu_before
        server_s = (
            None
            if server is None or server_before is None
            else (server.seconds() or 0.0) - server_before
        )
        watcher_rate = count / watcher_s
        print(f"watcher: {count} deposits credited in {watcher_s:.3f} s ({watcher_rate:,.0f}/s)")
        print(
            f"backfill: {len(ticks)} tick(s), {sum(ticks):.3f} s in ticks ({kind}); "
            f"CPU: bench process {cpu_s:.3f} s"
            + (f", database server {server_s:.3f} s" if server_s is not None else "")
        )
        backfill_calls = dict(client.stats.calls)
        blocks = head - net.start_block + 1
        rpc_per_1000 = 1000 * sum(backfill_calls.values()) / blocks
        by_method: dict[str, int] = {}
        for (_e, m), n in backfill_calls.items():
            by_method[m] = by_method.get(m, 0) + n
        print(
            f"backfill: {sum(by_method.values())} JSON-RPC calls for blocks "
            f"{net.start_block}..{head} ({blocks} blocks): "
            + ", ".join(f"{m} {n}" for m, n in sorted(by_method.items()))
        )

        # Steady state: one tick per new block of 10 deposits.
        rpc = Rpc(http, url)
        depositor = Depositor(rpc, meta["vault"], meta["usdt"])
        depositor.nonces = dict(meta["nonces"])
        depositor.sent = meta["sent"]
        await rpc.call("evm_setAutomine", False)
        before = sum(client.stats.calls.values())
        steady_blocks = 20
        for _ in range(steady_blocks):
            await depositor.block(10)
            await listener.tick()
        calls = sum(client.stats.calls.values()) - before
        await rpc.call("anvil_mine", hex(3))
        await listener.tick()
        credited = await count_credited(sessions)
        assert credited == count + 10 * steady_blocks, credited
        methods = sorted({m for (_e, m) in client.stats.calls})
        print(
            f"steady state: {calls / steady_blocks:.2f} RPC calls per new block "
            f"({', '.join(methods)})"
        )
    await engine.dispose()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(
        f"deposits: watcher {watcher_rate:.0f}/s floor {floor_rate:.0f}/s "
        f"ratio {floor_rate / watcher_rate:.2f} rss {rss_mb}MB "
        f"rpc_per_1000_blocks {rpc_per_1000:.1f} db {kind}"
    )


if __name__ == "__main__":
    asyncio.run(main())
