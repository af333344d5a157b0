"""The status document: what `watcher status`, ``GET /v1/status`` and operators read.

Built from the shared database (so it works from another process beside the daemon)
plus a direct probe of every RPC endpoint and of the hot wallet's and vault's
balances. It never contains secrets: RPC URLs are redacted and the hot wallet is
shown by address only.

Verdict: ``down`` (exit 2) when the daemon's heartbeat is missing or stale, or when
no RPC endpoint of an enabled network answers; ``degraded`` (exit 1) when an alarm
is latched, a network lags beyond its budget, an endpoint is down or a withdrawal
waits for hot-wallet funds; else ``healthy`` (exit 0).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import func, select

from watcher.chain.errors import RpcError
from watcher.chain.rpc import redact_url
from watcher.chain.vault import ZERO_ADDRESS, balance_request
from watcher.domain.amounts import format_amount
from watcher.domain.confirmations import confirmations, eta_seconds
from watcher.domain.states import (
    WITHDRAWAL_HOLDING,
    DepositState,
)
from watcher.runtime import pid_alive
from watcher.services.reconciler import vault_assets
from watcher.settings import NetworkConfig, Settings
from watcher.store import vaults
from watcher.store.alarms import active_alarms
from watcher.store.leases import all_leases
from watcher.store.models import (
    Block,
    Deposit,
    Heartbeat,
    NetworkCursor,
    Reconciliation,
    Withdrawal,
)

if TYPE_CHECKING:
    from watcher.app import App

HEARTBEAT_STALE_SECONDS = 30
REPLICA_PREFIX = "replica:"  # heartbeat rows of the replicas (app.py)
REPLICA_FORGET_SECONDS = 3600  # a replica silent this long is not listed any more
PROBE_TIMEOUT_SECONDS = 3
LISTENER_REPORT_SECONDS = 60  # a listener report older than this is not the present
EXIT_CODES = {"healthy": 0, "degraded": 1, "down": 2}
# The states status counts: the ones rows pass through, not the final ones.
DEPOSIT_LIVE = sorted(
    str(s) for s in (DepositState.PENDING, DepositState.ORPHANED, DepositState.REVERSED)
)
WITHDRAWAL_LIVE = sorted(str(s) for s in WITHDRAWAL_HOLDING)


def hot_wallet_address(settings: Settings) -> str | None:
    """The hot wallet's address, without keeping the key around."""
    from eth_account import Account

    if settings.secrets.signer_key is not None:
        return str(Account.from_key(settings.secrets.signer_key.get_secret_value()).address)
    if settings.secrets.signer_keystore is not None:
        import json

        try:
            doc = json.loads(settings.secrets.signer_keystore.read_text())
        except (OSError, ValueError):
            return None
        address = doc.get("address")
        return f"0x{address.removeprefix('0x')}" if isinstance(address, str) else None
    return None


class ProbeError(Exception):
    """An endpoint's answer to the probe is unusable; the message says how."""


def _probe_answer(status: int, raw: bytes) -> tuple[int, int]:
    """(chain id, head) from the probe's batch answer, whatever shape it came in: any
    answer a node or a proxy can give (HTTP error, HTML, a single error object instead
    of the batch, wrong ids, missing or non-hex results) is a ``ProbeError``."""
    try:
        data = json.loads(raw)
    except ValueError:
        text = raw[:60].decode("utf-8", "replace").strip()
        raise ProbeError(f"HTTP {status}, not JSON: {text!r}") from None
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        raise ProbeError(f"HTTP {status}, error instead of a batch answer: {message!s:.80}")
    if not isinstance(data, list):
        raise ProbeError(f"HTTP {status}, answer is not a batch")
    by_id = {item.get("id"): item for item in data if isinstance(item, dict)}
    values = []
    for rid, method in ((1, "eth_chainId"), (2, "eth_blockNumber")):
        item = by_id.get(rid)
        if item is None:
            raise ProbeError(f"HTTP {status}, no answer to {method}")
        value = item.get("result")
        if not isinstance(value, str) or not value.startswith("0x"):
            error = item.get("error")
            message = error.get("message") if isinstance(error, dict) else value
            raise ProbeError(f"{method}: {message!s:.80}")
        try:
            values.append(int(value, 16))
        except ValueError:
            raise ProbeError(f"{method}: not a hex quantity: {value:.40}") from None
    return values[0], values[1]


