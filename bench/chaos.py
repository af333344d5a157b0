"""Chaos run: random kill -9s of a real daemon while deposits and withdrawals flow,
with JSON-RPC faults between the daemon and the node; then every invariant checked
from outside.

1. Setup: anvil (automine plus a 1 s interval block, as the withdrawal bench) with the
   vault and tokens deployed; a fault proxy in front of it (the only RPC URL the
   daemon knows) that fails a fraction ``--fault-rate`` of its HTTP requests: a
   JSON-RPC error, an HTTP 503, a connection closed before forwarding, or one closed
   after forwarding (the node did it, the daemon never hears of it). A SQLite file, or
   a fresh PostgreSQL database created on the server of ``--database-url`` (else
   ``$WATCHER_TEST_DATABASE_URL``) and dropped after. The devnet's three co-signers
   (``watcher cosign run`` processes, ``start_cosigners``), started once for the whole
   run outside the daemon: they live through every kill, and the daemon asks them (2
   of 3 signatures) for every payout, again after a restart for what it had not sent.
2. Workload, concurrently: ``--deposits`` deposits (native ETH, USDT, USDC, from dev
   accounts 2-9, straight to anvil) and ``--withdrawals`` signed EIP-712 withdrawals
   POSTed to the daemon's API (USDT and USDC, each account's first deposits are large
   enough to pay them). A request that finds the daemon down, or that is answered
   ``INSUFFICIENT_WITHDRAWABLE`` before its deposit is credited, is sent again later,
   the same signed body: the intake is idempotent on (account, nonce).
3. Meanwhile ``--kills`` times: ``watcher run`` is started, and SIGKILLed a random
   moment later (sometimes while it starts, mostly while it works), then started
   again. After the last kill it runs until everything settled: every deposit event
   credited, every accepted withdrawal in a final state.
4. Checks, from the chain and the database: each on-chain ``Deposit`` event credited
   exactly once (one credited row, one journal transaction); each accepted withdrawal
   paid exactly once (``Withdrawn`` events by id: doubled = paid more than once, lost =
   never paid), the database's completed withdrawals are the paid ones; the ledger
   balanced (balances equal the journal sums, every asset sums to zero) and each
   account's balance equals its deposits minus its payouts; no 5xx answer.

Last line: ``chaos: deposits <credited>/<sent> exactly-once, payouts <paid>/<accepted>
doubled <n> lost <n>, kills <k>, 5xx <n>, db <name>``; exit status 1 on any violation
(listed above the last line), 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eth_utils.crypto import keccak  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from watcher.chain.artifacts import DEPOSIT_TOPIC, WITHDRAWN_TOPIC  # noqa: E402
from watcher.chain.devnet import (  # noqa: E402
    DEVNET_COSIGNER_TOKEN,
    Deployment,
    deploy_devnet,
    dev_account,
    free_port,
    network_toml,
    prepare_config_dir,
    start_anvil,
    start_cosigners,
)
from watcher.cli.devnet import withdrawal_body  # noqa: E402
from watcher.settings import DEFAULT_CONFIG_DIR  # noqa: E402

ACCOUNTS = tuple(range(2, 10))  # dev accounts that deposit and withdraw (1 is the hot wallet)
CONFIRMATIONS = 2
ADMIN_TOKEN = "chaos-admin-token"
FINAL_STATES = frozenset({"completed", "failed", "rejected", "cancelled"})
ZERO = "0x" + "00" * 20
MAX_UINT = 2**256 - 1
SEL_APPROVE = keccak(text="approve(address,uint256)")[:4].hex()
SEL_DEPOSIT = keccak(text="deposit(address,uint256)")[:4].hex()
SEL_DEPOSIT_NATIVE = keccak(text="depositNative()")[:4].hex()


def word(value: int | str) -> str:
    if isinstance(value, str):
        return value[2:].lower().rjust(64, "0")
    return format(value, "064x")


# ---------------------------------------------------------------------------- fault proxy


class ChaosProxy:
    """Forwards JSON-RPC to the node; a fraction ``rate`` of HTTP requests meets a fault."""

    KINDS = ("rpc_error", "http_503", "drop_before", "drop_after")

    def __init__(self, upstream: str, rate: float, rng: random.Random) -> None:
        self.upstream = upstream
        self.rate = rate
        self.rng = rng
        self.port = 0
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests += 1
        kind = self.rng.choice(self.KINDS) if self.rng.random() < self.rate else None
        if kind is not None:
            self.faults[kind] += 1
        if kind == "drop_before":
            return self._drop(request)
        if kind == "http_503":
            return web.Response(status=503, text="injected 503")
        if kind == "rpc_error":
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            items = payload if isinstance(payload, list) else [payload]
            errors = [
                {
                    "jsonrpc": "2.0",
                    "id": item.get("id") if isinstance(item, dict) else None,
                    "error": {"code": -32603, "message": "injected internal error"},
                }
                for item in items
            ]
            return web.json_response(errors if isinstance(payload, list) else errors[0])
        assert self._session is not None
        async with self._session.post(
            self.upstream, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            answer = await resp.read()
            status = resp.status
        if kind == "drop_after":
            return self._drop(request)
        return web.Response(status=status, body=answer, content_type="application/json")

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)


# ---------------------------------------------------------------------------- database


class Db:
    """A SQLite file, or a fresh PostgreSQL database (created here, dropped after)."""

    def __init__(self, kind: str, root: Path, server_url: str) -> None:
        self.kind = kind
        self.url = f"sqlite+aiosqlite:///{root / 'watcher.db'}"
        self.server_url = server_url
        self.admin_url = ""
        self.engine: AsyncEngine | None = None

    async def create(self) -> None:
        if self.kind == "postgresql":
            if not self.server_url.startswith("postgresql"):
                raise SystemExit(
                    "--database postgresql needs --database-url (or $WATCHER_TEST_DATABASE_URL): "
                    "a postgresql+asyncpg:// URL of a server where a database may be created"
                )
            base = make_url(self.server_url)
            name = f"watcher_chaos_{uuid.uuid4().hex[:10]}"
            self.admin_url = base.set(database="postgres").render_as_string(False)
            admin = create_async_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            async with admin.connect() as conn:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
            await admin.dispose()
            self.url = base.set(database=name).render_as_string(False)
        self.engine = create_async_engine(self.url)

    async def rows(self, sql: str) -> list[Any]:
        assert self.engine is not None
        try:
            async with self.engine.connect() as conn:
                return list((await conn.execute(text(sql))).all())
        except Exception as exc:  # not migrated yet, or locked for a moment
            if "no such table" in str(exc) or "does not exist" in str(exc):
                return []
            raise

    async def drop(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()
        if self.kind != "postgresql" or not self.admin_url:
            return
        admin = create_async_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            name = make_url(self.url).database
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


# ---------------------------------------------------------------------------- chain


class Node:
    """Raw JSON-RPC to anvil (dev accounts are unlocked: eth_sendTransaction)."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def rpc(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        async with self.http.post(self.url, json=body) as resp:
            doc = await resp.json(content_type=None)
        if "error" in doc:
            raise RuntimeError(f"{method}: {doc['error']}")
        return doc["result"]

    async def transact(self, tx: dict[str, Any]) -> str:
        tx_hash: str = await self.rpc("eth_sendTransaction", tx)
        for _ in range(600):
            receipt = await self.rpc("eth_getTransactionReceipt", tx_hash)
            if receipt is not None:
                if receipt["status"] != "0x1":
                    raise RuntimeError(f"transaction {tx_hash} reverted")
                return tx_hash
            await asyncio.sleep(0.02)
        raise RuntimeError(f"transaction {tx_hash} not mined within 12 s")

    async def logs(self, address: str, topic: str, from_block: int) -> list[dict[str, Any]]:
        flt = {"address": address, "topics": [topic], "fromBlock": hex(from_block)}
        found: list[dict[str, Any]] = await self.rpc("eth_getLogs", {**flt, "toBlock": "latest"})
        return found


