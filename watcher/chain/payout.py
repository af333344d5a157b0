"""The payout authorization: the EIP-712 message a validator (co-signer) signs so that
the vault pays one withdrawal. Pure: no I/O.

Typed data::

    Payout(uint256 id,address token,address to,uint256 amount,uint256 deadline)
    domain {name: "WatcherVault", version: "2", chainId, verifyingContract: the vault}

``digest = keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(payout))`` with

* ``domainSeparator = keccak256(abi.encode(keccak256("EIP712Domain(string name,string
  version,uint256 chainId,address verifyingContract)"), keccak256("WatcherVault"),
  keccak256("2"), chainId, vault))``
* ``hashStruct = keccak256(abi.encode(PAYOUT_TYPEHASH, id, token, to, amount,
  deadline))``, ``PAYOUT_TYPEHASH = keccak256(PAYOUT_TYPE)``.

The domain binds the chain and the vault, the message binds the withdrawal id, so one
signature pays one withdrawal of one vault on one chain at most (the vault must still
mark an id paid). ``token`` is the zero address for the chain's native coin. Signatures
are 65 bytes ``r ‖ s ‖ v`` with low ``s`` and ``v`` in {27, 28} (what OpenZeppelin's
``ECDSA.recover`` accepts). The vault takes them sorted by signer address ascending,
each signer once: :func:`sort_signatures`.

The digest is computed here rather than with :func:`watcher.chain.eip712.digest_bytes`
because that one is fixed to the user-facing domain {Watcher, 1}; recovery uses its
:func:`~watcher.chain.eip712.recover_address`. tests/unit/test_payout_digest.py checks
the digest against eth_account's ``encode_typed_data``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

import coincurve
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from watcher.chain.eip712 import DOMAIN_FIELDS, recover_address
from watcher.chain.eip712 import domain_separator as eip712_domain_separator
from watcher.domain.parsing import checksum_address

PAYOUT_DOMAIN_NAME = "WatcherVault"
PAYOUT_DOMAIN_VERSION = "2"
PAYOUT_TYPE = "Payout(uint256 id,address token,address to,uint256 amount,uint256 deadline)"
PAYOUT_FIELDS: list[dict[str, str]] = [
    {"name": "id", "type": "uint256"},
    {"name": "token", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "amount", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
PAYOUT_TYPEHASH = keccak(text=PAYOUT_TYPE)


@dataclass(frozen=True, slots=True)
class Payout:
    """One withdrawal as the vault pays it. Amount in the token's base units."""

    chain_id: int
    vault: str
    id: int
    token: str
    to: str
    amount: int
    deadline: int

    def message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "token": to_checksum_address(self.token),
            "to": to_checksum_address(self.to),
            "amount": self.amount,
            "deadline": self.deadline,
        }


def payout_domain(chain_id: int, vault: str) -> dict[str, Any]:
    return {
        "name": PAYOUT_DOMAIN_NAME,
        "version": PAYOUT_DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(vault),
    }


def typed_data(payout: Payout) -> dict[str, Any]:
    """The full EIP-712 document (``eth_signTypedData_v4``'s input)."""
    return {
        "types": {"EIP712Domain": DOMAIN_FIELDS, "Payout": PAYOUT_FIELDS},
        "primaryType": "Payout",
        "domain": payout_domain(payout.chain_id, payout.vault),
        "message": payout.message(),
    }


def domain_separator(chain_id: int, vault: str) -> bytes:
    return eip712_domain_separator(chain_id, vault, PAYOUT_DOMAIN_NAME, PAYOUT_DOMAIN_VERSION)


def _word_uint(value: int) -> bytes:
    # ``OverflowError`` for a negative value or one above uint256, as the ABI encoder.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    return value.to_bytes(32, "big")


