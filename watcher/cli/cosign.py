"""``watcher cosign run`` and ``watcher cosign address``: the co-signer, its own process
with its own key, configuration and store (docs/cosigner.md).

Secrets come from the environment only: ``WATCHER_COSIGNER_KEY`` (hex private key of
this validator) and ``WATCHER_COSIGNER_TOKEN`` (the bearer token the sender presents).
Neither is ever printed or logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from watcher.cli.common import EXIT_USAGE, console, fail, run_loop

cosign_app = typer.Typer(
    no_args_is_help=True, help="The co-signer: an independent check and signature per payout"
)

KEY_ENV = "WATCHER_COSIGNER_KEY"
TOKEN_ENV = "WATCHER_COSIGNER_TOKEN"
CONFIG_ENV = "WATCHER_COSIGNER_CONFIG"
MIN_TOKEN_LENGTH = 16


def _signer() -> object:
    from watcher.chain.payout import PayoutSigner

    key = os.environ.get(KEY_ENV, "")
    if not key.strip():
        raise fail(f"${KEY_ENV} is not set (the co-signer's hex private key)")
    try:
        return PayoutSigner(key)
    except ValueError as exc:
        raise fail(f"${KEY_ENV}: {exc}") from None


@cosign_app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help=f"the co-signer's TOML file (or ${CONFIG_ENV})"),
    ] = None,
    host: Annotated[str | None, typer.Option(help="listen host (overrides server.host)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (overrides server.port)")] = None,
    store: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL of its store (overrides store)")
    ] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="JSON log lines")] = False,
) -> None:
    """Serve POST /v1/cosign until SIGTERM/SIGINT."""
    path = config or (Path(p) if (p := os.environ.get(CONFIG_ENV)) else None)
    if path is None:
        raise fail(f"give --config FILE or ${CONFIG_ENV}")
    token = os.environ.get(TOKEN_ENV, "").strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise fail(f"${TOKEN_ENV} must be set to at least {MIN_TOKEN_LENGTH} characters")
    signer = _signer()

    from watcher import logs
    from watcher.api.cosigner import serve
    from watcher.chain.payout import PayoutSigner
    from watcher.services.cosigner import Cosigner, CosignerConfigError, load_config
    from watcher.store.db import create_engine

    assert isinstance(signer, PayoutSigner)
    logs.register_secret(token)
    logs.register_secret(os.environ.get(KEY_ENV, "").strip())
    try:
        cfg = load_config(path, store=store, server={"host": host, "port": port})
    except CosignerConfigError as exc:
        raise fail(f"configuration error\n{exc}", EXIT_USAGE) from None
    logs.configure(cfg.log_level, log_json)
    cosigner = Cosigner(cfg, signer, create_engine(cfg.store))
    run_loop(serve(cosigner, token, cfg.server.host, cfg.server.port))


@cosign_app.command()
def address() -> None:
    """Print the co-signer's address (from $WATCHER_COSIGNER_KEY)."""
    from watcher.chain.payout import PayoutSigner

    signer = _signer()
    assert isinstance(signer, PayoutSigner)
    console.print(signer.address, highlight=False)
