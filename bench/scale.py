"""Steady state at scale: the hot paths on a seeded database against an empty one.

    .venv/bin/python bench/scale.py [--deposits 1000000] [--database sqlite|postgresql]
                                    [--database-url postgresql+asyncpg://...]

1. One anvil (automine) with the devnet deployment. Two databases, migrated: *empty*
   and *seeded*. The seeded one gets, through the bulk path the listener itself uses
   (``deposits.record_logs`` → ``store/bulk.py`` multi-row inserts / asyncpg
   ``executemany``, ``ledger_batch.post_pairs`` / ``post_many``):
   ``--deposits`` deposits (default 1,000,000) by 100,000 accounts (a long-tailed
   distribution: the busiest account has ~0.1 %), in the blocks below the vault's
   deployment (the history the cursor has passed): ~98.7 % credited, 1 % unsupported
   (a token not configured), 0.3 % orphaned, plus 2,000 pending on a second network
   (its unconfirmed window; not configured here, so nothing credits them); one
   credit per credited deposit in the journal; ``--deposits``/5 withdrawals (97 %
   completed with a confirmed attempt and a settlement, 1 % each failed / rejected /
   cancelled with a release, 100 broadcast and 100 confirming with live attempts of
   a second hot wallet not configured here, 50 waiting for review), each with its
   hold in the journal; the sent ones with the payout deadline and the two validator
   signatures their transaction carries. Seeding time is printed. Then both databases
   settle as after any bulk load (PostgreSQL ``VACUUM (ANALYZE)``, what autovacuum
   would otherwise do in the middle of a measured phase; SQLite a WAL checkpoint).
2. Both databases then get the same: the listener caught up with the chain (in
   process, depth 12), 12 blocks of one real deposit each (the unconfirmed window),
   and 3,064 fresh accounts credited for the intake.
3. Measured on each database, in the same run:
   - *listener step*: 20 new blocks of one deposit each; per block one step of each
     database's listener, alternating which goes first (median);
   - *intake p99*: a real ``watcher run`` process per database (its listener, sender
     and tracker running), 64 warm-up requests, then three open loops of 1,000 signed
     withdrawal requests each arriving at 500/s (Poisson, latency from the scheduled
     arrival), each loop paid out before the next; the median of the three p99s (one
     p99 of 1,000 requests on two shared cores moves by 2x from run to run). The
     sender pays through co-signing as in service: each daemon gets the devnet's three
     co-signers as processes of their own (``start_cosigners``, fresh stores under
     that database's directory; started before its daemon, stopped after it), their
     URLs in its network config and ``WATCHER_COSIGNER_TOKEN`` in its environment.
     The vault is funded for both runs on top of what the seeded ledger has in flight
     (its sent withdrawals are outflow still owed: without it the seeded sender finds
     no free USDT and pays nothing, and the two sides would not do the same work).
     Both daemons pay on the same vault: with fewer than ~15,300 ``--deposits`` the
     seeded database's new withdrawal ids (after its ``--deposits``/5 seeded ones)
     overlap the ids the empty one paid, and the vault refuses those payouts (the
     intake figures do not depend on it);
   - *status under load*: ``collect_status`` in process beside the running daemon,
     database path and RPC probes (what ``watcher status`` does), median of 15, one
     second after the last burst while the daemon still pays it;
   - then, once the daemon has taken every withdrawal of the run to a final state (at
     most 180 s; the time it took is printed), both sides in the same state:
   - *account view*: ``GET /v1/accounts/{a}`` and ``GET /v1/accounts/{a}/history`` of
     the busiest seeded account (in the empty database: that account with one credit),
     medians of 50 sequential requests; and each one's reads alone (``load_state``
     and ``account_history`` in process beside the running daemon: medians of 50);
   - *status*: as above, median of 15;
   - the daemon phases run the empty side first (``BENCH_SEEDED_FIRST=1``: the seeded
     one, to check that the order does not decide a ratio);
   - once both daemon phases are over: *status* of the two sides in alternation (median
     of 15 each, no daemon running), the same anvil and the same moment for both;
   - with ``BENCH_STEP_SQL=1``, each statement's time in the steps, the status
     calls and the account view's reads of each side, per statement shape (where a
     seeded side's time goes);
   - the daemon's peak RSS (``VmHWM``), and the database size per deposit (the whole
     database: deposits, journal, withdrawals, indexes).

The last line is ``scale: deposits <rows> step <ms>ms (empty <ms>ms) intake_p99 <ms>ms
(empty <ms>ms) rss <MB>MB``. Targets: each within 1.5x of empty; RSS < 300 MB.
PostgreSQL: ``--database postgresql`` creates two fresh databases on the server of
``--database-url`` (or ``$BENCH_DATABASE_URL`` / ``$WATCHER_TEST_DATABASE_URL``), e.g.
from ``scripts/pg-throwaway.sh start /tmp/pg-bench 55440``, and drops them after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
from eth_account import Account
from eth_hash.auto import keccak
from sqlalchemy import event, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import withdrawals as wbench  # noqa: E402
from deposits import DEPOSIT_NATIVE, Rpc  # noqa: E402

from bench.pgserver import bench_database  # noqa: E402
from tests.helpers import write_config  # noqa: E402
from watcher.app import App, build  # noqa: E402
from watcher.chain.devnet import (  # noqa: E402
    DEVNET_COSIGNER_TOKEN,
    deploy_devnet,
    dev_account,
    devnet_validator_address,
    start_anvil,
    start_cosigners,
)
from watcher.chain.logs import DepositLog  # noqa: E402
from watcher.services.listener import DepositListener  # noqa: E402
from watcher.services.status import WITHDRAWAL_LIVE, collect_status  # noqa: E402
from watcher.settings import NetworkConfig, Settings, load_settings  # noqa: E402
from watcher.store import deposits as deposit_store  # noqa: E402
from watcher.store import withdrawals as repo  # noqa: E402
from watcher.store.accounts import account_history, load_state  # noqa: E402
from watcher.store.bulk import insert_many  # noqa: E402
from watcher.store.ledger_batch import Posting, post_many  # noqa: E402
from watcher.store.models import Deposit, TxAttempt, Withdrawal, table_of, utcnow  # noqa: E402

DEPTH = 12
HISTORY_BLOCKS = 2000
ACCOUNTS = 100_000
STEPS = 20
WARMUP = 64
OPEN_N = 1000
OPEN_RATE = 500
OPEN_ROUNDS = 3
# Connections of the open loop: a request that finds all busy waits, and its latency
# (counted from its scheduled arrival) includes that wait.
OPEN_CONNECTIONS = 100
VIEWS = 50
STATUS_RUNS = 15
# Seconds a daemon gets to pay the open loop's withdrawals before the reads are timed.
DRAIN_WITHIN = 180.0
SEED_CHUNK = 50_000
OTHER_CHAIN = 1  # the second network of the seeded pending deposits
OTHER_PENDING = 2000
IN_FLIGHT = 100  # broadcast, and as many confirming
REVIEW = 50
FOREIGN_SENDER = "0x000000000000000000000000000000000000dEaD"


def hex32(rng: random.Random) -> str:
    return f"0x{rng.getrandbits(256):064x}"


def checksum(low: str) -> str:
    """EIP-55 of 40 lowercase hex digits (eth_utils' validating path is ~10x slower)."""
    digest = keccak(low.encode()).hex()
    return "0x" + "".join(
        c.upper() if int(d, 16) >= 8 else c for c, d in zip(low, digest[:40], strict=True)
    )


class Seeder:
    def __init__(self, app: App, network: NetworkConfig, count: int, below: int) -> None:
        self.app, self.network, self.count, self.below = app, network, count, below
        self.rng = random.Random(22)
        # Accounts by rank; weights 1/(rank+100): the busiest has ~0.14 % of the rows.
        self.accounts = [checksum(f"{self.rng.getrandbits(160):040x}") for _ in range(ACCOUNTS)]
        weights = [1 / (r + 100) for r in range(ACCOUNTS)]
        total, acc = sum(weights), 0.0
        self.cum = []
        for w in weights:
            acc += w / total
            self.cum.append(acc)

    def pick(self, n: int) -> list[str]:
        return self.rng.choices(self.accounts, cum_weights=self.cum, k=n)

    async def deposits(self) -> None:
        net, rng = self.network, self.rng
        usdt = net.tokens[0].address
        usdc = net.tokens[1].address
        unknown = "0x00000000000000000000000000000000000b0b0b"
        done = 0
        block_hashes = {b: hex32(rng) for b in range(1, self.below)}
        while done < self.count:
            n = min(SEED_CHUNK, self.count - done)
            owners = self.pick(n)
            logs = []
            for k in range(n):
                i = done + k
                block = 1 + i * (self.below - 1) // self.count
                roll = rng.random()
                if roll < 0.01:
                    token, amount = unknown, rng.randrange(1, 10**21)
                elif roll < 0.5:
                    token, amount = (
                        "0x0000000000000000000000000000000000000000",
                        rng.randrange(10**15, 10**19),
                    )
                elif roll < 0.8:
                    token, amount = usdt, rng.randrange(10**18, 10**22)
                else:
                    token, amount = usdc, rng.randrange(10**6, 10**10)
                logs.append(
                    DepositLog(
                        chain_id=net.chain_id,
                        block_number=block,
                        block_hash=block_hashes[block],
                        tx_hash=hex32(rng),
                        log_index=rng.randrange(0, 4),
                        account=owners[k],
                        token=token,
                        amount=amount,
                    )
                )
            # 0.3 % orphaned: seen pending, their block reorged out before credit.
            orphans = [d for d in logs if rng.random() < 0.003]
            gone = {d.tx_hash for d in orphans}
            async with self.app.sessions.begin() as s:
                await deposit_store.record_logs(
                    s,
                    [d for d in logs if d.tx_hash not in gone],
                    net,
                    self.app.settings.assets,
                    final_upto=self.below,
                )
                await deposit_store.record_logs(
                    s, orphans, net, self.app.settings.assets, final_upto=None
                )
                await s.execute(
                    update(Deposit)
                    .where(Deposit.chain_id == net.chain_id, Deposit.state == "pending")
                    .values(state="orphaned")
                )
            done += n
        # Another network's unconfirmed window: pending, never credited here.
        other = NetworkConfig(
            **{
                **net.model_dump(),
                "name": "other",
                "chain_id": OTHER_CHAIN,
            }
        )
        logs = [
            DepositLog(
                chain_id=OTHER_CHAIN,
                block_number=10_000_000 + i // 30,
                block_hash=hex32(rng),
                tx_hash=hex32(rng),
                log_index=0,
                account=a,
                token="0x0000000000000000000000000000000000000000",
                amount=rng.randrange(10**15, 10**19),
            )
            for i, a in enumerate(self.pick(OTHER_PENDING))
        ]
        async with self.app.sessions.begin() as s:
            await deposit_store.record_logs(
                s, logs, other, self.app.settings.assets, final_upto=None
            )

    async def withdrawals(self, hot_wallet: str) -> None:
        net, rng = self.network, self.rng
        count = self.count // 5
        usdt = net.tokens[0].address
        nonces: dict[str, int] = {}
        account_ids: dict[str, int] = {}
        from watcher.store.ledger_batch import account_ids as ids_of

        states: list[str] = []
        for i in range(count):
            if i < IN_FLIGHT:
                states.append("broadcast")
            elif i < 2 * IN_FLIGHT:
                states.append("confirming")
            elif i < 2 * IN_FLIGHT + REVIEW:
                states.append("review")
            else:
                roll = rng.random()
                states.append(
                    "failed"
                    if roll < 0.01
                    else "rejected"
                    if roll < 0.02
                    else "cancelled"
                    if roll < 0.03
                    else "completed"
                )
        states.reverse()  # the live ones are the newest
        now = utcnow()
        deadline_at = int(now.timestamp()) + 3600
        cosignatures = json.dumps(  # the sender's format (cosigning.Quorum.to_json)
            [[devnet_validator_address(i), "0x" + "cd" * 65] for i in (0, 1)]
        )
        start = 0
        while start < count:
            n = min(SEED_CHUNK // 2, count - start)
            chunk_states = states[start : start + n]
            owners = self.pick(n)
            async with self.app.sessions.begin() as s:
                missing = [o for o in set(owners) if o not in account_ids]
                account_ids.update(await ids_of(s, missing))
                ids = await repo.new_ids(s, n)
                cols: dict[str, list[Any]] = {c: [] for c in repo._NEW_COLUMNS}
                att: dict[str, list[Any]] = {
                    c: []
                    for c in (
                        "withdrawal_id",
                        "sender",
                        "nonce",
                        "tx_hash",
                        "raw_tx",
                        "max_fee_per_gas",
                        "max_priority_fee_per_gas",
                        "state",
                        "block_number",
                        "block_hash",
                        "status",
                        "created_at",
                        "broadcast_at",
                        "broadcast_block",
                        "updated_at",
                    )
                }
                postings: list[Posting] = []
                for k in range(n):
                    wid, owner, state = ids[k], owners[k], chunk_states[k]
                    nonce = nonces.get(owner, 0)
                    nonces[owner] = nonce + 1
                    units = rng.randrange(10**8, 10**11)
                    created = now.replace(microsecond=0) if state != "completed" else now
                    tx_hash = (
                        hex32(rng) if state not in ("rejected", "cancelled", "review") else None
                    )
                    row = {
                        "id": wid,
                        "account": owner,
                        "account_id": account_ids[owner],
                        "chain_id": net.chain_id,
                        "token": usdt,
                        "asset": "USDT",
                        "amount": units * 10**10,
                        "ledger_amount": units,
                        "fee": 0,
                        "destination": owner,
                        "nonce": nonce,
                        "deadline": 2**40,
                        "signature": "0x" + "ab" * 65,
                        "request_digest": hex32(rng),
                        "state": state,
                        "reason": None,
                        "tx_hash": tx_hash,
                        "block_number": 5 if tx_hash and state != "broadcast" else None,
                        "confirmations": 0,
                        "hold_tx_id": None,
                        "created_at": created,
                        "updated_at": created,
                        # A sent withdrawal carries the payout authorization its
                        # transaction was signed with: a deadline and 2 of 3 signatures.
                        "payout_deadline": deadline_at if tx_hash is not None else None,
                        "cosignatures": cosignatures if tx_hash is not None else None,
                    }
                    for c in repo._NEW_COLUMNS:
                        cols[c].append(row[c])
                    w = cast(Withdrawal, SimpleNamespace(**row))
                    postings.append(repo.hold_posting(w))
                    if state == "completed":
                        postings.append(
                            repo.settle_posting(w, self.app.settings.withdrawals.fee_account)
                        )
                    elif state in ("failed", "rejected", "cancelled"):
                        postings.append(repo.release_posting(w, state))
                    if tx_hash is not None:
                        live = state in ("broadcast", "confirming")
                        a_state = {
                            "broadcast": "broadcast",
                            "confirming": "mined",
                            "completed": "confirmed",
                            "failed": "confirmed",
                        }[state]
                        att["withdrawal_id"].append(wid)
                        att["sender"].append(FOREIGN_SENDER if live else hot_wallet)
                        att["nonce"].append(start + k)
                        att["tx_hash"].append(tx_hash)
                        att["raw_tx"].append("0x02f8" + "cd" * 250)
                        att["max_fee_per_gas"].append(2 * 10**9)
                        att["max_priority_fee_per_gas"].append(10**9)
                        att["state"].append(a_state)
                        att["block_number"].append(None if state == "broadcast" else 5)
                        att["block_hash"].append(None if state == "broadcast" else hex32(rng))
                        att["status"].append(
                            None if state == "broadcast" else (0 if state == "failed" else 1)
                        )
                        att["created_at"].append(created)
                        att["broadcast_at"].append(created)
                        att["broadcast_block"].append(4)
                        att["updated_at"].append(created)
                await insert_many(s, table_of(Withdrawal), cols)
                await insert_many(s, table_of(TxAttempt), att, same={"chain_id": net.chain_id})
                await post_many(s, postings, fresh_refs=True)
            start += n


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def timed_get(http: aiohttp.ClientSession, url: str) -> float:
    t0 = time.perf_counter()
    async with http.get(url) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: {resp.status}")
    return time.perf_counter() - t0


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Side:
    """One database of the comparison and what was measured on it."""

    def __init__(self, name: str, db: wbench.Db) -> None:
        self.name, self.db = name, db
        self.settings: Settings | None = None
        self.app: App | None = None
        self.listener: DepositListener | None = None
        self.steps: list[float] = []
        self.p99s: list[float] = []
        self.results: dict[str, Any] = {}


class StatementTimer:
    """``BENCH_STEP_SQL=1``: each statement's time in the listener steps and the status
    calls of one side (cursor execute to its return, on the app's engine), printed per
    statement shape: where a seeded side's extra milliseconds go."""

    def __init__(self, name: str, app: App | None, what: str = "step") -> None:
        assert app is not None
        self.name, self.what = name, what
        self.total: dict[str, list[float]] = {}
        self._started: list[float] = []
        engine = app.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *_: Any) -> None:
        self._started.append(time.perf_counter())

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        shape = " ".join(statement.split())[:110]
        self.total.setdefault(shape, []).append(time.perf_counter() - self._started.pop())

    def report(self, steps: int) -> None:
        what = self.what
        print(f"statements per {what} ({self.name}), total ms per {what}, calls per {what}:")
        if not self.total:
            print("  (none seen on this engine's cursor events)")
        ranked = sorted(self.total.items(), key=lambda kv: -sum(kv[1]))
        for shape, times in ranked[:12]:
            print(f"  {sum(times) * 1000 / steps:7.2f} {len(times) / steps:5.1f}  {shape}")


async def daemon_phase(
    side: Side,
    cfg: Path,
    env: dict[str, str],
    root: Path,
    bodies: list[dict[str, Any]],
    viewed: str,
    mine: Callable[[], Awaitable[Any]],
) -> None:
    assert side.settings is not None
    logs = ROOT / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)  # the daemon's log: var/bench/scale-<side>.log
    proc, port = await wbench.start_daemon(cfg, env, logs, f"scale-{side.name}", "all")
    api = f"http://127.0.0.1:{port}"
    try:
        await wbench.wait_http(api)
        assert side.app is not None
        baseline = await live_withdrawals(side.app)  # the seeded ones stay live
        async with aiohttp.ClientSession() as http:
            for body in bodies[:WARMUP]:  # warm-up (first-use imports, caches); not counted
                await wbench.submit(http, api, json.dumps(body))
        # BENCH_PYSPY=DIR: py-spy samples the daemon over the first open loop (and 2 s
        # more); raw stacks in DIR/scale-<side>.txt (`py-spy` in the venv; not a
        # dependency).
        spy_to = None
        if os.environ.get("BENCH_PYSPY"):
            spy_to = Path(os.environ["BENCH_PYSPY"]) / f"scale-{side.name}.txt"
        connector = aiohttp.TCPConnector(limit=OPEN_CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector) as http:
            reader = await build(side.settings, migrate=False, services=False)
            try:
                # OPEN_ROUNDS open loops, each of OPEN_N fresh requests, each paid out
                # before the next starts: one p99 of 1,000 requests on two shared cores
                # moves by 2x from run to run, their median much less.
                p99s, p50s = [], []
                for r in range(OPEN_ROUNDS):
                    chunk = bodies[WARMUP + r * OPEN_N : WARMUP + (r + 1) * OPEN_N]
                    latencies = await open_loop(
                        http, api, chunk, proc.pid, spy_to if r == 0 else None
                    )
                    p99s.append(wbench.pct(latencies, 99) * 1000)
                    p50s.append(median_ms(latencies))
                    if r == OPEN_ROUNDS - 1:
                        # Status while the daemon still pays the burst (what an operator
                        # sees under load), then every read again once the burst is
                        # paid: the two sides compared in the same state, not at
                        # whatever point of their payout backlogs one second falls on.
                        await asyncio.sleep(1.0)
                        side.results["status_busy"] = await status_ms(reader)
                    t0 = time.perf_counter()
                    left = await wait_paid(reader, baseline, mine)
                    side.results["drain_s"] = time.perf_counter() - t0
                    side.results["left"] = left
                side.results["intake_p99"] = statistics.median(p99s)
                side.results["intake_p50"] = statistics.median(p50s)
                side.p99s = p99s
                doc = [await timed_get(http, f"{api}/v1/accounts/{viewed}") for _ in range(VIEWS)]
                hist = [
                    await timed_get(http, f"{api}/v1/accounts/{viewed}/history?limit=100")
                    for _ in range(VIEWS)
                ]
                side.results["account"] = median_ms(doc)
                side.results["history"] = median_ms(hist)
                timer = (
                    StatementTimer(side.name, reader, "status")
                    if os.environ.get("BENCH_STEP_SQL")
                    else None
                )
                side.results["status"] = await status_ms(reader)
                if timer is not None:
                    timer.report(STATUS_RUNS)
                side.results["status_db"] = await status_ms(reader, probe=False)
                # The history page's queries alone, beside the daemon (the HTTP figure
                # above also carries the server's and the client's work).
                times = []
                for _ in range(VIEWS):
                    t0 = time.perf_counter()
                    async with reader.sessions() as s:
                        await account_history(s, side.settings, viewed, limit=100)
                    times.append(time.perf_counter() - t0)
                side.results["history_db"] = median_ms(times)
                # The account view's reads alone (load_state, what GET /v1/accounts/{a}
                # reads), likewise; with BENCH_STEP_SQL, by statement.
                timer = (
                    StatementTimer(side.name, reader, "account view")
                    if os.environ.get("BENCH_STEP_SQL")
                    else None
                )
                times = []
                for _ in range(VIEWS):
                    t0 = time.perf_counter()
                    async with reader.sessions() as s:
                        await load_state(s, side.settings, viewed)
                    times.append(time.perf_counter() - t0)
                side.results["account_db"] = median_ms(times)
                if timer is not None:
                    timer.report(VIEWS)
            finally:
                await reader.close()
                await reader.engine.dispose()
        side.results["rss_mb"] = proc_kb(proc.pid, "VmHWM") / 1024
    finally:
        proc.terminate()
        await proc.wait()


