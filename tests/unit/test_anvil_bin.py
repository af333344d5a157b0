"""anvil discovery: WATCHER_ANVIL, then PATH, then the checkout's node_modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.chain.anvil_bin import NPM_RELATIVE, AnvilNotFoundError, find_anvil


def _exe(path: Path, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_explicit_variable_wins_over_path_and_checkout(tmp_path: Path) -> None:
    explicit = _exe(tmp_path / "mine" / "anvil")
    _exe(tmp_path / "bin" / "anvil")
    _exe(tmp_path / "contracts" / NPM_RELATIVE)
    env = {"WATCHER_ANVIL": str(explicit), "PATH": str(tmp_path / "bin")}
    assert find_anvil(env, tmp_path / "contracts") == explicit.resolve()


def test_explicit_variable_must_name_an_executable(tmp_path: Path) -> None:
    with pytest.raises(AnvilNotFoundError, match=r"WATCHER_ANVIL=.*no such file"):
        find_anvil({"WATCHER_ANVIL": str(tmp_path / "nope")}, tmp_path)
    plain = _exe(tmp_path / "anvil", 0o644)
    with pytest.raises(AnvilNotFoundError, match="not executable"):
        find_anvil({"WATCHER_ANVIL": str(plain)}, tmp_path)


def test_path_then_checkout(tmp_path: Path) -> None:
    on_path = _exe(tmp_path / "bin" / "anvil")
    npm = _exe(tmp_path / "contracts" / NPM_RELATIVE)
    assert find_anvil({"PATH": str(tmp_path / "bin")}, tmp_path / "contracts") == on_path
    assert find_anvil({"PATH": str(tmp_path / "empty")}, tmp_path / "contracts") == npm


def test_nothing_found_names_every_remedy(tmp_path: Path) -> None:
    with pytest.raises(AnvilNotFoundError) as err:
        find_anvil({"PATH": str(tmp_path)}, tmp_path / "contracts")
    text = str(err.value)
    assert "WATCHER_ANVIL" in text and "PATH" in text and "make setup" in text
