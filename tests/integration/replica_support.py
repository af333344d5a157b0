"""Real `watcher run` replicas on one PostgreSQL database, for the replica tests:
start, SIGKILL, SIGSTOP/SIGCONT, read who holds which lease, and when a role's new
holder finished its first tick (the replica logs it, with the wall-clock time)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import watcher_cli
from watcher.chain.devnet import free_port

FIRST_TICK = re.compile(r"role (\S+): first tick as holder done \(token (\d+)\) at ([0-9.]+)")


@dataclass
class Replica:
    replica_id: str
    cfg: Path
    env: dict[str, str]
    logs: Path
    roles: str = "all"
    port: int = field(default_factory=free_port)
    proc: Any = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.logs / f"{self.replica_id}.{self.starts}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.starts += 1
        self.proc = await watcher_cli(
            "run",
            "--config",
            str(self.cfg),
            "--port",
            str(self.port),
            "--roles",
            self.roles,
            "--replica-id",
            self.replica_id,
            env=self.env,
            log_file=self.log,
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        if self.alive:
            self.proc.kill()
            await self.proc.wait()

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    async def stop(self) -> None:
        if self.alive:
            self.resume()
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def log_text(self) -> str:
        parts = []
        for n in range(1, self.starts + 1):
            path = self.logs / f"{self.replica_id}.{n}.log"
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def first_ticks(self) -> list[tuple[str, int, float]]:
        """(role, token, wall time) of every first tick this replica made as a new holder."""
        return [
            (m.group(1), int(m.group(2)), float(m.group(3)))
            for m in FIRST_TICK.finditer(self.log_text())
        ]

    async def metrics(self, http: aiohttp.ClientSession) -> str:
        async with http.get(f"{self.url}/metrics") as resp:
            return await resp.text()


async def holders(engine: AsyncEngine) -> dict[str, tuple[str, int]]:
    """Role -> (holder, token) of every lease held now (the database's clock)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT role, holder, token FROM leases "
                    "WHERE holder IS NOT NULL AND expires_at > clock_timestamp()"
                )
            )
        ).all()
    return {r.role: (r.holder, int(r.token)) for r in rows}


async def wait_holder(
    engine: AsyncEngine, role_prefix: str, *, within: float = 60.0, not_: str | None = None
) -> tuple[str, str, int]:
    """(role, holder, token) once a role starting with ``role_prefix`` is held (by
    someone other than ``not_``)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for role, (holder, token) in (await holders(engine)).items():
            if role.startswith(role_prefix) and holder != not_:
                return role, holder, token
        await asyncio.sleep(0.1)
    raise AssertionError(f"no holder of {role_prefix}* within {within} s")


async def wait_first_tick(
    replicas: list[Replica], role: str, *, after: float, within: float = 60.0
) -> tuple[Replica, float]:
    """The replica whose first tick as a new holder of ``role`` came after ``after``
    (wall clock), and when."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for r in replicas:
            for found, _token, at in r.first_ticks():
                if found == role and at > after:
                    return r, at
        await asyncio.sleep(0.1)
    raise AssertionError(f"no first tick of {role} after {after} within {within} s")


async def post_withdrawal(
    http: aiohttp.ClientSession, replicas: list[Replica], body: dict[str, Any], start: int
) -> tuple[int, dict[str, Any]]:
    """POST to the replicas in turn from ``start`` until one answers (a killed one
    refuses the connection); the same body again is idempotent."""
    last: Exception | None = None
    for k in range(len(replicas) * 20):
        r = replicas[(start + k) % len(replicas)]
        try:
            async with http.post(f"{r.url}/v1/withdrawals", json=body) as resp:
                return resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"no replica answered: {last}")


async def miner(url: str, http: aiohttp.ClientSession, every: float) -> None:
    """Mine an empty block every ``every`` seconds (confirmations keep coming)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "anvil_mine", "params": ["0x1"]}
    while True:
        await asyncio.sleep(every)
        try:
            async with http.post(url, json=body) as resp:
                await resp.read()
        except aiohttp.ClientError:
            pass