# ---------------------------------------------------------------------------- workload


@dataclass
class Sent:
    """What the client did and saw."""

    deposits: int = 0
    accepted: dict[int, tuple[str, int]] = field(default_factory=dict)  # id -> (account, nonce)
    ids_by_request: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    status_5xx: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Plan:
    deposits: list[tuple[int, str, int]]  # (account index, token address or ZERO, base units)
    withdrawals: list[dict[str, Any]]  # signed request bodies


def make_plan(args: argparse.Namespace, dep: Deployment, rng: random.Random) -> Plan:
    usdt = dep.tokens["USDT"].address
    usdc = dep.tokens["USDC"].address
    deposits: list[tuple[int, str, int]] = []
    for i in range(args.deposits):
        who = ACCOUNTS[i % len(ACCOUNTS)]
        if i < len(ACCOUNTS):  # each account's first deposits fund its withdrawals
            deposits.append((who, usdt, 10_000 * 10**18))
        elif i < 2 * len(ACCOUNTS):
            deposits.append((who, usdc, 10_000 * 10**6))
        else:
            kind = rng.choice(("eth", "usdt", "usdc"))
            if kind == "eth":
                deposits.append((who, ZERO, (1_000 + i) * 10**10))
            elif kind == "usdt":
                deposits.append((who, usdt, rng.randint(1, 100) * 10**18 + i * 10**10))
            else:
                deposits.append((who, usdc, rng.randint(1, 100) * 10**6 + i))
    # Each withdrawal draws on one of its account's 10,000-token deposits.
    funded: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for who, token, _units in deposits[: 2 * len(ACCOUNTS)]:
        funded[who].append((token, 18 if token == usdt else 6))
    withdrawers = sorted(funded)
    if args.withdrawals and not withdrawers:
        raise SystemExit("withdrawals need at least one deposit to draw on")
    withdrawals = []
    deadline = int(time.time()) + 6 * 3600
    for n in range(args.withdrawals):
        who = withdrawers[n % len(withdrawers)]
        user = dev_account(who)
        token, decimals = rng.choice(funded[who])
        whole = rng.randint(1, 5)
        withdrawals.append(
            withdrawal_body(
                user.address,
                bytes(user.key),
                chain_id=dep.chain_id,
                vault=dep.vault,
                token=token,
                units=whole * 10**decimals,
                amount=str(whole),
                destination=user.address,
                nonce=1_000_000 + n,
                deadline=deadline,
            )
        )
    return Plan(deposits, withdrawals)


