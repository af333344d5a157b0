"""Crash points on purpose (watcher/crashpoints.py): for every named point, the real
daemon is started with ``WATCHER_CRASH_AT`` naming it, a deposit and a withdrawal are
driven until the process exits there with code 86 (the point was reached), the daemon
is started again without it and left to settle. Then: every deposit credited exactly
once, the payout made exactly once on chain (one ``Withdrawn`` event, the destination
got the amount once), the ledger balanced, ``watcher reconcile`` clean.

One anvil for the module, a snapshot reverted after each scenario; a fresh, unmigrated
database per scenario (the first daemon migrates it, so the migration point is hit
too). A random kill -9 only rarely lands in these windows (issue 23); here each one
is hit every time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_account import Account
from sqlalchemy import func, select
from web3 import AsyncWeb3
from web3.providers.rpc import AsyncHTTPProvider

from tests.fixtures_chain import CosignersFor
from tests.fixtures_db import BACKENDS, drop_database_url, make_database_url
from tests.helpers import watcher_cli, write_config
from tests.integration.deposit_support import assert_ledger_consistent
from tests.integration.withdrawal_support import (
    balance_of,
    deposit_native,
    deposit_token,
    operator_key,
    usdt_body,
    withdrawn_events,
)
from watcher import crashpoints
from watcher.app import build
from watcher.chain.devnet import (
    AnvilNode,
    Deployment,
    deploy_devnet,
    dev_account,
    free_port,
    start_anvil,
)
from watcher.domain.journal import CROSS, HOLD
from watcher.services.reconciler import reconcile
from watcher.settings import load_settings
from watcher.store import ledger
from watcher.store.db import SessionFactory, create_engine, session_factory
from watcher.store.models import Deposit, JournalTransaction, TxAttempt, Withdrawal

USER = dev_account(2)
DEPOSIT_USDT = 1_000  # whole USDT (18 decimals on chain, 8 in the ledger)
DEPOSIT_ETH = 10**18
PAYOUT_USDT = 100

#: The scenario of each point: the WATCHER_CRASH_AT value that reaches it.
SCENARIOS: dict[str, str] = {name: name for name in crashpoints.POINTS}
#: A second migration exists, so the crash lands between two steps, not after the last.
SCENARIOS["migrate.between_steps"] = "migrate.between_steps:1"


def test_every_crash_point_has_a_scenario() -> None:
    """A point added to the registry without a scenario here fails."""
    assert set(SCENARIOS) == set(crashpoints.POINTS)
    for name, spec in SCENARIOS.items():
        assert list(crashpoints.parse(spec)) == [name]


def test_the_variable_is_parsed_strictly() -> None:
    assert crashpoints.parse("sender.persist.after_commit:3, tracker.settle.after_commit") == {
        "sender.persist.after_commit": 3,
        "tracker.settle.after_commit": 1,
    }
    for bad in ("no.such.point", "sender.persist.after_commit:0", "tracker.settle.after_commit:³"):
        with pytest.raises(crashpoints.CrashPointsRefused):
            crashpoints.parse(bad)


def test_armed_only_with_the_opt_in_on_a_devnet() -> None:
    spec = {crashpoints.ENV_POINTS: "intake.after_commit"}
    opted = {**spec, crashpoints.ENV_OPT_IN: crashpoints.OPT_IN_VALUE}
    try:
        assert crashpoints.arm([31337], {}) == []
        with pytest.raises(crashpoints.CrashPointsRefused, match="for tests only"):
            crashpoints.arm([31337], spec)
        with pytest.raises(crashpoints.CrashPointsRefused, match=r"\[1\] are not a devnet"):
            crashpoints.arm([31337, 1], opted)
        assert crashpoints.arm([31337], opted) == ["intake.after_commit"]
    finally:
        crashpoints.disarm()
    crashpoints.crash_point("intake.after_commit")  # disarmed: nothing happens


# ------------------------------------------------------------------------------ chain


@pytest.fixture(scope="module")
async def devnet() -> AsyncIterator[tuple[AnvilNode, Deployment]]:
    async with start_anvil(chain_id=31337) as node:
        yield node, await deploy_devnet(node.url)


@pytest.fixture
async def w3(devnet: tuple[AnvilNode, Deployment]) -> AsyncIterator[AsyncWeb3[Any]]:
    node, _ = devnet
    web3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(node.url))
    snap = (await web3.provider.make_request("evm_snapshot", []))["result"]  # type: ignore[arg-type]
    try:
        yield web3
    finally:
        await web3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
        await web3.provider.disconnect()


@pytest.fixture(params=BACKENDS)
async def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty, unmigrated database: the daemon migrates it on start."""
    url = await make_database_url(request.param, tmp_path)
    yield url
    await drop_database_url(url)


