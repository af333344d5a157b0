"""The ``watcher`` command line (typer + rich)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from watcher.devnet_cli import devnet_app
from watcher.domain.amounts import plain_decimal
from watcher.settings import ConfigError, NetworkConfig, Settings, load_settings
from watcher.withdrawals_cli import withdrawals_app

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="On-chain deposit/withdraw watcher"
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema")
app.add_typer(db_app, name="db")
alarms_app = typer.Typer(no_args_is_help=True, help="Latched alarms")
app.add_typer(alarms_app, name="alarms")
app.add_typer(withdrawals_app, name="withdrawals")
app.add_typer(devnet_app, name="devnet")

console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="config directory (default: config/ or $WATCHER_CONFIG_DIR)"
    ),
]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL (or $WATCHER_DATABASE_URL)")
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings(
    config: Path | None, database_url: str | None = None, *, find: bool = True, **kw: object
) -> Settings:
    """The configuration: ``--config``, else ``$WATCHER_CONFIG_DIR``, else (for operator
    commands, ``find=True``) the one daemon running on this host, else ``config/``."""
    from watcher.runtime import RuntimeProblem, find_daemon

    if config is None and find and not os.environ.get("WATCHER_CONFIG_DIR"):
        try:
            daemon = find_daemon()
        except RuntimeProblem as exc:
            raise _fail(str(exc)) from None
        if daemon is not None:
            config = daemon.config_dir
            if database_url is None and not os.environ.get("WATCHER_DATABASE_URL"):
                if daemon.database_has_password:
                    raise _fail(
                        f"the running daemon ({daemon.describe()}) uses the database "
                        f"{daemon.database_url}: set $WATCHER_DATABASE_URL (with its password)"
                    )
                database_url = daemon.database_url
    try:
        settings = load_settings(config, database_url=database_url, **kw)  # type: ignore[arg-type]
    except ConfigError as exc:
        err.print(f"[bold red]configuration error[/]\n{exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if not settings.networks:
        raise _fail(
            f"{settings.config_dir}: not a watcher config directory (no networks/*.toml); "
            "pass --config DIR or set $WATCHER_CONFIG_DIR"
        )
    return settings


def _configure_logs(settings: Settings) -> None:
    from watcher import logs

    logs.configure(settings.logging.level, settings.logging.json_lines)


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the daemon on uvloop (libuv) when installed: the same asyncio API with a
    faster loop and transports (intake ~10 % faster in bench/withdrawals.py)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main)
        return
    uvloop.run(main)


@app.command()
def run(
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    host: Annotated[str | None, typer.Option(help="API host (or $WATCHER_API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="API port (or $WATCHER_API_PORT)")] = None,
    roles: Annotated[
        str,
        typer.Option(
            help="all: API and chain roles; api: the HTTP API only; chain: the chain roles "
            "(listeners, sender, tracker, reconciler, notifier), each taken by lease "
            "(several replicas need PostgreSQL; docs/replicas.md)"
        ),
    ] = "all",
    replica_id: Annotated[
        str | None,
        typer.Option(help="This replica's name in status and leases (default: host-pid)"),
    ] = None,
) -> None:
    """Run the daemon: listeners, sender, tracker, scheduler jobs and the HTTP API."""
    if roles not in ("all", "api", "chain"):
        raise _fail(f"--roles must be all, api or chain, not {roles!r}")
    if replica_id is not None and not (0 < len(replica_id) <= 100 and replica_id.isprintable()):
        raise _fail("--replica-id must be 1 to 100 printable characters")
    settings = _settings(config, database_url, find=False, api_host=host, api_port=port)
    _configure_logs(settings)
    from watcher.app import serve
    from watcher.runtime import RuntimeProblem

    try:
        _run_loop(serve(settings, roles=roles, replica_id=replica_id))
    except RuntimeProblem as exc:
        raise _fail(str(exc)) from None


def credit_time(network: NetworkConfig) -> str:
    if network.confirmations is None:
        return f"when {network.finality}"
    seconds = network.confirmations * network.block_time_seconds
    if seconds < 60:
        return f"~{plain_decimal(seconds)} s"
    return f"~{plain_decimal((seconds / 60).quantize(Decimal('0.1')))} min"


@app.command()
def networks(config: ConfigOpt = None) -> None:
    """The processing-time reference table of the loaded configuration."""
    settings = _settings(config)
    table = Table(title="Deposit processing time by network", title_justify="left")
    for col in ("network", "chain id", "on", "rule", "block", "credit time"):
        table.add_column(col, no_wrap=True)
    table.add_column("assets")
    for n in sorted(settings.networks.values(), key=lambda n: n.chain_id):
        tokens = " ".join([n.native_asset, *(t.symbol for t in n.tokens)])
        table.add_row(
            n.name,
            str(n.chain_id),
            "yes" if n.enabled else "no",
            n.rule_text,
            f"{plain_decimal(n.block_time_seconds)} s",
            credit_time(n),
            tokens,
        )
    console.print(table)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Apply the database migrations."""
    settings = _settings(config, database_url)
    from watcher.store.db import create_engine
    from watcher.store.migrate import upgrade

    async def go() -> None:
        engine = create_engine(settings.database.url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(go())
    console.print("database is at the latest schema")


@app.command()
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
    from watcher import ops_cli

    settings = _settings(config, database_url)
    raise typer.Exit(
        ops_cli.status(
            settings, as_json=as_json, watch=watch, interval=interval, console=console, wide=wide
        )
    )


@app.command()
def reconcile(
    network: Annotated[str | None, typer.Option("--network", help="only this network")] = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Vault balances against ledger liabilities, now. Exit 1 when they differ."""
    from watcher import ops_cli

    settings = _settings(config, database_url)
    if network is not None and network not in {n.name for n in settings.enabled_networks}:
        err.print(f"unknown or disabled network: {network}")
        raise typer.Exit(2)
    raise typer.Exit(ops_cli.reconcile(settings, network, as_json=as_json, console=console))


@alarms_app.command("list")
def alarms_list(
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Alarms that are latched (not yet acknowledged)."""
    from watcher import ops_cli

    raise typer.Exit(
        ops_cli.alarms_list(_settings(config, database_url), as_json=as_json, console=console)
    )


@alarms_app.command("ack")
def alarms_ack(
    alarm_id: Annotated[int, typer.Argument(help="alarm id")],
    by: Annotated[str, typer.Option(help="who acknowledges (recorded)")] = "operator",
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Acknowledge a latched alarm (it stops counting against health)."""
    from watcher import ops_cli

    raise typer.Exit(ops_cli.alarms_ack(_settings(config, database_url), alarm_id, by, console))


@app.command()
def rebalance(
    account: Annotated[str, typer.Argument(help="account address (any case)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the conversion as JSON")] = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Operator-triggered auto-conversion of an account's negative balances."""
    from watcher.rebalance_cli import rebalance_command

    settings = _settings(config, database_url)
    raise typer.Exit(rebalance_command(settings, account, as_json=as_json, console=console))


def main() -> None:
    from watcher.store.db import DatabaseProblem

    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except DatabaseProblem as exc:
        err.print(f"[bold red]{exc}[/]", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