@dataclass
class Pacer:
    """Spreads the workload over the daemon's runs: of ``total`` items, item ``i`` is
    released once ``i * (kills + 1) // total`` kills are done, so every run (the kills'
    and the last) gets its share of new deposits and requests while it works."""

    kills: int
    done: list[str]
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def killed(self, moment: str) -> None:
        async with self.changed:
            self.done.append(moment)
            self.changed.notify_all()

    async def turn(self, i: int, total: int) -> None:
        need = min(self.kills, i * (self.kills + 1) // max(1, total))
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.done) >= need)


async def send_deposits(
    node: Node, dep: Deployment, plan: Plan, sent: Sent, pacer: Pacer, rng: random.Random
) -> None:
    for i, (who, token, units) in enumerate(plan.deposits):
        await pacer.turn(i, len(plan.deposits))
        sender = dev_account(who).address
        if token == ZERO:
            tx = {
                "from": sender,
                "to": dep.vault,
                "value": hex(units),
                "data": "0x" + SEL_DEPOSIT_NATIVE,
            }
        else:
            data = "0x" + SEL_DEPOSIT + word(token) + word(units)
            tx = {"from": sender, "to": dep.vault, "data": data, "gas": hex(200_000)}
        await node.transact(tx)
        sent.deposits += 1
        await asyncio.sleep(rng.uniform(0, 0.1))


