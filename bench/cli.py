"""Operator CLI latency: whole-process wall time of `watcher --help` and `watcher status`
(not a test).

    .venv/bin/python bench/cli.py [--runs 9]

Starts a devnet (`watcher devnet`) and a daemon (`watcher run`) on temporary
directories with a private state directory, then runs each command ``--runs`` times
as a new process and takes the median:

- ``help``: `watcher --help`;
- ``status``: `watcher status` with no flags beside the running daemon (the CLI finds
  it in the state directory and asks its API for the status document);
- ``status_db``: `watcher status` once the daemon is stopped (the CLI reads the
  database itself: what it does when the daemon is down or does not answer).

The last line is ``cli: help <s>s status <s>s`` (status_db on the line before).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATCHER = [sys.executable, "-m", "watcher"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(args: list[str], env: dict[str, str], runs: int) -> tuple[float, int]:
    """Median seconds of ``runs`` whole-process runs, and the last exit code."""
    times = []
    rc = 0
    for _ in range(runs):
        start = time.perf_counter()
        rc = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, check=False).returncode
        times.append(time.perf_counter() - start)
    return statistics.median(times), rc


def wait_for(check: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise SystemExit(f"bench: {what} not ready within {within:.0f} s")


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return bool(r.status in (200, 503))
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="watcher-cli-bench-") as tmp:
        work = Path(tmp)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("WATCHER_CONFIG_DIR", "WATCHER_DATABASE_URL")
        }
        env.update(
            WATCHER_STATE_DIR=str(work / "state"),
            WATCHER_ADMIN_TOKEN="bench-admin-token",
        )
        key = subprocess.run(
            [sys.executable, "-m", "watcher.chain.devnet_key"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        cfg = work / "devnet"
        anvil_port, api_port = free_port(), free_port()
        devnet = subprocess.Popen(
            [*WATCHER, "devnet", "--out", str(cfg), "--port", str(anvil_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        daemon: subprocess.Popen[bytes] | None = None
        try:
            wait_for(lambda: (cfg / "networks" / "devnet.toml").exists(), 120, "devnet")
            daemon = subprocess.Popen(
                [*WATCHER, "run", "--config", str(cfg), "--port", str(api_port)],
                env={
                    **env,
                    "WATCHER_SIGNER_KEY": key,
                    "WATCHER_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'bench.db'}",
                },
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for(lambda: healthy(api_port), 120, "daemon")
            time.sleep(3)  # first ticks done: an idle daemon
            help_s, _ = timed([*WATCHER, "--help"], env, args.runs)
            status_s, rc = timed([*WATCHER, "status"], env, args.runs)
            if rc not in (0, 1):
                raise SystemExit(f"bench: watcher status exited {rc} beside a running daemon")
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
            db_s, rc = timed([*WATCHER, "status"], env, args.runs)
            if rc != 2:
                raise SystemExit(f"bench: watcher status exited {rc} for a stopped daemon")
        finally:
            for proc in (daemon, devnet):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    print(f"status_db (daemon stopped, reads the database) {db_s:.2f}s over {args.runs} runs")
    print(f"cli: help {help_s:.2f}s status {status_s:.2f}s")


if __name__ == "__main__":
    main()
