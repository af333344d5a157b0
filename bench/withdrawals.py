"""Withdrawal pipeline benchmark against its raw floor, on one anvil.

1. Setup (not timed): anvil (automine) with the vault and tokens; the vault funded by
   a real USDT deposit; N fresh accounts credited in the ledger (SQLite); N signed
   EIP-712 withdrawal requests, one per account. The devnet's three co-signers
   (``watcher cosign run``, one process each, devnet validator keys, their own SQLite
   stores; ``watcher.chain.devnet.start_cosigners``) for the deployment: the vault
   pays only with 2 of their 3 signatures, so the sender asks them for every batch.
2. Pipeline: ``watcher run`` as a real process (HTTP API, sender, tracker; withdrawal
   poll interval 0.2 s; the co-signers' URLs in its network config and
   ``WATCHER_COSIGNER_TOKEN`` in its environment). A warm-up of 64 requests from other
   accounts goes through the whole pipeline first and is not counted (a daemon in
   service is warm: first-use imports and statement caches are not what the numbers
   are about). Then the N requests go through the HTTP API with 32 connections
   (intake latency per request); then we wait until every withdrawal is ``completed``
   (confirmation depth 1). e2e rate = N / (first request → last completed).
   Then the latency at a given load: OPEN_N more requests arrive open-loop at
   OPEN_RATE per second (Poisson arrivals, fixed seed; each request on its own, however
   many are in flight; latency counted from its scheduled arrival, so a client that falls
   behind does not hide the wait), and we wait until they are completed too. A closed
   loop at saturation measures queueing (32 connections / throughput, Little's law); a
   latency target is about a load, so the target's p99 is this phase's.
   Then the intake alone: the daemons stopped, one daemon started with the API role
   only (``--roles api``: nothing signs, co-signs, sends or mines what it accepts),
   warmed up with 64 requests, and OPEN_N more requests at OPEN_RATE open loop: the
   intake's latency without the payout pipeline beside it on the same cores.
   The daemon's CPU time over the saturation phase, per withdrawal, is printed with the
   end-to-end rate and ratio it allows at best: ``watcher run`` is one process, so that
   work is serial whatever the chain and the client overlap with it.
   The cost of co-signing: the three co-signer processes' CPU time over the saturation
   phase per withdrawal (summed over the three), and the latency a round of asking
   every co-signer adds per batch (``watcher_cosign_round_seconds`` sum/count, scraped
   from the sender's daemon's /metrics at the end: warm-up, saturation and open loop;
   the saturation phase's own share is printed beside it).
3. Floor: N ``vault.withdraw`` transactions pre-signed by the hot key, sent with
   ``eth_sendRawTransaction`` in JSON-RPC batches of 200, each batch's receipts awaited
   before the next (the fastest way found to get N transactions mined on anvil), on a
   fresh anvil with the same setup; the best of 3 runs. Each carries the signatures
   of devnet validators 0 and 1 over its payout (signed locally while pre-signing, not
   timed): the vault checks a quorum on the floor's path too, no co-signer is asked.

Last line: ``withdrawals: intake <N>/s p99 <ms>ms e2e <N>/s floor <M>/s ratio <M/N>
cosign_cpu <ms>ms/w cosign_round <ms>ms alone_p99 <ms>ms db sqlite|postgresql``
(``p99``: the open loop's with the whole pipeline running; ``cosign_cpu``: the
co-signers' CPU per withdrawal at saturation, ``n/a`` without /proc; ``cosign_round``:
the mean co-signing round per batch over the run; ``alone_p99``: the intake alone's);
with replicas, ``replicas: N`` comes before ``db``. ``BENCH_TRACE=FILE`` writes the
open loop's requests (scheduled arrival, the client's delay before sending, send to
answer) to FILE.

Replicas: ``--replicas N --database postgresql`` runs the same phases against N
API-only replicas (``watcher run --roles api``, the requests spread over them) plus one
chain-role replica (``--roles chain``: sender, tracker, listener) on one PostgreSQL
database (a fresh database created on the server of ``--database-url``, else
``$BENCH_DATABASE_URL``, else ``$WATCHER_TEST_DATABASE_URL``, else a throwaway cluster
started for the run with scripts/pg-throwaway.sh; dropped after); the CPU lines count
every replica, and the last line has ``replicas: N`` before ``db``. The co-signers'
metrics come from the chain-role replica (the only one that sends). Without
``--replicas`` one daemon runs everything, on SQLite by default (``--database
postgresql`` works for it too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from eth_account import Account

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pgserver import bench_workdir  # noqa: E402
from tests.helpers import write_config  # noqa: E402
from watcher.app import build  # noqa: E402
from watcher.chain.artifacts import load_artifact  # noqa: E402
from watcher.chain.devnet import (  # noqa: E402
    DEVNET_COSIGNER_TOKEN,
    deploy_devnet,
    dev_account,
    devnet_validator_key,
    free_port,
    start_anvil,
    start_cosigners,
)
from watcher.chain.payout import Payout, PayoutSigner, signatures_blob  # noqa: E402
from watcher.chain.signer import HotSigner  # noqa: E402
from watcher.chain.vault import withdraw_calldata  # noqa: E402
from watcher.cli.devnet import withdrawal_body  # noqa: E402
from watcher.domain.journal import CROSS, Leg, TxKind, vault_account  # noqa: E402
from watcher.settings import load_settings  # noqa: E402
from watcher.store.ledger_batch import Posting, post_many  # noqa: E402

N = int(os.environ.get("BENCH_WITHDRAWALS", "2000"))
CONCURRENCY = 32
WARMUP = 64  # requests through the whole pipeline before timing (imports, caches)
OPEN_RATE = 500  # requests/s offered in the open-loop phase (the target's load)
OPEN_N = int(os.environ.get("BENCH_WITHDRAWALS_OPEN", "1000"))
FLOOR_WINDOW = 200
FLOOR_RUNS = 3
FLOOR_STUCK_S = 20  # a floor window unmined this long: the run is discarded
AMOUNT_WHOLE = 1  # USDT per withdrawal
# Automine, plus an interval block every second ("mixed mining"): anvil's automine now
# and then leaves a transaction of a burst in its pool, ready but never mined
# (foundry-rs/foundry#10122, transactions of one sender arriving out of nonce order);
# the interval block is the upstream workaround, and the floor has not hung since. It
# does not cover every case: one run here had nonce 99 accepted and left out of five
# interval blocks until the daemon's stuck timer replaced it (then it and the 400
# queued behind it were mined in one block). That is what STUCK_AFTER_S is for.
ANVIL: dict[str, Any] = {"block_time": 1, "extra_args": ["--mixed-mining"]}
# A transaction unmined this long is replaced with a bumped fee (stall cost: ~5 s at 5,
# ~32/s end to end at the production 60 s).
STUCK_AFTER_S = 2
KEEP_DIR = os.environ.get("BENCH_KEEP_DIR")  # copy the daemon's database and log here
LOG_LEVEL = os.environ.get("BENCH_LOG_LEVEL", "WARNING")
#: BENCH_TRACE=FILE: the open loop's requests, one line each: scheduled arrival (s from
#: the phase's start), the client's delay before sending, send to answer (s)
TRACE_FILE = os.environ.get("BENCH_TRACE")


def rpc_body(method: str, params: list[Any], rid: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


async def rpc(http: aiohttp.ClientSession, url: str, method: str, params: list[Any]) -> Any:
    async with http.post(url, json=rpc_body(method, params)) as resp:
        doc = await resp.json()
    if "error" in doc:
        raise RuntimeError(f"{method}: {doc['error']}")
    return doc["result"]


async def fund_vault(url: str, vault: str, token: str, units: int) -> None:
    from web3 import AsyncWeb3
    from web3.providers.rpc import AsyncHTTPProvider

    w3: Any = AsyncWeb3(AsyncHTTPProvider(url))
    owner = dev_account(0)
    tok = w3.eth.contract(address=token, abi=load_artifact("TestToken").abi)
    vlt = w3.eth.contract(address=vault, abi=load_artifact("Vault").abi)
    for call in (tok.functions.mint(owner.address, units), tok.functions.approve(vault, units)):
        await send(w3, owner, call)
    await send(w3, owner, vlt.functions.deposit(token, units))
    await w3.provider.disconnect()


async def send(w3: Any, account: Any, call: Any) -> None:
    tx = await call.build_transaction(
        {
            "from": account.address,
            "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
        }
    )
    signed = account.sign_transaction(tx)
    h = await w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(h, timeout=60, poll_latency=0.05)
    assert receipt["status"] == 1


async def credit_users(app: Any, users: list[str], chain_id: int) -> None:
    """10 USDT to each user in the ledger (deposit postings, 1,000 per transaction)."""
    for start in range(0, len(users), 1000):
        async with app.sessions.begin() as s:
            await post_many(
                s,
                [
                    Posting(
                        kind=TxKind.DEPOSIT,
                        ref=f"bench:{user}",
                        legs=[
                            Leg(vault_account(chain_id), "USDT", -10 * 10**8, CROSS),
                            Leg(user, "USDT", 10 * 10**8, CROSS),
                        ],
                        account_key=user,
                    )
                    for user in users[start : start + 1000]
                ],
            )


async def setup_ledger(settings: Any, users: list[str], chain_id: int) -> None:
    app = await build(settings, services=False)
    try:
        await credit_users(app, users, chain_id)
    finally:
        await app.close()


async def wait_http(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(url + "/healthz") as resp:
                    if resp.status in (200, 503):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("daemon did not start")


class Db:
    """The benchmark's database (``bench/pgserver.py``): a SQLite file, or a fresh
    PostgreSQL database on the given server or on a throwaway cluster."""

    def __init__(self, kind: str, root: Path, url: str) -> None:
        self.kind = kind
        self.file = root / "watcher.db"
        self.url = url
        self._engine: Any = None

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    async def counts(self) -> dict[str, int]:
        """Withdrawals by state."""
        if self.kind != "postgresql":
            con = sqlite3.connect(f"file:{self.file}?mode=ro", uri=True, timeout=30)
            try:
                found = con.execute(
                    "SELECT state, count(*) FROM withdrawals GROUP BY state"
                ).fetchall()
            finally:
                con.close()
            return {state: n for state, n in found}
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        if self._engine is None:
            self._engine = create_async_engine(self.url, pool_size=1)
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT state, count(*) FROM withdrawals GROUP BY state"))
            ).all()
        return {state: int(n) for state, n in rows}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Share of one core each process used over a phase (wall clock)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = time.perf_counter()
        self.used = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def seconds(self, name: str) -> float | None:
        """CPU seconds the process used since the meter started (None if unknown)."""
        before, after = self.used[name], cpu_seconds(self.pids[name])
        return None if before is None or after is None else after - before

    def report(self) -> str:
        wall = time.perf_counter() - self.start
        shares = []
        for name in self.pids:
            used = self.seconds(name)
            if used is not None:
                shares.append(f"{name} {100 * used / wall:.0f}%")
        return ", ".join(shares) + f" of one core ({os.cpu_count()} cores)" if shares else "n/a"


def cosigner_processes(root: Path) -> dict[str, int]:
    """name -> pid of this process's children running ``watcher cosign run`` with a
    config under ``root`` (what ``start_cosigners`` started; it yields URLs only)."""
    found: dict[str, int] = {}
    me = os.getpid()
    if not Path("/proc").is_dir():
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        args = [a.decode(errors="replace") for a in argv]
        if ppid != me or "cosign" not in args or "--config" not in args:
            continue
        config = Path(args[args.index("--config") + 1])
        if config.is_relative_to(root):
            found[config.stem.replace("-", "")] = int(entry.name)
    return dict(sorted(found.items()))


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET {url}/metrics: {resp.status}")
        return await resp.text()


@dataclass(frozen=True)
class CosignMetrics:
    """The sender's co-signing metrics (summed over networks): the round histogram's
    sum and count, and the co-signers' answers by outcome."""

    seconds: float = 0.0
    count: int = 0
    answers: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> CosignMetrics:
        seconds, count, answers = 0.0, 0, Counter[str]()
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            series, _, value = line.rpartition(" ")
            name = series.split("{", 1)[0]
            if name == "watcher_cosign_round_seconds_sum":
                seconds += float(value)
            elif name == "watcher_cosign_round_seconds_count":
                count += int(float(value))
            elif name == "watcher_cosign_answers_total":
                found = re.search(r'outcome="([^"]*)"', series)
                answers[found.group(1) if found else "?"] += int(float(value))
        return cls(seconds, count, dict(answers))

    def __sub__(self, other: CosignMetrics) -> CosignMetrics:
        keys = set(self.answers) | set(other.answers)
        return CosignMetrics(
            self.seconds - other.seconds,
            self.count - other.count,
            {k: self.answers.get(k, 0) - other.answers.get(k, 0) for k in sorted(keys)},
        )

    def mean_ms(self) -> float:
        return 1000 * self.seconds / self.count if self.count else 0.0

    def answers_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.answers.items())) or "none"


