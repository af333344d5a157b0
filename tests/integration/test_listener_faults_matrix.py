"""One sick RPC endpoint among healthy ones, for every way an endpoint fails: it hangs
(answers after the client gave up), answers HTTP 500 with a JSON error object, answers
an HTML page, drops the connection, or lags behind the chain.

* One of three failing: a quorum of two endpoints is still healthy, so a deposit is
  credited at most about one ``rpc_timeout`` later than without the fault (the sick
  endpoint is put in cooldown and not asked again meanwhile), and ``/healthz`` stays 200.
* One of two failing (and two of three): no quorum for the logs, the listener cannot
  advance. Once the lag passes the budget, ``/healthz`` answers 503 naming the network,
  the lag and the failing endpoint; ``watcher_lag_blocks`` shows the lag; the watchdog
  latches ``lag_over_budget`` naming the endpoint; the status document says which
  endpoint fails and how. Healed, the listener catches up and credits the deposit.

The real app is built in-process on a real anvil (one per module) behind fault proxies;
the listener ticks in a loop as the daemon's scheduler would run it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.faultproxy import FaultProxy
from tests.helpers import status_json, write_config
from tests.integration.deposit_support import Chain, deposit_rows
from watcher.api.server import make_web_app
from watcher.app import App, beat, build
from watcher.chain.devnet import Deployment, deploy_devnet, start_anvil
from watcher.chain.rpc import redact_url
from watcher.services.listener import DepositListener
from watcher.services.status import collect_status
from watcher.services.watchdog import Watchdog
from watcher.settings import load_settings
from watcher.store.alarms import acknowledge, active_alarms
from watcher.store.models import NetworkCursor

POLL = 0.2  # listener poll interval (s)
RPC_TIMEOUT = 0.5  # listener.rpc_timeout_seconds
BUDGET = 5  # listener.lag_budget_blocks
DEPTH = 3  # confirmations
LAGGING_BY = BUDGET + 5  # a lagging node's distance behind the chain
#: Deposit mined and confirmed → credited: one poll, one rpc_timeout, and slack for a
#: step (a few RPC round trips and one transaction) on a busy 2-core machine.
LATENCY_BOUND = POLL + RPC_TIMEOUT + 1.0

ERROR_OBJECT = json.dumps(
    {"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": "upstream exploded"}}
)
API_KEY = "0f3a9c7e21b84d5fa6e0c19b7d2e4f80"
HTML = "<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"


def sicken(proxy: FaultProxy, mode: str) -> None:
    if mode == "hang":
        proxy.delay = 10 * RPC_TIMEOUT
    elif mode == "http 500 error object":
        proxy.http_answer = (500, "application/json", ERROR_OBJECT)
    elif mode == "html":
        proxy.http_answer = (200, "text/html", HTML)
    elif mode == "drop":
        proxy.drop_connections = True
    elif mode == "lagging":
        proxy.lag_blocks = LAGGING_BY
    else:
        raise AssertionError(mode)


MODES = ["hang", "http 500 error object", "html", "drop", "lagging"]


@pytest.fixture(scope="module")
async def devnet() -> AsyncIterator[Deployment]:
    """One anvil for the module (the shared session chain is left alone)."""
    async with start_anvil(chain_id=31337) as node:
        yield await deploy_devnet(node.url)


class Rig:
    """The in-process app on proxied endpoints, its listener ticking in the background,
    and its HTTP API on a test server."""

    def __init__(self, app: App, proxies: list[FaultProxy], chain: Chain, api: TestClient) -> None:
        self.app = app
        self.proxies = proxies
        self.chain = chain
        self.api = api
        self.listener = next(s for s in app.services if isinstance(s, DepositListener))
        self.watchdog = next(s for s in app.services if isinstance(s, Watchdog))
        self.who = 2
        self.cfg = Path()
        self.env: dict[str, str] = {}

    async def loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # the scheduler's Runner logs and goes on
                await self.listener.tick()
            await asyncio.sleep(POLL)

    async def cursor(self) -> int:
        async with self.app.sessions() as s:
            row = await s.get(NetworkCursor, self.listener.chain_id)
            return -1 if row is None else row.scanned_block

    async def deposit(self) -> str:
        """A native deposit, mined and given its confirmations; its tx hash."""
        self.who = 2 + (self.who - 1) % 5
        tx = await self.chain.deposit_native(self.who, 10**18)
        await self.chain.receipt(tx)
        await self.chain.mine(DEPTH - 1)
        return tx

    async def credited(self, tx: str) -> bool:
        return any(
            r.tx_hash == tx and r.state == "credited" for r in await deposit_rows(self.app.sessions)
        )

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        resp = await self.api.get("/healthz")
        return resp.status, await resp.json()

    def label(self, proxy: FaultProxy) -> str:
        """The endpoint's name in health, alarms and status: its URL, key redacted."""
        return redact_url(f"{proxy.url}/v3/{API_KEY}")

    async def metrics(self) -> str:
        return await (await self.api.get("/metrics")).text()

    async def lag_metric(self) -> int:
        text = await self.metrics()
        found = re.search(r'^watcher_lag_blocks\{network="devnet"\} (\S+)$', text, re.M)
        assert found, "watcher_lag_blocks not exported"
        return int(float(found.group(1)))

    async def alarms(self) -> list[tuple[str, str]]:
        async with self.app.sessions() as s:
            return [(a.kind, a.message) for a in await active_alarms(s)]


