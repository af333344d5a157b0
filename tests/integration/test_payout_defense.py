"""Payout defense with the real parts: the devnet vault (2-of-3 validator quorum, hourly
USD limit), the devnet co-signers (real HTTP, their own stores and checks) and the
watcher's sender and tracker on a real anvil.

* a withdrawal row the user never signed (written straight into the database, or with
  its destination changed there) is refused by every co-signer, never paid, and an
  alarm says so;
* two of three co-signers up: payouts complete; one up: the withdrawal waits queued
  with the reason and, after the budget, an alarm; a second back: it drains;
* a co-signer asked again for a paid id with another amount refuses;
* the hourly limit reached during a burst: the vault pauses, the watcher alarms and
  queues (a transaction that reverted on the paused vault waits too, hold kept); the
  guardian unpauses and every withdrawal completes exactly once.
"""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account
from rich.console import Console
from sqlalchemy import update
from web3 import AsyncWeb3

from tests.fixtures_chain import CosignersFor, transact
from tests.integration.withdrawal_support import (
    balance_of,
    credit,
    deposit_token,
    run_pipeline,
    sender,
    service,
    usdt_body,
    withdrawal_app,
    withdrawn_events,
)
from watcher.api.server import make_web_app
from watcher.app import App
from watcher.chain import payout as payouts
from watcher.chain.artifacts import load_artifact
from watcher.chain.devnet import (
    DEVNET_HOURLY_LIMIT_USD,
    DEVNET_PRICES_USD,
    Deployment,
    dev_account,
)
from watcher.cli.ops import render_status
from watcher.domain.journal import HOLD
from watcher.services.cosign_client import CoSignRefused, ask, cosign_body
from watcher.services.status import collect_status
from watcher.store import ledger, vaults
from watcher.store import withdrawals as repo
from watcher.store.alarms import active_alarms
from watcher.store.models import Withdrawal

pytestmark = pytest.mark.usefixtures("chain_snapshot")

USER = dev_account(2)


async def funded(app: App, w3: AsyncWeb3[Any], dep: Deployment, whole: int) -> None:
    """``whole`` USDT of USER in the vault (on chain) and in the ledger."""
    await deposit_token(w3, USER, dep, "USDT", whole * 10**18)
    await credit(app, USER.address, "USDT", whole * 10**8, f"test:{USER.address}:{whole}")


