"""`watcher rebalance ACCOUNT`: operator-triggered auto-conversion (DOMAIN.md §3).

Runs the same locked decision as the user's signed ``POST .../rebalance`` against the
shared database, beside a running daemon. Exit status: 0 converted, 1 nothing to do
(no negative balance, or nothing to convert), 2 bad input or unevaluable state.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from watcher.cli.common import EXIT_REFUSED, EXIT_USAGE, ConfigOpt, DbOpt, console, load

if TYPE_CHECKING:
    from watcher.services.rebalance import RebalanceResult
    from watcher.settings import Settings


async def _run(settings: Settings, account: str) -> RebalanceResult:
    from watcher.services.rebalance import rebalance_now
    from watcher.store.db import create_engine, require_schema, session_factory

    engine = create_engine(settings.database.url)
    try:
        # The daemon's ledger, never a fresh one: refuse an unmigrated database.
        await require_schema(engine)
        return await rebalance_now(session_factory(engine), settings, account)
    finally:
        await engine.dispose()


def rebalance_command(settings: Settings, account: str, *, as_json: bool, console: Console) -> int:
    from watcher.domain.parsing import InputError, parse_address
    from watcher.services.rebalance import AccountStateError, NothingToRebalance

    try:
        key = parse_address(account, "account")
    except InputError as exc:
        console.print(f"[red]{exc.message}[/]", highlight=False)
        return EXIT_USAGE
    try:
        result = asyncio.run(_run(settings, key))
    except NothingToRebalance as exc:
        if as_json:
            console.print_json(json.dumps({"account": key, "converted": False, "reason": str(exc)}))
        else:
            console.print(f"nothing to rebalance for {key}: {exc}", highlight=False)
        return EXIT_REFUSED
    except AccountStateError as exc:
        # Not the user's "no" but data the operator must fix (a missing price): usage.
        console.print(f"[red]{key}:[/] {exc.message}", highlight=False)
        return EXIT_USAGE
    doc = result.as_dict()
    if as_json:
        console.print_json(json.dumps(doc))
        return 0
    table = Table(title=f"auto-conversion for {key} (journal tx {result.transaction_id})")
    for col in ("asset", "change", "balance after"):
        table.add_column(col, justify="right" if col != "asset" else "left")
    after = doc.get("balancesAfter", {})
    assert isinstance(after, dict)
    changes = doc.get("changes", [])
    assert isinstance(changes, list)
    for change in changes:
        table.add_row(change["asset"], change["amount"], str(after.get(change["asset"], "")))
    console.print(table)
    remaining = doc.get("negativeAssets") or []
    assert isinstance(remaining, list)
    if remaining:
        console.print(f"[yellow]still negative:[/] {', '.join(remaining)}", highlight=False)
    return 0


def rebalance(
    account: Annotated[str, typer.Argument(help="account address (any case)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the conversion as JSON")] = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Operator-triggered auto-conversion of an account's negative balances."""
    settings = load(config, database_url)
    raise typer.Exit(rebalance_command(settings, account, as_json=as_json, console=console))


def register(app: typer.Typer) -> None:
    app.command()(rebalance)
