"""Operator commands that read the shared database beside a running daemon:
``watcher status``, ``watcher reconcile``, ``watcher alarms list|ack``."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from watcher.cli.common import EXIT_USAGE, ConfigOpt, DbOpt, console, err, load

if TYPE_CHECKING:
    from watcher.settings import Settings

T = TypeVar("T")
STYLE = {"healthy": "bold green", "degraded": "bold yellow", "down": "bold red"}


async def open_app(settings: Settings) -> Any:
    """The read-only app view, refusing a database the daemon has never migrated."""
    from watcher.app import build
    from watcher.store.db import require_schema

    app = await build(settings, migrate=False, services=False)
    try:
        await require_schema(app.engine)
    except BaseException:
        await app.close()
        raise
    return app


async def with_app(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    app = await open_app(settings)
    try:
        return await fn(app)
    finally:
        await app.close()


def _opt(value: Any) -> str:
    return "-" if value is None else str(value)


def _short(value: str | None, wide: bool, keep: int = 10) -> str:
    """A hash or address shortened to its first characters unless ``wide``."""
    if not value:
        return "-"
    return value if wide or len(value) <= keep + 2 else value[:keep] + "…"


def _counts(by_state: dict[str, Any]) -> str:
    parts = [f"{state} {count}" for state, count in sorted(by_state.items())]
    return ", ".join(parts) if parts else "none"


def _age_text(seconds: Any) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _replica_parts(doc: dict[str, Any]) -> list[Any]:
    """The replicas (id, roles, held leases, heartbeat) and who holds each chain role."""
    parts: list[Any] = []
    replicas = doc.get("replicas") or []
    running = [r for r in replicas if r["running"]]
    leases = doc.get("leases") or []
    if len(running) <= 1 and all(item["holder"] is not None for item in leases):
        # One daemon holding everything (SQLite, or a single replica): one line.
        if running:
            r = running[0]
            parts.append(
                Text(
                    f"Replica {r['replicaId']} ({r['roles']}): holds {len(r['held'])} chain role(s)"
                )
            )
        return parts
    if replicas:
        rt = Table(title=f"Replicas ({len(replicas)})", title_justify="left")
        for col in ("replica", "roles", "running", "heartbeat", "holds"):
            rt.add_column(col, no_wrap=col != "holds")
        for r in replicas:
            rt.add_row(
                str(r["replicaId"]),
                str(r["roles"]),
                "yes" if r["running"] else "no",
                f"{r['heartbeatAgeSeconds']} s ago",
                ", ".join(r["held"]) or "-",
            )
        parts.append(rt)
    if leases:
        lt = Table(title="Chain roles (leases)", title_justify="left")
        for col in ("role", "holder", "token", "lease"):
            lt.add_column(col, no_wrap=True)
        for item in leases:
            lease: str | Text
            if item["holder"] is not None:
                lease = f"{item['expiresInSeconds']} s left"
            else:
                lease = Text(f"NO HOLDER for {item['unheldSeconds']} s", style="yellow")
            lt.add_row(item["role"], item["holder"] or "-", str(item["token"]), lease)
        parts.append(lt)
    return parts


def render_status(doc: dict[str, Any], *, wide: bool = False) -> Group:
    """The status document for people, most important first (verdict, reasons, alarms,
    networks, withdrawals, deposits, balances, reconciliation), so that a short screen
    under ``--watch`` cuts the least important part. Empty sections are one line."""
    parts: list[Any] = []
    head = Text(f"watcher: {doc['status'].upper()}", style=STYLE[doc["status"]])
    d = doc["daemon"]
    if d.get("running"):
        head.append(f"   daemon pid {d.get('pid')}, heartbeat {d.get('heartbeatAgeSeconds')} s ago")
    elif d.get("stoppedAt"):
        head.append(f"   daemon stopped at {str(d['stoppedAt'])[:19].replace('T', ' ')} UTC")
    else:
        head.append("   daemon NOT running", style="red")
    parts.append(head)
    for reason in doc["reasons"]:
        parts.append(Text(f"  - {reason}", style="yellow"))

    alarms = doc["alarms"]
    if alarms:
        al = Table(title=f"Latched alarms ({len(alarms)})", title_justify="left")
        for col in ("id", "kind", "severity", "count", "message"):
            al.add_column(col)
        order = {"critical": 0, "error": 1, "warning": 2}
        for a in sorted(alarms, key=lambda a: (order.get(a["severity"], 3), a["id"])):
            al.add_row(str(a["id"]), a["kind"], a["severity"], str(a["count"]), a["message"])
        parts.append(al)
    else:
        parts.append(Text("Latched alarms: none"))

    parts.extend(_replica_parts(doc))

    nets = Table(title="Networks", title_justify="left")
    net_rows: list[tuple[str, ...]] = []
    for n in doc["networks"]:
        rpc = " ".join(("ok" if e["ok"] else "DOWN") for e in n["rpc"]) or "-"
        lag = "-" if n["lagBlocks"] is None else f"{n['lagBlocks']} blk / {n['lagSeconds']} s"
        if n.get("backfill") and not n["backfill"]["done"]:
            lag += f" (backfill {n['backfill']['progress']})"
        net_rows.append(
            (
                n["name"],
                str(n["chainId"]),
                _opt(n["head"]),
                f"{_opt(n['safe'])}/{_opt(n['finalized'])}",
                _opt(n["cursor"]),
                lag,
                n["rule"],
                rpc,
                "PAUSED" if (n.get("vault") or {}).get("paused") else "running",
            )
        )
    # Names, numbers and states stay whole on a narrow terminal (80 columns); the lag
    # and the confirmation rule wrap instead.
    for i, col in enumerate(
        ("network", "chain", "head", "safe/fin", "cursor", "lag", "rule", "rpc", "vault")
    ):
        if col in ("lag", "rule"):  # wrapped between words, never inside one
            longest = max([len(col), *(len(w) for r in net_rows for w in r[i].split())])
            nets.add_column(col, min_width=longest)
        else:
            width = max([len(col), *(len(r[i]) for r in net_rows)])
            nets.add_column(col, no_wrap=True, min_width=width)
    for row in net_rows:
        nets.add_row(*row)
    parts.append(nets if doc["networks"] else Text("Networks: none enabled"))

    by_state = doc["withdrawals"]["byState"]
    if by_state:
        wd = Table(title="Withdrawals in progress", title_justify="left")
        wd.add_column("state")
        wd.add_column("count", justify="right")
        wd.add_column("oldest")
        for state, v in sorted(by_state.items()):
            wd.add_row(state, str(v["count"]), _age_text(v["oldestAgeSeconds"]))
        parts.append(wd)
    else:
        parts.append(Text("Withdrawals in progress: none"))

    waiting = doc["deposits"]["waiting"]
    counts = f"{doc['deposits'].get('stored', 0)} stored"
    if doc["deposits"]["byState"]:
        counts += ", " + _counts(doc["deposits"]["byState"])
    if waiting:
        dep = Table(
            title=f"Deposits waiting ({len(waiting)}); all deposits: {counts}",
            title_justify="left",
        )
        for col in ("chain", "tx", "log", "account", "amount", "conf", "eta"):
            dep.add_column(col, no_wrap=True)
        for w in waiting if wide else waiting[:20]:
            dep.add_row(
                str(w["chainId"]),
                _short(w["txHash"], wide, 12),
                str(w["logIndex"]),
                _short(w["account"], wide),
                f"{w['amount']} {w['asset'] or '?'}",
                f"{w['confirmations']}/{w['required']}",
                "-" if w["etaSeconds"] is None else f"{w['etaSeconds']} s",
            )
        parts.append(dep)
    else:
        parts.append(Text(f"Deposits waiting: none; all deposits: {counts}"))

    rows = [(b, a) for b in doc["balances"] for a in b["assets"]]
    if rows:
        bal = Table(title="Vault and hot wallet", title_justify="left")
        for col in ("network", "asset", "vault", "pending out", "covered"):
            bal.add_column(col, no_wrap=True)
        for b, a in rows:
            bal.add_row(
                b["network"],
                a["asset"],
                a["vaultBalance"],
                a["pendingOutflow"],
                "yes" if a["covered"] else "NO",
            )
        parts.append(bal)
    else:
        parts.append(Text("Vault balances: none (no network answered)"))
    for b in doc["balances"]:
        if b.get("hotWallet"):
            gas = b.get("gas", "-")
            parts.append(
                Text(f"Hot wallet {b['network']}: {_short(b['hotWallet'], wide)} gas {gas}")
            )
        else:
            parts.append(Text(f"Hot wallet {b['network']}: unknown (daemon has not reported it)"))

    if doc["reconciliation"]:
        rec = Table(title="Reconciliation (last run)", title_justify="left")
        for col in ("chain", "asset", "block", "difference", "status"):
            rec.add_column(col)
        for r in doc["reconciliation"]:
            rec.add_row(
                str(r["chainId"]), r["asset"], _opt(r["block"]), r["difference"], _opt(r["status"])
            )
        parts.append(rec)
    else:
        parts.append(Text("Reconciliation: not run yet"))
    return Group(*parts)


def show_status(
    settings: Settings,
    *,
    as_json: bool,
    watch: bool,
    interval: float,
    console: Console,
    wide: bool = False,
) -> int:
    from watcher.services.status import collect_status

    async def once(app: Any) -> dict[str, Any]:
        return await collect_status(app)

    async def run() -> int:
        app = await open_app(settings)
        try:
            doc = await collect_status(app)
            if not watch:
                if as_json:
                    console.print_json(json.dumps(doc, default=str))
                else:
                    console.print(render_status(doc, wide=wide))
                return int(doc["exitCode"])
            with Live(render_status(doc, wide=wide), console=console, refresh_per_second=4) as live:
                while True:
                    await asyncio.sleep(interval)
                    doc = await collect_status(app)
                    live.update(render_status(doc, wide=wide))
        finally:
            await app.close()

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0


def run_reconcile(
    settings: Settings, network: str | None, *, as_json: bool, console: Console
) -> int:
    from watcher.services.reconciler import reconcile as reconcile_now

    async def go(app: Any) -> dict[str, Any]:
        report = await reconcile_now(app, network)
        return report.as_dict()

    doc = asyncio.run(with_app(settings, go))
    if as_json:
        console.print_json(json.dumps(doc))
    else:
        table = Table(title="Vault vs ledger", title_justify="left")
        for col in ("network", "block", "asset", "vault", "ledger expects", "difference", "status"):
            table.add_column(col, no_wrap=True)
        for n in doc["networks"]:
            if n["skipped"]:
                table.add_row(n["network"], "-", "-", "-", "-", "-", n["skipped"])
            for a in n["assets"]:
                table.add_row(
                    n["network"],
                    str(n["block"]),
                    a["asset"],
                    a["vaultBalance"],
                    a["ledgerExpected"],
                    a["difference"],
                    a["status"],
                )
        console.print(table)
        for p in doc["integrity"]:
            console.print(f"[red]ledger integrity: {p['problem']}: {p['detail']}[/]")
        console.print("[green]consistent[/]" if doc["ok"] else "[red]differences found[/]")
    return 0 if doc["ok"] else 1


def list_alarms(settings: Settings, *, as_json: bool, console: Console) -> int:
    from watcher.services.notifier import alarm_document
    from watcher.store.alarms import active_alarms

    async def go(app: Any) -> list[dict[str, Any]]:
        async with app.sessions() as s:
            return [alarm_document(a) for a in await active_alarms(s)]

    docs = asyncio.run(with_app(settings, go))
    if as_json:
        console.print_json(json.dumps(docs))
        return 0
    table = Table(title=f"Latched alarms ({len(docs)})", title_justify="left")
    for col in ("id", "kind", "key", "severity", "count", "raised", "message"):
        table.add_column(col)
    for a in docs:
        table.add_row(
            str(a["id"]),
            a["kind"],
            a["key"],
            a["severity"],
            str(a["count"]),
            a["raisedAt"][:19],
            a["message"],
        )
    console.print(table)
    return 0


def ack_alarm(settings: Settings, alarm_id: int, by: str, console: Console) -> int:
    from watcher.store.alarms import acknowledge

    async def go(app: Any) -> str:
        async with app.sessions.begin() as s:
            alarm = await acknowledge(s, alarm_id, by)
            if alarm is None:
                return "missing"
            return "ok"

    result = asyncio.run(with_app(settings, go))
    if result == "missing":
        console.print(f"[red]no alarm {alarm_id}[/]")
        return 1
    console.print(f"alarm {alarm_id} acknowledged by {by}")
    return 0


# --------------------------------------------------------------------------- commands

#: How long ``watcher status`` waits for the running daemon's answer before it reads
#: the database itself (a daemon too busy or hung to answer is what status must show).
DAEMON_STATUS_TIMEOUT_S = 3.0


def status_from_daemon(config: Path | None) -> dict[str, Any] | None:
    """The status document from the running daemon's own API (``GET /v1/status``):
    the same document the CLI would compute, without importing web3, SQLAlchemy and the
    app (about 1.3 s of imports). Used when a live daemon of this host is the one meant
    (no ``--config``, or the daemon's own config directory); None otherwise, or when it
    does not answer in time with a status document, and the CLI reads the database."""
    import urllib.error
    import urllib.request

    from watcher.runtime import RuntimeProblem, find_daemon

    try:
        daemon = find_daemon()
    except RuntimeProblem:
        return None  # several daemons: load() says which --config is needed
    if daemon is None or not daemon.alive():
        return None
    wanted = config or (Path(d) if (d := os.environ.get("WATCHER_CONFIG_DIR")) else None)
    if wanted is not None and wanted.resolve() != daemon.config_dir.resolve():
        return None
    try:
        with urllib.request.urlopen(
            f"{daemon.api_url}/v1/status", timeout=DAEMON_STATUS_TIMEOUT_S
        ) as answer:
            doc = json.loads(answer.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("exitCode"), int):
        return None
    return doc


alarms_app = typer.Typer(no_args_is_help=True, help="Latched alarms")


def status(
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="the status document as JSON")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="refresh in place")] = False,
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 2.0,
    wide: Annotated[
        bool, typer.Option("--wide", help="full hashes and addresses, every waiting deposit")
    ] = False,
) -> None:
    """Networks, deposits, withdrawals, balances, alarms. Exit 0 healthy, 1 degraded, 2 down."""
    if not watch and database_url is None and not os.environ.get("WATCHER_DATABASE_URL"):
        doc = status_from_daemon(config)
        if doc is not None:
            if as_json:
                console.print_json(json.dumps(doc, default=str))
            else:
                console.print(render_status(doc, wide=wide))
            raise typer.Exit(int(doc["exitCode"]))
    settings = load(config, database_url)
    raise typer.Exit(
        show_status(
            settings, as_json=as_json, watch=watch, interval=interval, console=console, wide=wide
        )
    )


def reconcile(
    network: Annotated[str | None, typer.Option("--network", help="only this network")] = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Vault balances against ledger liabilities, now. Exit 1 when they differ."""
    settings = load(config, database_url)
    if network is not None and network not in {n.name for n in settings.enabled_networks}:
        err.print(f"unknown or disabled network: {network}")
        raise typer.Exit(EXIT_USAGE)
    raise typer.Exit(run_reconcile(settings, network, as_json=as_json, console=console))


@alarms_app.command("list")
def alarms_list(
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Alarms that are latched (not yet acknowledged)."""
    raise typer.Exit(list_alarms(load(config, database_url), as_json=as_json, console=console))


@alarms_app.command("ack")
def alarms_ack(
    alarm_id: Annotated[int, typer.Argument(help="alarm id")],
    by: Annotated[str, typer.Option(help="who acknowledges (recorded)")] = "operator",
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Acknowledge a latched alarm (it stops counting against health)."""
    raise typer.Exit(ack_alarm(load(config, database_url), alarm_id, by, console))


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(reconcile)
    app.add_typer(alarms_app, name="alarms")