async def open_loop(
    http: aiohttp.ClientSession,
    api: str,
    bodies: list[dict[str, Any]],
    pid: int,
    spy_to: Path | None,
) -> list[float]:
    """The open loop (bench/withdrawals.py's): ``bodies`` sent at Poisson arrivals of
    OPEN_RATE per second; each latency from its scheduled arrival. ``spy_to``: py-spy
    samples the daemon (``pid``) meanwhile, raw stacks to that file."""
    rng = random.Random(7)
    offsets, t = [], 0.0
    for _ in bodies:
        t += rng.expovariate(OPEN_RATE)
        offsets.append(t)
    spy = None
    if spy_to is not None:
        seconds = int(len(offsets) and offsets[-1]) + 3
        spy = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"),
            *("record", "-p", str(pid), "-r", "200", "-f", "raw", "--nonblocking"),
            *("-d", str(seconds), "-o", str(spy_to)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    latencies: list[float] = []
    begin = time.perf_counter() + 0.05

    async def one(body: dict[str, Any], at: float) -> None:
        data = json.dumps(body)
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        await wbench.submit(http, api, data)
        latencies.append(time.perf_counter() - at)

    await asyncio.gather(*(one(b, begin + o) for b, o in zip(bodies, offsets, strict=True)))
    if spy is not None:
        await spy.wait()
    return latencies


async def status_ms(reader: App, *, probe: bool = True) -> float:
    """Median of STATUS_RUNS ``collect_status`` calls, in ms (``probe=False``: its
    database part alone, no RPC)."""
    times = []
    for _ in range(STATUS_RUNS):
        t0 = time.perf_counter()
        await collect_status(reader, probe=probe)
        times.append(time.perf_counter() - t0)
    return median_ms(times)


async def live_withdrawals(app: App) -> int:
    from sqlalchemy import func, select

    async with app.sessions() as s:
        n = await s.scalar(
            select(func.count())
            .select_from(Withdrawal)
            .where(Withdrawal.state.in_(WITHDRAWAL_LIVE))
        )
    return int(n or 0)


async def wait_paid(
    app: App, baseline: int, mine: Callable[[], Awaitable[Any]], within: float = DRAIN_WITHIN
) -> int:
    """Wait until the daemon has taken every withdrawal of the run to a final state
    (live withdrawals back at ``baseline``) or ``within`` seconds passed, mining a block
    every 0.25 s meanwhile (the payouts' confirmations: anvil mines only on a
    transaction); how many of the run's are still live (0: drained)."""
    deadline = time.monotonic() + within
    while (left := await live_withdrawals(app) - baseline) > 0:
        await mine()
        if time.monotonic() >= deadline:
            from collections import Counter

            from sqlalchemy import select

            async with app.sessions() as s:
                why = Counter(
                    (w.state, (w.reason or "")[:100])
                    for w in await s.execute(
                        select(Withdrawal.state, Withdrawal.reason).where(
                            Withdrawal.state.in_(WITHDRAWAL_LIVE)
                        )
                    )
                )
            print(f"still live after {within:.0f} s (state, reason): {dict(why)}", flush=True)
            return left
        await asyncio.sleep(0.25)
    return 0


async def db_size(side: Side) -> int:
    from sqlalchemy import text

    assert side.app is not None
    async with side.app.engine.connect() as conn:
        if side.db.kind == "postgresql":
            return int(
                (await conn.execute(text("SELECT pg_database_size(current_database())"))).scalar()
                or 0
            )
        page = (await conn.exec_driver_sql("PRAGMA page_size")).scalar() or 0
        pages = (await conn.exec_driver_sql("PRAGMA page_count")).scalar() or 0
        return int(page) * int(pages)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--deposits", type=int, default=1_000_000)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--database-url", default=None, help="PostgreSQL server URL")
    args = parser.parse_args()
    if args.database_url:
        os.environ["BENCH_DATABASE_URL"] = args.database_url
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            sides = []
            for name in ("empty", "seeded"):
                (root / name).mkdir()
                # A SQLite file, or a fresh PostgreSQL database dropped on exit.
                url, _where = await stack.enter_async_context(
                    bench_database(args.database, root / name / "watcher.db", args.database_url)
                )
                sides.append(Side(name, wbench.Db(args.database, root / name, url)))
            try:
                await run(args, root, sides)
            finally:
                for side in sides:
                    if side.app is not None:
                        await side.app.close()
                        await side.app.engine.dispose()
                    await side.db.close()


