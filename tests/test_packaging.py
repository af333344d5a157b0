"""The deployable pieces outside the Python package: compose file, Dockerfile, alert
rules (promtool), dashboard."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / ".venv-compose" / "bin" / "docker-compose"
PROMTOOL = shutil.which("promtool")


def _compose(tmp_path: Path, env_text: str, *args: str) -> subprocess.CompletedProcess[str]:
    """docker-compose (1.29, offline) on a copy of the compose file with its .env."""
    assert COMPOSE.exists(), "docker-compose is installed by `make test` (make .venv-compose)"
    shutil.copyfile(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text(env_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "POSTGRES_"))}
    return subprocess.run(
        [str(COMPOSE), "-f", str(tmp_path / "docker-compose.yml"), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


def _example_env() -> str:
    return (
        (ROOT / ".env.example")
        .read_text()
        .replace("WATCHER_SIGNER_KEY=\n", "WATCHER_SIGNER_KEY=k\n")
    )


def test_compose_file_is_valid_with_the_example_env(tmp_path: Path) -> None:
    out = _compose(tmp_path, _example_env(), "--profile", "devnet", "config")
    assert out.returncode == 0, out.stderr
    for service in ("postgres:", "devnet:", "watcher:", "prometheus:", "grafana:"):
        assert service in out.stdout


def test_compose_refuses_missing_secrets(tmp_path: Path) -> None:
    text = "\n".join(
        line for line in _example_env().splitlines() if not line.startswith("WATCHER_ADMIN_TOKEN")
    )
    out = _compose(tmp_path, text + "\n", "config", "-q")
    assert out.returncode != 0
    assert "WATCHER_ADMIN_TOKEN" in out.stderr


def _compose_doc() -> dict[str, Any]:
    """The compose file as data, parsed by the compose venv's PyYAML (not a dev dep)."""
    python = COMPOSE.parent / "python"
    code = "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    out = subprocess.run(
        [str(python), "-c", code, str(ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
        check=True,
    )
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def test_every_service_has_a_healthcheck_and_a_restart_policy() -> None:
    doc = _compose_doc()
    assert "version" not in doc, "the `version` key is obsolete in the compose spec"
    for name, service in doc["services"].items():
        assert "healthcheck" in service, f"service {name} has no healthcheck"
        assert service.get("restart") in {"unless-stopped", "always", "on-failure"}, name
    watcher = doc["services"]["watcher"]
    assert watcher["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert doc["services"]["devnet"]["profiles"] == ["devnet"]


def test_dockerfile_is_multistage_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = text.split("\nFROM ")
    runtime = stages[-1]
    assert len(stages) >= 3
    assert "USER watcher" in runtime and "HEALTHCHECK" in runtime and "/healthz" in runtime
    assert "npm" not in runtime and "gcc" not in runtime and "apt-get" not in runtime
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "**" or "**" in ignore  # deny by default
    for entry in (".venv", "var", ".git", "node_modules"):
        assert f"!{entry}" not in "\n".join(ignore)


def test_dashboard_json_is_the_generated_one() -> None:
    spec = importlib.util.spec_from_file_location("grafana_build", ROOT / "deploy/grafana/build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (ROOT / "deploy/grafana/watcher.json").read_text()
    assert committed == module.render(), "run `python deploy/grafana/build.py`"
    doc = json.loads(committed)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and doc["uid"] == "watcher"
    for p in doc["panels"]:
        assert p["targets"] and all(t["expr"] for t in p["targets"])


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    assert PROMTOOL, "promtool missing: `make promtool` (apt-get install prometheus)"
    rules = ROOT / "deploy/prometheus"
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules / "alerts.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        cwd=rules,
        capture_output=True,
        text=True,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    for rule in (rules / "alerts.yml").read_text().split("- alert: ")[1:]:
        name = rule.split()[0]
        assert f"docs/operations.md#alert-{name.lower()}" in rule, name