async def _probe(http: aiohttp.ClientSession, url: str, expected_chain: int) -> dict[str, Any]:
    body = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []},
    ]
    started = time.monotonic()
    result: dict[str, Any] = {"url": redact_url(url), "ok": False}
    try:
        async with http.post(
            url, json=body, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)
        ) as resp:
            raw = await resp.read()
            chain_id, head = _probe_answer(resp.status, raw)
    except ProbeError as exc:
        result["error"] = redact_url(str(exc)) if "://" in str(exc) else str(exc)
        return result
    except (aiohttp.ClientError, TimeoutError) as exc:
        result["error"] = type(exc).__name__
        return result
    result.update(latencyMs=round((time.monotonic() - started) * 1000), head=head, chainId=chain_id)
    if chain_id != expected_chain:
        result["error"] = f"serves chain {chain_id}"
    else:
        result["ok"] = True
    return result


def describe_failure(failure: dict[str, Any], *, prefix: bool = True) -> str:
    """A listener's reported step failure in one line: the error, then each failing or
    lagging endpoint (redacted URL) and how it fails."""
    parts = [f"{failure.get('error')}: {failure.get('message')}"] if prefix else []
    endpoints = [e for e in failure.get("endpoints") or [] if isinstance(e, dict)]
    if endpoints:
        parts.append(
            "failing endpoints: "
            + ", ".join(f"{e.get('url')} ({e.get('state')}: {e.get('how')})" for e in endpoints)
        )
    return "; ".join(parts)


def _when(iso: str) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS UTC' for people."""
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return iso


def _age(then: datetime | None, now: datetime) -> int | None:
    return None if then is None else max(0, int((now - then).total_seconds()))


# Pending deposits listed per network (the oldest first); all are counted by state.
WAITING_SHOWN = 200
_WAITING_COLUMNS = (
    Deposit.chain_id,
    Deposit.tx_hash,
    Deposit.log_index,
    Deposit.block_number,
    Deposit.account,
    Deposit.token,
    Deposit.asset,
    Deposit.amount,
)


@dataclass
class _NetworkProbe:
    """What one network's RPC answered: each endpoint's probe, then (only when one of
    them answered) the vault's balance of each asset and, last, the hot wallet's gas;
    or the name of the error that batch raised."""

    endpoints: list[dict[str, Any]]
    amounts: list[int] | None = None
    error: str | None = None


async def _read_amounts(
    app: App, network: NetworkConfig, requests: list[tuple[str, list[Any]]]
) -> tuple[list[int] | None, str | None]:
    """One balance batch within the probe's time limit (an endpoint that does not
    answer would only be retried): the amounts, or the name of the error."""
    try:
        answers = await asyncio.wait_for(
            app.rpc[network.name].batch(requests), PROBE_TIMEOUT_SECONDS
        )
        return [int(r, 16) for r in answers], None
    except (RpcError, ValueError, TimeoutError) as exc:
        return None, type(exc).__name__


def _balance_requests(network: NetworkConfig, hot: str | None) -> list[tuple[str, list[Any]]]:
    """The vault's balance of each asset, then the hot wallet's gas."""
    requests = [balance_request(token, network.vault) for _, token, _ in vault_assets(network)]
    if hot:
        requests.append(balance_request(ZERO_ADDRESS, hot))
    return requests


