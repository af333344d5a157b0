"""The chain side's ceiling for the withdrawal bench: anvil fed as the floor feeds it
versus as a sender that broadcasts requests as they come in would feed it.

bench/withdrawals.py compares the watcher end to end (first request -> last completed)
with a floor: N pre-signed ``vault.withdraw`` transactions sent in JSON-RPC batches of
200, each batch's receipts awaited before the next. This bench asks what the ratio
could be with an infinitely fast watcher: the same N pre-signed transactions (no
daemon, no signing in the timed part) arrive at RATE per second, the rate the intake
takes requests at, and are broadcast

* ``stream B``: in batches of B as soon as B have arrived (the sender broadcasts a
  chunk of 16 while requests come in, 64 otherwise; 256 for comparison);
* ``gated``: everything arrived so far as soon as the previous broadcast is mined.

Each pattern runs on a fresh anvil with the withdrawal bench's setup (automine plus
an interval block every second), best of RUNS; per run: seconds from the first
arrival until all are mined, blocks, empty blocks, anvil's CPU. Anvil's automine
queues a new set of "ready" transactions whenever a transaction arrives while a block
is being mined, and mines each set as its own block: transactions already mined by an
earlier set are dropped from it, so a stream of small batches makes many small and
empty blocks, each costing the node a block's overhead.

Last line: ``anvil stream: floor <F>/s best stream <S>/s (<pattern>) ratio <F/S>``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

# withdrawals puts the repository on sys.path (for watcher.*)
from withdrawals import (
    ANVIL,
    FLOOR_STUCK_S,
    CpuMeter,
    FloorStuck,
    floor,
    fund_vault,
    presign,
    rpc,
    rpc_body,
    send_raw,
)

from watcher.chain.devnet import deploy_devnet, dev_account, start_anvil

N = int(os.environ.get("BENCH_WITHDRAWALS", "2000"))
RATE = float(os.environ.get("BENCH_STREAM_RATE", "1700"))  # arrivals/s: the intake's rate
BURSTS = (16, 64, 256)
RUNS = 2
HOT_WALLET = dev_account(1).address  # presign()'s signer


async def _mined(http: aiohttp.ClientSession, url: str, first_nonce: int) -> int:
    """How many of the stream's transactions the node has mined (nonce order)."""
    count = await rpc(http, url, "eth_getTransactionCount", [HOT_WALLET, "latest"])
    return int(count, 16) - first_nonce


async def _wait_mined(
    http: aiohttp.ClientSession, url: str, first_nonce: int, n: int, since: float
) -> None:
    while await _mined(http, url, first_nonce) < n:
        if time.perf_counter() - since > FLOOR_STUCK_S:
            raise FloorStuck(f"not all mined {FLOOR_STUCK_S} s after the last arrival")
        await asyncio.sleep(0.005)


async def stream(
    http: aiohttp.ClientSession, url: str, first_nonce: int, raws: list[str], burst: int
) -> float:
    """Batches of ``burst`` sent when their last transaction has arrived."""
    started = time.perf_counter()
    sent = 0
    while sent < len(raws):
        upto = min(len(raws), sent + burst)
        await asyncio.sleep(max(0.0, started + upto / RATE - time.perf_counter()))
        await send_raw(http, url, raws[sent:upto], sent)
        sent = upto
    await _wait_mined(http, url, first_nonce, len(raws), time.perf_counter())
    return time.perf_counter() - started


async def gated(http: aiohttp.ClientSession, url: str, first_nonce: int, raws: list[str]) -> float:
    """Everything arrived so far, sent once the previous send is mined."""
    started = time.perf_counter()
    sent = mined = 0
    while sent < len(raws):
        arrived = min(len(raws), int((time.perf_counter() - started) * RATE))
        if mined < sent:
            mined = await _mined(http, url, first_nonce)
        if arrived > sent and mined >= sent:
            await send_raw(http, url, raws[sent:arrived], sent)
            sent = arrived
        else:
            await asyncio.sleep(0.005)
    await _wait_mined(http, url, first_nonce, len(raws), time.perf_counter())
    return time.perf_counter() - started


async def block_sizes(http: aiohttp.ClientSession, url: str, after: int) -> list[int]:
    """Transactions per block for the blocks after ``after``."""
    head = int(await rpc(http, url, "eth_blockNumber", []), 16)
    body = [
        rpc_body("eth_getBlockByNumber", [hex(b), False], b) for b in range(after + 1, head + 1)
    ]
    if not body:
        return []
    async with http.post(url, json=body) as resp:
        answers = sorted(await resp.json(), key=lambda a: a["id"])
    return [len(a["result"]["transactions"]) for a in answers]


async def one_run(pattern: str) -> tuple[float, str]:
    """(seconds, description) of one run of ``pattern`` on a fresh anvil."""
    async with start_anvil(**ANVIL) as node:
        dep = await deploy_devnet(node.url, fund_accounts=1)
        usdt = dep.tokens["USDT"].address
        await fund_vault(node.url, dep.vault, usdt, 2 * N * 10**18)
        async with aiohttp.ClientSession() as http:
            start_block = int(await rpc(http, node.url, "eth_blockNumber", []), 16)
            if pattern == "floor":  # its CPU meter starts after the signing, as ours
                seconds, cpu = await floor(
                    node.url, dep.vault, usdt, dep.chain_id, N, node.process.pid
                )
            else:
                first, raws, _ = await presign(http, node.url, dep.vault, usdt, dep.chain_id, N)
                meter = CpuMeter({"anvil": node.process.pid})
                if pattern == "gated":
                    seconds = await gated(http, node.url, first, raws)
                else:
                    seconds = await stream(http, node.url, first, raws, int(pattern.split()[1]))
                cpu = meter.report()
            sizes = await block_sizes(http, node.url, start_block)
    described = (
        f"{seconds:.2f} s, {len(sizes)} blocks ({sizes.count(0)} empty, "
        f"{sizes.count(1)} of one tx), {cpu}"
    )
    return seconds, described


async def main() -> None:
    patterns = ["floor", *(f"stream {b}" for b in BURSTS), "gated"]
    best: dict[str, float] = {}
    print(f"{N} pre-signed vault.withdraw txs; stream arrivals at {RATE:.0f}/s", flush=True)
    for pattern in patterns:
        for _ in range(RUNS):
            try:
                seconds, described = await one_run(pattern)
            except FloorStuck as exc:
                print(f"{pattern:>10}: run discarded ({exc})", flush=True)
                continue
            print(f"{pattern:>10}: {N / seconds:5.0f}/s  {described}", flush=True)
            best[pattern] = min(best.get(pattern, seconds), seconds)
    if "floor" not in best or len(best) < 2:
        raise SystemExit("not enough runs completed")
    floor_rate = N / best.pop("floor")
    name, seconds = min(best.items(), key=lambda kv: kv[1])
    stream_rate = N / seconds
    print(f"arrivals alone take {N / RATE:.2f} s ({RATE:.0f}/s): no stream beats that rate")
    print(
        f"anvil stream: floor {floor_rate:.0f}/s best stream {stream_rate:.0f}/s "
        f"({name}) ratio {floor_rate / stream_rate:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