async def send_withdrawals(
    api: str, plan: Plan, sent: Sent, pacer: Pacer, rng: random.Random, workers: int = 16
) -> None:
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
    for i, body in enumerate(plan.withdrawals):
        queue.put_nowait((i, body))
    timeout = aiohttp.ClientTimeout(total=15)

    async def worker() -> None:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not queue.empty():
                i, body = queue.get_nowait()
                await pacer.turn(i, len(plan.withdrawals))
                await submit(http, api, body, sent)
                await asyncio.sleep(rng.uniform(0, 0.1))

    await asyncio.gather(*(worker() for _ in range(workers)))


async def submit(http: aiohttp.ClientSession, api: str, body: dict[str, Any], sent: Sent) -> None:
    """POST until the request is accepted (or refused for a reason that is not transient)."""
    key = (body["account"].lower(), int(body["nonce"]))
    started = time.monotonic()
    while True:
        if time.monotonic() - started > 600:
            sent.unexpected.append(f"withdrawal {key} not accepted within 600 s")
            return
        try:
            async with http.post(f"{api}/v1/withdrawals", json=body) as resp:
                status = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError):
            sent.retries["connection"] += 1  # the daemon is down (or was killed mid-answer)
            await asyncio.sleep(0.2)
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {}
        if status >= 500:
            sent.status_5xx.append(f"POST /v1/withdrawals {status} {raw[:200]!r}")
            await asyncio.sleep(0.5)
            continue
        if status in (200, 202) and isinstance(doc, dict) and "id" in doc:
            wid = int(doc["id"])
            sent.accepted[wid] = key
            sent.ids_by_request.setdefault(key, set()).add(wid)
            return
        code = doc.get("code") if isinstance(doc, dict) else None
        if status == 422 and code == "INSUFFICIENT_WITHDRAWABLE":
            sent.retries["insufficient"] += 1  # its deposit is not credited yet
            await asyncio.sleep(0.5)
            continue
        sent.unexpected.append(f"POST /v1/withdrawals {key}: {status} {raw[:200]!r}")
        return


# ---------------------------------------------------------------------------- daemon


class Daemon:
    def __init__(self, cfg: Path, env: dict[str, str], port: int, log: Path) -> None:
        self.cfg, self.env, self.port, self.log = cfg, env, port, log
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts} at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "watcher",
                "run",
                "--config",
                str(self.cfg),
                "--port",
                str(self.port),
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    async def ready(self, http: aiohttp.ClientSession, within: float) -> bool:
        """True once /healthz answers (any status); False if it exited or time ran out."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.returncode is not None:
                return False
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with http.get(f"{self.api}/healthz") as resp:
                    await resp.read()
                    return True
            await asyncio.sleep(0.05)
        return False

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                await self.kill()


async def killer(
    daemon: Daemon, kills: int, up_max: float, rng: random.Random, pacer: Pacer, sent: Sent
) -> None:
    """``kills`` times: start, let it run a random while, SIGKILL. Returns with it running."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        for _ in range(kills):
            await daemon.start()
            if rng.random() < 0.2:  # while it starts: imports, migrations, recovery
                await asyncio.sleep(rng.uniform(0.0, 2.0))
                moment = "starting"
            else:
                if not await daemon.ready(http, 60):
                    assert daemon.proc is not None
                    if daemon.proc.returncode is not None:
                        raise RuntimeError(
                            f"the daemon exited with {daemon.proc.returncode} on its own; "
                            f"see {daemon.log}"
                        )
                await asyncio.sleep(rng.uniform(0.0, up_max))
                moment = "running"
            if daemon.proc is not None and daemon.proc.returncode is not None:
                raise RuntimeError(
                    f"the daemon exited with {daemon.proc.returncode} on its own; see {daemon.log}"
                )
            await daemon.kill()
            await pacer.killed(moment)
            print(
                f"kill {len(pacer.done)}/{kills} ({moment}): deposits sent {sent.deposits}, "
                f"withdrawals accepted {len(sent.accepted)}",
                flush=True,
            )
        await daemon.start()
        if not await daemon.ready(http, 60):
            raise RuntimeError(f"the daemon did not come up after the last kill; see {daemon.log}")


