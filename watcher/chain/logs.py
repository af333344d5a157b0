"""Hand decoding of the vault's ``Deposit`` log — the bulk path.

``event Deposit(address indexed account, address indexed token, uint256 amount)``
has a fixed layout, so decoding is slicing, not ABI decoding:

* ``topics[0]`` = keccak("Deposit(address,address,uint256)")
* ``topics[1]`` = account, left-padded to 32 bytes
* ``topics[2]`` = token (zero address for native ETH), left-padded to 32 bytes
* ``data``      = amount, one 32-byte big-endian word

Anything else is a :class:`~watcher.chain.errors.MalformedLogError` with the
reason: the node (or the vault) is not what we think, and crediting a guess
would be worse than stopping. Checksumming is cached: the same few accounts
and tokens recur across thousands of logs. A well-formed log is validated by one
regex over its fields joined by "," (exactly the per-field rules, see
``_WELL_FORMED``); only a log that fails it goes through the field-by-field checks
that name the problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from watcher.chain.errors import MalformedLogError

__all__ = [
    "DEPOSIT_EVENT_SIGNATURE",
    "DEPOSIT_TOPIC",
    "ZERO_ADDRESS",
    "DepositLog",
    "checksum",
    "decode_deposit_log",
]

DEPOSIT_EVENT_SIGNATURE = "Deposit(address,address,uint256)"
DEPOSIT_TOPIC = "0x" + keccak(text=DEPOSIT_EVENT_SIGNATURE).hex()
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

_WORD = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS_TOPIC = re.compile(r"0x0{24}(?P<addr>[0-9a-fA-F]{40})")
_QUANTITY = re.compile(r"0x[0-9a-fA-F]+")
# The fast path: the same per-field patterns as above, for the fields joined by ","
# (a character none of them can match, so each field must match its own pattern in
# full: the one regex accepts exactly what the seven per-field checks accept).
_H = "[0-9a-fA-F]"
_WELL_FORMED = re.compile(
    rf"0x0{{24}}({_H}{{40}}),0x0{{24}}({_H}{{40}}),(0x{_H}{{64}}),"
    rf"(0x{_H}{{64}}),(0x{_H}{{64}}),(0x{_H}+),(0x{_H}+)"
)


@dataclass(frozen=True, slots=True)
class DepositLog:
    """One decoded ``Deposit``; keyed on ``(chain_id, tx_hash, log_index)``.

    Hashes are lowercase 0x-hex; addresses are checksummed; ``amount`` is in
    the token's base units.
    """

    chain_id: int
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int
    account: str
    token: str
    amount: int

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.chain_id, self.tx_hash, self.log_index)

    @property
    def is_native(self) -> bool:
        return self.token == ZERO_ADDRESS


@lru_cache(maxsize=65_536)
def _checksum_lower(hex40: str) -> str:
    return str(to_checksum_address("0x" + hex40))


def checksum(address: str) -> str:
    """EIP-55 checksum of a 0x-address, cached."""
    return _checksum_lower(address[2:].lower())


def _field(raw: Mapping[str, Any], name: str) -> Any:
    try:
        return raw[name]
    except KeyError:
        raise MalformedLogError(f"log lacks {name!r}") from None


def _quantity(raw: Mapping[str, Any], name: str) -> int:
    value = _field(raw, name)
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
        raise MalformedLogError(f"log {name} is not a hex quantity: {value!r}")
    return int(value, 16)


def _hash(raw: Mapping[str, Any], name: str) -> str:
    value = _field(raw, name)
    if not isinstance(value, str) or not _WORD.fullmatch(value):
        raise MalformedLogError(f"log {name} is not a 32-byte hash: {value!r}")
    return value.lower()


def decode_deposit_log(raw: Mapping[str, Any], chain_id: int) -> DepositLog:
    """Decode one raw ``eth_getLogs`` item (camelCase JSON-RPC fields).

    Raises :class:`MalformedLogError` when the topic count is not 3, topic0 is
    not ``Deposit``, an indexed address has non-zero padding, or ``data`` is
    not exactly 32 bytes.

    A well-formed log is checked by one regex over its fields joined by ","
    (a backfill decodes tens of thousands); anything it rejects goes through the
    field-by-field checks below, which say what is wrong.
    """
    topics = raw.get("topics")
    if type(topics) is list and len(topics) == 3 and topics[0] == DEPOSIT_TOPIC:
        try:
            joined = ",".join(
                (
                    topics[1],
                    topics[2],
                    raw["data"],
                    raw["blockHash"],
                    raw["transactionHash"],
                    raw["blockNumber"],
                    raw["logIndex"],
                )
            )
        except (KeyError, TypeError):
            joined = ""
        match = _WELL_FORMED.fullmatch(joined)
        if match is not None:
            account, token, data, block_hash, tx_hash, number, index = match.groups()
            return DepositLog(
                chain_id,
                int(number, 16),
                block_hash.lower(),
                tx_hash.lower(),
                int(index, 16),
                _checksum_lower(account.lower()),
                _checksum_lower(token.lower()),
                int(data, 16),
            )
    return _decode_checked(raw, chain_id)


def _decode_checked(raw: Mapping[str, Any], chain_id: int) -> DepositLog:
    """The field-by-field decoder: slower, and names the first malformed field."""
    topics = _field(raw, "topics")
    if not isinstance(topics, list) or len(topics) != 3:
        count = len(topics) if isinstance(topics, list) else "no"
        raise MalformedLogError(f"Deposit log must have 3 topics, got {count}")
    topic0 = topics[0]
    if not isinstance(topic0, str) or topic0.lower() != DEPOSIT_TOPIC:
        raise MalformedLogError(f"log topic0 {topic0!r} is not Deposit ({DEPOSIT_TOPIC})")
    addresses = []
    for position, name in ((1, "account"), (2, "token")):
        topic = topics[position]
        match = _ADDRESS_TOPIC.fullmatch(topic) if isinstance(topic, str) else None
        if match is None:
            raise MalformedLogError(f"Deposit {name} topic is not a left-padded address: {topic!r}")
        addresses.append(_checksum_lower(match.group("addr").lower()))
    data = _field(raw, "data")
    if not isinstance(data, str) or not _WORD.fullmatch(data):
        size = (len(data) - 2) // 2 if isinstance(data, str) and data.startswith("0x") else "?"
        raise MalformedLogError(f"Deposit data must be one 32-byte word, got {size} bytes")
    return DepositLog(
        chain_id=chain_id,
        block_number=_quantity(raw, "blockNumber"),
        block_hash=_hash(raw, "blockHash"),
        tx_hash=_hash(raw, "transactionHash"),
        log_index=_quantity(raw, "logIndex"),
        account=addresses[0],
        token=addresses[1],
        amount=int(data, 16),
    )
