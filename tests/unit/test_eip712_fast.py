"""The EIP-712 fast path (cached domain separator, one ABI encode) gives exactly the
hash eth_account's encode_typed_data gives, for every registered type, and recovery
agrees with eth_account's recover_message, including its refusals."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.chain import eip712
from watcher.chain.eip712 import SECP256K1_N

address = st.binary(min_size=20, max_size=20).map(lambda b: str(to_checksum_address(b)))
uint256 = st.integers(min_value=0, max_value=2**256 - 1)
VALUES: dict[str, Any] = {
    "address": address,
    "uint256": uint256,
    "uint8": st.integers(min_value=0, max_value=255),
    "string": st.text(max_size=40),
}
KEY = Account.create()


def slow_digest(name: str, message: dict[str, Any], chain_id: int, contract: str) -> bytes:
    m = encode_typed_data(full_message=eip712.typed_data(name, message, chain_id, contract))
    return keccak(b"\x19" + bytes(m.version) + m.header + m.body)


@st.composite
def typed_message(draw: Any) -> tuple[str, dict[str, Any], int, str]:
    name = draw(st.sampled_from(sorted(eip712.TYPES)))
    message = {f["name"]: draw(VALUES[f["type"]]) for f in eip712.TYPES[name]}
    return name, message, draw(st.integers(min_value=1, max_value=2**64)), draw(address)


def test_every_registered_type_is_covered() -> None:
    assert {"Withdraw", "Rebalance", "IsolatedMargin"} <= set(eip712.TYPES)
    kinds = {f["type"] for fields in eip712.TYPES.values() for f in fields}
    assert kinds <= set(VALUES), kinds - set(VALUES)


@settings(max_examples=300, deadline=None)
@given(typed_message())
def test_digest_equals_eth_account(case: tuple[str, dict[str, Any], int, str]) -> None:
    name, message, chain_id, contract = case
    assert eip712.digest_bytes(name, message, chain_id, contract) == slow_digest(
        name, message, chain_id, contract
    )


@settings(max_examples=100, deadline=None)
@given(typed_message(), st.booleans(), st.booleans())
def test_recover_equals_eth_account(
    case: tuple[str, dict[str, Any], int, str], high_s: bool, raw_v: bool
) -> None:
    name, message, chain_id, contract = case
    sig = bytearray(bytes.fromhex(eip712.sign(name, message, chain_id, contract, KEY.key)[2:]))
    if high_s:  # the same signature with s' = n - s and the other parity: still valid
        s = SECP256K1_N - int.from_bytes(sig[32:64], "big")
        sig[32:64] = s.to_bytes(32, "big")
        sig[64] = 27 + (1 - (sig[64] - 27))
    if raw_v:
        sig[64] -= 27
    digest = eip712.digest_bytes(name, message, chain_id, contract)
    signable = encode_typed_data(full_message=eip712.typed_data(name, message, chain_id, contract))
    assert eip712.recover_address(digest, bytes(sig)) == Account.recover_message(
        signable, signature=bytes(sig)
    )
    assert eip712.recover_address(digest, bytes(sig)) == KEY.address


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s: s[:64], "65 bytes"),
        (lambda s: s[:64] + bytes([29]), "v must be"),
        (lambda s: bytes(32) + s[32:], "r and s"),
        (lambda s: s[:32] + SECP256K1_N.to_bytes(32, "big") + s[64:], "r and s"),
    ],
)
def test_recover_refuses_malformed_signatures(mutate: Any, reason: str) -> None:
    message = {"account": KEY.address, "nonce": 1, "deadline": 2}
    sig = bytes.fromhex(eip712.sign("Rebalance", message, 1, KEY.address, KEY.key)[2:])
    digest = eip712.digest_bytes("Rebalance", message, 1, KEY.address)
    with pytest.raises(ValueError, match=reason):
        eip712.recover_address(digest, mutate(sig))


def test_a_message_that_does_not_encode_is_a_value_error() -> None:
    message = {"account": KEY.address, "nonce": -1, "deadline": 2}
    with pytest.raises(ValueError, match="Rebalance message does not encode"):
        eip712.digest_bytes("Rebalance", message, 1, KEY.address)


LOWER = "0x" + "ab" * 20
GOOD_REBALANCE = {"account": KEY.address, "nonce": 1, "deadline": 2}
GOOD_MARGIN = {
    "account": KEY.address,
    "symbol": "BTCUSDT",
    "type": 1,
    "amount": 5,
    "nonce": 1,
    "deadline": 2,
}


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("Rebalance", "account", KEY.address.lower()),  # all lower case: no checksum
        ("Rebalance", "account", "0x" + KEY.address[2:].upper()),  # all upper case
        ("Rebalance", "account", bytes.fromhex(KEY.address[2:])),  # 20 raw bytes
        ("Rebalance", "nonce", 2**256 - 1),
        ("IsolatedMargin", "type", 255),
        ("IsolatedMargin", "symbol", ""),
    ],
)
def test_digest_equals_eth_account_on_edge_values(name: str, field: str, value: Any) -> None:
    message = {**(GOOD_REBALANCE if name == "Rebalance" else GOOD_MARGIN), field: value}
    assert eip712.digest_bytes(name, message, 7, LOWER) == slow_digest(name, message, 7, LOWER)


#: Values the ABI encoder refuses too.
REFUSED = [
    ("Rebalance", "account", "0x" + "ab" * 19),  # 19 bytes
    ("Rebalance", "account", "0x" + "zz" * 20),
    ("Rebalance", "account", bytes(19)),
    ("Rebalance", "account", 12345),
    ("Rebalance", "nonce", -1),
    ("Rebalance", "nonce", 2**256),
    ("Rebalance", "nonce", True),
    ("IsolatedMargin", "type", 256),
]
#: Values eth_account coerces (a mixed-case address with a wrong checksum, a number as
#: a string, a digit string as a number): refused here, never hashed as something else.
STRICTER = [
    ("Rebalance", "account", KEY.address[:-1] + ("a" if KEY.address[-1] != "a" else "b")),
    ("Rebalance", "nonce", "1"),
    ("IsolatedMargin", "symbol", 5),
]


@pytest.mark.parametrize(("name", "field", "value"), REFUSED + STRICTER)
def test_digest_refuses_a_value_that_does_not_encode(name: str, field: str, value: Any) -> None:
    message = {**(GOOD_REBALANCE if name == "Rebalance" else GOOD_MARGIN), field: value}
    if (name, field, value) in REFUSED:
        with pytest.raises(Exception):  # noqa: B017 - eth_account's error types vary
            slow_digest(name, message, 7, LOWER)
    with pytest.raises(ValueError, match=f"{name} message does not encode: {field}"):
        eip712.digest_bytes(name, message, 7, LOWER)


def test_an_unsupported_field_type_is_refused_at_registration() -> None:
    with pytest.raises(ValueError, match="type bytes32 is not supported"):
        eip712.register_type("Odd", "Odd(bytes32 salt)")
    assert "Odd" not in eip712.TYPES