def config(tmp_path: Path, dep: Deployment, cosigners: Sequence[str] = ()) -> Path:
    cfg = write_config(tmp_path, [("devnet", dep, 2)], cosigners=cosigners)
    default = cfg / "default.toml"
    default.write_text(
        default.read_text()
        .replace(
            '[listener]\npoll_interval_seconds = "1"', '[listener]\npoll_interval_seconds = "0.05"'
        )
        .replace(
            '[withdrawals]\npoll_interval_seconds = "1"',
            '[withdrawals]\npoll_interval_seconds = "0.05"\nstuck_after_blocks = 3',
        )
    )
    return cfg


class Daemon:
    """`watcher run` as a real process, and what the test reads while it runs."""

    def __init__(self, cfg: Path, env: dict[str, str], log: Path) -> None:
        self.cfg, self.env, self.log = cfg, env, log
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, crash_at: str | None) -> asyncio.subprocess.Process:
        env = dict(self.env)
        if crash_at is not None:
            env[crashpoints.ENV_POINTS] = crash_at
            env[crashpoints.ENV_OPT_IN] = crashpoints.OPT_IN_VALUE
        self.proc = await watcher_cli(
            "run", "--config", str(self.cfg), "--port", str(self.port), env=env, log_file=self.log
        )
        return self.proc

    async def wait_up(self, http: aiohttp.ClientSession, *, within: float) -> None:
        """Until the API answers (the chain roles are started before it)."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.proc.returncode is None and loop.time() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{self.port}/healthz"):
                    return
            await asyncio.sleep(0.05)
        raise AssertionError(f"daemon not up: {self.log.read_text()[-3000:]}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def miner(w3: AsyncWeb3[Any], running: asyncio.Event) -> None:
    """A block every 50 ms while ``running``: confirmations come without a block time."""
    while True:
        await running.wait()
        await w3.provider.make_request("anvil_mine", ["0x1"])  # type: ignore[arg-type]
        await asyncio.sleep(0.05)


async def lose_first_broadcast(
    w3: AsyncWeb3[Any], sessions: SessionFactory, running: asyncio.Event
) -> None:
    """With mining stopped: wait for the payout's broadcast, drop it from the node's
    pool, mine on. The attempt is stuck; after ``stuck_after_blocks`` the tracker
    replaces it with a fee-bumped one under the same nonce (the replace points)."""
    for _ in range(600):
        async with sessions() as s:
            sent = await s.scalar(select(TxAttempt.tx_hash).where(TxAttempt.state == "broadcast"))
        if sent is not None:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the payout was never broadcast")
    dropped = await w3.provider.make_request("anvil_dropTransaction", [sent])  # type: ignore[arg-type]
    assert "error" not in dropped, dropped
    await w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    running.set()


async def counts(sessions: SessionFactory) -> tuple[int, str | None]:
    """(credited deposits, the withdrawal's state); (0, None) before the schema exists."""
    try:
        async with sessions() as s:
            credited = await s.scalar(
                select(func.count()).select_from(Deposit).where(Deposit.state == "credited")
            )
            state = await s.scalar(select(Withdrawal.state))
    except Exception:  # not migrated yet
        return 0, None
    return int(credited or 0), state


async def drive(
    daemon: Daemon,
    sessions: SessionFactory,
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    *,
    within: float,
    stuck: tuple[AsyncWeb3[Any], asyncio.Event] | None = None,
) -> None:
    """Until the process exits or the withdrawal is completed: once both deposits are
    credited, ask for the withdrawal (the same signed request each run: a repeat is
    answered from the stored one)."""
    assert daemon.proc is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    asked = False
    while daemon.proc.returncode is None and loop.time() < deadline:
        credited, state = await counts(sessions)
        if state == "completed":
            return
        if credited == 2 and not asked:
            if stuck is not None:  # the payout must wait in the pool, unmined
                stuck[1].clear()
                await stuck[0].provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
            url = f"http://127.0.0.1:{daemon.port}/v1/withdrawals"
            with contextlib.suppress(aiohttp.ClientError):  # a crash cuts the answer
                async with http.post(url, json=body) as resp:
                    assert resp.status in (200, 201, 202), await resp.text()
                    asked = True
            if stuck is not None:
                await lose_first_broadcast(stuck[0], sessions, stuck[1])
        await asyncio.sleep(0.03)


#: On PostgreSQL (when the suite has one) the points whose recovery leans most on what
#: the database kept — one per role and every side of the broadcast; SQLite runs them
#: all (each point costs two daemon starts).
PG_POINTS = {
    "migrate.between_steps",
    "listener.step.before_commit",
    "intake.after_commit",
    "sender.persist.after_commit",
    "sender.broadcast.after_send",
    "tracker.receipt.after_commit",
    "tracker.replace.after_send",
}


@pytest.mark.parametrize("point", sorted(SCENARIOS))
async def test_kill_at_the_point_restart_and_settle_exactly_once(
    point: str,
    tmp_path: Path,
    devnet: tuple[AnvilNode, Deployment],
    w3: AsyncWeb3[Any],
    blank_url: str,
    cosigners_for: CosignersFor,
) -> None:
    if blank_url.startswith("postgresql") and point not in PG_POINTS:
        pytest.skip("on PostgreSQL a subset of the points runs (PG_POINTS); SQLite runs all")
    _, dep = devnet
    cs = await cosigners_for(dep)
    await deposit_token(w3, USER, dep, "USDT", DEPOSIT_USDT * 10**18)
    await deposit_native(w3, USER, dep, DEPOSIT_ETH)
    dest = Account.create().address
    body = usdt_body(dep, USER, PAYOUT_USDT, 1, dest)
    cfg = config(tmp_path, dep, cs.urls)
    env = {
        **os.environ,
        "WATCHER_DATABASE_URL": blank_url,
        "WATCHER_SIGNER_KEY": operator_key(),
        "WATCHER_COSIGNER_TOKEN": cs.token,
        "WATCHER_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "daemon.log"
    daemon = Daemon(cfg, env, log)
    engine = create_engine(blank_url)
    sessions = session_factory(engine)
    running = asyncio.Event()
    running.set()
    mining = asyncio.create_task(miner(w3, running))
    stuck = (w3, running) if point.startswith("tracker.replace.") else None
    t0 = asyncio.get_running_loop().time()

    def mark(what: str) -> None:
        print(f"{asyncio.get_running_loop().time() - t0:6.2f} s {what}")

    try:
        async with aiohttp.ClientSession() as http:
            proc = await daemon.start(SCENARIOS[point])
            await drive(daemon, sessions, http, body, within=30, stuck=stuck)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
            out = log.read_text(errors="replace")
            assert proc.returncode == crashpoints.EXIT_CODE, (proc.returncode, out[-3000:])
            assert f"crash point {point}: exiting" in out
            mark("crashed")

            await daemon.start(None)
            # The restarted daemon runs its recovery (sender start, tracker rebroadcast)
            # even when the crash came after the last write.
            await daemon.wait_up(http, within=30)
            await asyncio.sleep(0.5)  # ten poll intervals of every role
            await drive(daemon, sessions, http, body, within=30)
            assert (await counts(sessions)) == (2, "completed"), log.read_text()[-3000:]
            mark("settled")
            await daemon.stop()
            mark("stopped")
        await assert_settled_once(sessions, w3, dep, dest, attempts=2 if stuck else 1)
        # `watcher reconcile`, in this process (a third daemon-sized start saved):
        # the vault's balances against the ledger, and the ledger's integrity checks.
        app = await build(load_settings(cfg, env=env), migrate=False, services=False)
        try:
            report = (await reconcile(app)).as_dict()
        finally:
            await app.close()
        assert report["ok"] is True, report
        mark("reconciled")
    finally:
        await w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
        mining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await mining
        await daemon.stop()
        await engine.dispose()


async def assert_settled_once(
    sessions: SessionFactory, w3: AsyncWeb3[Any], dep: Deployment, dest: str, *, attempts: int
) -> None:
    async with sessions() as s:
        deposits = list(await s.scalars(select(Deposit)))
        credits = await s.scalar(
            select(func.count())
            .select_from(JournalTransaction)
            .where(JournalTransaction.kind == "deposit")
        )
        (w,) = list(await s.scalars(select(Withdrawal)))
        tries = list(await s.scalars(select(TxAttempt)))
        held = await ledger.balances(s, USER.address)
    assert sorted(d.state for d in deposits) == ["credited", "credited"]
    assert credits == 2  # one journal transaction per deposit, never two
    assert w.state == "completed"
    # One attempt confirmed (a fee-bumped one's predecessor dropped), and it is the payout.
    assert len(tries) == attempts, [(a.tx_hash, a.state) for a in tries]
    (paid,) = [a for a in tries if a.state == "confirmed"]
    assert {a.state for a in tries} <= {"confirmed", "dropped"}
    assert len({a.nonce for a in tries}) == 1
    assert w.tx_hash == paid.tx_hash
    # Paid once on chain: one Withdrawn event of the vault, the amount arrived once.
    assert len(await withdrawn_events(w3, dep)) == 1
    usdt = dep.tokens["USDT"].address
    assert await balance_of(w3, usdt, dest) == PAYOUT_USDT * 10**18
    # The ledger: the deposits credited, the payout and its fee taken once, nothing held.
    assert held[("USDT", HOLD)] == 0
    assert held[("USDT", CROSS)] == DEPOSIT_USDT * 10**8 - w.ledger_amount
    assert held[("ETH", CROSS)] == 10**8
    await assert_ledger_consistent(sessions)


# ------------------------------------------------------------------------ production


@pytest.mark.parametrize(
    ("opt_in", "chain_id", "says"),
    [(False, 31337, "for tests only"), (True, 1, "are not a devnet")],
)
async def test_run_refuses_to_start_with_crash_points_outside_tests(
    tmp_path: Path, devnet: tuple[AnvilNode, Deployment], opt_in: bool, chain_id: int, says: str
) -> None:
    """Production refuses the variable: without the opt-in, or on a network that is not a
    devnet, `watcher run` exits at once with the reason; it never starts and ignores it."""
    _, dep = devnet
    cfg = write_config(tmp_path, [("devnet", dep, 2)])
    net = cfg / "networks" / "devnet.toml"
    net.write_text(net.read_text().replace("chain_id = 31337", f"chain_id = {chain_id}"))
    env = {
        **os.environ,
        "WATCHER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'w.db'}",
        crashpoints.ENV_POINTS: "sender.persist.after_commit",
    }
    if opt_in:
        env[crashpoints.ENV_OPT_IN] = crashpoints.OPT_IN_VALUE
    proc = await watcher_cli(
        "run", "--config", str(cfg), "--port", str(free_port()), env=env, merge_stderr=True
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 2, text
    assert "refusing to start" in text and says in text, text
    assert crashpoints.ENV_POINTS in text
    assert not (tmp_path / "w.db").exists() or (tmp_path / "w.db").stat().st_size == 0
