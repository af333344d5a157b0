"""Composition root: builds the engine, clients, services, scheduler and HTTP API
from the settings, and runs them until told to stop.

Stop guarantees: on SIGTERM/SIGINT no new tick starts, every tick in flight runs to
its end (its DB transaction commits or rolls back as a whole), then the HTTP server
and the connections close. A tick that is cut anyway (SIGKILL, power loss) leaves the
database as it was before that tick: each service resumes from its DB cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import aiohttp
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from watcher import crashpoints, logs
from watcher.chain.rpc import RpcClient
from watcher.metrics import Metrics
from watcher.runtime import RuntimeProblem, register, sqlite_lock_for
from watcher.services.foreground import Foreground
from watcher.services.leases import CANCEL_WAIT_S, ROLE_MODES, LeaseKeeper, default_replica_id
from watcher.settings import NetworkConfig, Settings
from watcher.store.checkpoint import CHECKPOINT_SECONDS, WalCheckpointer
from watcher.store.db import (
    SessionFactory,
    create_audit_engine,
    create_engine,
    session_factory,
    sqlite_file,
)
from watcher.store.ledger import dialect_name
from watcher.store.migrate import upgrade
from watcher.store.models import Asset, Heartbeat, utcnow

#: How long a stop waits for the ticks in flight before cancelling them (each is
#: idempotent and safe to stop anywhere, as a kill -9 is).
STOP_WAIT_S = 15.0

log = logging.getLogger("watcher.app")

DAEMON_HEARTBEAT = "daemon"
REPLICA_HEARTBEAT_PREFIX = "replica:"
RECURSION_LIMIT = 5_000
HEARTBEAT_SECONDS = 5
#: The scheduler job of the daemon's SQLite log checkpoints (store/checkpoint.py).
CHECKPOINT_JOB = "wal-checkpoint"


class Service(Protocol):
    """A role with one idempotent step; the scheduler calls tick() on an interval."""

    name: str
    interval_seconds: float

    async def tick(self) -> None: ...


@dataclass
class TickStats:
    runs: int = 0
    failures: int = 0
    last_error: str | None = None
    last_duration: float = 0.0
    last_finished: float | None = None


@dataclass
class Runner:
    """Runs service ticks one at a time per service and knows which are in flight."""

    stats: dict[str, TickStats] = field(default_factory=dict)
    inflight: dict[asyncio.Task[None], str] = field(default_factory=dict)
    stopping: bool = False
    on_tick: Callable[[str, float, bool], None] | None = None
    #: Ticks a stop cancels at once instead of waiting for (read-only audits, which
    #: start over at their next run): services with ``interruptible = True``.
    interruptible: set[str] = field(default_factory=set)

    async def run(self, name: str, tick: Callable[[], Awaitable[None]]) -> None:
        if self.stopping:
            return
        task = asyncio.current_task()
        assert task is not None
        self.inflight[task] = name  # type: ignore[index]
        stats = self.stats.setdefault(name, TickStats())
        started = time.monotonic()
        ok = stopped = False
        try:
            await tick()
            ok = True
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            # The stop cancelled it (drain): an expected end, not an error for the
            # scheduler to report with a traceback.
            stopped = True
            log.info("stopping: tick %s cancelled", name)
        except Exception as exc:  # the daemon boundary: log, count, retry next tick
            stats.failures += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("tick failed: %s", name)
        finally:
            stats.runs += 1
            stats.last_duration = time.monotonic() - started
            stats.last_finished = time.time()
            self.inflight.pop(task, None)  # type: ignore[call-overload]
            if self.on_tick is not None and not stopped:
                self.on_tick(name, stats.last_duration, ok)

    async def drain(self, limit_seconds: float, cancel_wait_s: float = CANCEL_WAIT_S) -> None:
        """No new ticks; the interruptible ones in flight cancelled at once, the others
        given ``limit_seconds`` to finish, then cancelled. Returns once every tick has
        unwound (or ``cancel_wait_s`` after cancelling them): the caller closes the
        database engines next, and a tick cancelled after that would wait forever on a
        connection whose thread is gone (a 1M-deposit SQLite daemon hung on SIGTERM
        that way: its reconciliation outlasted the wait and was cancelled only when
        the event loop closed)."""
        self.stopping = True
        pending = {t: n for t, n in self.inflight.items() if t is not asyncio.current_task()}
        if not pending:
            return
        audits = [t for t, n in pending.items() if n in self.interruptible]
        for task in audits:
            task.cancel()
        log.info(
            "waiting for %d tick(s) to finish (%s)",
            len(pending),
            ", ".join(sorted(pending.values())),
        )
        _, late = await asyncio.wait(pending, timeout=limit_seconds)
        if not late:
            return
        log.warning(
            "stopping: tick(s) still running after %.0f s, cancelled: %s",
            limit_seconds,
            ", ".join(sorted(pending[t] for t in late)),
        )
        for task in late:
            task.cancel()
        _, stuck = await asyncio.wait(late, timeout=cancel_wait_s)
        if stuck:
            log.error(
                "stopping: tick(s) did not unwind %.0f s after being cancelled: %s",
                cancel_wait_s,
                ", ".join(sorted(pending[t] for t in stuck)),
            )


@dataclass
class App:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    http: aiohttp.ClientSession
    runner: Runner
    metrics: Metrics = field(default_factory=Metrics)
    # One RPC client per enabled network (by name), shared by listener, sender,
    # tracker and reconciler, so endpoint health and failover are one view.
    rpc: dict[str, RpcClient] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    # Replicas: this daemon's id, which roles it may run ("all", "api" or "chain") and
    # the keeper of its chain roles' leases (services/leases.py); None in a read-only
    # view (status, operator commands).
    replica_id: str = ""
    roles: str = "all"
    keeper: LeaseKeeper | None = None
    swept: bool = False  # old replicas' heartbeat rows removed (first beat)
    # The intake's batches go before the sender's and tracker's chunks on the loop.
    foreground: Foreground = field(default_factory=Foreground)
    # Long read-only audits' own SQLite connection (store/db.py create_audit_engine),
    # made on first use; None until then and on PostgreSQL.
    audit_engine: AsyncEngine | None = None
    _audit_sessions: SessionFactory | None = None
    # The daemon's SQLite log checkpoints (store/checkpoint.py); None elsewhere.
    checkpointer: WalCheckpointer | None = None

    @property
    def audit_sessions(self) -> SessionFactory:
        """Sessions for reads of whole tables that need one snapshot but no lock (the
        reconciler): a reader connection beside the writer on a SQLite file, the usual
        sessions elsewhere."""
        if self._audit_sessions is None:
            self.audit_engine = create_audit_engine(self.settings.database.url)
            self._audit_sessions = (
                self.sessions if self.audit_engine is None else session_factory(self.audit_engine)
            )
        return self._audit_sessions

    async def close(self) -> None:
        if self.keeper is not None:
            await self.keeper.close()
        for client in self.rpc.values():
            await client.close()
        await self.http.close()
        await self.engine.dispose()
        if self.audit_engine is not None:
            await self.audit_engine.dispose()
        if self.checkpointer is not None:
            await self.checkpointer.close()


def make_client(
    network: NetworkConfig, settings: Settings, http: aiohttp.ClientSession
) -> RpcClient:
    return RpcClient(
        network.rpc_urls,
        chain_id=network.chain_id,
        session=http,
        timeout=float(settings.listener.rpc_timeout_seconds),
        # An endpoint more than 2 blocks behind the best one is asked last.
        lag_tolerance=2,
    )


async def sync_assets(app: App) -> None:
    """Mirror the configured ledger assets into the assets table (idempotent)."""
    async with app.sessions.begin() as s:
        ins = postgresql.insert if dialect_name(s) == "postgresql" else sqlite.insert
        for code, cfg in app.settings.assets.items():
            stmt = ins(Asset).values(code=code, precision=cfg.precision)
            await s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["code"], set_={"precision": cfg.precision}
                )
            )


async def beat(app: App, name: str = DAEMON_HEARTBEAT, *, stopped: bool = False) -> None:
    """Write the daemon's heartbeat; ``stopped=True`` is the clean stop's marker, which
    lets `watcher status` say "stopped" at once instead of waiting for the beat to age."""
    from watcher.services.status import hot_wallet_address

    info: dict[str, object] = {
        "uptime": int(time.time() - app.started_at),
        "host": socket.gethostname(),
        "ticks": {
            k: {"runs": v.runs, "failures": v.failures, "lastError": v.last_error}
            for k, v in app.runner.stats.items()
        },
    }
    # The hot wallet's address (public), so an operator's shell without the key can
    # still show the wallet's gas balance.
    if hot := hot_wallet_address(app.settings):
        info["hotWallet"] = hot
    replica: dict[str, object] = {
        "replicaId": app.replica_id,
        "roles": app.roles,
        "held": app.keeper.held_roles() if app.keeper is not None else [],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "api": f"{app.settings.api.host}:{app.settings.api.port}",
    }
    # What the listeners running here see (head, cursor, lag, why their steps fail),
    # for `watcher status` in another process; a replica not running a network's
    # listener (another holds its lease) does not report it.
    listeners = _listener_reports(app)
    if listeners:
        info["listeners"] = listeners
        replica["listeners"] = listeners
    if stopped:
        info["stoppedAt"] = utcnow().isoformat()
        replica["stoppedAt"] = info["stoppedAt"]
    rows = [(REPLICA_HEARTBEAT_PREFIX + app.replica_id, replica)] if app.replica_id else []
    async with app.sessions.begin() as s:
        if stopped and name == DAEMON_HEARTBEAT and await _other_replicas_alive(s, app):
            rows.append((name, {**info, "stoppedAt": None}))
        else:
            rows.append((name, info))
        if not app.swept:  # once per process: replicas silent for a day are forgotten
            await s.execute(
                delete(Heartbeat).where(
                    Heartbeat.name.startswith(REPLICA_HEARTBEAT_PREFIX),
                    Heartbeat.at < utcnow() - timedelta(days=1),
                )
            )
            app.swept = True
        for key, doc in rows:
            doc = {k: v for k, v in doc.items() if v is not None}
            row = await s.get(Heartbeat, key)
            if row is None:
                s.add(Heartbeat(name=key, at=utcnow(), pid=os.getpid(), info=doc))
            else:
                row.at, row.pid, row.info = utcnow(), os.getpid(), doc


#: A listener that has not ticked for this long is not running here (its lease is held
#: by another replica, or it was never started): it is left out of the heartbeat.
LISTENER_REPORT_SECONDS = 60


def _listener_reports(app: App) -> dict[str, object]:
    from watcher.services.listener import DepositListener

    now = time.time()
    return {
        s.network.name: s.report()
        for s in app.services
        if isinstance(s, DepositListener)
        and s.seen.ticked_at is not None
        and now - s.seen.ticked_at < LISTENER_REPORT_SECONDS
    }


async def _other_replicas_alive(s: AsyncSession, app: App) -> bool:
    """Another replica beat recently: a clean stop of this one is not the daemon's."""
    fresh = utcnow() - timedelta(seconds=3 * HEARTBEAT_SECONDS)
    rows = await s.scalars(
        select(Heartbeat).where(
            Heartbeat.name.startswith(REPLICA_HEARTBEAT_PREFIX),
            Heartbeat.name != REPLICA_HEARTBEAT_PREFIX + app.replica_id,
            Heartbeat.at > fresh,
        )
    )
    return any("stoppedAt" not in (r.info or {}) for r in rows)


