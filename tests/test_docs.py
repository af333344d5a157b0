"""The docs stay honest: the README is short and names every command, every relative
link points at a file (and anchor) that exists, nothing cites material outside the
repository, and every alarm kind and Prometheus alert has its runbook section."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main
import yaml

from watcher.cli import app
from watcher.store.alarms import AlarmKind

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    found = set(re.findall(r'<a id="([^"]+)"></a>', text))
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; depth belongs in docs/"


def test_links_resolve() -> None:
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto
            file_part, _, anchor = target.partition("#")
            path = (doc.parent / file_part).resolve() if file_part else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such anchor)")
    assert not broken, broken


def test_no_doc_cites_material_outside_the_repo() -> None:
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text and "shared/design" not in text, doc
        for name in ("DOMAIN.md", "API.md", "ARCHITECTURE.md", "STACK.md"):
            assert name not in text, f"{doc.relative_to(ROOT)} cites {name}"


def test_every_command_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    group = typer.main.get_command(app)
    names = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subs = getattr(command, "commands", None)
        names.append(f"watcher {name}")
        names.extend(f"{name} {sub}" for sub in subs or ())
    missing = [
        n
        for n in names
        if f"`{n}" not in readme
        and f"`watcher {n}" not in readme
        and not (n.startswith("withdrawals ") and n.split()[1] in readme)
    ]
    assert not missing, f"commands missing from the README's table: {missing}"


def test_every_alarm_and_alert_has_a_runbook_section() -> None:
    ops = ROOT / "docs" / "operations.md"
    anchors = _anchors(ops)
    missing = [k.value for k in AlarmKind if f"alarm-{k.value}" not in anchors]
    assert not missing, f"alarm kinds without a section in docs/operations.md: {missing}"
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            assert url.startswith("docs/operations.md#"), url
            assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: {url}"


def test_the_threat_model_cites_tests_that_exist() -> None:
    """Each "can't" in docs/threat-model.md names the test that shows it: every cited
    file exists and every cited ``file::test`` is a test function in it."""
    text = (ROOT / "docs" / "threat-model.md").read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text)
    assert len(cited) >= 8
    for path, name in cited:
        source = ROOT / path
        assert source.is_file(), path
        if name:
            assert re.search(rf"def {name}\(", source.read_text()), f"{path}::{name}"