async def run(args: argparse.Namespace, root: Path, sides: list[Side]) -> None:
    empty, seeded = sides
    async with start_anvil() as node, aiohttp.ClientSession() as http:
        rpc = Rpc(http, node.url)
        # History below the vault's deployment block: the seeded deposits' blocks.
        t0 = time.perf_counter()
        await rpc.call("anvil_mine", hex(HISTORY_BLOCKS))
        print(f"anvil: {HISTORY_BLOCKS} blocks mined in {time.perf_counter() - t0:.1f} s")
        dep = await deploy_devnet(node.url, fund_accounts=1)
        usdt = dep.tokens["USDT"].address
        await wbench.fund_vault(node.url, dep.vault, usdt, 10 * OPEN_N * OPEN_ROUNDS * 10**18)
        await rpc.call("anvil_mine", hex(DEPTH + 8))
        cfg = write_config(root, [("devnet", dep, DEPTH)])
        hot = dev_account(1).address
        base_env = {
            **os.environ,
            "WATCHER_SIGNER_KEY": "0x" + bytes(dev_account(1).key).hex(),
            "WATCHER_ADMIN_TOKEN": "bench-admin-token",
            "WATCHER_COSIGNER_TOKEN": DEVNET_COSIGNER_TOKEN,
            "WATCHER_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }
        for side in sides:
            side.settings = load_settings(
                cfg, env={**base_env, "WATCHER_DATABASE_URL": side.db.url}
            )
            side.app = await build(side.settings, services=False)
        net = seeded.settings.enabled_networks[0] if seeded.settings else None
        assert net is not None and seeded.app is not None and empty.app is not None

        began = time.perf_counter()
        gc.disable()  # as the listener does during a step: no full collections mid-bulk
        seeder = Seeder(seeded.app, net, args.deposits, dep.deploy_block)
        await seeder.deposits()
        took_d = time.perf_counter() - began
        await seeder.withdrawals(hot)
        took = time.perf_counter() - began
        gc.enable()
        gc.collect()
        # The vault pays both daemons' runs on top of what the seeded ledger has in
        # flight (signed or broadcast, never mined here): without it, the seeded
        # daemon's sender finds no free USDT and pays nothing, and the two sides would
        # be compared with different work going on.
        async with seeded.app.sessions() as s:
            # (the seeded withdrawals are all USDT)
            spoken_for = sum((await repo.in_flight_outflow(s, dep.chain_id)).values())
        if spoken_for:
            await wbench.fund_vault(node.url, dep.vault, usdt, spoken_for)
        counts = await table_counts(seeded.app)
        print(
            f"seeded ({args.database}): {counts['deposits']:,} deposits, "
            f"{counts['journal_transactions']:,} journal transactions, "
            f"{counts['journal_entries']:,} entries, {counts['withdrawals']:,} withdrawals, "
            f"{counts['tx_attempts']:,} attempts, {counts['accounts']:,} accounts in "
            f"{took:.0f} s (deposits {took_d:.0f} s)",
            flush=True,
        )
        began = time.perf_counter()
        how = await settle(sides)
        print(f"settled: {how} in {time.perf_counter() - began:.0f} s", flush=True)

        # Both: the listener caught up, then the unconfirmed window filled.
        for side in sides:
            assert side.app is not None and side.settings is not None
            side.listener = DepositListener(
                net,
                side.settings.listener,
                side.settings.assets,
                side.app.sessions,
                side.app.rpc[net.name],
            )
            await side.listener.tick()

        async def block_with_deposit() -> None:
            who = dev_account(0).address
            await rpc.call(
                "eth_sendTransaction",
                {"from": who, "to": dep.vault, "data": DEPOSIT_NATIVE, "value": hex(10**15)},
            )

        for _ in range(DEPTH):
            await block_with_deposit()
            for side in sides:
                assert side.listener is not None
                await side.listener.tick()
        timers = (
            [StatementTimer(side.name, side.app) for side in sides]
            if os.environ.get("BENCH_STEP_SQL")
            else []
        )
        for k in range(STEPS):
            await block_with_deposit()
            order = sides if k % 2 == 0 else sides[::-1]
            for side in order:
                assert side.listener is not None
                t0 = time.perf_counter()
                more = await side.listener.step()
                side.steps.append(time.perf_counter() - t0)
                assert not more
        for side in sides:
            side.results["step"] = median_ms(side.steps)
        for timer in timers:
            timer.report(STEPS)

        users = [Account.create() for _ in range(WARMUP + OPEN_N * OPEN_ROUNDS)]
        viewed = seeder.accounts[0]
        viewed_rows = await account_rows(seeded, viewed)
        for side in sides:
            assert side.app is not None
            await wbench.credit_users(side.app, [u.address for u in users] + [viewed], dep.chain_id)
        bodies = wbench.signed_requests(users, dep, usdt)
        for side in sides[::-1] if os.environ.get("BENCH_SEEDED_FIRST") else sides:
            env = {**base_env, "WATCHER_DATABASE_URL": side.db.url}
            # This daemon's co-signers (fresh stores: the other side's withdrawal ids
            # are other payouts), its config naming them.
            async with start_cosigners(
                dep, root / side.name / "cosigners", fresh=True
            ) as cosigners:
                side_cfg = write_config(
                    root / side.name, [("devnet", dep, DEPTH)], cosigners=cosigners
                )
                await daemon_phase(
                    side,
                    side_cfg,
                    env,
                    root / side.name,
                    bodies,
                    viewed,
                    lambda: rpc.call("anvil_mine", "0x1"),
                )

        # Status again, the two sides in alternation once both daemons have stopped:
        # the same anvil (it holds both runs' payouts by now), the same moment, no
        # daemon beside either, so neither side is the one measured second.
        alternating: dict[str, list[float]] = {side.name: [] for side in sides}
        for k in range(STATUS_RUNS):
            for side in sides if k % 2 == 0 else sides[::-1]:
                assert side.app is not None
                t0 = time.perf_counter()
                await collect_status(side.app)
                alternating[side.name].append(time.perf_counter() - t0)
        for side in sides:
            side.results["status_alt"] = median_ms(alternating[side.name])

        size = await db_size(seeded)
        size_empty = await db_size(empty)
        n = counts["deposits"]
    where = "SQLite" if args.database == "sqlite" else "PostgreSQL"
    print(f"machine: {os.cpu_count()} cores, {where}; medians unless said")
    for key, label in (
        ("step", "listener step (1 new block, 1 deposit)"),
        ("intake_p50", f"intake p50 at {OPEN_RATE}/s"),
        ("intake_p99", f"intake p99 at {OPEN_RATE}/s"),
        ("account", "account view GET /v1/accounts/{a}"),
        ("history", "account history GET /v1/accounts/{a}/history?limit=100"),
        ("account_db", "account view in process (load_state)"),
        ("history_db", "account history in process (account_history, limit 100)"),
        ("status_busy", "status 1 s after the burst (daemon paying it)"),
        ("status", "status (collect_status, database + RPC probes)"),
        ("status_db", "status, its database part alone (no RPC probes)"),
        ("status_alt", "status, the two sides alternately after both runs (no daemon)"),
    ):
        a, b = seeded.results[key], empty.results[key]
        print(f"{label}: {a:.1f} ms (empty {b:.1f} ms), ratio {a / b:.2f}")
    for side in (seeded, empty):
        rounds = ", ".join(f"{v:.0f}" for v in side.p99s)
        print(f"{side.name}: intake p99 of each open loop: {rounds} ms (the median above)")
    for side in (seeded, empty):
        drained = "paid" if side.results["left"] == 0 else f"{side.results['left']:.0f} still live"
        print(f"{side.name}: the run's withdrawals {drained} {side.results['drain_s']:.1f} s after")
    print(f"viewed account (seeded): {viewed_rows[0]} deposits, {viewed_rows[1]} withdrawals")
    print(
        f"database size: {size / 2**20:.0f} MiB ({size / max(1, n):.0f} bytes per deposit, "
        f"the whole database over its deposits); empty {size_empty / 2**20:.1f} MiB"
    )
    print(
        f"daemon peak RSS: seeded {seeded.results['rss_mb']:.0f} MB, "
        f"empty {empty.results['rss_mb']:.0f} MB"
    )
    print(
        f"scale: deposits {n} step {seeded.results['step']:.1f}ms "
        f"(empty {empty.results['step']:.1f}ms) intake_p99 {seeded.results['intake_p99']:.0f}ms "
        f"(empty {empty.results['intake_p99']:.0f}ms) rss {seeded.results['rss_mb']:.0f}MB"
    )


async def settle(sides: list[Side]) -> str:
    """Each database as it settles after a bulk load, before anything is measured.
    PostgreSQL: ``VACUUM (ANALYZE)``. Autovacuum would do that pass by itself (a
    million-deposit load: 1.9 GB to read and set visible), at whatever moment and
    during whichever phase it falls on, on the same two cores: in one run it doubled
    both sides' intake p50. SQLite: the write-ahead log copied into the file and
    truncated (the daemon's checkpointer would do it during the first phase)."""
    for side in sides:
        assert side.app is not None
        engine = side.app.engine
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM (ANALYZE)")
        else:
            with contextlib.closing(sqlite3.connect(side.db.file)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return "VACUUM (ANALYZE)" if sides[0].db.kind == "postgresql" else "WAL checkpoint"


async def account_rows(side: Side, account: str) -> tuple[int, int]:
    """The viewed account's deposits and withdrawals (what its history page reads from)."""
    from sqlalchemy import func, select

    assert side.app is not None
    async with side.app.sessions() as s:
        deps = await s.scalar(select(func.count()).where(Deposit.account == account))
        ws = await s.scalar(select(func.count()).where(Withdrawal.account == account))
    return int(deps or 0), int(ws or 0)


async def table_counts(app: App) -> dict[str, int]:
    from sqlalchemy import text

    out = {}
    async with app.engine.connect() as conn:
        for t in (
            "deposits",
            "journal_transactions",
            "journal_entries",
            "withdrawals",
            "tx_attempts",
            "accounts",
        ):
            out[t] = int((await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar() or 0)
    return out


if __name__ == "__main__":
    asyncio.run(main())
