"""Reconciler: the vault's on-chain balances against the ledger's liabilities, and the
ledger against itself.

Guarantees:
- Read-only towards money: it never posts a journal entry; it records its findings
  (``reconciliations`` table, metrics) and latches alarms.
- Chain and ledger are compared at the same block: the deposit listener's scanned
  block C (``eth_call``/``eth_getBalance`` at C), so deposits in flight are not
  mistaken for a difference. A network whose listener has not scanned yet is skipped.
- A surplus beyond tolerance is an *unattributed inflow* (e.g. a token transferred
  to the vault directly instead of through ``deposit``): reported and alarmed as a
  warning. A shortfall is critical. A ledger whose balances differ from its journal,
  or whose journal transactions do not balance, latches a critical alarm.
- Safe to run at any time and concurrently with the daemon (`watcher reconcile`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from watcher.chain.vault import ZERO_ADDRESS, balance_request, decode_uint, withdrawn_request
from watcher.domain.amounts import format_amount, parse_decimal_amount, plain_decimal
from watcher.settings import NetworkConfig
from watcher.store.alarms import AlarmKind, raise_alarm
from watcher.store.models import NetworkCursor, Reconciliation, utcnow
from watcher.store.reconciliation import (
    IntegrityProblem,
    consistent_reads,
    ledger_integrity,
    ledger_view,
    withdrawals_in_flight,
)

if TYPE_CHECKING:
    from watcher.app import App

log = logging.getLogger("watcher.reconciler")

INTEGRITY_KEY = "ledger-integrity"


@dataclass
class AssetResult:
    asset: str
    token: str
    decimals: int
    onchain: int
    expected: int
    breakdown: dict[str, str]
    tolerance: int

    @property
    def difference(self) -> int:
        return self.onchain - self.expected

    @property
    def status(self) -> str:
        if abs(self.difference) <= self.tolerance:
            return "ok"
        return "unattributed_inflow" if self.difference > 0 else "shortfall"

    def as_dict(self) -> dict[str, Any]:
        def fmt(units: int) -> str:
            return format_amount(units, self.decimals)

        return {
            "asset": self.asset,
            "token": self.token,
            "vaultBalance": fmt(self.onchain),
            "ledgerExpected": fmt(self.expected),
            "difference": fmt(self.difference),
            "status": self.status,
            "breakdown": {k: fmt(int(v)) for k, v in self.breakdown.items()},
        }


@dataclass
class NetworkResult:
    network: str
    chain_id: int
    block: int | None
    assets: list[AssetResult] = field(default_factory=list)
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "chainId": self.chain_id,
            "block": self.block,
            "skipped": self.skipped,
            "assets": [a.as_dict() for a in self.assets],
        }


@dataclass
class Report:
    networks: list[NetworkResult]
    integrity: list[IntegrityProblem]

    @property
    def ok(self) -> bool:
        return not self.integrity and all(a.status == "ok" for n in self.networks for a in n.assets)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "networks": [n.as_dict() for n in self.networks],
            "integrity": [{"problem": p.what, "detail": p.detail} for p in self.integrity],
        }


def vault_assets(network: NetworkConfig) -> list[tuple[str, str, int]]:
    """(ledger asset, token address or 0x0 for native, token decimals) of a network."""
    pairs = [(network.native_asset, ZERO_ADDRESS, network.native_decimals)]
    pairs += [(t.asset, t.address, t.decimals) for t in network.tokens]
    return pairs


async def _onchain_balance(app: App, network: NetworkConfig, token: str, block: int) -> int:
    raw = await app.rpc[network.name].call(*balance_request(token, network.vault, hex(block)))
    return int(raw, 16) if raw not in ("0x", None) else 0


#: Comparisons tried while the listener moves its cursor under them.
CURSOR_ATTEMPTS = 5


async def _cursor_mark(app: App, chain_id: int) -> tuple[Any, ...] | None:
    """The listener's cursor as it stands: a step that credits anything rewrites it
    (block, hash, head) in the same transaction as its credits."""
    async with app.sessions() as s:
        row = await s.get(NetworkCursor, chain_id)
        if row is None:
            return None
        return (row.scanned_block, row.scanned_hash, row.head, row.updated_at)


async def reconcile_network(app: App, network: NetworkConfig) -> NetworkResult:
    """The vault's balances at the listener's scanned block against the ledger. The
    ledger is read after the chain, so a listener step that committed credits above
    that block in between would look like a shortfall: the comparison is only kept if
    the cursor did not move meanwhile, else made again at the new block."""
    for _ in range(CURSOR_ATTEMPTS):
        mark = await _cursor_mark(app, network.chain_id)
        if mark is None:
            result = NetworkResult(network.name, network.chain_id, None)
            result.skipped = "the deposit listener has not scanned this network yet"
            return result
        result = await _compare_at(app, network, int(mark[0]))
        if await _cursor_mark(app, network.chain_id) == mark:
            return result
        log.info("%s: the listener's cursor moved during reconciliation; again", network.name)
    result = NetworkResult(network.name, network.chain_id, None)
    result.skipped = (
        f"the listener's cursor moved during each of {CURSOR_ATTEMPTS} comparisons "
        "(compared again at the next run)"
    )
    return result


async def _compare_at(app: App, network: NetworkConfig, block: int) -> NetworkResult:
    result = NetworkResult(network.name, network.chain_id, block)
    tolerance_units = app.settings.scheduler.reconcile_tolerance
    for asset, token, decimals in vault_assets(network):
        onchain = await _onchain_balance(app, network, token, block)
        precision = app.settings.assets[asset].precision
        async with app.audit_sessions() as s:
            await consistent_reads(s)
            view = await ledger_view(
                s,
                chain_id=network.chain_id,
                asset=asset,
                token=token,
                token_decimals=decimals,
                ledger_precision=precision,
                block=block,
            )
            in_flight = await withdrawals_in_flight(s, chain_id=network.chain_id, token=token)
        # A payout mined at or below the block before the tracker recorded its receipt
        # left the vault already: the vault's own withdrawn(id) at the block says so.
        paid = 0
        for withdrawal_id, amount in in_flight:
            raw = await app.rpc[network.name].call(
                *withdrawn_request(network.vault, withdrawal_id, hex(block))
            )
            if raw not in ("0x", None) and decode_uint(raw):
                paid += amount
        if paid:
            view = dataclasses.replace(view, mined_unsettled=view.mined_unsettled + paid)
        tolerance = parse_decimal_amount(plain_decimal(tolerance_units), decimals)
        result.assets.append(
            AssetResult(asset, token, decimals, onchain, view.expected, view.as_dict(), tolerance)
        )
    return result


async def reconcile(app: App, network_name: str | None = None) -> Report:
    networks = [
        n for n in app.settings.enabled_networks if network_name is None or n.name == network_name
    ]
    results = [await reconcile_network(app, n) for n in networks]
    async with app.audit_sessions() as s:
        await consistent_reads(s)
        problems = await ledger_integrity(s)
    report = Report(results, problems)
    await _record(app, report)
    return report


async def _record(app: App, report: Report) -> None:
    async with app.sessions.begin() as s:
        for net in report.networks:
            for a in net.assets:
                assert net.block is not None
                row = await s.get(Reconciliation, (net.chain_id, a.asset))
                if row is None:
                    row = Reconciliation(chain_id=net.chain_id, asset=a.asset)
                    s.add(row)
                row.token, row.block_number = a.token, net.block
                row.onchain, row.expected, row.difference = a.onchain, a.expected, a.difference
                row.details, row.checked_at = {"status": a.status, **a.breakdown}, utcnow()
                app.metrics.reconciliation_diff.labels(net.network, a.asset).set(
                    a.difference / 10**a.decimals
                )
                if a.status != "ok":
                    what = "unattributed inflow" if a.difference > 0 else "shortfall"
                    await raise_alarm(
                        s,
                        AlarmKind.RECONCILIATION_MISMATCH,
                        f"{net.chain_id}:{a.asset}:{a.difference}",
                        f"{net.network} {a.asset}: vault {what} of "
                        f"{format_amount(abs(a.difference), a.decimals)} at block {net.block}",
                        a.as_dict(),
                        severity="warning" if a.difference > 0 else "critical",
                        once=True,
                    )
                    log.warning("reconciliation: %s %s %s", net.network, a.asset, what)
        if report.integrity:
            digest = hashlib.sha256(
                "\n".join(p.detail for p in report.integrity).encode()
            ).hexdigest()[:16]
            await raise_alarm(
                s,
                AlarmKind.RECONCILIATION_MISMATCH,
                f"{INTEGRITY_KEY}:{digest}",
                f"ledger integrity: {len(report.integrity)} problem(s): "
                f"{report.integrity[0].detail}",
                {"problems": [p.detail for p in report.integrity[:50]]},
                once=True,
            )


async def last_results(app: App) -> list[Reconciliation]:
    async with app.sessions() as s:
        return list(await s.scalars(select(Reconciliation).order_by(Reconciliation.chain_id)))


class Reconciler:
    """The scheduled job around :func:`reconcile`."""

    name = "reconciler"
    delay_first = True
    # A stop cancels a reconciliation in flight instead of waiting for it: it reads,
    # then records its findings in one transaction, so a cancelled run leaves nothing
    # half-written and the next one starts over (at 1M deposits the ledger check reads
    # the whole journal: seconds on either database).
    interruptible = True

    def __init__(self, app: App) -> None:
        self.app = app
        self.interval_seconds = float(app.settings.scheduler.reconcile_interval_seconds)

    async def tick(self) -> None:
        await reconcile(self.app)
