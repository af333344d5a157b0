"""The devnet's co-signers served from the calling process: the real co-signer (its
checks, its own SQLite store, its HTTP endpoint on its own port) with the devnet's
public validator keys. The tests and the benchmarks use them beside an in-process or
out-of-process watcher; ``watcher devnet`` starts the same co-signers as processes of
their own (``watcher cosign run``).

Each co-signer keeps its port for its whole life, so one can be stopped and started
again (``stop(i)`` / ``start(i)``) under the URL the watcher's config names.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from watcher.api.cosigner import make_app
from watcher.chain.devnet import (
    DEVNET_COSIGNER_TOKEN,
    DEVNET_VALIDATORS,
    Deployment,
    cosigner_toml,
    devnet_validator_key,
)
from watcher.chain.payout import PayoutSigner
from watcher.services.cosigner import Cosigner, load_config
from watcher.store.db import create_engine


class LocalCosigners:
    """``count`` devnet co-signers for ``dep``, their stores under ``root``."""

    def __init__(self, dep: Deployment, root: Path, count: int = DEVNET_VALIDATORS) -> None:
        self.dep = dep
        self.root = root
        self.token = DEVNET_COSIGNER_TOKEN
        # Each port stays bound from here until its co-signer first listens on it, so
        # nothing else (an outgoing connection's ephemeral port included) can take it
        # while the URLs are handed out and before the co-signer starts.
        reserved = [_bound_socket(0) for _ in range(count)]
        self.ports = [int(sock.getsockname()[1]) for sock in reserved]
        self._reserved: list[socket.socket | None] = list(reserved)
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.signers = [PayoutSigner(devnet_validator_key(i)) for i in range(count)]
        self._runners: dict[int, tuple[web.AppRunner, Cosigner]] = {}

    def config_path(self, index: int) -> Path:
        return self.root / f"cosigner-{index}.toml"

    async def start(self, index: int) -> None:
        if index in self._runners:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        store = f"sqlite+aiosqlite:///{self.root / f'cosigner-{index}.sqlite'}"
        path = self.config_path(index)
        path.write_text(cosigner_toml(self.dep, store=store, port=self.ports[index]))
        cfg = load_config(path)
        cosigner = Cosigner(cfg, self.signers[index], create_engine(cfg.store))
        await cosigner.start()
        runner = web.AppRunner(make_app(cosigner, self.token), access_log=None)
        await runner.setup()
        sock = self._reserved[index] or _bound_socket(self.ports[index])
        self._reserved[index] = None  # the site owns it now and closes it on cleanup
        await web.SockSite(runner, sock).start()
        self._runners[index] = (runner, cosigner)

    async def stop(self, index: int) -> None:
        found = self._runners.pop(index, None)
        if found is None:
            return
        runner, cosigner = found
        await runner.cleanup()
        await cosigner.engine.dispose()

    async def start_all(self, indexes: Sequence[int] | None = None) -> None:
        chosen = range(len(self.ports)) if indexes is None else indexes
        await asyncio.gather(*(self.start(i) for i in chosen))

    async def close(self) -> None:
        for index in list(self._runners):
            await self.stop(index)
        for sock in self._reserved:
            if sock is not None:
                sock.close()
        self._reserved = [None] * len(self._reserved)

    def cosigner(self, index: int) -> Cosigner:
        return self._runners[index][1]


def _bound_socket(port: int) -> socket.socket:
    """A TCP socket bound to 127.0.0.1:``port`` (0: the OS picks), not yet listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def local_cosigners(
    dep: Deployment, root: Path, *, count: int = DEVNET_VALIDATORS, up: Sequence[int] | None = None
) -> AsyncIterator[LocalCosigners]:
    """The devnet's co-signers for ``dep`` (``up``: which to start; default all)."""
    cs = LocalCosigners(dep, root, count)
    try:
        await cs.start_all(up)
        yield cs
    finally:
        await cs.close()