def _word_address(value: str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x"))  # ValueError for a non-hex digit
    if len(raw) != 20:
        raise ValueError(f"not a 20-byte address: {value!r}")
    return bytes(12) + raw


def struct_hash(payout: Payout) -> bytes:
    """``keccak256(abi.encode(PAYOUT_TYPEHASH, id, token, to, amount, deadline))``: six
    static words, encoded here directly (the generic ABI encoder and two EIP-55
    checksums cost more than the rest of the co-signer's check; tests/unit/
    test_payout_digest.py compares with eth_account on random payouts)."""
    return keccak(
        PAYOUT_TYPEHASH
        + _word_uint(payout.id)
        + _word_address(payout.token)
        + _word_address(payout.to)
        + _word_uint(payout.amount)
        + _word_uint(payout.deadline)
    )


@lru_cache(maxsize=4096)  # the sender checks each co-signer's answer against it
def digest(payout: Payout) -> bytes:
    """The 32-byte EIP-712 hash the validators sign. ``OverflowError`` for an integer
    out of range (negative or above uint256), ``ValueError`` for a value that is not an
    integer or an address that is not 20 bytes of hex."""
    return keccak(
        b"\x19\x01" + domain_separator(payout.chain_id, payout.vault) + struct_hash(payout)
    )


def sign_digest(digest32: bytes, key: coincurve.PrivateKey) -> bytes:
    """65 bytes ``r ‖ s ‖ v`` (v = 27 + recovery id; libsecp256k1 gives low s)."""
    raw = key.sign_recoverable(digest32, hasher=None)
    return raw[:64] + bytes([raw[64] + 27])


class PayoutSigner:
    """A validator key that signs payouts; the key stays inside (``repr`` shows the
    address only)."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: str | bytes) -> None:
        if isinstance(private_key, str):
            text = private_key.strip().removeprefix("0x")
            try:
                raw = bytes.fromhex(text)
            except ValueError:
                raise ValueError("the co-signer key is not hex") from None
        else:
            raw = private_key
        if len(raw) != 32:
            raise ValueError("the co-signer key must be 32 bytes")
        try:
            self._key = coincurve.PrivateKey(raw)
        except Exception:  # coincurve: a bare ValueError/Exception naming no value
            raise ValueError("the co-signer key is not a valid secp256k1 key") from None
        public = self._key.public_key.format(compressed=False)[1:]
        self.address: str = str(to_checksum_address(keccak(public)[-20:]))

    def sign(self, payout: Payout) -> str:
        """The 0x-hex 65-byte signature over :func:`digest`."""
        return "0x" + sign_digest(digest(payout), self._key).hex()

    def __repr__(self) -> str:
        return f"PayoutSigner({self.address}, key=***)"

    __str__ = __repr__


def sign(payout: Payout, private_key: str | bytes) -> str:
    """Sign with a key given as hex or bytes (tests, tools)."""
    return PayoutSigner(private_key).sign(payout)


def recover(payout: Payout, signature: str | bytes) -> str:
    """The checksummed address that signed this payout; ``ValueError`` if the signature
    is malformed or does not recover."""
    if isinstance(signature, str):
        text = signature.removeprefix("0x")
        if len(text) != 130:
            raise ValueError("signature must be 0x followed by 130 hex digits")
        signature = bytes.fromhex(text)
    return recover_address(digest(payout), signature)


def sort_signatures(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(signer, signature) pairs sorted by signer address ascending (as a 160-bit
    number, the order the vault checks); ``ValueError`` if a signer appears twice."""
    keyed = sorted(((int(signer, 16), signer, sig) for signer, sig in pairs), key=lambda t: t[0])
    for before, after in pairwise(keyed):
        if before[0] == after[0]:
            raise ValueError(f"signer {checksum_address(f'{after[0]:040x}')} appears twice")
    # The memoized EIP-55 form (the same few validators sign every payout).
    return [(checksum_address(f"{number:040x}"), sig) for number, _, sig in keyed]


def signatures_blob(pairs: Iterable[tuple[str, str]]) -> list[bytes]:
    """The sorted signatures as the ``bytes[]`` a contract call takes."""
    return [bytes.fromhex(sig.removeprefix("0x")) for _, sig in sort_signatures(pairs)]


__all__ = [
    "PAYOUT_DOMAIN_NAME",
    "PAYOUT_DOMAIN_VERSION",
    "PAYOUT_TYPE",
    "PAYOUT_TYPEHASH",
    "Payout",
    "PayoutSigner",
    "digest",
    "domain_separator",
    "payout_domain",
    "recover",
    "sign",
    "signatures_blob",
    "sort_signatures",
    "struct_hash",
    "typed_data",
]
