"""The reconciler's ledger integrity check at scale, and what it costs the event loop.

Every reconciliation (every 5 minutes by default) checks the whole journal: each
balance equals the sum of its entries, each journal transaction sums to zero per asset
(store/reconciliation.py). The daemon keeps serving meanwhile, so what matters is
both how long the check takes and how long it holds the event loop.

Setup (not timed): a fresh SQLite file (``--database postgresql``: a fresh database
as bench/withdrawals.py makes one), ``--credits`` two-leg deposit credits (default
1,000,000: 2,000,000 journal entries) over ``--accounts`` accounts in one asset,
posted through the bulk path; amounts in 8-decimal ledger units. Then, ``--runs``
times, the check through the daemon's own audit sessions (on SQLite the read-only
second connection, in aiosqlite's worker thread) while a ticker on the event loop
sleeps 1 ms at a time and records how late it wakes up.

Last line: ``integrity: entries <n> wall <s>s loop_lag_p99 <ms>ms loop_lag_max <ms>ms
db sqlite|postgresql`` (the best run's wall time; the worst run's lag).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pgserver import bench_workdir  # noqa: E402
from watcher.domain.journal import TxKind, vault_account  # noqa: E402
from watcher.store.db import create_audit_engine, create_engine, session_factory  # noqa: E402
from watcher.store.ledger_batch import Pair, post_pairs  # noqa: E402
from watcher.store.migrate import upgrade  # noqa: E402
from watcher.store.reconciliation import ledger_integrity  # noqa: E402

STEP = 50_000  # credits per seeding transaction


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--credits", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=90_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--database-url", help="PostgreSQL server URL (as bench/withdrawals.py)")
    return parser.parse_args()


async def seed(url: str, credits: int, accounts: int) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        sessions = session_factory(engine)
        vault = vault_account(31337)
        for start in range(0, credits, STEP):
            pairs = []
            for i in range(start, min(credits, start + STEP)):
                user = f"0x{i % accounts + 1:040x}"
                # 0.01 to 10 USDT in 8-decimal ledger units
                pairs.append(Pair(f"credit:{i}", user, vault, "USDT", 10**6 * (i % 1000 + 1), user))
            async with sessions.begin() as s:
                await post_pairs(s, TxKind.DEPOSIT, pairs)
    finally:
        await engine.dispose()


async def check(url: str) -> tuple[int, float, float, float]:
    """(problems, wall seconds, loop lag p99 and max in seconds) of one check."""
    engine = create_engine(url)
    audit = create_audit_engine(url)
    sessions = session_factory(audit or engine)
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - started - 0.001)

    try:
        ticking = asyncio.create_task(ticker())
        started = time.perf_counter()
        async with sessions() as s:
            problems = await ledger_integrity(s)
        wall = time.perf_counter() - started
        done.set()
        await ticking
    finally:
        if audit is not None:
            await audit.dispose()
        await engine.dispose()
    lags.sort()
    return len(problems), wall, lags[int(len(lags) * 0.99)], lags[-1]


async def run(args: argparse.Namespace, url: str) -> None:
    started = time.perf_counter()
    await seed(url, args.credits, args.accounts)
    entries = 2 * args.credits
    print(
        f"seeded: {args.credits} credits, {entries} entries, {args.accounts} accounts "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    results = []
    for n in range(args.runs):
        problems, wall, p99, worst = await check(url)
        if problems:
            raise SystemExit(f"the check found {problems} problem(s) in a clean ledger")
        print(
            f"run {n + 1}: {wall:.2f} s, event loop lag p99 {p99 * 1000:.2f} ms, "
            f"max {worst * 1000:.1f} ms",
            flush=True,
        )
        results.append((wall, p99, worst))
    print(
        f"integrity: entries {entries} wall {min(r[0] for r in results):.2f}s "
        f"loop_lag_p99 {max(r[1] for r in results) * 1000:.2f}ms "
        f"loop_lag_max {max(r[2] for r in results) * 1000:.1f}ms db {args.database}"
    )


async def main() -> None:
    args = arguments()
    async with bench_workdir("bench-integrity-", args.database, args.database_url) as (_, url):
        await run(args, url)


if __name__ == "__main__":
    asyncio.run(main())
