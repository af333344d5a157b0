"""The deployable pieces outside the Python package: compose file and Dockerfile."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / ".venv-compose" / "bin" / "docker-compose"


def test_docker_compose_file_is_valid() -> None:
    assert COMPOSE.exists(), "docker-compose is installed by `make test` (make .venv-compose)"
    env = {**os.environ, "WATCHER_ADMIN_TOKEN": "t", "WATCHER_SIGNER_KEY": "k"}
    out = subprocess.run(
        [str(COMPOSE), "-f", str(ROOT / "docker-compose.yml"), "config"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for service in ("postgres:", "anvil:", "watcher:"):
        assert service in out.stdout


def test_docker_compose_refuses_missing_secrets() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    out = subprocess.run(
        [str(COMPOSE), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "WATCHER_ADMIN_TOKEN" in out.stderr


def test_dockerfile_installs_the_package_and_runs_the_daemon() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install" in text and 'ENTRYPOINT ["watcher"]' in text
    assert "npm ci" in text
