"""``watcher run``, ``watcher networks`` and ``watcher db upgrade``: the daemon and its
configuration and schema."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from watcher.cli.common import (
    ConfigOpt,
    DbOpt,
    configure_logs,
    console,
    fail,
    load,
    run_loop,
)

if TYPE_CHECKING:
    from watcher.settings import NetworkConfig

db_app = typer.Typer(no_args_is_help=True, help="Database schema")


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
        raise fail(f"--roles must be all, api or chain, not {roles!r}")
    if replica_id is not None and not (0 < len(replica_id) <= 100 and replica_id.isprintable()):
        raise fail("--replica-id must be 1 to 100 printable characters")
    settings = load(config, database_url, find=False, api_host=host, api_port=port)
    configure_logs(settings)
    from watcher.app import serve
    from watcher.runtime import RuntimeProblem

    try:
        run_loop(serve(settings, roles=roles, replica_id=replica_id))
    except RuntimeProblem as exc:
        raise fail(str(exc)) from None


def credit_time(network: NetworkConfig) -> str:
    from watcher.domain.amounts import plain_decimal

    if network.confirmations is None:
        return f"when {network.finality}"
    seconds = network.confirmations * network.block_time_seconds
    if seconds < 60:
        return f"~{plain_decimal(seconds)} s"
    return f"~{plain_decimal((seconds / 60).quantize(Decimal('0.1')))} min"


def networks(config: ConfigOpt = None) -> None:
    """The processing-time reference table of the loaded configuration."""
    from watcher.domain.amounts import plain_decimal

    settings = load(config)
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
    import asyncio

    settings = load(config, database_url)
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


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(networks)
    app.add_typer(db_app, name="db")
