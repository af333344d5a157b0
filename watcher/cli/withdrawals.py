"""``watcher withdrawals list|show|retry|cancel|approve|reject`` (operator view and actions).

The actions are in ``watcher.services.withdrawal_ops``; this module only parses
arguments, opens the database (and, for ``cancel`` / ``reject``, RPC clients of the
enabled networks, used only for a stalled withdrawal) and prints. Exit status: 0 done,
1 refused (the withdrawal's state does not allow it, it does not exist, or the vault
could not be asked or says paid), 2 configuration error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from watcher.cli.common import ConfigOpt, DbOpt, console, load, refused

if TYPE_CHECKING:
    from watcher.settings import Settings

withdrawals_app = typer.Typer(no_args_is_help=True, help="Withdrawals: operator view and actions")

T = TypeVar("T")
IdArg = Annotated[int, typer.Argument(help="withdrawal id")]
ByOpt = Annotated[str, typer.Option(help="operator name (recorded in the reason)")]


def _run(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    from watcher.store.db import create_engine, require_schema, session_factory

    async def go() -> T:
        engine = create_engine(settings.database.url)
        try:
            await require_schema(engine)
            return await action(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _run_with_vaults(settings: Settings, action: Callable[[Any, Any], Awaitable[T]]) -> T:
    """:func:`_run` with a :class:`~watcher.services.withdrawal_ops.Vaults` of the enabled
    networks as the second argument. Its clients connect only when asked (a stalled
    withdrawal), so a cancel before signing needs no RPC."""
    import aiohttp

    from watcher.app import make_client
    from watcher.services.withdrawal_ops import Vaults

    async def with_vaults(sessions: Any) -> T:
        timeout = aiohttp.ClientTimeout(total=float(settings.listener.rpc_timeout_seconds))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            clients = {n.name: make_client(n, settings, http) for n in settings.enabled_networks}
            return await action(sessions, Vaults.of(settings, clients))

    return _run(settings, with_vaults)


def _doc(settings: Settings, w: Any) -> dict[str, Any]:
    from watcher.api.schemas import jsonable
    from watcher.api.withdrawals import withdrawal_doc

    doc: dict[str, Any] = jsonable(withdrawal_doc(settings, w))
    return doc


def _act(run: Callable[[], Any], verb: str) -> None:
    """Run an action (``_run`` or ``_run_with_vaults`` of it) and print the outcome."""
    from watcher.services.withdrawal_ops import OperatorError

    try:
        w = run()
    except OperatorError as exc:
        raise refused(exc) from None
    console.print(f"withdrawal {w.id} {verb}: now {w.state}", highlight=False)


@withdrawals_app.command("list")
def list_cmd(
    state: Annotated[str | None, typer.Option(help="only this state")] = None,
    limit: Annotated[int, typer.Option(help="newest N")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Newest withdrawals with state, amount and transaction."""
    from watcher.services import withdrawal_ops

    settings = load(config, database_url)
    rows = _run(settings, lambda s: withdrawal_ops.listing(s, state, limit))
    docs = [_doc(settings, w) for w in rows]
    if as_json:
        console.print_json(json.dumps(docs))
        return
    table = Table(title="Withdrawals", title_justify="left")
    for col in ("id", "state", "account", "chain", "amount", "asset", "tx", "reason"):
        table.add_column(col)
    for d in docs:
        table.add_row(
            str(d["id"]),
            d["state"],
            d["account"],
            str(d["chainId"]),
            d["amount"],
            d["asset"],
            d["txHash"] or "",
            d["reason"] or "",
        )
    console.print(table)


@withdrawals_app.command("show")
def show_cmd(withdrawal_id: IdArg, config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """One withdrawal with all its transaction attempts (JSON)."""
    from watcher.services import withdrawal_ops

    settings = load(config, database_url)
    try:
        found = _run(settings, lambda s: withdrawal_ops.show(s, withdrawal_id))
    except withdrawal_ops.OperatorError as exc:
        raise refused(exc, "not shown") from None
    doc = _doc(settings, found["withdrawal"])
    doc["attempts"] = [
        {k: (str(v) if isinstance(v, int) and k.startswith("max") else v) for k, v in a.items()}
        for a in found["attempts"]
    ]
    console.print_json(json.dumps(doc))


@withdrawals_app.command("approve")
def approve_cmd(
    withdrawal_id: IdArg,
    by: ByOpt = "operator",
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Let a withdrawal in review go to the sender."""
    from watcher.services import withdrawal_ops

    settings = load(config, database_url)
    _act(lambda: _run(settings, lambda s: withdrawal_ops.approve(s, withdrawal_id, by)), "approved")


@withdrawals_app.command("reject")
def reject_cmd(
    withdrawal_id: IdArg,
    by: ByOpt = "operator",
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Refuse a withdrawal that was not signed yet, or a stalled one the vault has not
    paid (asked at the latest block); its hold is released."""
    from watcher.services import withdrawal_ops

    settings = load(config, database_url)
    _act(
        lambda: _run_with_vaults(
            settings, lambda s, v: withdrawal_ops.reject(s, withdrawal_id, by, v)
        ),
        "rejected",
    )


@withdrawals_app.command("cancel")
def cancel_cmd(
    withdrawal_id: IdArg,
    by: ByOpt = "operator",
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Cancel a withdrawal before signing, or a stalled one (nonce consumed by a foreign
    tx) that the vault has not paid (asked at the latest block); its hold is released."""
    from watcher.services import withdrawal_ops

    settings = load(config, database_url)
    _act(
        lambda: _run_with_vaults(
            settings, lambda s, v: withdrawal_ops.cancel(s, withdrawal_id, by, v)
        ),
        "cancelled",
    )


@withdrawals_app.command("retry")
def retry_cmd(withdrawal_id: IdArg, config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Queued: re-check funds now. Broadcast: fee-bump on the tracker's next tick.
    Stalled (nonce consumed by a foreign tx): re-queue under a new nonce."""
    from watcher.services import withdrawal_ops

    settings = load(config, database_url)
    _act(lambda: _run(settings, lambda s: withdrawal_ops.retry(s, withdrawal_id)), "retried")
