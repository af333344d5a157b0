"""The hot queries seek; none scans a table that grows with the business (issue 22).

Every statement the hot paths send is captured as sent (SQLAlchemy's
``before_cursor_execute``, after the dialect compiled it) while they run on a small
database holding rows in every state, then explained with its own parameters:

* SQLite: ``EXPLAIN QUERY PLAN``; a ``SCAN <table>`` of a big table is a full scan (with
  or without ``USING COVERING INDEX``: the whole index is read);
* PostgreSQL: ``EXPLAIN (FORMAT JSON)`` with ``enable_seqscan`` off (the planner would
  rightly scan a table of a few rows otherwise); a ``Seq Scan`` of a big table, or an
  index scan without an ``Index Cond`` (the whole index in order), is a full scan.

The account's history page must moreover be a seek of ``limit`` rows in the order it
is shown, not a sort of all of the account's rows (its deposits, withdrawals and journal
entries grow for ever): SQLite's ``USE TEMP B-TREE FOR ORDER BY``, or a PostgreSQL
``Sort`` node with a big table's scan under it and no ``Limit`` between them, fails it.

The hot paths: a listener step's lookups (known logs above the cursor, pending up to
the final block, the lowest pending block, crediting), the intake batch (replays by
account and nonce, locking and loading the accounts, the daily limit's recent
withdrawals, ids, holds), the account view and its history page, ``watcher status``
(database part), the gauges of a ``/metrics`` scrape, the sender's ready-to-send and
in-flight outflow, the tracker's attempts by state and stuck attempts, the reconciler's
ledger side of a vault asset (its sum of credited deposits' dust reads every credited
deposit of the token by design, an audit: on SQLite a range of ids per statement, on
PostgreSQL the server's sum over the state index; neither scans the table whole).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from watcher.app import build
from watcher.chain.logs import DepositLog
from watcher.domain.journal import CROSS, Leg, TxKind, vault_account
from watcher.services import confirmer
from watcher.services.gauges import refresh_gauges
from watcher.services.risk_gate import LockedBatch
from watcher.services.status import collect_status
from watcher.settings import DEFAULT_CONFIG_DIR, Settings, load_settings
from watcher.store import accounts, chainstate, deposits
from watcher.store import withdrawals as repo
from watcher.store.db import session_factory
from watcher.store.ledger_batch import Posting, post_many
from watcher.store.models import TxAttempt, Withdrawal
from watcher.store.reconciliation import consistent_reads, ledger_view, withdrawals_in_flight

# Tables that grow with deposits, withdrawals and users (blocks, cursors, alarms,
# heartbeats, prices, assets, leases stay small by design).
BIG = {
    "deposits",
    "journal_transactions",
    "journal_entries",
    "withdrawals",
    "tx_attempts",
    "accounts",
    "balances",
    "signed_requests",
    "positions",
    "open_orders",
}
CHAIN = 31337
USERS = [f"0x{i:040X}".replace("0X", "0x") for i in range(1, 7)]
SENDER = "0x" + "55" * 20
NATIVE = "0x" + "00" * 20
ATTEMPT_STATE = {"completed": "confirmed", "confirming": "mined"}


class Captured:
    def __init__(self) -> None:
        self.statements: list[tuple[str, Any, str]] = []
        self.label = ""

    @contextmanager
    def on(self, engine: AsyncEngine) -> Iterator[None]:
        def record(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            head = statement.lstrip().split(None, 1)[0].upper()
            if not many and head in ("SELECT", "UPDATE", "DELETE", "WITH"):
                self.statements.append((statement, parameters, self.label))

        event.listen(engine.sync_engine, "before_cursor_execute", record)
        try:
            yield
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", record)


_SCAN = re.compile(r"^SCAN (\w+)")


async def full_scans(engine: AsyncEngine, sql: str, params: Any) -> list[str]:
    """The big tables this statement reads whole, by the database's own plan."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
            found = []
            for row in plan.all():
                m = _SCAN.match(str(row[-1]))
                if m and m.group(1) in BIG:
                    found.append(str(row[-1]))
            return found
        await conn.exec_driver_sql("SET enable_seqscan = off")
        plan = (await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params)).scalar()
        await conn.rollback()
    doc = json.loads(plan) if isinstance(plan, str) else plan
    found = []

    def walk(node: dict[str, Any]) -> None:
        rel = node.get("Relation Name")
        kind = node.get("Node Type", "")
        if rel in BIG and (
            kind == "Seq Scan"
            or (kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in node)
        ):
            found.append(f"{kind} on {rel} ({node.get('Index Name', '')})")
        for child in node.get("Plans", []):
            walk(child)

    walk(doc[0]["Plan"])
    return found


