"""What every command group shares: the consoles, the ``--config`` / ``--database-url``
options, loading the configuration (finding the running daemon's), and the one mapping
of a service's refusal to an exit code.

Kept light on purpose: ``watcher --help`` imports this and the group modules only, so
web3, SQLAlchemy and the settings models are imported inside the commands that use them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from watcher.domain.errors import DomainError
    from watcher.settings import Settings

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

#: Exit codes of the operator commands: 0 done (or healthy), 1 refused by the service
#: (a rule, a conflicting state, nothing found), 2 the command or its configuration is
#: wrong, 3 the database or a node could not be used now (retry).
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


def exit_code(exc: DomainError) -> int:
    """The exit code of a service's refusal: the CLI's counterpart of the API's status."""
    from watcher.domain.errors import ErrorKind

    return {
        ErrorKind.INVALID: EXIT_USAGE,
        ErrorKind.UNAUTHORIZED: EXIT_USAGE,
        ErrorKind.NOT_FOUND: EXIT_REFUSED,
        ErrorKind.CONFLICT: EXIT_REFUSED,
        ErrorKind.RULE: EXIT_REFUSED,
        ErrorKind.UNAVAILABLE: EXIT_UNAVAILABLE,
    }[exc.kind]


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``error: message`` on stderr; the caller raises the returned Exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def refused(exc: DomainError, prefix: str = "refused") -> typer.Exit:
    """Print a service's refusal (its code and message) and return its exit."""
    err.print(f"[red]{prefix}:[/] {exc.message} ({exc.code})", highlight=False, soft_wrap=True)
    return typer.Exit(exit_code(exc))


def load(
    config: Path | None, database_url: str | None = None, *, find: bool = True, **kw: object
) -> Settings:
    """The configuration: ``--config``, else ``$WATCHER_CONFIG_DIR``, else (for operator
    commands, ``find=True``) the one daemon running on this host, else ``config/``."""
    from watcher.runtime import RuntimeProblem, find_daemon
    from watcher.settings import ConfigError, load_settings

    if config is None and find and not os.environ.get("WATCHER_CONFIG_DIR"):
        try:
            daemon = find_daemon()
        except RuntimeProblem as exc:
            raise fail(str(exc)) from None
        if daemon is not None:
            config = daemon.config_dir
            if database_url is None and not os.environ.get("WATCHER_DATABASE_URL"):
                if daemon.database_has_password:
                    raise fail(
                        f"the running daemon ({daemon.describe()}) uses the database "
                        f"{daemon.database_url}: set $WATCHER_DATABASE_URL (with its password)"
                    )
                database_url = daemon.database_url
    try:
        settings = load_settings(config, database_url=database_url, **kw)  # type: ignore[arg-type]
    except ConfigError as exc:
        err.print(f"[bold red]configuration error[/]\n{exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    if not settings.networks:
        raise fail(
            f"{settings.config_dir}: not a watcher config directory (no networks/*.toml); "
            "pass --config DIR or set $WATCHER_CONFIG_DIR"
        )
    return settings


def configure_logs(settings: Settings) -> None:
    from watcher import logs

    logs.configure(settings.logging.level, settings.logging.json_lines)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the daemon on uvloop (libuv) when installed: the same asyncio API with a
    faster loop and transports (intake ~10 % faster in bench/withdrawals.py)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main)
        return
    uvloop.run(main)