async def until(
    check: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.02
) -> float:
    """Wait for ``check``; the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(every)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, db_url: str, dep: Deployment, n: int) -> AsyncIterator[Rig]:
    async with aiohttp.ClientSession() as http:
        # Start from the chain as it is now (earlier tests' blocks are not re-read).
        head = await Chain(dep.rpc_url, dep, http).head()
    cfg = write_config(tmp_path, [("devnet", dataclasses.replace(dep, deploy_block=head), DEPTH)])
    default = cfg / "default.toml"
    text = default.read_text()
    for old, new in (
        ('poll_interval_seconds = "1"', f'poll_interval_seconds = "{POLL}"'),
        ("lag_budget_blocks = 50", f"lag_budget_blocks = {BUDGET}"),
        ('rpc_timeout_seconds = "10"', f'rpc_timeout_seconds = "{RPC_TIMEOUT}"'),
    ):
        assert old in text
        text = text.replace(old, new, 1)
    default.write_text(text)
    async with contextlib.AsyncExitStack() as stack:
        proxies = [await stack.enter_async_context(FaultProxy(dep.rpc_url)) for _ in range(n)]
        # Each URL carries an API key in its path, as a provider's would: it must never
        # show in health, alarms, status or metrics (they name the redacted URL).
        urls = [f"{p.url}/v3/{API_KEY}" for p in proxies]
        env = {"WATCHER_RPC_URLS_DEVNET": ",".join(urls)}
        settings = load_settings(cfg, env=env, database_url=db_url)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        chain = Chain(dep.rpc_url, dep, http)
        app = await build(settings)
        stack.push_async_callback(app.close)
        api = TestClient(TestServer(make_web_app(app)))
        await api.start_server()
        stack.push_async_callback(api.close)
        r = Rig(app, proxies, chain, api)
        r.cfg, r.env = cfg, env
        task = asyncio.create_task(r.loop())
        try:
            head = await chain.head()
            await until(lambda: _at(r, head), 10, "initial catch-up")
            yield r
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _at(r: Rig, block: int) -> bool:
    return await r.cursor() >= block


async def assert_blind_spot_is_visible(r: Rig, tx: str, sick: list[FaultProxy]) -> None:
    """The listener cannot advance: lag over budget is in /healthz, the metric, the
    alarm and the status document, each naming the sick endpoint(s)."""
    stuck = await r.cursor()
    await r.chain.mine(BUDGET + 2)
    head = await r.chain.head()
    await until(lambda: _lag_seen(r, head), 10, "head observed despite the failing steps")
    assert not await r.credited(tx)
    assert await r.cursor() == stuck
    lag = head - stuck
    assert lag > BUDGET

    status, doc = await r.healthz()
    assert status == 503, doc
    reason = next(x for x in doc["reasons"] if x.startswith("devnet: cursor"))
    assert f"is {lag} blocks behind head {head} (budget {BUDGET})" in reason
    for p in sick:
        assert r.label(p) in reason, reason
    assert await r.lag_metric() == lag

    await r.watchdog.tick()
    await asyncio.sleep(POLL * 2)
    await r.watchdog.tick()
    alarms = await r.alarms()
    assert [k for k, _ in alarms] == ["lag_over_budget"], alarms
    assert all(r.label(p) in alarms[0][1] for p in sick), alarms

    await beat(r.app)  # what `watcher status` reads from another process
    report = await collect_status(r.app, probe=False)
    net = next(n for n in report["networks"] if n["name"] == "devnet")
    named = {e["url"] for e in net["listener"]["endpoints"]}
    assert {r.label(p) for p in sick} <= named, net["listener"]
    listed = [x for x in report["reasons"] if "devnet: listener" in x]
    assert listed and all(r.label(p) in listed[0] for p in sick), report["reasons"]
    for text in (json.dumps(doc), json.dumps(alarms), json.dumps(report), await r.metrics()):
        assert API_KEY not in text
    assert report["status"] == "degraded"


async def _lag_seen(r: Rig, head: int) -> bool:
    seen = r.listener.seen
    return seen.head == head and (
        seen.failure is not None or bool(r.listener.report()["endpoints"])
    )


async def heal_and_recover(r: Rig, tx: str) -> float:
    for p in r.proxies:
        p.reset()
    # The sick endpoint is asked again when its cooldown (doubling per failure) ends.
    took = await until(lambda: r.credited(tx), 20, "credited after healing")
    head = await r.chain.head()
    await until(lambda: _at(r, head), 5, "caught up after healing")
    assert await r.lag_metric() == 0
    status, doc = await r.healthz()
    assert not any(x.startswith("devnet: cursor") for x in doc["reasons"]), doc
    # The alarm stays latched until an operator acknowledges it; then all is well.
    async with r.app.sessions.begin() as s:
        for alarm in await active_alarms(s):
            await acknowledge(s, alarm.id, "test")
    status, doc = await r.healthz()
    assert status == 200, doc
    return took


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("mode", MODES)
async def test_one_of_three_failing_costs_at_most_one_rpc_timeout(
    mode: str, tmp_path: Path, db_url: str, devnet: Deployment
) -> None:
    async with rig(tmp_path, db_url, devnet, 3) as r:
        sick = r.proxies[0]  # the preferred endpoint: asked first
        sicken(sick, mode)
        tx = await r.deposit()
        took = await until(lambda: r.credited(tx), 10, "credited")
        assert took <= LATENCY_BOUND, f"{mode}: credited after {took:.2f} s"
        # A second deposit while the sick endpoint still cools down or fails.
        tx2 = await r.deposit()
        took2 = await until(lambda: r.credited(tx2), 10, "second credited")
        assert took2 <= LATENCY_BOUND, f"{mode}: second credited after {took2:.2f} s"
        status, doc = await r.healthz()
        assert status == 200, doc
        assert await r.lag_metric() <= 1
        await r.watchdog.tick()
        await r.watchdog.tick()
        assert await r.alarms() == []
        if mode != "lagging":
            assert sick.http_requests > 0
        print(f"1 of 3 {mode}: credited in {took:.2f} s, then {took2:.2f} s")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("mode", MODES)
async def test_one_of_two_failing_stalls_visibly_then_recovers(
    mode: str, tmp_path: Path, db_url: str, devnet: Deployment
) -> None:
    async with rig(tmp_path, db_url, devnet, 2) as r:
        sick = r.proxies[0]
        sicken(sick, mode)
        tx = await r.deposit()
        await assert_blind_spot_is_visible(r, tx, [sick])
        took = await heal_and_recover(r, tx)
        print(f"1 of 2 {mode}: healed, credited in {took:.2f} s")


async def test_two_of_three_failing_is_no_quorum(
    tmp_path: Path, db_url: str, devnet: Deployment
) -> None:
    async with rig(tmp_path, db_url, devnet, 3) as r:
        hang, error = r.proxies[0], r.proxies[2]
        sicken(hang, "hang")
        sicken(error, "http 500 error object")
        tx = await r.deposit()
        await assert_blind_spot_is_visible(r, tx, [hang, error])
        # `watcher status` in another process: the listener's report (heartbeat) and
        # its own probe name each of them and how it fails.
        env = {**os.environ, **r.env, "WATCHER_DATABASE_URL": db_url}
        code, report = await status_json(r.cfg, env)
        assert code == 1, report
        listed = [x for x in report["reasons"] if "devnet: listener" in x]
        assert listed and r.label(hang) in listed[0] and r.label(error) in listed[0], listed
        assert API_KEY not in json.dumps(report)
        assert "timed out" in listed[0] and "upstream exploded" in listed[0]
        net = next(n for n in report["networks"] if n["name"] == "devnet")
        probes = {e["url"]: e for e in net["rpc"]}
        assert probes[r.label(hang)]["error"] == "TimeoutError"
        assert "upstream exploded" in probes[r.label(error)]["error"]
        assert probes[r.label(r.proxies[1])]["ok"]
        took = await heal_and_recover(r, tx)
        print(f"2 of 3 failing: healed, credited in {took:.2f} s")