async def post(client: TestClient[Any, Any], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/v1/withdrawals", json=body)
    doc: dict[str, Any] = await resp.json()
    assert resp.status == 202, doc
    return doc


async def state_of(app: App, wid: int) -> Withdrawal:
    async with app.sessions() as s:
        w = await repo.get(s, wid)
    assert w is not None
    return w


async def alarm_kinds(app: App) -> dict[str, list[Any]]:
    async with app.sessions() as s:
        found: dict[str, list[Any]] = {}
        for a in await active_alarms(s):
            found.setdefault(a.kind, []).append(a)
        return found


def render_text(doc: dict[str, Any]) -> str:
    console = Console(width=240, record=True, file=io.StringIO())
    console.print(render_status(doc))
    return console.export_text()


def answers_given(cs: Any) -> float:
    """Refusals and repeated answers of all the co-signers so far (their metrics)."""
    total = 0.0
    for i in range(len(cs.urls)):
        for metric in cs.cosigner(i).metrics.registry.collect():
            if metric.name in {"watcher_cosigner_refused", "watcher_cosigner_repeated"}:
                total += sum(x.value for x in metric.samples if x.name.endswith("_total"))
    return total


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[TestClient[Any, Any]] = []

    async def make(app: App) -> TestClient[Any, Any]:
        c: TestClient[Any, Any] = TestClient(TestServer(make_web_app(app)))
        await c.start_server()
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def test_rows_the_user_never_signed_are_refused_by_every_cosigner_and_never_paid(
    tmp_path: Path,
    deployment: Deployment,
    db_url: str,
    chain_w3: AsyncWeb3[Any],
    cosigners_for: CosignersFor,
    client_for: Any,
) -> None:
    cs = await cosigners_for(deployment)
    attacker = Account.create().address
    async with withdrawal_app(tmp_path, deployment, db_url, cosigners=cs) as app:
        client = await client_for(app)
        await funded(app, chain_w3, deployment, 1_000)
        usdt = deployment.tokens["USDT"].address
        vault_before = await balance_of(chain_w3, usdt, deployment.vault)
        # 1. A real request whose destination is then changed in the database.
        doc = await post(client, usdt_body(deployment, USER, 100, 1, Account.create().address))
        async with app.sessions.begin() as s:
            await s.execute(
                update(Withdrawal).where(Withdrawal.id == doc["id"]).values(destination=attacker)
            )
        # 2. A row written straight into the database: a copy with no user signature.
        async with app.sessions.begin() as s:
            real = await repo.get(s, doc["id"])
            assert real is not None
            forged = Withdrawal(
                account=real.account,
                account_id=real.account_id,
                chain_id=real.chain_id,
                token=real.token,
                asset=real.asset,
                amount=300 * 10**18,
                ledger_amount=300 * 10**8,
                fee=0,
                destination=attacker,
                nonce=99,
                deadline=real.deadline,
                signature="",
                request_digest="0x" + "00" * 32,
                state="requested",
            )
            s.add(forged)
        await run_pipeline(app, chain_w3)

        for wid in (doc["id"], forged.id):
            w = await state_of(app, wid)
            assert w.state == "queued", (wid, w.state, w.reason)
            assert (w.reason or "").startswith("cosign_refused"), w.reason
            assert "USER_SIGNATURE_INVALID" in (w.reason or "")
            async with app.sessions() as s:
                assert await repo.attempts_of(s, wid) == []
        alarms = await alarm_kinds(app)
        refused = {a.key for a in alarms["cosign_refused"]}
        assert refused == {f"31337:{doc['id']}", f"31337:{forged.id}"}
        assert await balance_of(chain_w3, usdt, attacker) == 0
        assert await balance_of(chain_w3, usdt, deployment.vault) == vault_before
        assert await withdrawn_events(chain_w3, deployment) == []
        # Refused for good: not asked again tick after tick.
        asked_before = answers_given(cs)
        assert asked_before >= 6  # each co-signer refused both
        await sender(app).tick()
        assert answers_given(cs) == asked_before


async def test_quorum_two_of_three_pays_one_waits_with_alarm_and_drains_when_a_second_returns(
    tmp_path: Path,
    deployment: Deployment,
    db_url: str,
    chain_w3: AsyncWeb3[Any],
    cosigners_for: CosignersFor,
    client_for: Any,
) -> None:
    cs = await cosigners_for(deployment, up=[0, 1])  # co-signer 2 is down
    async with withdrawal_app(tmp_path, deployment, db_url, cosigners=cs) as app:
        client = await client_for(app)
        await funded(app, chain_w3, deployment, 1_000)
        usdt = deployment.tokens["USDT"].address
        first_dest = Account.create().address
        first = await post(client, usdt_body(deployment, USER, 100, 1, first_dest))
        await run_pipeline(app, chain_w3)
        assert (await state_of(app, first["id"])).state == "completed"
        assert await balance_of(chain_w3, usdt, first_dest) == 100 * 10**18

        await cs.stop(1)  # one of three left
        second_dest = Account.create().address
        second = await post(client, usdt_body(deployment, USER, 50, 2, second_dest))
        await sender(app).tick()
        w = await state_of(app, second["id"])
        assert w.state == "queued" and (w.reason or "").startswith("cosign_quorum"), w.reason
        assert "1 of 3 validator power signed" in (w.reason or "")
        assert "unavailable" in (w.reason or "")
        assert "cosign_quorum" not in await alarm_kinds(app)  # within the budget
        budget = app.settings.withdrawals.cosign_alarm_after_seconds
        sender(app).clock = lambda: time.time() + budget + 1  # the budget passes
        await sender(app).tick()
        assert "cosign_quorum" in await alarm_kinds(app)
        assert (await state_of(app, second["id"])).state == "queued"

        await cs.start(1)  # two of three again
        await run_pipeline(app, chain_w3)
        w = await state_of(app, second["id"])
        assert w.state == "completed", w.reason
        assert await balance_of(chain_w3, usdt, second_dest) == 50 * 10**18
        assert len(await withdrawn_events(chain_w3, deployment)) == 2

        # The co-signer asked again for the paid id with another amount refuses.
        stored = await state_of(app, first["id"])
        auth = payouts.Payout(
            deployment.chain_id,
            deployment.vault,
            stored.id,
            usdt,
            first_dest,
            200 * 10**18,
            stored.payout_deadline or 0,
        )
        body = cosign_body(
            auth,
            account=USER.address,
            decimals=18,
            nonce=int(stored.nonce),
            request_deadline=int(stored.deadline),
            signature=stored.signature,
        )
        answer = await ask(app.http, cs.urls[0], cs.token, auth, body)
        assert isinstance(answer, CoSignRefused)
        # The user signed 100, not 200: the request check answers first.
        assert answer.code in {"PAYOUT_ID_REUSED", "REQUEST_MISMATCH", "USER_SIGNATURE_INVALID"}


async def test_hourly_limit_in_a_burst_pauses_queues_and_completes_once_after_unpause(
    tmp_path: Path,
    deployment: Deployment,
    db_url: str,
    chain_w3: AsyncWeb3[Any],
    cosigners_for: CosignersFor,
    client_for: Any,
) -> None:
    owner = dev_account(0)  # also the guardian on the devnet
    vault = chain_w3.eth.contract(address=deployment.vault, abi=load_artifact("Vault").abi)  # type: ignore[call-overload]
    usdt = deployment.tokens["USDT"].address
    # $250 an hour of USDT (18 decimals, $1), on the session's shared vault: restored after.
    await transact(chain_w3, owner, vault.functions.setTokenLimit(usdt, 18, 10**18, 250 * 10**18))
    cs = await cosigners_for(deployment)
    async with AsyncExitStack() as restore:
        restore.push_async_callback(
            transact,
            chain_w3,
            owner,
            vault.functions.setTokenLimit(
                usdt, 18, DEVNET_PRICES_USD["USDT"], DEVNET_HOURLY_LIMIT_USD
            ),
        )
        await _burst_pauses_then_drains(tmp_path, deployment, db_url, chain_w3, cs, client_for)


async def _burst_pauses_then_drains(
    tmp_path: Path,
    deployment: Deployment,
    db_url: str,
    chain_w3: AsyncWeb3[Any],
    cs: Any,
    client_for: Any,
) -> None:
    owner = dev_account(0)
    vault = chain_w3.eth.contract(address=deployment.vault, abi=load_artifact("Vault").abi)  # type: ignore[call-overload]
    usdt = deployment.tokens["USDT"].address
    async with withdrawal_app(tmp_path, deployment, db_url, cosigners=cs) as app:
        client = await client_for(app)
        await funded(app, chain_w3, deployment, 1_000)
        dests = [Account.create().address for _ in range(4)]
        docs = [
            await post(client, usdt_body(deployment, USER, 100, n + 1, d))
            for n, d in enumerate(dests)
        ]
        await run_pipeline(app, chain_w3)
        states = {d["id"]: await state_of(app, d["id"]) for d in docs}
        done = [i for i, w in states.items() if w.state == "completed"]
        waiting = [i for i, w in states.items() if w.state == "queued"]
        assert len(done) == 2 and len(waiting) == 2, {i: w.state for i, w in states.items()}
        for i in waiting:
            assert (states[i].reason or "").startswith("vault_paused"), states[i].reason
        assert await vault.functions.paused().call()
        assert "vault_paused" in await alarm_kinds(app)
        async with app.sessions() as s:
            vs = await vaults.get(s, deployment.chain_id)
            held = (await ledger.balances(s, USER.address))[("USDT", HOLD)]
        assert vs is not None and vs.paused
        assert held == 200 * 10**8  # the two waiting keep their hold: nothing lost
        status = await collect_status(app, probe=False)
        (net,) = status["networks"]
        assert net["vault"]["paused"] is True
        assert any("is paused" in r for r in status["reasons"])
        assert "PAUSED" in render_text(status)

        await transact(chain_w3, owner, vault.functions.unpause())  # the guardian
        await run_pipeline(app, chain_w3)
        for d, dest in zip(docs, dests, strict=True):
            assert (await state_of(app, d["id"])).state == "completed"
            assert await balance_of(chain_w3, usdt, dest) == 100 * 10**18
        events = await withdrawn_events(chain_w3, deployment)
        assert sorted(int(e["topics"][1].hex(), 16) for e in events) == sorted(
            d["id"] for d in docs
        )
        async with app.sessions() as s:
            vs = await vaults.get(s, deployment.chain_id)
            held = (await ledger.balances(s, USER.address))[("USDT", HOLD)]
        assert vs is not None and not vs.paused
        assert held == 0
        status = await collect_status(app, probe=False)
        assert status["networks"][0]["vault"]["paused"] is False

        def events(name: str) -> float:
            labels = {"network": "devnet", "event": name}
            value = app.metrics.registry.get_sample_value("watcher_withdrawal_events_total", labels)
            return value or 0.0

        assert events("completed") == 4
        assert events("signed") >= 4 and events("broadcast") >= 4
        assert events("failed") == 0


async def test_a_guardian_pause_with_nothing_queued_is_seen_by_the_listener(
    tmp_path: Path,
    deployment: Deployment,
    db_url: str,
    chain_w3: AsyncWeb3[Any],
    cosigners_for: CosignersFor,
) -> None:
    """No withdrawal waits, so the sender reads nothing: the deposit listener sees the
    guardian's ``Paused`` in the blocks it reads (same eth_getLogs as the deposits),
    stores the pause, alarms, status and the gauge say PAUSED; ``Unpaused`` likewise."""
    guardian = dev_account(0)
    vault = chain_w3.eth.contract(address=deployment.vault, abi=load_artifact("Vault").abi)  # type: ignore[call-overload]
    cs = await cosigners_for(deployment)
    async with withdrawal_app(tmp_path, deployment, db_url, cosigners=cs) as app:
        listener = service(app, "deposits:")
        while await listener.step():  # caught up with the shared chain
            pass
        try:
            await transact(chain_w3, guardian, vault.functions.pause())
            await listener.step()
            async with app.sessions() as s:
                vs = await vaults.get(s, deployment.chain_id)
            assert vs is not None and vs.paused
            assert vs.reason is not None and f"paused by {guardian.address.lower()}" in vs.reason
            assert "vault_paused" in await alarm_kinds(app)
            status = await collect_status(app, probe=False)
            assert status["networks"][0]["vault"]["paused"] is True
            assert "PAUSED" in render_text(status)
            gauge = app.metrics.vault_paused.labels("devnet")._value.get()
            assert gauge == 1
        finally:
            if await vault.functions.paused().call():
                await transact(chain_w3, guardian, vault.functions.unpause())
        await listener.step()
        async with app.sessions() as s:
            vs = await vaults.get(s, deployment.chain_id)
        assert vs is not None and not vs.paused
        status = await collect_status(app, probe=False)
        assert status["networks"][0]["vault"]["paused"] is False
        assert app.metrics.vault_paused.labels("devnet")._value.get() == 0