async def build(
    settings: Settings,
    *,
    migrate: bool = True,
    services: bool = True,
    roles: str = "all",
    replica_id: str | None = None,
) -> App:
    """Everything the daemon and the tests need, without starting any loop.

    ``migrate=False, services=False`` gives the read-only view that ``watcher status``
    and the operator commands use beside a running daemon. ``roles``: "all" (the
    default), "api" (the HTTP API only, no chain role) or "chain" (the chain roles,
    whose HTTP API still answers; see docs/replicas.md)."""
    if roles not in ROLE_MODES:
        raise ValueError(f"roles must be one of {', '.join(ROLE_MODES)}, not {roles!r}")
    logs.register_secret(
        settings.secrets.admin_token.get_secret_value() if settings.secrets.admin_token else None
    )
    logs.register_secret(
        settings.secrets.signer_key.get_secret_value() if settings.secrets.signer_key else None
    )
    logs.register_secret(
        settings.secrets.cosigner_token.get_secret_value()
        if settings.secrets.cosigner_token
        else None
    )
    replica_id = replica_id or default_replica_id()
    # Named after the replica on the server (pg_stat_activity: who holds what).
    # The daemon's SQLite commits leave the log's checkpoints to a thread of their own
    # (store/checkpoint.py, scheduled with the services); a read-only view keeps
    # SQLite's automatic ones.
    checkpoints = sqlite_file(settings.database.url) if services else None
    engine = create_engine(
        settings.database.url,
        application_name=f"watcher {replica_id}",
        checkpoint_in_commits=checkpoints is None,
    )
    if migrate:
        await upgrade(engine)
    timeout = aiohttp.ClientTimeout(total=float(settings.listener.rpc_timeout_seconds))
    app = App(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        http=aiohttp.ClientSession(timeout=timeout),
        runner=Runner(),
        replica_id=replica_id,
        roles=roles,
    )
    app.runner.on_tick = app.metrics.on_tick
    if checkpoints is not None:
        app.checkpointer = WalCheckpointer(checkpoints)
    app.rpc = {n.name: make_client(n, settings, app.http) for n in settings.enabled_networks}
    if not services:
        return app
    await sync_assets(app)
    replicas = settings.replicas
    app.keeper = LeaseKeeper(
        engine=engine,
        sessions=app.sessions,
        replica_id=app.replica_id,
        lease_seconds=float(replicas.lease_seconds),
        unheld_budget_seconds=float(replicas.unheld_budget_seconds),
        metrics=app.metrics,
        chain=roles != "api",
    )
    from watcher.services.registry import build_services

    app.services = await build_services(app)
    return app


