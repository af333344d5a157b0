"""Chain roles on exactly one replica at a time: the lease keeper and the leased service.

Several daemons (replicas) may share one PostgreSQL database. Every replica serves the
HTTP API; each chain role (a network's listener, the sender and the tracker of a
(network, hot wallet), the reconciler, the alarm notifier) runs only on the replica
holding its lease (store/leases.py: a row per role, a token, an expiry on the
database's clock).

The :class:`LeaseKeeper` of each chain replica, on a connection of its own, every
``lease_seconds / 4``: renews the leases it holds and takes those that expired. It
counts a lease as its own only until ``lease_seconds - margin`` after the START of its
last successful renewal (its monotonic clock): the database's expiry is at least
``lease_seconds`` after that moment, so a replica that cannot renew (database
unreachable, connection cut, process paused) has stopped its roles before anybody can
take them. A role's tick in flight is cancelled when its lease lapses locally, and any
commit it still attempts is refused by the fence (a stale token).

:class:`LeasedService` wraps a service: no lease, no tick; a new lease (a new token)
resets the service's per-process state (the sender re-syncs its nonce from the
database and the chain, the tracker rebroadcasts what is in flight) before its first
tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from watcher.store import leases as store
from watcher.store.alarms import AlarmKind, raise_alarm
from watcher.store.db import APPLICATION_NAME, IDLE_IN_TRANSACTION_MS, SessionFactory
from watcher.store.stalled import end_stalled

if TYPE_CHECKING:
    from watcher.app import Service
    from watcher.metrics import Metrics

#: How long a stop waits for cancelled ticks to unwind (a statement in SQLite's worker
#: thread finishes first) before the database engines are closed under them.
CANCEL_WAIT_S = 10.0

log = logging.getLogger("watcher.leases")

ROLE_MODES = ("all", "api", "chain")


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class _Held:
    token: int
    until: float  # monotonic: the lease counts as ours until then
    since: float  # wall clock, when acquired
    first_tick_done: bool = False


class LeaseKeeper:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        sessions: SessionFactory,
        replica_id: str,
        lease_seconds: float,
        unheld_budget_seconds: float,
        metrics: Metrics,
        chain: bool,
    ) -> None:
        self.replica_id = replica_id
        self.lease_seconds = float(lease_seconds)
        self.renew_every = self.lease_seconds / 4
        self.margin = self.lease_seconds / 6
        self.unheld_budget = float(unheld_budget_seconds)
        self.metrics = metrics
        self.chain = chain
        self.sessions = sessions
        self.roles: list[str] = []
        self.held: dict[str, _Held] = {}
        self.takeovers = 0
        self.views: list[store.LeaseView] = []
        self._alarmed: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.on_acquire: Callable[[str], None] | None = None
        # Seconds after which a watcher session stalled inside a transaction, waiting
        # for its (stopped) client, is ended (store/stalled.py); the server's own bound
        # for an idle one.
        self.stalled_after = IDLE_IN_TRANSACTION_MS / 1000
        self._stalled_warned = False
        if engine.dialect.name == "postgresql":
            # A connection of its own, so a renewal never waits behind the pool of a
            # busy replica; each statement bounded well inside the lease.
            timeout = max(0.5, self.renew_every)
            self.engine = create_async_engine(
                engine.url,
                pool_size=1,
                max_overflow=0,
                pool_pre_ping=True,
                pool_timeout=timeout,
                connect_args={
                    "timeout": timeout,
                    "command_timeout": timeout,
                    "server_settings": {
                        "application_name": f"{APPLICATION_NAME}-lease {replica_id}"[:63]
                    },
                },
            )
            self._own_engine = True
            self.single_node = False
        else:
            # SQLite: one daemon per file (an exclusive flock, runtime.py), so nobody
            # else can take a role; the rows only show status who runs what. Held
            # leases never lapse locally (a long write holding SQLite's one connection
            # must not stop the roles), and one transaction renews them all.
            self.engine = engine
            self._own_engine = False
            self.single_node = True

    # ------------------------------------------------------------------ queries

    def fence(self, role: str) -> store.Fence | None:
        """This replica's fence for ``role`` while its lease counts as ours, else None."""
        held = self.held.get(role)
        if held is None:
            return None
        if time.monotonic() >= held.until:
            self._lost(role, "not renewed in time")
            return None
        return store.Fence(role=role, holder=self.replica_id, token=held.token)

    def held_roles(self) -> list[str]:
        return sorted(r for r in list(self.held) if self.fence(r) is not None)

    def first_tick(self, role: str) -> None:
        held = self.held.get(role)
        if held is not None and not held.first_tick_done:
            held.first_tick_done = True
            log.info(
                "role %s: first tick as holder done (token %d) at %.3f, %.3f s after taking it",
                role,
                held.token,
                time.time(),
                time.time() - held.since,
            )

    # ------------------------------------------------------------------ loop

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="lease-keeper")

    async def _loop(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            try:
                await asyncio.wait_for(self.round(), timeout=max(1.0, self.lease_seconds / 2))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease round failed: %s: %s", type(exc).__name__, exc)
            self._drop_lapsed()
            spent = time.monotonic() - started
            await asyncio.sleep(max(0.05, self.renew_every - spent))

    async def round(self) -> None:
        """Renew what we hold, take what has expired (chain replicas), then look at
        every lease: gauges, and an alarm for a role without holder over budget."""
        if self.chain and self.single_node and self.held.keys() >= set(self.roles):
            async with self.engine.connect() as conn:
                await store.renew_all(conn, self.replica_id, self.lease_seconds)
        elif self.chain:
            for role in self.roles:
                await self._acquire(role)
        async with self.engine.connect() as conn:
            self.views = await store.all_leases(conn)
        await self._watch_unheld()
        if not self.single_node:
            await self.end_stalled()

    async def end_stalled(self) -> None:
        """End the watcher sessions stalled inside a transaction (store/stalled.py): a
        replica stopped between a statement's messages holds its row locks, which the
        server's idle timeout does not release, and the roles' new holders skip them."""
        try:
            async with self.engine.connect() as conn:
                found = await end_stalled(conn, self.stalled_after)
        except Exception as exc:  # e.g. a role that may not read or signal sessions
            if not self._stalled_warned:
                self._stalled_warned = True
                log.warning(
                    "looking for stalled database sessions failed: %s: %s",
                    type(exc).__name__,
                    exc,
                )
            return
        for st in found:
            if st.ended:
                self.metrics.stalled_sessions_ended.inc()
            log.warning(
                "database session %d (%s) %s: inside a transaction, waiting for its "
                "client for %.0f s (a stopped process?); its locks go with it",
                st.pid,
                st.application_name,
                "ended" if st.ended else "could not be ended",
                st.waited_seconds,
            )

    async def _acquire(self, role: str) -> None:
        mine = self.fence(role)
        asked = time.monotonic()
        try:
            async with self.engine.connect() as conn:
                token = await store.acquire(
                    conn,
                    role,
                    self.replica_id,
                    mine.token if mine else None,
                    self.lease_seconds,
                    single_node=self.single_node,
                )
        except Exception as exc:
            log.warning("lease %s: renewal failed: %s: %s", role, type(exc).__name__, exc)
            return
        if token is None:
            if mine is not None:
                self._lost(role, "taken by another replica")
            return
        until = math.inf if self.single_node else asked + self.lease_seconds - self.margin
        if mine is not None and mine.token == token:
            self.held[role].until = until
            return
        self.held[role] = _Held(token=token, until=until, since=time.time())
        self.takeovers += 1
        self.metrics.lease_takeovers.labels(role).inc()
        self.metrics.lease_held.labels(role).set(1)
        log.info("lease %s taken by replica %s (token %d)", role, self.replica_id, token)
        if self.on_acquire is not None:
            self.on_acquire(role)

    def _drop_lapsed(self) -> None:
        for role in list(self.held):
            self.fence(role)

    def _lost(self, role: str, why: str) -> None:
        held = self.held.pop(role, None)
        if held is None:
            return
        self.metrics.lease_held.labels(role).set(0)
        log.warning(
            "lease %s lost by replica %s (token %d): %s; role stopped here",
            role,
            self.replica_id,
            held.token,
            why,
        )

    def fenced(self, role: str, exc: Exception) -> None:
        self.metrics.fenced_writes.labels(role).inc()
        self._lost(role, f"write fenced ({exc})")

    async def _watch_unheld(self) -> None:
        starting = []
        for view in self.views:
            self.metrics.lease_unheld_seconds.labels(view.role).set(view.unheld_seconds)
            over = view.unheld_seconds > self.unheld_budget
            if over and view.role not in self._alarmed:
                starting.append(view)
                self._alarmed.add(view.role)
            elif not over:
                self._alarmed.discard(view.role)
        if starting:
            async with self.sessions.begin() as s:
                for view in starting:
                    await raise_alarm(
                        s,
                        AlarmKind.LEASE_UNHELD,
                        view.role,
                        f"role {view.role} has had no holder for {view.unheld_seconds:.0f} s "
                        f"(budget {self.unheld_budget:.0f} s): no chain replica is running it",
                    )

    async def stop(self) -> None:
        """Stop renewing and give every lease up at once (a clean stop): the next
        replica takes the roles without waiting for the expiry."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for role, held in list(self.held.items()):
            try:
                async with self.engine.connect() as conn:
                    await store.release(conn, role, self.replica_id, held.token)
            except Exception as exc:
                log.warning("lease %s: release failed: %s", role, type(exc).__name__)
            self.held.pop(role, None)
            self.metrics.lease_held.labels(role).set(0)
        await self.close()

    async def close(self) -> None:
        """Close this keeper's own connection (PostgreSQL); safe to call again."""
        if self._own_engine:
            await self.engine.dispose()


class LeasedService:
    """A service that ticks only while this replica holds ``role``."""

    def __init__(
        self,
        inner: Service,
        keeper: LeaseKeeper,
        role: str,
        reset: Callable[[], None] | None = None,
    ) -> None:
        self.inner = inner
        self.keeper = keeper
        self.role = role
        self.name = inner.name
        self.interval_seconds = inner.interval_seconds
        self.delay_first = getattr(inner, "delay_first", False)
        self._reset = reset
        self._token: int | None = None
        keeper.roles.append(role)

    def __getattr__(self, name: str) -> Any:  # the inner service's own attributes
        return getattr(self.inner, name)

    async def tick(self) -> None:
        fence = self.keeper.fence(self.role)
        if fence is None:
            self._token = None
            return
        if fence.token != self._token:
            if self._reset is not None:
                self._reset()
            self._token = fence.token
        token = store.CURRENT_FENCE.set(fence)
        try:
            task = asyncio.create_task(self.inner.tick(), name=f"{self.name}:leased")
        finally:
            store.CURRENT_FENCE.reset(token)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.25)
                if done:
                    break
                now = self.keeper.fence(self.role)
                if now is None or now.token != fence.token:
                    task.cancel()
                    await asyncio.wait({task})
                    log.warning("role %s: tick cancelled, the lease lapsed", self.role)
                    return
            task.result()
        except store.Fenced as exc:
            # Expected after a pause or a cut: the database refused this replica's
            # write. The role stops here (the new holder runs it); not a tick failure.
            self.keeper.fenced(self.role, exc)
            return
        except asyncio.CancelledError:
            # The inner tick unwinds before this one does: whoever cancelled us (a stop)
            # closes the database next, and the inner tick must be off it by then.
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_WAIT_S)
            raise
        self.keeper.first_tick(self.role)
