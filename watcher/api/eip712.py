"""EIP-712 typed data: the messages users sign, and the checks on a signed request.

Domain: ``{name: "Watcher", version: "1", chainId, verifyingContract}``.

* Withdrawals sign with the destination network's chain id and vault (DOMAIN.md §6).
* Requests that are not tied to a network (``Rebalance``, ``IsolatedMargin``) carry a
  ``chainId`` in the body; it must be the chain id of an *enabled* configured network,
  and ``verifyingContract`` is that network's vault. A wallet signs on whatever chain
  it is connected to, so any enabled network is accepted; the signature binds to it.

Message types live in :data:`TYPES`; a capability adds its own with
:func:`register_type` (the withdrawal intake adds ``Withdraw``). Amounts in messages
that are not token transfers (``IsolatedMargin.amount``) are fixed-point with
:data:`SIGNED_AMOUNT_DECIMALS` (18) decimals: "12.5" USDT is 12500000000000000000.

:func:`verify` checks, in this order: the deadline (a passed one is
``SIGNATURE_EXPIRED``), that the signature parses and recovers (``BAD_SIGNATURE``), and
that the signer is the account (``WRONG_SIGNER``). All are 401.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_keys.exceptions import BadSignature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError as KeyValidationError

from watcher.api.errors import ApiError, bad_request, unauthorized
from watcher.settings import NetworkConfig, Settings

DOMAIN_NAME = "Watcher"
DOMAIN_VERSION = "1"
SIGNED_AMOUNT_DECIMALS = 18

DOMAIN_FIELDS: list[dict[str, str]] = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]

TYPES: dict[str, list[dict[str, str]]] = {}

_SIGNATURE_RE = re.compile(r"0x[0-9a-fA-F]{130}")
_FIELD_RE = re.compile(r"(\w+) (\w+)")


def register_type(name: str, fields: Sequence[tuple[str, str]] | str) -> None:
    """Add a primary type: ``register_type("Rebalance", [("address", "account"), ...])``
    or its canonical text ``"Rebalance(address account,uint256 nonce,uint256 deadline)"``."""
    if isinstance(fields, str):
        inner = fields.removeprefix(f"{name}(").removesuffix(")")
        pairs = []
        for part in inner.split(","):
            match = _FIELD_RE.fullmatch(part.strip())
            if match is None:
                raise ValueError(f"cannot parse field {part!r} of {name}")
            pairs.append((match.group(1), match.group(2)))
        fields = pairs
    TYPES[name] = [{"name": field_name, "type": kind} for kind, field_name in fields]


register_type("Rebalance", "Rebalance(address account,uint256 nonce,uint256 deadline)")
register_type(
    "IsolatedMargin",
    "IsolatedMargin(address account,string symbol,uint8 type,uint256 amount,"
    "uint256 nonce,uint256 deadline)",
)


def type_string(name: str) -> str:
    """The canonical ``Name(type field,...)`` of a registered type."""
    return f"{name}(" + ",".join(f"{f['type']} {f['name']}" for f in TYPES[name]) + ")"


def domain(chain_id: int, verifying_contract: str) -> dict[str, Any]:
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(verifying_contract),
    }


def typed_data(
    primary_type: str, message: Mapping[str, Any], chain_id: int, verifying_contract: str
) -> dict[str, Any]:
    """The full EIP-712 document (what ``eth_signTypedData_v4`` takes)."""
    if primary_type not in TYPES:
        raise KeyError(f"unknown EIP-712 type {primary_type!r}")
    return {
        "types": {"EIP712Domain": DOMAIN_FIELDS, primary_type: TYPES[primary_type]},
        "primaryType": primary_type,
        "domain": domain(chain_id, verifying_contract),
        "message": dict(message),
    }


def signable(
    primary_type: str, message: Mapping[str, Any], chain_id: int, verifying_contract: str
) -> SignableMessage:
    return encode_typed_data(
        full_message=typed_data(primary_type, message, chain_id, verifying_contract)
    )


def digest(
    primary_type: str, message: Mapping[str, Any], chain_id: int, verifying_contract: str
) -> str:
    """The 0x-hex EIP-712 hash that is signed."""
    m = signable(primary_type, message, chain_id, verifying_contract)
    return "0x" + keccak(b"\x19" + bytes(m.version) + m.header + m.body).hex()


def sign(
    primary_type: str,
    message: Mapping[str, Any],
    chain_id: int,
    verifying_contract: str,
    private_key: str | bytes,
) -> str:
    """Sign as a wallet would (tests, clients); returns the 0x-hex 65-byte signature."""
    signed = Account.sign_message(
        signable(primary_type, message, chain_id, verifying_contract), private_key
    )
    return "0x" + bytes(signed.signature).hex()


def recover(
    primary_type: str,
    message: Mapping[str, Any],
    chain_id: int,
    verifying_contract: str,
    signature: str,
) -> str:
    """The checksummed signer address; raises 401 ``BAD_SIGNATURE`` if it cannot recover."""
    if not isinstance(signature, str) or _SIGNATURE_RE.fullmatch(signature) is None:
        raise unauthorized("BAD_SIGNATURE", "signature must be 0x followed by 130 hex digits")
    try:
        signer = Account.recover_message(
            signable(primary_type, message, chain_id, verifying_contract),
            signature=bytes.fromhex(signature[2:]),
        )
    except (ValueError, TypeError, BadSignature, KeyValidationError) as exc:
        raise unauthorized("BAD_SIGNATURE", f"signature does not recover: {exc}") from None
    return str(to_checksum_address(signer))


def network_for_chain(settings: Settings, chain_id: int) -> NetworkConfig:
    """The enabled network a non-withdrawal message is signed for (400 otherwise)."""
    network = settings.network_by_chain(chain_id)
    if network is None or not network.enabled or not network.vault:
        enabled = sorted(n.chain_id for n in settings.enabled_networks)
        raise bad_request(
            "UNKNOWN_CHAIN",
            f"chainId {chain_id} is not an enabled network; sign with one of {enabled}",
            chainId=chain_id,
            enabledChainIds=enabled,
        )
    return network


@dataclass(frozen=True)
class Verified:
    signer: str
    digest: str


def verify(
    primary_type: str,
    message: Mapping[str, Any],
    *,
    chain_id: int,
    verifying_contract: str,
    signature: str,
    expected_signer: str,
    now: int | None = None,
) -> Verified:
    """Check the deadline and that ``signature`` over the message is ``expected_signer``'s."""
    deadline = int(message.get("deadline", 0))
    current = int(time.time()) if now is None else now
    if deadline <= current:
        raise unauthorized(
            "SIGNATURE_EXPIRED",
            f"the request's deadline {deadline} has passed (now {current})",
            deadline=deadline,
            now=current,
        )
    signer = recover(primary_type, message, chain_id, verifying_contract, signature)
    if signer.lower() != expected_signer.lower():
        raise unauthorized(
            "WRONG_SIGNER",
            f"signed by {signer}, not by the account {to_checksum_address(expected_signer)}",
            signer=signer,
            account=to_checksum_address(expected_signer),
        )
    return Verified(signer, digest(primary_type, message, chain_id, verifying_contract))


__all__ = [
    "ApiError",
    "Verified",
    "digest",
    "domain",
    "network_for_chain",
    "recover",
    "register_type",
    "sign",
    "type_string",
    "typed_data",
    "verify",
]
