"""Operations against real deposits on a real anvil: the status document's numbers,
Prometheus counters that move with deposits, reconciliation (consistent ledger, a
direct token transfer to the vault, a tampered ledger row) and /healthz going 503
while the RPC is down and back to 200 after."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select

from tests.faultproxy import FaultProxy
from tests.fixtures_chain import DevnetFactory
from tests.helpers import write_config
from tests.integration.deposit_support import Chain, addr, word
from tests.integration.withdrawal_support import signed_body
from watcher.api.server import make_web_app
from watcher.app import App, beat, build
from watcher.chain.devnet import dev_account
from watcher.chain.errors import RpcError
from watcher.services.reconciler import INTEGRITY_KEY, reconcile
from watcher.services.status import WAITING_SHOWN, collect_status
from watcher.settings import load_settings
from watcher.store.alarms import AlarmKind, acknowledge, active_alarms
from watcher.store.ledger import find_account
from watcher.store.models import Balance, Deposit

TRANSFER = "0xa9059cbb"  # transfer(address,uint256)


def counter(app: App, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(app.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_status_metrics_reconciliation_and_health(
    tmp_path: Path, db_url: str, devnet_factory: DevnetFactory
) -> None:
    async with (
        devnet_factory(chain_id=31391) as (node, dep),
        FaultProxy(node.url) as proxy,
        aiohttp.ClientSession() as http,
    ):
        cfg = write_config(tmp_path, [("devnet", dataclasses.replace(dep, rpc_url=proxy.url), 3)])
        default = cfg / "default.toml"
        default.write_text(
            default.read_text().replace('rpc_timeout_seconds = "10"', 'rpc_timeout_seconds = "1"')
        )
        app = await build(load_settings(cfg, env={}, database_url=db_url))
        try:
            listener = next(s for s in app.services if s.name == "deposits:devnet")
            chain = Chain(node.url, dep, http)
            usdt = dep.tokens["USDT"].address
            await chain.approve(2, usdt)
            await chain.receipt(await chain.deposit_token(2, usdt, 1234 * 10**18 + 5))
            await chain.receipt(await chain.deposit_native(3, 2 * 10**18))
            await listener.tick()
            await beat(app)
            # Pending deposits of a chain this config does not know, older by block number
            # than the devnet's and more than one page of them: they must not crowd the
            # devnet's out of the list (they are counted by state, not listed).
            async with app.sessions.begin() as s:
                s.add_all(
                    Deposit(
                        chain_id=424242,
                        tx_hash="0x" + word(n),
                        log_index=0,
                        block_number=0,
                        block_hash="0x" + word(0),
                        account=addr(9),
                        token=usdt,
                        amount=1,
                        asset="USDT",
                        ledger_amount=1,
                        state="pending",
                    )
                    for n in range(1, WAITING_SHOWN + 51)
                )

            doc = await collect_status(app)
            waiting = {w["account"]: w for w in doc["deposits"]["waiting"]}
            assert set(waiting) == {addr(2), addr(3)}
            assert doc["deposits"]["byState"] == {"pending": WAITING_SHOWN + 52}
            async with app.sessions.begin() as s:
                await s.execute(delete(Deposit).where(Deposit.chain_id == 424242))
            assert waiting[addr(2)]["amount"] == "1234.000000000000000005"
            assert waiting[addr(2)]["confirmations"] == 2 and waiting[addr(2)]["required"] == 3
            assert waiting[addr(3)]["confirmations"] == 1 and waiting[addr(3)]["etaSeconds"] == 2
            assert counter(app, "watcher_deposits_total", event="credited") == 0

            head = await chain.mine(3)
            await listener.tick()
            doc = await collect_status(app)
            assert doc["status"] == "healthy", doc["reasons"]
            assert (
                doc["deposits"]["byState"] == {}
                and doc["deposits"]["stored"] == 2
                and doc["deposits"]["waiting"] == []
            )
            net = doc["networks"][0]
            assert (net["head"], net["cursor"], net["lagBlocks"]) == (head, head, 0)
            vault = {a["asset"]: a for a in doc["balances"][0]["assets"]}
            assert vault["USDT"]["vaultBalance"] == "1234.000000000000000005"
            assert vault["ETH"]["vaultBalance"] == "2"
            assert counter(app, "watcher_deposits_total", event="credited") == 2
            assert counter(app, "watcher_chain_head", network="devnet") == head

            report = await reconcile(app)
            assert report.ok, report.as_dict()

            # A real signed withdrawal (no hot key here, so it stays held): status counts
            # it by state and shows it as pending outflow against the vault.
            async with TestClient(TestServer(make_web_app(app))) as client:
                body = signed_body(
                    dev_account(2),
                    dep,
                    token=usdt,
                    amount="100",
                    amount_units=100 * 10**18,
                    destination=addr(7),
                    nonce=1,
                )
                resp = await client.post("/v1/withdrawals", json=body)
                assert resp.status == 202, await resp.text()
            doc = await collect_status(app)
            assert doc["withdrawals"]["byState"]["requested"]["count"] == 1
            vault = {a["asset"]: a for a in doc["balances"][0]["assets"]}
            assert vault["USDT"]["pendingOutflow"] == "100" and vault["USDT"]["covered"]

            # A token sent straight to the vault, not through deposit(): unattributed inflow.
            send = {
                "from": addr(4),
                "to": usdt,
                "data": TRANSFER + word(dep.vault) + word(7 * 10**18),
            }
            await chain.receipt(await chain.send(send))
            await chain.mine(1)
            await listener.tick()
            report = await reconcile(app)
            result = {a.asset: a for n in report.networks for a in n.assets}
            assert result["USDT"].status == "unattributed_inflow"
            assert result["USDT"].difference == 7 * 10**18
            assert result["ETH"].status == "ok" and not report.integrity
            async with app.sessions() as s:
                kinds = {(a.kind, a.severity) for a in await active_alarms(s)}
            assert (str(AlarmKind.RECONCILIATION_MISMATCH), "warning") in kinds

            # A tampered balance row: the ledger no longer equals its journal.
            async with app.sessions.begin() as s:
                account = await find_account(s, addr(2))
                assert account is not None
                row = (
                    await s.scalars(
                        select(Balance).where(
                            Balance.account_id == account.id, Balance.wallet == "cross"
                        )
                    )
                ).one()
                row.amount += 1
            report = await reconcile(app)
            assert [p.what for p in report.integrity] == ["balance_mismatch"]
            async with app.sessions.begin() as s:
                alarms = await active_alarms(s)
                assert any(a.key.startswith(INTEGRITY_KEY) for a in alarms)
                for a in alarms:
                    await acknowledge(s, a.id, "test")
                row = await s.get(Balance, (account.id, row.asset, row.wallet))
                assert row is not None
                row.amount -= 1
            assert not (await reconcile(app)).integrity

            async with TestClient(TestServer(make_web_app(app))) as client:
                resp = await client.get("/healthz")
                assert resp.status == 200, await resp.text()
                proxy.drop_connections = True
                with pytest.raises(RpcError):  # the daemon's runner logs and counts it
                    await listener.tick()
                resp = await client.get("/healthz")
                body = await resp.json()
                assert resp.status == 503
                assert any("RPC endpoints down" in r for r in body["reasons"]), body
                status_doc = await (await client.get("/v1/status")).json()
                assert status_doc["exitCode"] == 2
                proxy.reset()
                await listener.tick()
                resp = await client.get("/healthz")
                assert resp.status == 200, await resp.text()
            assert counter(app, "watcher_rpc_errors_total") >= 0
        finally:
            await app.close()