# ---------------------------------------------------------------------------- checks


@dataclass
class Outcome:
    credited: int = 0
    sent: int = 0
    exactly_once: bool = True
    paid: int = 0
    accepted: int = 0
    doubled: int = 0
    lost: int = 0
    kills: int = 0
    status_5xx: int = 0
    violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


async def settled(db: Db, node: Node, dep: Deployment, sent: Sent) -> bool:
    events = await node.logs(dep.vault, DEPOSIT_TOPIC, dep.deploy_block)
    credited = await db.rows("SELECT count(*) FROM deposits WHERE state = 'credited'")
    if not credited or int(credited[0][0]) < len(events):
        return False
    states = await db.rows("SELECT id, state FROM withdrawals")
    by_id = {int(i): s for i, s in states}
    return all(by_id.get(wid) in FINAL_STATES for wid in sent.accepted)


async def check(db: Db, node: Node, dep: Deployment, sent: Sent) -> Outcome:
    out = Outcome(sent=sent.deposits, accepted=len(sent.accepted))
    bad = out.violations
    # Deposits: on-chain events against the database's rows and journal.
    events = await node.logs(dep.vault, DEPOSIT_TOPIC, dep.deploy_block)
    on_chain = {(e["transactionHash"].lower(), int(e["logIndex"], 16)): e for e in events}
    if len(on_chain) != sent.deposits:
        bad.append(f"{len(on_chain)} Deposit events on chain for {sent.deposits} deposits sent")
    rows = await db.rows(
        "SELECT tx_hash, log_index, state, credit_tx_id, account, asset, ledger_amount "
        "FROM deposits"
    )
    seen: Counter[tuple[str, int]] = Counter()
    credit_txs: Counter[int] = Counter()
    for tx_hash, log_index, state, credit_tx, _acct, _asset, _amount in rows:
        key = (str(tx_hash).lower(), int(log_index))
        seen[key] += 1
        if state != "credited":
            bad.append(f"deposit {key} is {state}")
        elif credit_tx is None:
            bad.append(f"deposit {key} credited without a journal transaction")
        else:
            credit_txs[int(credit_tx)] += 1
    journal = await db.rows("SELECT ref FROM journal_transactions WHERE kind = 'deposit'")
    refs: Counter[tuple[str, int]] = Counter()
    for (ref,) in journal:
        _, _chain, tx_hash, log_index = str(ref).split("#")[0].split(":")
        refs[(tx_hash.lower(), int(log_index))] += 1
    once = 0
    for key in on_chain:
        if seen[key] == 1 and refs[key] == 1:
            once += 1
        else:
            bad.append(f"deposit {key}: {seen[key]} rows, {refs[key]} credits")
    for key in set(seen) - set(on_chain):
        bad.append(f"deposit {key} in the database but not on chain")
    for key in set(refs) - set(on_chain):
        bad.append(f"credit of {key} in the journal but no such deposit on chain")
    out.credited = once
    out.exactly_once = once == len(on_chain) == sent.deposits and not any(
        n > 1 for n in credit_txs.values()
    )

    # Payouts: Withdrawn events by id against the accepted ids and the database.
    paid_events = await node.logs(dep.vault, WITHDRAWN_TOPIC, dep.deploy_block)
    paid: Counter[int] = Counter(int(e["topics"][1], 16) for e in paid_events)
    out.doubled = sum(1 for n in paid.values() if n > 1)
    for key, ids in sent.ids_by_request.items():
        if len(ids) > 1:
            bad.append(f"request {key} accepted as several withdrawals {sorted(ids)}")
            out.doubled += sum(1 for wid in ids if paid[wid]) > 1
    out.lost = sum(1 for wid in sent.accepted if paid[wid] == 0)
    out.paid = sum(1 for wid in sent.accepted if paid[wid] == 1)
    for wid in set(paid) - set(sent.accepted):
        bad.append(f"withdrawal id {wid} paid on chain but never accepted by the API")
    wrows = await db.rows("SELECT id, account, state, ledger_amount, asset FROM withdrawals")
    db_ids = {int(r[0]) for r in wrows}
    for wid in set(sent.accepted) - db_ids:
        bad.append(f"accepted withdrawal {wid} is not in the database")
    for wid in db_ids - set(sent.accepted):
        bad.append(f"withdrawal {wid} in the database was never accepted by the API")
    debits: dict[tuple[str, str], int] = defaultdict(int)
    for wid, account, state, ledger_amount, asset in wrows:
        wid = int(wid)
        if state == "completed" and paid[wid] != 1:
            bad.append(f"withdrawal {wid} completed, paid {paid[wid]} times on chain")
        if state != "completed" and paid[wid]:
            bad.append(f"withdrawal {wid} is {state} but was paid on chain")
        if state not in FINAL_STATES:
            bad.append(f"withdrawal {wid} still {state}")
        if paid[wid]:
            debits[(str(account).lower(), str(asset))] += int(ledger_amount)
    if out.doubled:
        bad.append(f"{out.doubled} withdrawals paid more than once")
    if out.lost:
        bad.append(f"{out.lost} accepted withdrawals never paid")

    # Ledger: balances are the journal's sums, each asset sums to zero, and each
    # account holds its deposits minus its payouts.
    # Summed here, as integers: SQLite's SUM over the TEXT amounts would be a float.
    sums: dict[tuple[int, str, str], int] = defaultdict(int)
    for a, s, w, v in await db.rows(
        "SELECT account_id, asset, wallet, amount FROM journal_entries"
    ):
        sums[(int(a), str(s), str(w))] += int(v)
    balances = {
        (int(a), str(s), str(w)): int(v)
        for a, s, w, v in await db.rows("SELECT account_id, asset, wallet, amount FROM balances")
    }
    if {k: v for k, v in sums.items() if v} != {k: v for k, v in balances.items() if v}:
        bad.append("balances differ from the journal's sums")
    per_asset: dict[str, int] = defaultdict(int)
    for (_a, asset, _w), v in sums.items():
        per_asset[asset] += v
    for asset, total in per_asset.items():
        if total:
            bad.append(f"journal of {asset} sums to {total}, not 0")
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for _tx, _log, _state, _ct, account, asset, amount in rows:
        expected[(str(account).lower(), str(asset))] += int(amount or 0)
    for pair, v in debits.items():
        expected[pair] -= v
    held = await db.rows(
        "SELECT a.key, b.asset, b.wallet, b.amount FROM balances b "
        "JOIN accounts a ON a.id = b.account_id WHERE a.key NOT LIKE 'system:%'"
    )
    actual: dict[tuple[str, str], int] = defaultdict(int)
    for owner, asset, _wallet, amount in held:
        actual[(str(owner).lower(), str(asset))] += int(amount)
    for pair in set(expected) | set(actual):
        if expected[pair] != actual[pair]:
            bad.append(
                f"{pair}: ledger holds {actual[pair]}, deposits - payouts = {expected[pair]}"
            )
    # The daemon's own view: no critical alarm (a shortfall, a finality violation, a
    # broken ledger) was raised while nothing was wrong.
    for kind, severity, message in await db.rows("SELECT kind, severity, message FROM alarms"):
        if severity == "critical":
            bad.append(f"critical alarm {kind}: {message}")
        else:
            out.warnings.append(f"{kind}: {message}")
    return out


