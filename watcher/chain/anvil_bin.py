"""Locating the ``anvil`` binary (the local devnet node).

Order, first match wins:

1. ``WATCHER_ANVIL``: an explicit path (an error if it does not name an executable file:
   a variable that was set on purpose must not be silently ignored);
2. ``anvil`` on ``PATH`` (a Foundry install, or the one a container image ships);
3. the checkout's ``contracts/node_modules`` (``make setup`` installs it from npm).

An installed wheel has no checkout, so (3) only exists for an editable install; the
error then names all three remedies.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "WATCHER_ANVIL"
CHECKOUT_CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
NPM_RELATIVE = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")


class AnvilNotFoundError(RuntimeError):
    """No usable anvil binary; the message names what was tried and the remedy."""


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_anvil(
    env: Mapping[str, str] | None = None, checkout_contracts: Path = CHECKOUT_CONTRACTS
) -> Path:
    env = os.environ if env is None else env
    explicit = env.get(ENV_VAR, "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise AnvilNotFoundError(f"{ENV_VAR}={explicit}: no such file")
        if not os.access(path, os.X_OK):
            raise AnvilNotFoundError(f"{ENV_VAR}={explicit}: not executable (chmod +x it)")
        return path.resolve()
    on_path = shutil.which("anvil", path=env.get("PATH", os.defpath))
    if on_path:
        return Path(on_path).resolve()
    npm = checkout_contracts / NPM_RELATIVE
    if _executable(npm):
        return npm
    if npm.is_file():
        raise AnvilNotFoundError(f"anvil at {npm} is not executable (chmod +x it or rerun npm ci)")
    raise AnvilNotFoundError(
        f"anvil not found: set {ENV_VAR} to the binary, put `anvil` on PATH "
        "(Foundry, or `npm install @foundry-rs/anvil-linux-amd64`), or in a checkout run "
        f"`make setup` (installs it under {checkout_contracts / 'node_modules'})"
    )
