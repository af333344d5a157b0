"""Shared test helpers: config directories for real devnets, HTTP polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from watcher.chain.devnet import Deployment, network_toml, prepare_config_dir
from watcher.settings import DEFAULT_CONFIG_DIR


def write_config(
    root: Path,
    networks: list[tuple[str, Deployment, int]],
    *,
    default_toml_extra: str = "",
    cosigners: Sequence[str] = (),
) -> Path:
    """A full config dir with only the given devnets as networks (name, deployment, depth);
    ``cosigners``: the co-signer URLs every network's sender asks."""
    cfg = root / "config"
    prepare_config_dir(cfg, DEFAULT_CONFIG_DIR)
    for path in (cfg / "networks").glob("*.toml"):
        path.unlink()
    for name, dep, depth in networks:
        (cfg / "networks" / f"{name}.toml").write_text(
            network_toml(dep, name=name, confirmations=depth, cosigners=cosigners)
        )
    if default_toml_extra:
        with (cfg / "default.toml").open("a") as fh:
            fh.write("\n" + default_toml_extra)
    return cfg


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 20.0, every: float = 0.1
) -> None:
    """Poll an async condition (for out-of-process daemons only; in-process tests call tick())."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)


async def runs_until_cancelled(unwound: asyncio.Event, unwind_s: float = 0.3) -> None:
    """A tick that runs until it is cancelled, then takes ``unwind_s`` to unwind (as a
    statement in flight finishes first) and sets ``unwound`` before it re-raises."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(unwind_s)
        unwound.set()
        raise


async def watcher_cli(
    *args: str, env: dict[str, str], merge_stderr: bool = False, log_file: Path | None = None
) -> asyncio.subprocess.Process:
    """Start ``python -m watcher ARGS`` as a real process. Output is piped, or written
    to ``log_file`` for a long-running process whose pipe nobody would drain."""
    import sys

    if log_file is not None:
        with log_file.open("wb") as out:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "watcher", *args, env=env, stdout=out, stderr=out
            )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
    )


async def status_json(cfg: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Run `watcher status --json`: its exit code and its document."""
    import json

    proc = await watcher_cli("status", "--json", "--config", str(cfg), env=env)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else {"stderr": err.decode()}