async def tamper(db: Db) -> None:
    """--tamper: erase one deposit's credit (its journal entries, its ref), as a lost
    credit would look; the checks must then fail (the test of the checker itself)."""
    assert db.engine is not None
    async with db.engine.begin() as conn:
        tx_id = (await conn.execute(text("SELECT min(credit_tx_id) FROM deposits"))).scalar_one()
        await conn.execute(
            text("DELETE FROM journal_entries WHERE transaction_id = :t"), {"t": tx_id}
        )
        await conn.execute(
            text("UPDATE journal_transactions SET ref = 'tampered:x:0x0:0' WHERE id = :t"),
            {"t": tx_id},
        )


# ---------------------------------------------------------------------------- main


def write_config(root: Path, dep: Deployment, rpc_url: str, cosigners: list[str]) -> Path:
    cfg = root / "config"
    prepare_config_dir(cfg, DEFAULT_CONFIG_DIR)
    for path in (cfg / "networks").glob("*.toml"):
        path.unlink()
    proxied = Deployment(**{**dep.__dict__, "rpc_url": rpc_url})
    (cfg / "networks" / "devnet.toml").write_text(
        network_toml(proxied, name="devnet", confirmations=CONFIRMATIONS, cosigners=cosigners)
    )
    default = cfg / "default.toml"
    src = default.read_text()
    changed = (
        src.replace(
            '[listener]\npoll_interval_seconds = "1"', '[listener]\npoll_interval_seconds = "0.2"'
        )
        .replace(
            '[withdrawals]\npoll_interval_seconds = "1"',
            '[withdrawals]\npoll_interval_seconds = "0.2"',
        )
        .replace("stuck_after_seconds = 60", "stuck_after_seconds = 3")
        .replace('resend_after_seconds = "5"', 'resend_after_seconds = "2"')
        .replace('rpc_timeout_seconds = "10"', 'rpc_timeout_seconds = "3"')
    )
    if (
        changed.count('poll_interval_seconds = "0.2"') != 2
        or "stuck_after_seconds = 3" not in changed
    ):
        raise SystemExit("config/default.toml changed: bench/chaos.py's edits no longer apply")
    default.write_text(changed)
    return cfg


