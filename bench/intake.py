"""The withdrawal intake's CPU per request by batch size, in process (no HTTP).

The intake group-commits the requests that arrive together (services/intake.py): one
database transaction per batch. Its cost is a part per batch (the transaction, the
accounts' lock and state, the statements) and a part per request (its decision, its
rows). At 500 requests/s a batch holds a few requests, so the part per batch is what
the daemon pays; this bench measures both.

Setup (not timed): anvil with the devnet contracts (the intake needs the network's
vault and tokens), a fresh SQLite file (``--database postgresql``: a fresh database as
bench/withdrawals.py makes one), N + warm-up accounts credited in the ledger, one
signed EIP-712 withdrawal request each, parsed. Then for each batch size K the intake
(``Intake.submit``, the HTTP handler's call) gets the requests K at a time, each group
submitted together and awaited before the next (so each group is one batch: the
intake's linger collects them), and the process's CPU time is divided by the requests.

Last line: ``intake: cpu_per_request k1 <ms>ms k3 <ms>ms k16 <ms>ms per_batch <ms>ms
per_request <ms>ms db sqlite|postgresql`` (per_batch/per_request: the least-squares
line through the three, CPU per batch = per_batch + K * per_request).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from eth_account import Account

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pgserver import bench_workdir  # noqa: E402
from bench.withdrawals import setup_ledger, signed_requests  # noqa: E402
from tests.helpers import write_config  # noqa: E402
from watcher.app import build  # noqa: E402
from watcher.chain.devnet import deploy_devnet, start_anvil  # noqa: E402
from watcher.services.intake import Intake, WithdrawalRequest  # noqa: E402
from watcher.settings import load_settings  # noqa: E402

SIZES = (1, 3, 16)
WARMUP = 64


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1200, help="requests per batch size")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--database-url", help="PostgreSQL server URL (as bench/withdrawals.py)")
    return parser.parse_args()


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares of (K, CPU per batch): (per batch, per request)."""
    n = len(points)
    mx = sum(k for k, _ in points) / n
    my = sum(c for _, c in points) / n
    slope = sum((k - mx) * (c - my) for k, c in points) / sum((k - mx) ** 2 for k, _ in points)
    return my - slope * mx, slope


async def run(args: argparse.Namespace, root: Path, db_url: str) -> None:
    async with start_anvil() as node:
        dep = await deploy_devnet(node.url, fund_accounts=1)
        cfg = write_config(root, [("devnet", dep, 1)], default_toml_extra="")
        settings = load_settings(cfg, env={"WATCHER_DATABASE_URL": db_url})
        total = WARMUP + args.n * len(SIZES)
        users = [Account.create() for _ in range(total)]
        print(f"setup: crediting {total} accounts", flush=True)
        await setup_ledger(settings, [u.address for u in users], dep.chain_id)
        requests = [
            WithdrawalRequest.from_json(body)
            for body in signed_requests(users, dep, dep.tokens["USDT"].address)
        ]
        app = await build(settings, services=False)
        try:
            intake = Intake(app.settings, app.sessions)
            for i in range(0, WARMUP, 4):  # first-use imports and statement caches
                await asyncio.gather(*(intake.submit(r) for r in requests[i : i + 4]))
            per_request: dict[int, float] = {}
            start = WARMUP
            for k in SIZES:
                chunk = requests[start : start + args.n]
                start += args.n
                batches = intake.batches
                cpu = time.process_time()
                for i in range(0, len(chunk), k):
                    await asyncio.gather(*(intake.submit(r) for r in chunk[i : i + k]))
                used = time.process_time() - cpu
                made = intake.batches - batches
                per_request[k] = used / len(chunk)
                print(
                    f"K={k}: {len(chunk)} requests in {made} batches, "
                    f"{per_request[k] * 1000:.3f} ms CPU per request, "
                    f"{used / made * 1000:.2f} ms per batch",
                    flush=True,
                )
        finally:
            await app.close()
    per_batch, each = fit([(k, per_request[k] * k) for k in SIZES])
    print(
        "intake: cpu_per_request "
        + " ".join(f"k{k} {per_request[k] * 1000:.3f}ms" for k in SIZES)
        + f" per_batch {per_batch * 1000:.2f}ms per_request {each * 1000:.3f}ms db {args.database}"
    )


async def main() -> None:
    args = arguments()
    async with bench_workdir("bench-intake-", args.database, args.database_url) as (root, url):
        await run(args, root, url)


if __name__ == "__main__":
    asyncio.run(main())