#: APScheduler's own warnings are about our ticks overrunning their interval
#: ("maximum number of running instances reached", "Run time of job ... was missed"):
#: with ``max_instances=1`` and ``coalesce`` that is by design (a backfill tick runs
#: for seconds), not an operator event. A tick's failure is logged by :class:`Runner`.
SCHEDULER_LOGGERS = ("apscheduler.scheduler", "apscheduler.executors")


def schedule(app: App, scheduler: AsyncIOScheduler) -> None:
    for name in SCHEDULER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    from watcher.services.leases import LeasedService
    from watcher.services.registry import leased

    services = leased(app.services, app.keeper) if app.keeper is not None else app.services
    if app.keeper is not None:
        # A role just taken ticks at once, not an interval later (takeover time); not
        # one whose first run waits an interval on purpose (the reconciler: a daemon's
        # start would otherwise read the whole journal while it catches up and serves
        # its first requests).
        jobs = {
            s.role: s.name
            for s in services
            if isinstance(s, LeasedService) and not getattr(s, "delay_first", False)
        }

        def kick(role: str) -> None:
            if (job := jobs.get(role)) is not None:
                with contextlib.suppress(Exception):  # not scheduled (yet): next interval
                    scheduler.modify_job(job, next_run_time=_now())

        app.keeper.on_acquire = kick
    for service in services:
        if getattr(service, "interruptible", False):
            app.runner.interruptible.add(service.name)
        scheduler.add_job(
            app.runner.run,
            "interval",
            args=[service.name, service.tick],
            seconds=float(service.interval_seconds),
            id=service.name,
            max_instances=1,
            coalesce=True,
            next_run_time=None if getattr(service, "delay_first", False) else _now(),
        )
    if app.checkpointer is not None:
        scheduler.add_job(
            app.runner.run,
            "interval",
            args=[CHECKPOINT_JOB, app.checkpointer.tick],
            seconds=CHECKPOINT_SECONDS,
            id=CHECKPOINT_JOB,
            max_instances=1,
            coalesce=True,
        )
    scheduler.add_job(
        app.runner.run,
        "interval",
        args=["heartbeat", lambda: beat(app)],
        seconds=HEARTBEAT_SECONDS,
        id="heartbeat",
        max_instances=1,
        coalesce=True,
        next_run_time=_now(),
    )


