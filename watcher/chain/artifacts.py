"""Compiled contract artifacts (ABI + bytecode) committed under watcher/chain/compiled/.

The artifacts are produced by ``contracts/scripts/compile.js`` (solcjs, pinned
settings) and committed inside the package, so they ship as package data of the wheel
and an installed ``watcher`` finds them from any working directory; the Python side
never needs a compiler. Loading is
cached: an artifact is read and parsed once per process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak

ARTIFACTS_DIR = Path(__file__).resolve().parent / "compiled"

DEPOSIT_EVENT_SIGNATURE = "Deposit(address,address,uint256)"
WITHDRAWN_EVENT_SIGNATURE = "Withdrawn(uint256,address,address,uint256)"
WITHDRAW_PAUSED_EVENT_SIGNATURE = "WithdrawPaused(uint256,address,uint256,uint256)"
PAUSED_EVENT_SIGNATURE = "Paused(address)"
UNPAUSED_EVENT_SIGNATURE = "Unpaused(address)"


def _topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


# topic0 of the vault's events, as lower-case 0x-hex (the form eth_getLogs returns).
DEPOSIT_TOPIC = _topic(DEPOSIT_EVENT_SIGNATURE)
WITHDRAWN_TOPIC = _topic(WITHDRAWN_EVENT_SIGNATURE)
WITHDRAW_PAUSED_TOPIC = _topic(WITHDRAW_PAUSED_EVENT_SIGNATURE)
PAUSED_TOPIC = _topic(PAUSED_EVENT_SIGNATURE)
UNPAUSED_TOPIC = _topic(UNPAUSED_EVENT_SIGNATURE)


class ArtifactError(RuntimeError):
    """An artifact is missing or malformed."""


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str


@cache
def load_artifact(name: str) -> Artifact:
    """Load ``watcher/chain/compiled/<name>.json``; raises ArtifactError if absent or malformed."""
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(
            f"contract artifact {path} not found: the watcher package is incomplete; "
            "reinstall it (pip install --force-reinstall watcher), or in a checkout "
            "regenerate it with `make contracts`"
        ) from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"contract artifact {path} is not valid JSON: {exc}") from exc
    try:
        abi = raw["abi"]
        bytecode = raw["bytecode"]
        deployed = raw["deployedBytecode"]
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"contract artifact {path} lacks {exc}") from exc
    if not isinstance(abi, list) or not all(isinstance(e, dict) for e in abi):
        raise ArtifactError(f"contract artifact {path}: abi is not a list of objects")
    for field, value in (("bytecode", bytecode), ("deployedBytecode", deployed)):
        if not isinstance(value, str) or not value.startswith("0x") or len(value) <= 2:
            raise ArtifactError(f"contract artifact {path}: {field} is not 0x-hex")
    return Artifact(name=name, abi=abi, bytecode=bytecode, deployed_bytecode=deployed)