async def approve_all(node: Node, dep: Deployment) -> None:
    for who in ACCOUNTS:
        for symbol in ("USDT", "USDC"):
            data = "0x" + SEL_APPROVE + word(dep.vault) + word(MAX_UINT)
            await node.transact(
                {"from": dev_account(who).address, "to": dep.tokens[symbol].address, "data": data}
            )


async def run(args: argparse.Namespace, root: Path, db: Db) -> Outcome:
    rng = random.Random(args.seed)
    sent = Sent()
    kills_done: list[str] = []
    async with (
        start_anvil(block_time=1, extra_args=["--mixed-mining"]) as anvil,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        contextlib.AsyncExitStack() as stack,
    ):
        dep = await deploy_devnet(anvil.url, fund_accounts=10)
        # The co-signers outlive every daemon kill (they stop before anvil does).
        cosigners = await stack.enter_async_context(
            start_cosigners(dep, root / "cosigners", fresh=True)
        )
        node = Node(anvil.url, http)
        await approve_all(node, dep)
        proxy = ChaosProxy(anvil.url, args.fault_rate, random.Random(args.seed + 1))
        await proxy.start()
        daemon: Daemon | None = None
        try:
            cfg = write_config(root, dep, proxy.url, cosigners)
            env = {
                **os.environ,
                "WATCHER_DATABASE_URL": db.url,
                "WATCHER_SIGNER_KEY": "0x" + bytes(dev_account(1).key).hex(),
                "WATCHER_ADMIN_TOKEN": ADMIN_TOKEN,
                "WATCHER_COSIGNER_TOKEN": DEVNET_COSIGNER_TOKEN,
                "WATCHER_LOG_LEVEL": args.log_level,
            }
            env.pop("WATCHER_CONFIG_DIR", None)
            daemon = Daemon(cfg, env, free_port(), root / "daemon.log")
            plan = make_plan(args, dep, rng)
            pacer = Pacer(args.kills, kills_done)
            started = time.monotonic()
            tasks = [
                asyncio.create_task(killer(daemon, args.kills, args.up, rng, pacer, sent)),
                asyncio.create_task(send_deposits(node, dep, plan, sent, pacer, rng)),
                asyncio.create_task(send_withdrawals(daemon.api, plan, sent, pacer, rng)),
            ]
            broken: str | None = None
            try:
                await asyncio.gather(*tasks)
            except RuntimeError as exc:  # the daemon died on its own or did not start
                broken = str(exc)
            finally:
                for task in tasks:
                    task.cancel()
            workload_s = time.monotonic() - started
            deadline = time.monotonic() + args.settle_timeout
            while broken is None and not await settled(db, node, dep, sent):
                if time.monotonic() > deadline:
                    print(f"not settled within {args.settle_timeout:.0f} s", flush=True)
                    break
                await asyncio.sleep(0.5)
            settle_s = time.monotonic() - started - workload_s
            if args.tamper:
                await tamper(db)
            outcome = await check(db, node, dep, sent)
        finally:
            if daemon is not None:
                await daemon.stop()
            await proxy.stop()
        starting = kills_done.count("starting")
        print(
            f"workload {workload_s:.1f} s, settled {settle_s:.1f} s later; "
            f"kills {len(kills_done)} ({starting} while starting); "
            f"RPC requests {proxy.requests}, faults {sum(proxy.faults.values())} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(proxy.faults.items())) or 'none'}); "
            f"client retries: {dict(sent.retries) or 'none'}",
            flush=True,
        )
        outcome.violations[:0] = [broken] if broken else []
        outcome.violations[:0] = sent.unexpected + sent.status_5xx
        outcome.kills = len(kills_done)
        outcome.status_5xx = len(sent.status_5xx)
        return outcome


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs of the daemon")
    parser.add_argument("--deposits", type=int, default=100, help="deposits sent on chain")
    parser.add_argument("--withdrawals", type=int, default=60, help="withdrawals requested")
    parser.add_argument(
        "--fault-rate", type=float, default=0.05, help="fraction of RPC requests that fail"
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("WATCHER_TEST_DATABASE_URL", ""),
        help="PostgreSQL server URL (a fresh database is created there and dropped after)",
    )
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--up", type=float, default=3.0, help="longest run before a kill (s)")
    parser.add_argument("--settle-timeout", type=float, default=180.0)
    parser.add_argument("--log-level", default="WARNING", help="the daemon's log level")
    parser.add_argument(
        "--tamper",
        action="store_true",
        help="erase one deposit's credit before the checks (they must fail: tests the checker)",
    )
    parser.add_argument("--keep", type=Path, help="copy the database and daemon log here")
    args = parser.parse_args()
    if args.kills < 0 or args.deposits < 0 or args.withdrawals < 0:
        parser.error("counts must be >= 0")
    if not 0 <= args.fault_rate < 1:
        parser.error("--fault-rate must be in [0, 1)")
    return args