def signed_requests(users: list[Any], dep: Any, token: str) -> list[dict[str, Any]]:
    """One signed POST /v1/withdrawals body per user: AMOUNT_WHOLE of ``token`` (18
    decimals, the devnet's USDT) to the user's own address, nonce = its position in
    ``users``, valid for an hour."""
    deadline = int(time.time()) + 3600
    return [
        withdrawal_body(
            user.address,
            bytes(user.key),
            chain_id=dep.chain_id,
            vault=dep.vault,
            token=token,
            units=AMOUNT_WHOLE * 10**18,
            amount=str(AMOUNT_WHOLE),
            destination=user.address,
            nonce=i,
            deadline=deadline,
        )
        for i, user in enumerate(users)
    ]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def submit(http: aiohttp.ClientSession, api: str, data: str) -> None:
    """POST one signed withdrawal request; anything but 202 Accepted stops the bench."""
    async with http.post(
        api + "/v1/withdrawals", data=data, headers={"Content-Type": "application/json"}
    ) as resp:
        text = await resp.text()
    if resp.status != 202:
        raise RuntimeError(f"intake refused: {resp.status} {text}")


#: States a withdrawal of this bench never leaves without an operator (or never should
#: reach): the bench stops instead of waiting for ``completed`` forever.
STUCK_STATES = ("failed", "queued", "review", "stalled")


