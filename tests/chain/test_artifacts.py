"""The committed artifacts match a fresh compile, and load as expected."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from eth_utils.crypto import keccak

from watcher.chain.artifacts import (
    ARTIFACTS_DIR,
    DEPOSIT_TOPIC,
    WITHDRAWN_TOPIC,
    ArtifactError,
    load_artifact,
)

REPO = Path(__file__).resolve().parents[2]
COMPILE_JS = REPO / "contracts" / "scripts" / "compile.js"


def test_fresh_compile_is_byte_identical_to_committed_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        ["node", str(COMPILE_JS), "--out", str(out)],
        cwd=tmp_path,  # the script must not depend on the working directory
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = sorted(p.name for p in out.glob("*.json"))
    committed = sorted(p.name for p in ARTIFACTS_DIR.glob("*.json"))
    assert fresh == committed == ["TestToken.json", "Vault.json"]
    for name in fresh:
        assert (out / name).read_bytes() == (ARTIFACTS_DIR / name).read_bytes(), (
            f"watcher/chain/compiled/{name} is stale: run `make contracts` and commit the result"
        )


def test_load_artifact_fields_and_cache() -> None:
    vault = load_artifact("Vault")
    assert vault.name == "Vault"
    assert vault.bytecode.startswith("0x") and len(vault.bytecode) > 1000
    assert vault.deployed_bytecode.startswith("0x")
    assert len(vault.deployed_bytecode) < len(vault.bytecode)
    assert load_artifact("Vault") is vault
    names = {(e["type"], e.get("name")) for e in vault.abi}
    for expected in [
        ("function", "deposit"),
        ("function", "depositNative"),
        ("function", "withdraw"),
        ("function", "withdrawn"),
        ("function", "isWithdrawn"),
        ("function", "pause"),
        ("function", "unpause"),
        ("function", "setOperator"),
        ("function", "setGuardian"),
        ("function", "transferOwnership"),
        ("event", "Deposit"),
        ("event", "Withdrawn"),
        ("error", "AlreadyWithdrawn"),
    ]:
        assert expected in names


def _event_signature(abi: list[dict[str, object]], name: str) -> str:
    (entry,) = [e for e in abi if e["type"] == "event" and e["name"] == name]
    inputs = entry["inputs"]
    assert isinstance(inputs, list)
    return f"{name}({','.join(i['type'] for i in inputs)})"


def test_topics_match_the_compiled_abi() -> None:
    abi = load_artifact("Vault").abi
    assert _event_signature(abi, "Deposit") == "Deposit(address,address,uint256)"
    assert _event_signature(abi, "Withdrawn") == "Withdrawn(uint256,address,address,uint256)"
    assert "0x" + keccak(text=_event_signature(abi, "Deposit")).hex() == DEPOSIT_TOPIC
    assert "0x" + keccak(text=_event_signature(abi, "Withdrawn")).hex() == WITHDRAWN_TOPIC
    assert DEPOSIT_TOPIC == "0x5548c837ab068cf56a2c2479df0882a4922fd203edb7517321831d95078c5f62"
    assert WITHDRAWN_TOPIC == "0xe5df19de43c8c04fd192bc68e484b2593570925fbb6ad8c07ccafbc2aa5c37a1"


def test_missing_artifact_has_a_clear_error() -> None:
    with pytest.raises(ArtifactError, match="make contracts"):
        load_artifact("NoSuchContract")