def _now() -> datetime:
    return datetime.now().astimezone()


def bind_api(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound before anything else starts, so a port in use
    is one clear error and nothing has been started or written."""
    try:
        return socket.create_server((host, port), backlog=128)
    except OSError as exc:
        why = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise RuntimeProblem(
            f"cannot listen on {host}:{port}: {why} "
            "(another watcher? choose another with --port or $WATCHER_API_PORT)"
        ) from None


async def serve(
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    roles: str = "all",
    replica_id: str | None = None,
) -> None:
    """Run the daemon until ``stop`` is set or SIGTERM/SIGINT arrives.

    Before anything is built: the SQLite file's lock (one daemon per file) and the API
    port; either taken is a ``RuntimeProblem`` and nothing has started. On PostgreSQL
    several daemons (replicas) may run on one database: every one serves the API and
    each chain role runs on the one holding its lease (docs/replicas.md)."""
    from watcher.api.server import make_web_app

    if not settings.enabled_networks:
        raise RuntimeProblem(
            f"{settings.config_dir}: no enabled network (networks/*.toml): "
            "nothing to watch; point --config at a directory with at least one network"
        )
    try:
        armed = crashpoints.arm(n.chain_id for n in settings.enabled_networks)
    except crashpoints.CrashPointsRefused as exc:
        raise RuntimeProblem(f"refusing to start: {exc}") from None
    if armed:
        log.warning("crash points armed (tests only): %s", ", ".join(armed))
    lock = sqlite_lock_for(settings.database.url)
    if lock is not None:
        lock.acquire()
    try:
        sock = bind_api(settings.api.host, settings.api.port)
        try:
            await _serve(settings, stop, sock, make_web_app, roles, replica_id)
        finally:
            sock.close()
    finally:
        if lock is not None:
            lock.release()


async def _log_recovery(app: App) -> None:
    """What this start resumes, one line per network (services/recovery.py); a failure
    to read it is a warning, never a reason not to start."""
    from watcher.services.recovery import log_recovery

    try:
        await asyncio.wait_for(log_recovery(app.settings, app.sessions), timeout=10)
    except Exception as exc:
        log.warning("could not read what was in flight for the recovery log: %s", exc)


async def _serve(
    settings: Settings,
    stop: asyncio.Event | None,
    sock: socket.socket,
    make_web_app: Callable[[App], web.Application],
    roles: str = "all",
    replica_id: str | None = None,
) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    app = await build(settings, roles=roles, replica_id=replica_id)
    web_app = make_web_app(app)
    # py_ecc (imported with eth_account) raises the recursion limit to 100,000 for its
    # own use; with it, C code that recurses per level of its input (the JSON decoder)
    # can overflow the C stack and kill the process instead of raising RecursionError.
    # Request bodies are depth-checked before parsing too (domain/parsing.py).
    sys.setrecursionlimit(RECURSION_LIMIT)
    # Everything built so far (modules, settings, ABIs, the ORM registry) lives as long
    # as the process: move it out of the collector's way so a full collection under load
    # walks only what requests and ticks allocate (fewer, shorter pauses in the tail).
    gc.collect()
    gc.freeze()
    # The young generation is collected every 1,000 allocations (about Python's own
    # 700): collections of 50,000 had fewer pauses, but one of them took 12-35 ms (tens
    # of thousands of objects in short-lived cycles), a withdrawal request's whole
    # latency budget; at 1,000 none takes over 6 ms (withdrawal bench, open loop at
    # 500/s: p99 29-42 -> 27-32 ms, throughput unchanged).
    gc.set_threshold(1_000, 20, 20)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    register(
        config_dir=settings.config_dir,
        api_host=settings.api.host,
        api_port=settings.api.port,
        database_url=settings.database.url,
        env=None,
    )
    if app.roles != "api":
        await _log_recovery(app)
    scheduler = AsyncIOScheduler()
    schedule(app, scheduler)
    if app.keeper is not None:
        app.keeper.start()
    scheduler.start()
    names = ", ".join(n.name for n in settings.enabled_networks) or "none"
    log.info(
        "watcher running: api http://%s:%d, networks: %s, config %s, pid %d, replica %s, roles %s",
        settings.api.host,
        settings.api.port,
        names,
        settings.config_dir,
        os.getpid(),
        app.replica_id,
        app.roles,
    )
    # The registry record stays after the stop (its process is gone then): operator
    # commands with no flags still find this daemon's config and say "stopped at".
    try:
        await stop.wait()
    finally:
        log.info("stopping: no new ticks; finishing the ticks in flight")
        scheduler.pause()
        # Within the deployments' grace periods (30 s in compose, 60 s under systemd):
        # 15 s for the ticks in flight, then up to CANCEL_WAIT_S for the rest to unwind.
        await app.runner.drain(limit_seconds=STOP_WAIT_S)
        scheduler.shutdown(wait=False)
        if app.keeper is not None:
            await app.keeper.stop()  # the leases go at once: no wait for their expiry
        await runner.cleanup()
        try:
            await beat(app, stopped=True)
        except Exception:  # the stop goes on; status then sees the beat age instead
            log.warning("could not write the stopped marker", exc_info=True)
        await app.close()
        log.info("stopped")