def keep(root: Path, into: Path) -> None:
    """For a post-mortem: the SQLite database, the daemon's log and the config, and
    the co-signers' logs."""
    into.mkdir(parents=True, exist_ok=True)
    for path in [*root.glob("*"), *root.glob("cosigners/*.log")]:
        if path.is_file():
            shutil.copy(path, into / path.name)


async def main() -> int:
    args = arguments()
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        root = Path(tmp)
        db = Db(args.database, root, args.database_url)
        await db.create()
        try:
            outcome = await run(args, root, db)
        finally:
            await db.drop()
            if args.keep:
                keep(root, args.keep)
    for line in outcome.warnings[:20]:
        print(f"warning alarm: {line}")
    for line in outcome.violations[:50]:
        print(f"violation: {line}")
    if len(outcome.violations) > 50:
        print(f"... and {len(outcome.violations) - 50} more violations")
    once = "exactly-once" if outcome.exactly_once else "NOT-exactly-once"
    print(
        f"chaos: deposits {outcome.credited}/{outcome.sent} {once}, "
        f"payouts {outcome.paid}/{outcome.accepted} doubled {outcome.doubled} "
        f"lost {outcome.lost}, kills {outcome.kills}, 5xx {outcome.status_5xx}, "
        f"db {args.database}",
        flush=True,
    )
    return 1 if outcome.violations else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
