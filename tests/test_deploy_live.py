"""The package from a wheel, run from another directory, monitored by a real Prometheus.

One flow (each step needs the one before): build the wheel, install it into a fresh
venv (its dependencies come from the test venv's site-packages through a .pth line; the
source tree is NOT importable there), start `watcher devnet` and `watcher run` from a
temporary working directory, check /healthz and a credited native deposit, then a real
Prometheus (Debian's package) scrapes the daemon with the shipped alert rules; every
dashboard and rule expression is accepted, the dashboard's queries return data, and
stopping anvil makes WatcherRpcDown fire. The rules are the shipped ones with only the
range windows and `for:` durations shortened, so the test stays within seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_utils.crypto import keccak

from watcher.chain.devnet import free_port

ROOT = Path(__file__).resolve().parents[1]
ANVIL = ROOT / "contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
PROMETHEUS = shutil.which("prometheus")
DEPOSITOR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil account 1
DEPOSIT_NATIVE = "0x" + keccak(text="depositNative()")[:4].hex()


def _wait(what: str, check: Callable[[], bool], within: float, procs: list[Any]) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: {p.args[0]} exited with {p.returncode}")
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {within}s")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _rpc(url: str, method: str, *params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        doc = json.loads(resp.read())
    assert "error" not in doc, doc
    return doc["result"]


@pytest.fixture
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel installed; returns its bin directory."""
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(base / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((base / "dist").glob("watcher-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = sysconfig.get_paths()["purelib"]
    site = next(venv.glob("lib/python*/site-packages"))
    # Dependencies from the test venv; a plain path line, so the test venv's own .pth
    # files (its editable install of this checkout) are not processed.
    (site / "zz_deps.pth").write_text(purelib + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin/python"),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    yield venv / "bin"


def test_wheel_runs_from_anywhere_and_prometheus_alerts_on_rpc_down(
    installed: Path, tmp_path: Path
) -> None:
    assert PROMETHEUS, "prometheus missing: `make promtool` (apt-get install prometheus)"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    env["PATH"] = f"{installed}:/usr/bin:/bin"  # no anvil on PATH: WATCHER_ANVIL is used
    env["WATCHER_ANVIL"] = str(ANVIL)
    where = subprocess.run(
        [str(installed / "python"), "-c", "import watcher; print(watcher.__file__)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(installed.parent)), where  # the wheel, not the checkout

    procs: list[subprocess.Popen[bytes]] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def spawn(
        name: str, *args: str, extra: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = (logs / f"{name}.log").open("wb")
        p = subprocess.Popen(
            list(args), cwd=cwd, env={**env, **(extra or {})}, stdout=out, stderr=subprocess.STDOUT
        )
        procs.append(p)
        return p

    try:
        anvil_port, api_port, prom_port = free_port(), free_port(), free_port()
        devnet_dir = tmp_path / "devnet"
        devnet = spawn(
            "devnet",
            str(installed / "watcher"),
            "devnet",
            "--out",
            str(devnet_dir),
            "--port",
            str(anvil_port),
            "--block-time",
            "0.5",
            "--confirmations",
            "1",
        )
        target = devnet_dir / "networks" / "devnet.toml"
        _wait("devnet config", target.exists, 40, procs)
        key = subprocess.run(
            [str(installed / "python"), "-m", "watcher.chain.devnet_key"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        db = tmp_path / "watcher.db"
        spawn(
            "run",
            str(installed / "watcher"),
            "run",
            "--config",
            str(devnet_dir),
            "--port",
            str(api_port),
            extra={
                "WATCHER_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
                "WATCHER_ADMIN_TOKEN": "live-test-admin-token",
                "WATCHER_SIGNER_KEY": key,
            },
        )
        api = f"http://127.0.0.1:{api_port}"
        _wait("/healthz 200", lambda: _get(f"{api}/healthz")[0] == 200, 40, procs)

        # A native deposit from anvil account 1 is credited.
        rpc = f"http://127.0.0.1:{anvil_port}"
        vault = re.search(r'vault = "(0x[0-9a-fA-F]{40})"', target.read_text())
        assert vault
        _rpc(
            rpc,
            "eth_sendTransaction",
            {"from": DEPOSITOR, "to": vault.group(1), "value": hex(10**18), "data": DEPOSIT_NATIVE},
        )

        def credited() -> bool:
            with sqlite3.connect(db) as c:
                rows = c.execute("SELECT state FROM deposits").fetchall()
            return ("credited",) in rows

        _wait("deposit credited", credited, 30, procs)

        # Prometheus with the shipped rules (windows and `for:` shortened).
        prom_dir = tmp_path / "prom"
        prom_dir.mkdir()
        rules = (ROOT / "deploy/prometheus/alerts.yml").read_text()
        rules = re.sub(r"\[(2m|10m)\]", "[15s]", rules)
        rules = re.sub(r"for: \d+m", "for: 1s", rules)
        (prom_dir / "alerts.yml").write_text(rules)
        (prom_dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            f"  - {{job_name: watcher, static_configs: [{{targets: ['127.0.0.1:{api_port}']}}]}}\n"
        )
        spawn(
            "prometheus",
            PROMETHEUS,
            f"--config.file={prom_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        )
        prom = f"http://127.0.0.1:{prom_port}/api/v1"

        def query(expr: str) -> dict[str, Any]:
            status, body = _get(f"{prom}/query?" + urllib.parse.urlencode({"query": expr}))
            assert status == 200, (expr, body)
            doc: dict[str, Any] = json.loads(body)
            assert doc["status"] == "success", (expr, doc)
            return doc

        _wait(
            "scraped",
            lambda: (
                _get(f"{prom}/query?query=up")[0] == 200
                and bool(query('up{job="watcher"} == 1')["data"]["result"])
            ),
            30,
            procs,
        )
        time.sleep(3)  # a few scrapes, so rate() has two samples

        dashboard = json.loads((ROOT / "deploy/grafana/watcher.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        exported = _get(f"{api}/metrics")[1].decode()
        for expr in exprs:
            for name in re.findall(r"\bwatcher_[a-z_]+", expr):
                family = re.sub(r"_(total|bucket|count|sum)$", "", name)
                assert f"# TYPE {family} " in exported or f"# TYPE {name} " in exported, (
                    f"{name} is not exported by the daemon"
                )
            query(expr)
        # Every panel whose metric has samples returns data.
        with_data = [
            "watcher_chain_head",
            "watcher_lag_seconds",
            "watcher_withdrawals",
            "watcher_alarms_active",
            "watcher_deposits_total",
            "watcher_rpc_calls_total",
        ]
        for expr in exprs:
            if any(m in expr for m in with_data):
                assert query(expr)["data"]["result"], f"no data for {expr}"
        groups = json.loads(_get(f"{prom}/rules")[1])["data"]["groups"]
        loaded = {r["name"]: r for g in groups for r in g["rules"]}
        assert len(loaded) == rules.count("- alert: ")
        for rule in loaded.values():
            assert rule["health"] == "ok", rule
            query(rule["query"])
            for name in re.findall(r"\bwatcher_[a-z_]+", rule["query"]):
                family = re.sub(r"_(total|bucket|count|sum)$", "", name)
                assert f"# TYPE {family} " in exported or f"# TYPE {name} " in exported, (
                    f"{name} is not exported by the daemon"
                )

        def rpc_down_firing() -> bool:
            alerts = json.loads(_get(f"{prom}/alerts")[1])["data"]["alerts"]
            return any(
                a["labels"]["alertname"] == "WatcherRpcDown"
                and a["state"] == "firing"
                and a["labels"].get("network") == "devnet"
                for a in alerts
            )

        assert not rpc_down_firing()
        devnet.send_signal(signal.SIGTERM)  # anvil goes with it
        devnet.wait(timeout=20)
        procs.remove(devnet)
        _wait("WatcherRpcDown firing", rpc_down_firing, 60, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
