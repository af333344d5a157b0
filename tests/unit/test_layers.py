"""Layers point one way: domain <- chain/store <- services <- api/cli.

Scans the ``import`` statements (top level and inside functions) of every module; a
module may import its own layer and the layers below it, never one above. The command
group modules of ``watcher/cli`` import only ``watcher.cli.common`` of the CLI (the root
assembles them), so there is no import cycle among them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "watcher"

#: What each layer may import of the watcher package (besides itself). ``settings`` is
#: the configuration every layer below the API is given (it imports only ``domain``);
#: ``crashpoints`` is a leaf that imports nothing of the project.
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "chain": {"domain", "settings", "crashpoints"},
    "store": {"domain", "chain", "settings", "crashpoints"},
    "services": {
        "domain",
        "chain",
        "store",
        "settings",
        "logs",
        "metrics",
        "runtime",
        "crashpoints",
    },
    "api": {"domain", "chain", "store", "services", "settings", "logs", "metrics", "app"},
}


def _type_only(tree: ast.Module) -> set[int]:
    """Lines of ``from watcher.app import ...`` under ``if TYPE_CHECKING:``: services name
    the composition root's ``App`` / ``Service`` types for the checker, which is no
    dependency at run time."""
    lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for inner in node.body:
                if isinstance(inner, ast.ImportFrom) and inner.module == "watcher.app":
                    lines.add(inner.lineno)
    return lines


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    tree = ast.parse(path.read_text())
    skip = _type_only(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in names if n.startswith("watcher.")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("watcher.")]
    return found


def _layer_of(module: str) -> str:
    return module.split(".")[1]


def violations() -> list[str]:
    bad: list[str] = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for line, module in _imports(path):
                target = _layer_of(module)
                if (
                    target != layer
                    and target not in allowed
                    and not module.startswith("watcher.py")
                ):
                    rel = path.relative_to(PACKAGE.parent)
                    bad.append(f"{rel}:{line} imports {module} ({layer} -> {target})")
    return bad


def test_layers_point_one_way() -> None:
    assert violations() == []


def test_the_scan_sees_an_upward_import(tmp_path: Path) -> None:
    # The scanner itself works: an upward import in a function body is found.
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from watcher.api.errors import ApiError\n")
    assert (2, "watcher.api.errors") in _imports(module)
    assert _layer_of("watcher.api.errors") not in ALLOWED["services"]


def test_cli_groups_import_only_common() -> None:
    bad = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        if path.name in ("root.py", "__init__.py"):
            continue
        for line, module in _imports(path):
            if module.startswith("watcher.cli") and not module.startswith("watcher.cli.common"):
                bad.append(f"{path.name}:{line} imports {module}")
    assert bad == []