def check_stuck(counts: dict[str, int]) -> None:
    if any(counts.get(k) for k in STUCK_STATES):
        raise RuntimeError(f"withdrawals stuck: {counts}")


async def pipeline(
    apis: list[str], bodies: list[dict[str, Any]], db: Db, completed_before: int = 0
) -> tuple[float, list[float], float]:
    latencies: list[float] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker(api: str) -> None:
            while not queue.empty():
                data = json.dumps(queue.get_nowait())
                t0 = time.perf_counter()
                await submit(http, api, data)
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        # The connections spread evenly over the API replicas.
        await asyncio.gather(*(worker(apis[i % len(apis)]) for i in range(CONCURRENCY)))
        intake_done = time.perf_counter()
    while True:
        counts = await db.counts()
        if counts.get("completed", 0) >= completed_before + len(bodies):
            break
        check_stuck(counts)
        await asyncio.sleep(0.05)
    finished = time.perf_counter()
    return intake_done - started, latencies, finished - started


def write_trace(path: Path, trace: list[tuple[float, float, float]]) -> None:
    path.write_text("".join(f"{a:.4f} {d:.4f} {r:.4f}\n" for a, d, r in sorted(trace)))


async def open_loop(
    apis: list[str],
    bodies: list[dict[str, Any]],
    db: Db,
    completed_before: int,
    meter: CpuMeter,
    *,
    wait: bool = True,
) -> tuple[float, list[float], str]:
    """Requests at Poisson arrivals of OPEN_RATE/s; (achieved rate, latencies, CPU while
    they arrived). With ``wait``, returns once they are all completed (the phase's chain
    work done before the next phase starts)."""
    rng = random.Random(7)
    offsets, t = [], 0.0
    for _ in bodies:
        t += rng.expovariate(OPEN_RATE)
        offsets.append(t)
    latencies: list[float] = []
    # (scheduled arrival, client's delay before sending, send to answer), in seconds
    trace: list[tuple[float, float, float]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter() + 0.05

        async def one(api: str, body: dict[str, Any], at: float) -> None:
            data = json.dumps(body)
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            sent = time.perf_counter()
            await submit(http, api, data)
            done = time.perf_counter()
            latencies.append(done - at)
            trace.append((at - start, sent - at, done - sent))

        await asyncio.gather(
            *(
                one(apis[k % len(apis)], b, start + o)
                for k, (b, o) in enumerate(zip(bodies, offsets, strict=True))
            )
        )
        elapsed = time.perf_counter() - start
    cpu = meter.report()  # while the requests arrived
    if TRACE_FILE and wait:
        write_trace(Path(TRACE_FILE), trace)
    if not wait:
        return len(bodies) / elapsed, latencies, cpu
    while True:  # the phase's chain work done before the next phase starts
        counts = await db.counts()
        if counts.get("completed", 0) >= completed_before + len(bodies):
            return len(bodies) / elapsed, latencies, cpu
        check_stuck(counts)
        await asyncio.sleep(0.05)


class FloorStuck(Exception):
    """A floor run whose transactions anvil did not mine (that run does not count)."""


async def presign(
    http: aiohttp.ClientSession, url: str, vault: str, token: str, chain_id: int, n: int
) -> tuple[int, list[str], list[str]]:
    """N ``vault.withdraw`` transactions signed by the hot key with consecutive nonces
    from its pending count: (first nonce, raw transactions, their hashes). Each carries
    the payout signatures of devnet validators 0 and 1 (2 of 3: the vault's quorum)."""
    signer = HotSigner(dev_account(1))
    validators = [PayoutSigner(devnet_validator_key(i)) for i in (0, 1)]
    deadline = int(time.time()) + 3600
    nonce = int(await rpc(http, url, "eth_getTransactionCount", [signer.address, "pending"]), 16)
    block = await rpc(http, url, "eth_getBlockByNumber", ["latest", False])
    base = int(block["baseFeePerGas"], 16)
    raws, hashes = [], []
    dest = Account.create().address
    for i in range(n):
        payout = Payout(chain_id, vault, 10**12 + i, token, dest, 10**18, deadline)
        blob = signatures_blob((v.address, v.sign(payout)) for v in validators)
        tx = {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce + i,
            "to": vault,
            "value": 0,
            "data": withdraw_calldata(10**12 + i, token, dest, 10**18, deadline, blob),
            "gas": 200_000,
            "maxFeePerGas": 2 * base + 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
        signed = signer.sign_transaction(tx)
        raws.append(signed.raw)
        hashes.append(signed.tx_hash)
    return nonce, raws, hashes


async def send_raw(http: aiohttp.ClientSession, url: str, raws: list[str], first_id: int) -> None:
    """``raws`` in one JSON-RPC batch of ``eth_sendRawTransaction`` (ids from
    ``first_id``); any transaction refused stops the bench."""
    body = [rpc_body("eth_sendRawTransaction", [raw], first_id + i) for i, raw in enumerate(raws)]
    async with http.post(url, json=body) as resp:
        for item in await resp.json():
            if "error" in item:
                raise RuntimeError(f"send: {item['error']}")


async def floor(
    url: str, vault: str, token: str, chain_id: int, n: int, anvil_pid: int
) -> tuple[float, str]:
    """Seconds until all N are mined, and the CPU anvil and this client used meanwhile."""
    async with aiohttp.ClientSession() as http:
        _, raws, hashes = await presign(http, url, vault, token, chain_id, n)
        started = time.perf_counter()
        meter = CpuMeter({"anvil": anvil_pid, "client": os.getpid()})
        # A window of FLOOR_WINDOW transactions in flight: send them in one JSON-RPC
        # batch, wait for their receipts, send the next. Sending all N at once is
        # slower on anvil: with ~1,000+ transactions in its pool it mines small blocks
        # and the total time grows several-fold (2,000 at once: ~500/s; windows of
        # 200: ~2,000/s on this machine).
        for start in range(0, n, FLOOR_WINDOW):
            window = list(range(start, min(n, start + FLOOR_WINDOW)))
            await send_raw(http, url, raws[start : start + FLOOR_WINDOW], start)
            pending = [hashes[i] for i in window]
            waiting_since = time.perf_counter()
            while pending:
                body = [
                    rpc_body("eth_getTransactionReceipt", [h], i) for i, h in enumerate(pending)
                ]
                async with http.post(url, json=body) as resp:
                    answers = {a["id"]: a.get("result") for a in await resp.json()}
                pending = [h for i, h in enumerate(pending) if not answers.get(i)]
                if pending and time.perf_counter() - waiting_since > FLOOR_STUCK_S:
                    # anvil now and then keeps an accepted transaction of a burst in its
                    # pool unmined; without a limit this run would wait forever.
                    raise FloorStuck(f"{len(pending)} transactions unmined after {FLOOR_STUCK_S} s")
                if pending:
                    await asyncio.sleep(0.005)
        return time.perf_counter() - started, meter.report()


def keep(root: Path, into: Path) -> None:
    """For a post-mortem: a copy of the daemon's database and log, and the co-signers'
    logs (BENCH_KEEP_DIR)."""
    into.mkdir(parents=True, exist_ok=True)
    for name in ("watcher.db", "watcher.db-wal", *(p.name for p in root.glob("*.log"))):
        if (root / name).exists():
            shutil.copy(root / name, into / name)
    for path in root.glob("cosigners/*.log"):
        shutil.copy(path, into / path.name)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="N API-only replicas plus one chain-role replica (PostgreSQL only)",
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--database-url",
        help="postgresql+asyncpg:// URL of a server where a database may be created "
        "(default: $BENCH_DATABASE_URL, $WATCHER_TEST_DATABASE_URL, else a throwaway cluster)",
    )
    args = parser.parse_args()
    if args.replicas is not None:
        if args.replicas < 1:
            parser.error("--replicas must be at least 1")
        if args.database != "postgresql":
            parser.error("--replicas needs --database postgresql (SQLite is single-node)")
    return args


async def start_daemon(
    cfg: Path, env: dict[str, str], root: Path, name: str, roles: str
) -> tuple[Any, int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        "run",
        "--config",
        str(cfg),
        "--port",
        str(port),
        "--roles",
        roles,
        "--replica-id",
        name,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=open(root / f"{name}.log", "wb"),  # noqa: ASYNC230, SIM115
    )
    return proc, port


async def main() -> None:
    args = arguments()
    async with bench_workdir("bench-withdrawals-", args.database, args.database_url) as (
        root,
        url,
    ):
        db = Db(args.database, root, url)
        try:
            await run(args, root, db)
        finally:
            await db.close()


async def run(args: argparse.Namespace, root: Path, db: Db) -> None:
    # The stack (the co-signers) closes before anvil stops.
    async with start_anvil(**ANVIL) as node, contextlib.AsyncExitStack() as stack:
        dep = await deploy_devnet(node.url, fund_accounts=1)
        usdt = dep.tokens["USDT"].address
        # Twice what the daemon may pay: the warm-ups, saturation and the open loop (a
        # vault funded for N alone ran dry in a short run and left payouts queued).
        paid = 2 * WARMUP + N + OPEN_N
        await fund_vault(node.url, dep.vault, usdt, 2 * paid * AMOUNT_WHOLE * 10**18)
        cosigner_urls = await stack.enter_async_context(
            start_cosigners(dep, root / "cosigners", fresh=True)
        )
        cosigner_pids = cosigner_processes(root / "cosigners")
        if len(cosigner_pids) != len(cosigner_urls):
            print(
                f"co-signer processes found: {len(cosigner_pids)} of {len(cosigner_urls)}; "
                "their CPU is not measured (cosign_cpu n/a)",
                flush=True,
            )
            cosigner_pids = {}
        print(f"co-signers: {', '.join(cosigner_urls)} (processes)", flush=True)
        cfg = write_config(
            root,
            [("devnet", dep, 1)],
            default_toml_extra="",
            cosigners=cosigner_urls,
        )
        text = (cfg / "default.toml").read_text()
        # An automine devnet mines a transaction within milliseconds of it being
        # sendable, so one unmined after STUCK_AFTER_S is stuck (the production
        # default, 60 s, is for real networks); see ANVIL for why that happens.
        stuck = f"stuck_after_seconds = {STUCK_AFTER_S}"
        text = text.replace(
            '[withdrawals]\npoll_interval_seconds = "1"',
            '[withdrawals]\npoll_interval_seconds = "0.2"',
        ).replace("stuck_after_seconds = 60", stuck)
        assert stuck in text, "the config template changed"
        (cfg / "default.toml").write_text(text)
        env = {
            **os.environ,
            "WATCHER_DATABASE_URL": db.url,
            "WATCHER_SIGNER_KEY": "0x" + bytes(dev_account(1).key).hex(),
            "WATCHER_ADMIN_TOKEN": "bench-admin-token",
            "WATCHER_COSIGNER_TOKEN": DEVNET_COSIGNER_TOKEN,
            "WATCHER_LOG_LEVEL": LOG_LEVEL,
        }
        settings = load_settings(cfg, env=env)
        # One account per request: warm-up, saturation, open loop, intake alone.
        users = [Account.create() for _ in range(2 * WARMUP + N + 2 * OPEN_N)]
        print(f"setup: crediting {N} accounts", flush=True)
        await setup_ledger(settings, [u.address for u in users], dep.chain_id)
        bodies = signed_requests(users, dep, usdt)
        daemons: dict[str, tuple[Any, int]] = {}
        if args.replicas is None:
            daemons["daemon"] = await start_daemon(cfg, env, root, "daemon", "all")
            apis = [f"http://127.0.0.1:{daemons['daemon'][1]}"]
        else:
            # The chain replica first: it migrates and takes every chain role.
            daemons["chain"] = await start_daemon(cfg, env, root, "chain", "chain")
            await wait_http(f"http://127.0.0.1:{daemons['chain'][1]}")
            for k in range(args.replicas):
                name = f"api{k + 1}"
                daemons[name] = await start_daemon(cfg, env, root, name, "api")
            apis = [f"http://127.0.0.1:{port}" for n, (_, port) in daemons.items() if n != "chain"]
        # The daemon that sends (and so asks the co-signers): its /metrics.
        sending = "daemon" if args.replicas is None else "chain"
        sender_metrics = f"http://127.0.0.1:{daemons[sending][1]}"
        try:
            for api in apis:
                await wait_http(api)
            await pipeline(apis, bodies[:WARMUP], db)
            print(f"warm-up: {WARMUP} withdrawals completed (not counted)", flush=True)
            pids = {n: p.pid for n, (p, _) in daemons.items()}
            pids |= {"anvil": node.process.pid, "client": os.getpid()} | cosigner_pids
            meter = CpuMeter(pids)
            round_before = CosignMetrics.parse(await scrape(sender_metrics))
            intake_s, latencies, e2e_s = await pipeline(
                apis, bodies[WARMUP : WARMUP + N], db, WARMUP
            )
            e2e_cpu = meter.report()
            round_saturation = CosignMetrics.parse(await scrape(sender_metrics)) - round_before
            used = [meter.seconds(n) for n in daemons]
            daemon_cpu_s = None if None in used else sum(u for u in used if u is not None)
            cosigned = [meter.seconds(n) for n in cosigner_pids]
            cosign_cpu_s = (
                None
                if not cosigned or None in cosigned
                else sum(u for u in cosigned if u is not None)
            )
            # After the e2e run: anvil slows down as its chain grows, and the e2e
            # run is the one that depends on the node.
            open_rate, open_latencies, open_cpu = await open_loop(
                apis, bodies[WARMUP + N : WARMUP + N + OPEN_N], db, WARMUP + N, CpuMeter(pids)
            )
            print(
                f"open loop: {OPEN_N} requests at {OPEN_RATE}/s offered, "
                f"{open_rate:.0f}/s achieved",
                flush=True,
            )
            cosign = CosignMetrics.parse(await scrape(sender_metrics))
            print(f"pipeline: done in {e2e_s:.2f} s; measuring the floor", flush=True)
        finally:
            for proc, _ in daemons.values():
                proc.terminate()
            for proc, _ in daemons.values():
                await proc.wait()
            if KEEP_DIR:
                keep(root, Path(KEEP_DIR))
        # The intake alone: the same load on one daemon with the API role only (the
        # withdrawals it accepts stay approved; nothing signs, co-signs or mines them),
        # so the intake's latency without the payout pipeline beside it on these cores.
        alone_proc, alone_port = await start_daemon(cfg, env, root, "alone", "api")
        try:
            alone_api = f"http://127.0.0.1:{alone_port}"
            await wait_http(alone_api)
            alone = bodies[WARMUP + N + OPEN_N :]
            async with aiohttp.ClientSession() as http:  # its own warm-up, not counted
                for body in alone[:WARMUP]:
                    await submit(http, alone_api, json.dumps(body))
            await asyncio.sleep(1.0)
            alone_pids = {"daemon": alone_proc.pid, "client": os.getpid()}
            _, alone_latencies, alone_cpu = await open_loop(
                [alone_api], alone[WARMUP:], db, 0, CpuMeter(alone_pids), wait=False
            )
        finally:
            alone_proc.terminate()
            await alone_proc.wait()
    # The floor on its own fresh chain with the same setup (anvil slows down as it
    # accumulates thousands of blocks, and neither side should pay for the other's),
    # best of FLOOR_RUNS: it varies by 2x from run to run on this machine, and the
    # floor is what the raw path can do, so the fastest run is the honest one.
    floors: list[tuple[float, str]] = []
    for _ in range(FLOOR_RUNS):
        async with start_anvil(**ANVIL) as node:
            dep = await deploy_devnet(node.url, fund_accounts=1)
            usdt = dep.tokens["USDT"].address
            await fund_vault(node.url, dep.vault, usdt, 2 * N * AMOUNT_WHOLE * 10**18)
            try:
                floors.append(
                    await floor(node.url, dep.vault, usdt, dep.chain_id, N, node.process.pid)
                )
            except FloorStuck as exc:
                print(f"floor run discarded: {exc}", flush=True)
    if not floors:
        raise SystemExit(f"no floor run completed ({FLOOR_RUNS} tried)")
    floor_s, floor_cpu = min(floors)
    print(f"floor runs: {', '.join(f'{f:.2f} s' for f, _ in floors)}", flush=True)

    intake_rate = N / intake_s
    e2e_rate = N / e2e_s
    floor_rate = N / floor_s
    p50 = statistics.median(latencies) * 1000
    p99 = pct(latencies, 99) * 1000
    open_p50 = statistics.median(open_latencies) * 1000
    open_p99 = pct(open_latencies, 99) * 1000
    alone_p50 = statistics.median(alone_latencies) * 1000
    alone_p99 = pct(alone_latencies, 99) * 1000
    where = "SQLite" if args.database == "sqlite" else "PostgreSQL"
    if args.replicas is not None:
        where += f", {args.replicas} API replica(s) + 1 chain replica"
    print(f"requests: {N} signed withdrawals, {CONCURRENCY} connections, {where}, anvil automine")
    print(
        f"intake at {OPEN_RATE}/s offered (open loop, {OPEN_N} requests): p50 {open_p50:.1f} ms, "
        f"p99 {open_p99:.1f} ms, max {max(open_latencies) * 1000:.1f} ms"
    )
    print(
        f"intake alone at {OPEN_RATE}/s (API role only, nothing sent): p50 {alone_p50:.1f} ms, "
        f"p99 {alone_p99:.1f} ms, max {max(alone_latencies) * 1000:.1f} ms"
    )
    print(
        f"intake at saturation ({CONCURRENCY} connections): {intake_rate:.0f} req/s, "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )
    print(f"pipeline: {e2e_s:.2f} s until all completed (depth 1) -> {e2e_rate:.0f}/s")
    print(f"cpu, saturation until all completed: {e2e_cpu}")
    print(f"cpu, open loop while the requests arrived: {open_cpu}")
    print(f"cpu, intake alone while the requests arrived: {alone_cpu}")
    print(f"cpu, floor (its best run): {floor_cpu}")
    print(f"floor:    {floor_s:.2f} s for {N} pre-signed vault.withdraw txs -> {floor_rate:.0f}/s")
    print(f"ratio:    {floor_rate / e2e_rate:.2f}x (floor / e2e)")
    print(
        f"co-signing, whole run ({WARMUP + N + OPEN_N} withdrawals): {cosign.count} rounds, "
        f"mean {cosign.mean_ms():.1f} ms per round (batch); answers {cosign.answers_text()}"
    )
    print(
        f"co-signing, saturation phase ({N} withdrawals): {round_saturation.count} rounds, "
        f"mean {round_saturation.mean_ms():.1f} ms per round, "
        f"{N / max(1, round_saturation.count):.0f} withdrawals per round"
    )
    cosign_cpu = "n/a"
    if cosign_cpu_s is not None:
        cosign_cpu = f"{cosign_cpu_s / N * 1000:.2f}ms/w"
        print(
            f"co-signers: {cosign_cpu_s / N * 1000:.2f} ms CPU per withdrawal at saturation "
            f"(the {len(cosigner_pids)} processes together; each signs every payout)"
        )
    if daemon_cpu_s:
        # One daemon: its CPU per withdrawal is serial work, so even with the chain and
        # the client perfectly overlapped the e2e rate is at most its inverse, and the
        # ratio at least the floor times it. Replicas: the sum over all of them (the
        # intake's share spreads over the API replicas' cores, the chain's does not).
        per = daemon_cpu_s / N
        who = "daemon" if args.replicas is None else "replicas"
        print(
            f"{who}: {per * 1000:.2f} ms CPU per withdrawal (intake, signing, tracking) "
            f"-> e2e at most {1 / per:.0f}/s on one core, ratio at least {floor_rate * per:.2f}x"
        )
    last = (
        f"withdrawals: intake {intake_rate:.0f}/s p99 {open_p99:.0f}ms e2e {e2e_rate:.0f}/s "
        f"floor {floor_rate:.0f}/s ratio {floor_rate / e2e_rate:.2f} "
        f"cosign_cpu {cosign_cpu} cosign_round {cosign.mean_ms():.0f}ms"
    )
    last += f" alone_p99 {alone_p99:.0f}ms"
    if args.replicas is not None:
        last += f" replicas: {args.replicas}"
    print(f"{last} db {args.database}")


if __name__ == "__main__":
    asyncio.run(main())
