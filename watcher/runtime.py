"""Where a running daemon can be found, and what keeps two from sharing one SQLite file.

Registry: each ``watcher run`` writes ``<state dir>/daemons/<pid>.json`` once its API
port is bound (config directory, API URL, database URL with any password masked, host,
start time) and removes it on a clean stop. An operator command given neither
``--config`` nor ``$WATCHER_CONFIG_DIR`` reads that registry: with exactly one live
daemon on this host it uses that daemon's configuration, so ``watcher status`` in a
second shell after ``make run`` needs no flags. With none running, the newest record
(a daemon that stopped or died) is still used, so status can say "stopped at" rather
than look at another database; older records of dead processes are swept. The state
directory is ``$WATCHER_STATE_DIR``, else ``$XDG_STATE_HOME/watcher``, else
``~/.local/state/watcher``.

SQLite lock: SQLite has one writer and the daemon's guarantees (one sender per hot
wallet, one listener per network) assume one daemon per database. ``watcher run`` on a
SQLite file takes an exclusive ``flock`` on ``<file>.lock`` for its whole life; a second
daemon on the same file is refused with the first one's pid. The kernel drops the lock
when the process dies, however it dies, so a crash never leaves a stale lock behind.
Several replicas need PostgreSQL.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class RuntimeProblem(Exception):
    """The daemon cannot start here, or the CLI cannot tell which daemon is meant."""


def state_dir(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if explicit := env.get("WATCHER_STATE_DIR"):
        return Path(explicit)
    if xdg := env.get("XDG_STATE_HOME"):
        return Path(xdg) / "watcher"
    return Path.home() / ".local" / "state" / "watcher"


def masked_url(url: str) -> str:
    """The URL with its password (if any) replaced by ***: safe to write down and show."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


@dataclass(frozen=True)
class DaemonRecord:
    pid: int
    host: str
    config_dir: Path
    api_url: str
    database_url: str  # password masked
    database_has_password: bool
    started_at: str
    path: Path

    @classmethod
    def read(cls, path: Path) -> DaemonRecord | None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                pid=int(doc["pid"]),
                host=str(doc["host"]),
                config_dir=Path(doc["configDir"]),
                api_url=str(doc["apiUrl"]),
                database_url=str(doc["databaseUrl"]),
                database_has_password=bool(doc.get("databaseHasPassword", False)),
                started_at=str(doc["startedAt"]),
                path=path,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        if self.host != socket.gethostname():
            return False
        return pid_alive(self.pid)

    def describe(self) -> str:
        return f"pid {self.pid} (config {self.config_dir}, api {self.api_url})"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _has_password(url: str) -> bool:
    from sqlalchemy.engine import make_url

    return make_url(url).password is not None


def register(
    *, config_dir: Path, api_host: str, api_port: int, database_url: str, env: dict[str, str] | None
) -> Path:
    """Write this process's record; returns its path (remove it with ``unregister``)."""
    folder = state_dir(env) / "daemons"
    folder.mkdir(parents=True, exist_ok=True)
    host = "127.0.0.1" if api_host in ("0.0.0.0", "::", "") else api_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    doc: dict[str, Any] = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "configDir": str(config_dir),
        "apiUrl": f"http://{host}:{api_port}",
        "databaseUrl": masked_url(database_url),
        "databaseHasPassword": _has_password(database_url),
        "startedAt": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = folder / f"{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def unregister(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def _records(env: dict[str, str] | None) -> list[DaemonRecord]:
    folder = state_dir(env) / "daemons"
    if not folder.is_dir():
        return []
    found = [r for p in sorted(folder.glob("*.json")) if (r := DaemonRecord.read(p))]
    return sorted(found, key=lambda r: r.started_at)


def running_daemons(env: dict[str, str] | None = None) -> list[DaemonRecord]:
    """The live daemons of this host, oldest first."""
    return [r for r in _records(env) if r.alive()]


def find_daemon(env: dict[str, str] | None = None) -> DaemonRecord | None:
    """The one running daemon; with none running, the newest one that ran on this host
    (older records of dead processes are removed); None when there is no record.
    Several running is an error: the caller must say which."""
    records = _records(env)
    live = [r for r in records if r.alive()]
    if len(live) > 1:
        listed = "; ".join(d.describe() for d in live)
        raise RuntimeProblem(
            f"{len(live)} watcher daemons are running on this host ({listed}): "
            "say which with --config DIR (or $WATCHER_CONFIG_DIR)"
        )
    if live:
        return live[0]
    here = [r for r in records if r.host == socket.gethostname()]
    for old in here[:-1]:
        unregister(old.path)
    return here[-1] if here and here[-1].config_dir.is_dir() else None


class SqliteLock:
    """An exclusive, non-blocking flock on ``<database>.lock``, held until released."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RuntimeProblem(
                f"the SQLite database {self.path.with_suffix('')} is in use by another "
                f"watcher daemon (pid {holder}): one daemon per SQLite file; stop it first, "
                "or use PostgreSQL to run several replicas"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def sqlite_lock_for(url: str) -> SqliteLock | None:
    """The lock for a file-backed SQLite URL; None for PostgreSQL or an in-memory database."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return SqliteLock(Path(database).resolve())
