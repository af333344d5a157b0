"""Calldata for the vault and ERC-20 calls the withdrawal pipeline makes, and the
JSON-RPC fragments to read their answers. Encoding is eth_abi's; the selectors are
derived from the committed Vault ABI, so a contract change that renames or retypes
``withdraw`` fails loudly at import instead of sending garbage.

Pure: no I/O. The sender/tracker pass these to :class:`~watcher.chain.rpc.RpcClient`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from watcher.chain.artifacts import WITHDRAWN_TOPIC, load_artifact

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

WITHDRAW_SIGNATURE = "withdraw(uint256,address,address,uint256,uint256,bytes[])"
WITHDRAWN_CALL_SIGNATURE = "withdrawn(uint256)"
PAUSED_CALL_SIGNATURE = "paused()"
VALIDATORS_CALL_SIGNATURE = "validators()"
BALANCE_OF_SIGNATURE = "balanceOf(address)"

__all__ = [
    "WITHDRAWN_TOPIC",
    "ZERO_ADDRESS",
    "balance_of_call",
    "balance_request",
    "decode_uint",
    "decode_validators",
    "id_topic",
    "paused_request",
    "validators_request",
    "withdraw_calldata",
    "withdrawn_request",
]


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def _abi_signature(name: str) -> str:
    for entry in load_artifact("Vault").abi:
        if entry.get("type") == "function" and entry.get("name") == name:
            types = ",".join(str(i["type"]) for i in entry.get("inputs", []))
            return f"{name}({types})"
    raise LookupError(f"Vault ABI has no function {name}")


if _abi_signature("withdraw") != WITHDRAW_SIGNATURE:  # pragma: no cover - contract drift
    raise RuntimeError(f"Vault.withdraw is now {_abi_signature('withdraw')}; update vault.py")

_WITHDRAW = _selector(WITHDRAW_SIGNATURE)
_WITHDRAWN = _selector(WITHDRAWN_CALL_SIGNATURE)
_PAUSED = _selector(PAUSED_CALL_SIGNATURE)
_VALIDATORS = _selector(VALIDATORS_CALL_SIGNATURE)
_BALANCE_OF = _selector(BALANCE_OF_SIGNATURE)


def withdraw_calldata(
    withdrawal_id: int,
    token: str,
    to: str,
    amount: int,
    deadline: int,
    signatures: Sequence[bytes],
) -> str:
    """0x-hex calldata of ``vault.withdraw(id, token, to, amount, deadline, signatures)``
    (token 0x0 = native; ``signatures`` the validators' 65-byte payout signatures sorted
    by signer, :func:`watcher.chain.payout.signatures_blob`)."""
    args = abi_encode(
        ["uint256", "address", "address", "uint256", "uint256", "bytes[]"],
        [withdrawal_id, token, to, amount, deadline, list(signatures)],
    )
    return "0x" + (_WITHDRAW + args).hex()


def paused_request(vault: str, block: str = "latest") -> tuple[str, list[Any]]:
    """The JSON-RPC (method, params) that asks ``vault.paused()`` (decode: :func:`decode_uint`)."""
    return "eth_call", [{"to": vault, "data": "0x" + _PAUSED.hex()}, block]


def validators_request(vault: str, block: str = "latest") -> tuple[str, list[Any]]:
    """The JSON-RPC (method, params) that asks ``vault.validators()``; decode the answer
    with :func:`decode_validators`."""
    return "eth_call", [{"to": vault, "data": "0x" + _VALIDATORS.hex()}, block]


def decode_validators(result: str) -> dict[str, int]:
    """``validators()``'s answer as {checksummed signer: power}."""
    raw = bytes.fromhex(result.removeprefix("0x"))
    if not raw:
        raise ValueError("empty eth_call result (no contract at that address?)")
    signers, powers = abi_decode(["address[]", "uint256[]"], raw)
    return {str(to_checksum_address(s)): int(p) for s, p in zip(signers, powers, strict=True)}


def withdrawn_request(
    vault: str, withdrawal_id: int, block: str = "latest"
) -> tuple[str, list[Any]]:
    """The JSON-RPC (method, params) that asks ``vault.withdrawn(id)`` at ``block``
    (true once the id has been paid; decode the answer with :func:`decode_uint`)."""
    data = _WITHDRAWN + abi_encode(["uint256"], [withdrawal_id])
    return "eth_call", [{"to": vault, "data": "0x" + data.hex()}, block]


def balance_of_call(token: str, holder: str) -> dict[str, Any]:
    data = _BALANCE_OF + abi_encode(["address"], [holder])
    return {"to": token, "data": "0x" + data.hex()}


def balance_request(token: str, holder: str, block: str = "latest") -> tuple[str, list[Any]]:
    """The JSON-RPC (method, params) that reads ``holder``'s balance of ``token`` at
    ``block`` (token 0x0 = the native coin)."""
    if token == ZERO_ADDRESS:
        return "eth_getBalance", [holder, block]
    return "eth_call", [balance_of_call(token, holder), block]


def decode_uint(result: str) -> int:
    """A single uint256 (or bool) return value from eth_call's 0x-hex result."""
    raw = bytes.fromhex(result.removeprefix("0x"))
    if not raw:
        raise ValueError("empty eth_call result (no contract at that address?)")
    (value,) = abi_decode(["uint256"], raw)
    return int(value)


def id_topic(withdrawal_id: int) -> str:
    """The indexed ``id`` topic of the vault's Withdrawn event."""
    return "0x" + withdrawal_id.to_bytes(32, "big").hex()
