"""The ``watcher`` command: one Typer app assembled from the command-group modules.

Groups: ``daemon`` (run, networks, db), ``ops`` (status, reconcile, alarms),
``withdrawals``, ``rebalance``, ``devnet`` and ``cosign`` (the co-signer). Each module
imports only typer and rich at its top; what a command needs is imported when it runs,
so ``watcher --help`` is quick.
"""

from __future__ import annotations

import sys

import typer

from watcher.cli import cosign, daemon, devnet, ops, rebalance, withdrawals
from watcher.cli.common import err

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="On-chain deposit/withdraw watcher"
)
daemon.register(app)
ops.register(app)
rebalance.register(app)
app.add_typer(withdrawals.withdrawals_app, name="withdrawals")
app.add_typer(devnet.devnet_app, name="devnet")
app.add_typer(cosign.cosign_app, name="cosign")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        from watcher.store.db import DatabaseProblem

        if not isinstance(exc, DatabaseProblem):
            raise
        err.print(f"[bold red]{exc}[/]", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
