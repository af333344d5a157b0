"""The ``watcher`` command line (typer + rich): ``watcher.cli.root`` assembles the groups."""

from __future__ import annotations

from typing import Any


def main() -> None:
    from watcher.cli.root import main as run_main

    run_main()


def __getattr__(name: str) -> Any:
    # ``from watcher.cli import app`` (tests, docs generation) without importing the
    # whole tree when only ``main`` is needed.
    if name == "app":
        from watcher.cli.root import app

        return app
    raise AttributeError(name)