async def _probe_network(app: App, network: NetworkConfig, hot: str | None) -> _NetworkProbe:
    """Every endpoint probed and the balances asked at the same time: one round trip,
    not two. The balances count only when an endpoint answered the probe."""
    balances = asyncio.ensure_future(_read_amounts(app, network, _balance_requests(network, hot)))
    try:
        endpoints = list(
            await asyncio.gather(*(_probe(app.http, u, network.chain_id) for u in network.rpc_urls))
        )
    except BaseException:
        balances.cancel()
        raise
    if not any(e.get("ok") for e in endpoints):
        balances.cancel()
        return _NetworkProbe(endpoints)
    amounts, error = await balances
    return _NetworkProbe(endpoints, amounts, error)


async def collect_status(app: App, *, probe: bool = True) -> dict[str, Any]:
    settings = app.settings
    now = datetime.now(UTC)
    reasons: list[str] = []
    down: list[str] = []

    # The RPC probes and balances go out first and are answered while the database is
    # read (on PostgreSQL, whose statements wait on the server: the call takes the
    # longer of the two, not their sum; SQLite's statements run on this thread without
    # yielding, so there the probes mostly run after them). The hot wallet is the
    # configured key's; a status run without the key learns it from the daemon's
    # heartbeat, and asks its gas after the read.
    hot_configured = hot_wallet_address(settings)
    enabled = list(settings.enabled_networks)
    probing: asyncio.Future[list[_NetworkProbe]] | None = None
    if probe:
        probing = asyncio.ensure_future(
            asyncio.gather(*(_probe_network(app, n, hot_configured) for n in enabled))
        )
    try:
        async with app.sessions() as s:
            beat = await s.get(Heartbeat, "daemon")
            cursors = {c.chain_id: c for c in await s.scalars(select(NetworkCursor))}
            # The oldest pending deposits of each configured network that has a cursor (the
            # only ones an ETA can be given for), as plain rows: one index seek per network
            # (state, chain, block). Ordered across chains, another chain's pending rows
            # (one not configured here) could fill the page and hide these.
            pending: list[Any] = []
            for chain_id in sorted(cursors):
                if settings.network_by_chain(chain_id) is None:
                    continue
                pending += (
                    await s.execute(
                        select(*_WAITING_COLUMNS)
                        .where(Deposit.state == DepositState.PENDING, Deposit.chain_id == chain_id)
                        .order_by(Deposit.block_number)
                        .limit(WAITING_SHOWN)
                    )
                ).all()
            # Counted by state: only the states a deposit or withdrawal passes through
            # (index seeks over the few rows in them). The final states (credited,
            # unsupported; completed, failed, ...) grow for ever: counting them would read
            # the whole table on every call (issue 22); the number of deposits ever stored is
            # the highest id instead, one index seek.
            deposit_counts = dict(
                (
                    await s.execute(
                        select(Deposit.state, func.count())
                        .where(Deposit.state.in_(DEPOSIT_LIVE))
                        .group_by(Deposit.state)
                    )
                ).all()
            )
            deposits_stored = int(await s.scalar(select(func.max(Deposit.id))) or 0)
            w_rows = (
                await s.execute(
                    select(Withdrawal.state, func.count(), func.min(Withdrawal.created_at))
                    .where(Withdrawal.state.in_(WITHDRAWAL_LIVE))
                    .group_by(Withdrawal.state)
                )
            ).all()
            # The pending outflow per (chain, token): plain rows of the live withdrawals
            # (three columns, no ORM objects to build for what is only summed).
            open_withdrawals = (
                await s.execute(
                    select(Withdrawal.chain_id, Withdrawal.token, Withdrawal.amount).where(
                        Withdrawal.state.in_(WITHDRAWAL_LIVE)
                    )
                )
            ).all()
            alarms = await active_alarms(s)
            vault_states = {v.chain_id: v for v in await vaults.all_states(s)}
            recon = list(await s.scalars(select(Reconciliation)))
            replica_beats = list(
                await s.scalars(
                    select(Heartbeat)
                    .where(Heartbeat.name.startswith(REPLICA_PREFIX))
                    .order_by(Heartbeat.name)
                )
            )
            lease_views = await all_leases(await s.connection())
            block_times: dict[tuple[int, int], int] = {}
            for c in cursors.values():
                for number in (c.scanned_block, c.head):
                    if number is not None:
                        blk = await s.get(Block, (c.chain_id, number))
                        if blk is not None:
                            block_times[(c.chain_id, number)] = blk.timestamp
    except BaseException:
        if probing is not None:
            probing.cancel()
        raise

    # Daemon heartbeat
    daemon: dict[str, Any] = {"running": False}
    if beat is None:
        down.append("daemon is not running (no heartbeat in this database)")
    else:
        age = _age(beat.at, now) or 0
        info = dict(beat.info or {})
        stopped_at = info.pop("stoppedAt", None)
        gone = info.get("host") == socket.gethostname() and not pid_alive(beat.pid)
        running = age <= HEARTBEAT_STALE_SECONDS and stopped_at is None and not gone
        daemon = {
            "running": running,
            "heartbeatAt": beat.at.isoformat(),
            "heartbeatAgeSeconds": age,
            "pid": beat.pid,
            **info,
        }
        if stopped_at is not None:
            daemon["stoppedAt"] = stopped_at
            down.append(f"daemon stopped at {_when(stopped_at)} (clean stop)")
        elif gone:
            down.append(
                f"daemon is not running (pid {beat.pid} is gone; last heartbeat {age} s ago)"
            )
        elif age > HEARTBEAT_STALE_SECONDS:
            down.append(f"daemon is not running (last heartbeat {age} s ago)")

    # Replicas and who holds each chain role
    replicas = []
    for rb in replica_beats:
        rinfo = dict(rb.info or {})
        rage = _age(rb.at, now) or 0
        rgone = rinfo.get("host") == socket.gethostname() and not pid_alive(rb.pid)
        if rage > REPLICA_FORGET_SECONDS:
            continue  # long gone: not listed
        replicas.append(
            {
                "replicaId": rinfo.get("replicaId", rb.name.removeprefix(REPLICA_PREFIX)),
                "roles": rinfo.get("roles", "all"),
                "held": rinfo.get("held", []),
                "host": rinfo.get("host"),
                "pid": rb.pid,
                "heartbeatAgeSeconds": rage,
                "running": rage <= HEARTBEAT_STALE_SECONDS
                and "stoppedAt" not in rinfo
                and not rgone,
            }
        )
    leases = [
        {
            "role": v.role,
            "holder": v.holder if v.held else None,
            "token": v.token,
            "expiresInSeconds": round((v.expires_at - v.now).total_seconds(), 1)
            if v.held
            else None,
            "unheldSeconds": round(v.unheld_seconds, 1),
        }
        for v in lease_views
    ]
    budget = float(settings.replicas.unheld_budget_seconds)
    for v in lease_views:
        if v.unheld_seconds > budget:
            reasons.append(
                f"role {v.role} has had no holder for {v.unheld_seconds:.0f} s "
                f"(budget {budget:.0f} s)"
            )

    # What each network's listener reported in the freshest heartbeat that has it
    # (the daemon's, or a replica's that runs it): why its steps fail, if they do.
    reports: dict[str, dict[str, Any]] = {}
    for row in ([beat] if beat is not None else []) + replica_beats:
        for name, report in ((row.info or {}).get("listeners") or {}).items():
            if not isinstance(report, dict):
                continue
            ticked = report.get("tickedAt") or 0
            if ticked > (reports.get(name, {}).get("tickedAt") or 0):
                reports[name] = report

    # Networks
    networks: list[dict[str, Any]] = []
    answers: dict[str, _NetworkProbe] = {}
    if probing is not None:
        answers = {n.name: a for n, a in zip(enabled, await probing, strict=True)}
    for n in sorted(enabled, key=lambda x: x.chain_id):
        cur = cursors.get(n.chain_id)
        endpoints = answers[n.name].endpoints if n.name in answers else []
        live_heads = [e["head"] for e in endpoints if e.get("ok")]
        head = max(live_heads) if live_heads else (cur.head if cur else None)
        cursor = cur.scanned_block if cur else None
        lag_blocks = head - cursor if head is not None and cursor is not None else None
        t_head = block_times.get((n.chain_id, cur.head)) if cur and cur.head is not None else None
        t_cur = block_times.get((n.chain_id, cursor)) if cursor is not None else None
        if t_head is not None and t_cur is not None:
            lag_seconds: int | None = max(0, t_head - t_cur)
        elif lag_blocks is not None:
            lag_seconds = int(lag_blocks * n.block_time_seconds)
        else:
            lag_seconds = None
        entry: dict[str, Any] = {
            "name": n.name,
            "chainId": n.chain_id,
            "rule": n.rule_text,
            "head": head,
            "safe": cur.safe if cur else None,
            "finalized": cur.finalized if cur else None,
            "cursor": cursor,
            "lagBlocks": lag_blocks,
            "lagSeconds": lag_seconds,
            "rpc": endpoints,
        }
        vs = vault_states.get(n.chain_id)
        if vs is not None:
            entry["vault"] = {
                "address": vs.vault,
                "paused": vs.paused,
                "reason": vs.reason,
                "since": vs.changed_at.isoformat(),
            }
            if vs.paused:
                reasons.append(
                    f"{n.name}: vault {vs.vault} is paused: withdrawals wait ({vs.reason})"
                )
        if cur is not None and cur.backfill_to is not None and cur.backfill_from is not None:
            span = max(1, cur.backfill_to - cur.backfill_from)
            done = min(max(0, cur.scanned_block - cur.backfill_from), span)
            entry["backfill"] = {
                "from": cur.backfill_from,
                "to": cur.backfill_to,
                "progress": f"{(Decimal(done) * 100 / span).quantize(Decimal('0.1'))}%",
                "done": cur.scanned_block >= cur.backfill_to,
            }
        networks.append(entry)
        failing = "; ".join(
            f"{e['url']}: {e.get('error', 'down')}" for e in endpoints if not e["ok"]
        )
        if probe and endpoints and not any(e["ok"] for e in endpoints):
            down.append(f"{n.name}: no RPC endpoint answers ({failing})")
        elif probe and any(not e["ok"] for e in endpoints):
            reasons.append(
                f"{n.name}: {sum(not e['ok'] for e in endpoints)} RPC endpoint(s) down ({failing})"
            )
        report = reports.get(n.name)
        if report is not None:
            entry["listener"] = report
            failure = report.get("failure")
            fresh = time.time() - (report.get("tickedAt") or 0) <= LISTENER_REPORT_SECONDS
            if fresh and isinstance(failure, dict) and failure.get("failedTicks", 0) >= 2:
                since = int(time.time() - (failure.get("since") or time.time()))
                reasons.append(
                    f"{n.name}: listener steps failing for {since} s "
                    f"({failure.get('failedTicks')} ticks), cursor not advancing: "
                    f"{describe_failure(failure)}"
                )
            elif fresh and (report.get("lagBlocks") or 0) > settings.listener.lag_budget_blocks:
                trouble = describe_failure({"endpoints": report.get("endpoints")}, prefix=False)
                if trouble:
                    reasons.append(
                        f"{n.name}: listener {report.get('lagBlocks')} blocks behind the best "
                        f"head; {trouble}"
                    )
        if cur is None:
            reasons.append(f"{n.name}: not scanned yet")
        elif lag_blocks is not None and lag_blocks > settings.listener.lag_budget_blocks:
            reasons.append(
                f"{n.name}: lag {lag_blocks} blocks > budget {settings.listener.lag_budget_blocks}"
            )

    # Deposits waiting
    waiting: list[dict[str, Any]] = []
    for d in pending:
        net = settings.network_by_chain(d.chain_id)
        dcur = cursors.get(d.chain_id)
        if net is None or dcur is None or dcur.head is None:
            continue
        rule = net.rule
        tagged = dcur.finalized if net.finality == "finalized" else dcur.safe
        required = net.confirmations
        try:
            eta: int | None = eta_seconds(
                rule, d.block_number, dcur.head, net.block_time_seconds, tagged=tagged
            )
        except ValueError:
            eta = None
        token = net.token_by_address(d.token)
        decimals = token.decimals if token else net.native_decimals
        waiting.append(
            {
                "chainId": d.chain_id,
                "txHash": d.tx_hash,
                "logIndex": d.log_index,
                "account": d.account,
                "asset": d.asset,
                "amount": format_amount(d.amount, decimals),
                "confirmations": confirmations(dcur.head, d.block_number),
                "required": required if required is not None else net.finality,
                "etaSeconds": eta,
            }
        )

    # Withdrawals by state
    by_state = {
        state: {"count": count, "oldestAgeSeconds": _age(oldest, now)}
        for state, count, oldest in w_rows
    }
    queued = by_state.get("queued", {}).get("count", 0)
    if queued:
        reasons.append(
            f"{queued} withdrawal(s) queued (funds, gas, co-signatures or a paused vault: "
            "`watcher withdrawals list --state queued` shows each reason)"
        )

    # Hot wallet and vault balances against the pending outflow
    outflow: dict[tuple[int, str], int] = defaultdict(int)
    for chain_id, token_address, amount in open_withdrawals:
        outflow[(chain_id, token_address)] += amount
    hot = hot_configured or (beat.info.get("hotWallet") if beat else None)
    wallets: list[dict[str, Any]] = []
    for n in enabled:
        answer = answers.get(n.name)
        if answer is None or not any(e.get("ok") for e in answer.endpoints):
            continue
        item: dict[str, Any] = {"network": n.name, "hotWallet": hot, "assets": []}
        amounts, error = answer.amounts, answer.error
        if amounts is not None and hot and not hot_configured:
            # The hot wallet learnt from the heartbeat: its gas, asked now.
            gas, error = await _read_amounts(app, n, [balance_request(ZERO_ADDRESS, hot)])
            amounts = None if gas is None else [*amounts, *gas]
        tokens = vault_assets(n)
        if amounts is not None and len(amounts) != len(tokens) + (1 if hot else 0):
            amounts, error = None, "wrong number of answers"
        if amounts is None:
            item["error"] = error
            wallets.append(item)
            continue
        if hot:
            item["gas"] = format_amount(amounts.pop(), n.native_decimals)
        for (asset, token_addr, decimals), vault_bal in zip(tokens, amounts, strict=True):
            out = outflow.get((n.chain_id, token_addr), 0)
            item["assets"].append(
                {
                    "asset": asset,
                    "vaultBalance": format_amount(vault_bal, decimals),
                    "pendingOutflow": format_amount(out, decimals),
                    "covered": vault_bal >= out,
                }
            )
            if vault_bal < out:
                reasons.append(f"{n.name}: vault {asset} below pending outflow")
        wallets.append(item)

    reconciliation = [
        {
            "chainId": r.chain_id,
            "asset": r.asset,
            "block": r.block_number,
            "difference": str(r.difference),
            "status": r.details.get("status"),
            "checkedAt": r.checked_at.isoformat(),
        }
        for r in recon
    ]
    for a in alarms:
        reasons.append(f"alarm {a.id} {a.kind}: {a.message}")

    verdict = "down" if down else ("degraded" if reasons else "healthy")
    return {
        "status": verdict,
        "exitCode": EXIT_CODES[verdict],
        "reasons": down + reasons,
        "generatedAt": now.isoformat(),
        "daemon": daemon,
        "replicas": replicas,
        "leases": leases,
        "networks": networks,
        "deposits": {"byState": deposit_counts, "stored": deposits_stored, "waiting": waiting},
        "withdrawals": {"byState": by_state},
        "balances": wallets,
        "reconciliation": reconciliation,
        "alarms": [
            {
                "id": a.id,
                "kind": a.kind,
                "severity": a.severity,
                "message": a.message,
                "count": a.count,
                "raisedAt": a.raised_at.isoformat(),
            }
            for a in alarms
        ],
    }