async def sorts(engine: AsyncEngine, sql: str, params: Any) -> list[str]:
    """Where this statement sorts rows of a big table as read (instead of reading them
    in order from an index): SQLite's temp B-tree for ORDER BY; a PostgreSQL Sort (or
    Incremental Sort) over a big table's scan with no Limit in between (a sort of a few
    limited branches' results is no sort of the table)."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
            return [str(row[-1]) for row in plan.all() if "TEMP B-TREE" in str(row[-1])]
        await conn.exec_driver_sql("SET enable_seqscan = off")
        plan = (await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params)).scalar()
        await conn.rollback()
    doc = json.loads(plan) if isinstance(plan, str) else plan
    found = []

    def scanned(node: dict[str, Any]) -> list[str]:
        """The big tables read under ``node`` without a Limit in between."""
        if node.get("Node Type") == "Limit":
            return []
        out = [node["Relation Name"]] if node.get("Relation Name") in BIG else []
        for child in node.get("Plans", []):
            out += scanned(child)
        return out

    def walk(node: dict[str, Any]) -> None:
        if node.get("Node Type") in ("Sort", "Incremental Sort"):
            tables = [t for child in node.get("Plans", []) for t in scanned(child)]
            if tables:
                found.append(
                    f"{node['Node Type']} of {', '.join(tables)} by {node.get('Sort Key')}"
                )
        for child in node.get("Plans", []):
            walk(child)

    walk(doc[0]["Plan"])
    return found


def log(n: int, block: int, account: str, state_hint: str = "") -> DepositLog:
    return DepositLog(
        chain_id=CHAIN,
        block_number=block,
        block_hash=f"0x{block:064x}",
        tx_hash=f"0x{n:064x}",
        log_index=0,
        account=account,
        token=NATIVE,
        amount=10**18 + n,
    )


def withdrawal(wid: int, account: str, account_id: int, nonce: int, state: str) -> Withdrawal:
    now = datetime.now(UTC)
    return Withdrawal(
        id=wid,
        account=account,
        account_id=account_id,
        chain_id=CHAIN,
        token="0x" + "22" * 20,
        asset="USDT",
        amount=10**18,
        ledger_amount=10**8,
        fee=0,
        destination=account,
        nonce=nonce,
        deadline=2**40,
        signature="0x" + "00" * 65,
        request_digest="0x" + "44" * 32,
        state=state,
        reason=None,
        tx_hash=None,
        block_number=None,
        confirmations=0,
        hold_tx_id=None,
        created_at=now,
        updated_at=now,
    )


def network_settings(db_url: str) -> Settings:
    settings = load_settings(DEFAULT_CONFIG_DIR, env={"WATCHER_DATABASE_URL": db_url})
    return settings


@pytest.mark.asyncio
async def test_hot_queries_seek(db_url: str) -> None:
    settings = network_settings(db_url)
    network = next(n for n in settings.networks.values() if n.chain_id == CHAIN)
    app = await build(settings, migrate=False, services=False)
    engine = app.engine
    sessions = session_factory(engine)
    cap = Captured()
    try:
        # A little of everything: credited history, pending in the window, orphaned.
        async with sessions.begin() as s:
            history = [log(n, 10 + n, USERS[n % 4]) for n in range(40)]
            await deposits.record_logs(s, history, network, settings.assets, final_upto=100)
            window = [log(100 + n, 200 + n, USERS[n % 4]) for n in range(6)]
            await deposits.record_logs(s, window, network, settings.assets, final_upto=None)
            await post_many(
                s,
                [
                    Posting(
                        TxKind.DEPOSIT,
                        f"seed:{u}",
                        [
                            Leg(vault_account(CHAIN), "USDT", -(10**12), CROSS),
                            Leg(u, "USDT", 10**12),
                        ],
                        account_key=u,
                    )
                    for u in USERS
                ],
            )
            ids = await repo.new_ids(s, 12)
            states = ["completed"] * 6 + ["requested", "queued", "signed", "broadcast"] * 1
            states += ["confirming", "review"]
            locked = await LockedBatch.lock(s, settings, USERS)
            rows = [
                withdrawal(i, USERS[k % 4], locked.accounts[USERS[k % 4]].id, k, st)
                for k, (i, st) in enumerate(zip(ids, states, strict=True))
            ]
            for r, hold in zip(rows, await locked.post_holds(s, rows), strict=True):
                r.hold_tx_id = hold
            await repo.insert_new(s, rows)
            attempts = [
                TxAttempt(
                    withdrawal_id=r.id,
                    chain_id=CHAIN,
                    sender=SENDER,
                    nonce=k,
                    tx_hash=f"0x{1000 + k:064x}",
                    raw_tx="0x02",
                    max_fee_per_gas=1,
                    max_priority_fee_per_gas=1,
                    state={"completed": "confirmed", "confirming": "mined"}.get(
                        r.state, "broadcast"
                    ),
                )
                for k, r in enumerate(rows)
                if r.state not in ("requested", "queued", "review")
            ]
            await repo.insert_attempts(s, attempts)
            await chainstate.ensure_cursor(s, CHAIN, network.name, 1)

        with cap.on(engine):
            # The listener step (store/deposits.py, confirmer, chainstate).
            cap.label = "listener step"
            async with sessions.begin() as s:
                await chainstate.cursor(s, CHAIN)
                await chainstate.canonical_window(s, CHAIN)
                new = [log(200 + n, 210, USERS[0]) for n in range(2)]
                await deposits.record_logs(
                    s, new, network, settings.assets, final_upto=203, above=206
                )
                canonical = {200 + n: f"0x{200 + n:064x}" for n in range(12)}
                await confirmer.credit_final(s, CHAIN, 203, canonical)
                await deposits.lowest_pending_block(s, CHAIN)
                await chainstate.prune_blocks_below(s, CHAIN, 150)
            # The intake batch (services/intake.py _commit).
            cap.label = "intake"
            async with sessions.begin() as s:
                await repo.find_by_account_nonces(s, [(USERS[0], 99), (USERS[1], 0)])
                batch = await LockedBatch.lock(s, settings, USERS[:2])
                since = datetime.now(UTC) - timedelta(days=1)
                await repo.held_since_many(s, USERS[:2], since)
                ids, hold_ids = await repo.new_ids_with_holds(s, 1)
                fresh = [withdrawal(ids[0], USERS[0], batch.accounts[USERS[0]].id, 99, "requested")]
                await batch.post_holds(s, fresh, hold_ids)
            # The account view and its history page.
            cap.label = "account view"
            async with sessions() as s:
                await accounts.load_state(s, settings, USERS[0])
            cap.label = "history"
            async with sessions() as s:
                await accounts.account_history(s, settings, USERS[0], limit=100)
            # The sender and the tracker.
            cap.label = "sender/tracker"
            async with sessions.begin() as s:
                await repo.ready_to_send(s, CHAIN, 64)
                await repo.in_flight_outflow(s, CHAIN)
                await repo.count_unmined(s, CHAIN)
                await repo.raw_in(s, CHAIN, ["signed"], sender=SENDER)
                await repo.attempt_refs(s, CHAIN, list(repo.MINABLE_ATTEMPTS), sender=SENDER)
                await repo.attempts_in(s, CHAIN, ["mined"], sender=SENDER)
                await repo.stuck_attempts(
                    s,
                    CHAIN,
                    SENDER,
                    head=300,
                    after_blocks=10,
                    sent_before=datetime.now(UTC) - timedelta(minutes=1),
                )
            # `watcher status`, its database part.
            cap.label = "status"
            await collect_status(app, probe=False)
            # The gauges read at each /metrics scrape.
            cap.label = "metrics"
            await refresh_gauges(app)
            # The reconciler's ledger side of one vault asset.
            cap.label = "reconciliation"
            async with sessions() as s:
                await consistent_reads(s)
                await ledger_view(
                    s,
                    chain_id=CHAIN,
                    asset=network.native_asset,
                    token=NATIVE,
                    token_decimals=network.native_decimals,
                    ledger_precision=settings.assets[network.native_asset].precision,
                    block=205,
                )
                await withdrawals_in_flight(s, chain_id=CHAIN, token=NATIVE)
    finally:
        await app.close()

    labels = {label for _, _, label in cap.statements}
    assert labels == {
        "listener step",
        "intake",
        "account view",
        "history",
        "sender/tracker",
        "status",
        "metrics",
        "reconciliation",
    }
    offenders = []
    for sql, params, label in cap.statements:
        for scan in await full_scans(engine, sql, params):
            offenders.append(f"[{label}] {scan}: {' '.join(sql.split())[:300]}")
        if label == "history":
            for sort in await sorts(engine, sql, params):
                offenders.append(f"[{label}] sorts: {sort}: {' '.join(sql.split())[:300]}")
    await engine.dispose()
    assert not offenders, "full scans of big tables, or sorts of the history:\n" + "\n".join(
        offenders
    )
