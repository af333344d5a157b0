"""The hot wallet's fast EIP-1559 signer equals eth_account's, byte for byte, and a
transaction it signs is accepted and mined by a real node."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import AsyncWeb3

from watcher.chain.devnet import Deployment, dev_account
from watcher.chain.signer import HotSigner

uint = st.integers(min_value=0, max_value=2**256 - 1)
small = st.integers(min_value=0, max_value=2**64 - 1)
address = st.binary(min_size=20, max_size=20).map(lambda b: str(to_checksum_address(b)))


@st.composite
def eip1559(draw: Any) -> dict[str, Any]:
    priority = draw(small)
    return {
        "type": 2,
        "chainId": draw(st.integers(min_value=1, max_value=2**64 - 1)),
        "nonce": draw(small),
        "to": draw(address),
        "value": draw(uint),
        "data": "0x" + draw(st.binary(max_size=300)).hex(),
        "gas": draw(st.integers(min_value=21_000, max_value=30_000_000)),
        "maxFeePerGas": priority + draw(small),
        "maxPriorityFeePerGas": priority,
    }


pytestmark = pytest.mark.usefixtures("chain_snapshot")

KEY = Account.create()
SIGNER = HotSigner(KEY)


@settings(max_examples=300, deadline=None)
@given(eip1559())
def test_fast_path_equals_eth_account(tx: dict[str, Any]) -> None:
    expected = KEY.sign_transaction(tx)
    got = SIGNER.sign_transaction(tx)
    assert got.raw == "0x" + bytes(expected.raw_transaction).hex()
    assert got.tx_hash == "0x" + bytes(expected.hash).hex()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("nonce", -1, "nonce must be a uint256"),
        ("gas", True, "gas must be a uint256"),
        ("value", 2**256, "value must be a uint256"),
        ("to", "0x1234", "to must be a 0x-address"),
        ("data", "abcd", "data must be 0x-hex"),
        ("maxFeePerGas", 1, "maxFeePerGas is below maxPriorityFeePerGas"),
    ],
)
def test_bad_fields_are_refused_by_name(field: str, value: Any, message: str) -> None:
    tx = {
        "type": 2,
        "chainId": 1,
        "nonce": 0,
        "to": "0x" + "11" * 20,
        "value": 0,
        "data": "0x",
        "gas": 21_000,
        "maxFeePerGas": 10**9,
        "maxPriorityFeePerGas": 10**8,
        field: value,
    }
    with pytest.raises(ValueError, match=message):
        SIGNER.sign_transaction(tx)


async def test_a_fast_signed_transaction_is_mined(
    deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    sender = HotSigner(dev_account(3))
    dest = Account.create().address
    base = (await chain_w3.eth.get_block("latest"))["baseFeePerGas"]
    signed = sender.sign_transaction(
        {
            "type": 2,
            "chainId": deployment.chain_id,
            "nonce": await chain_w3.eth.get_transaction_count(sender.address, "pending"),
            "to": dest,
            "value": 12345,
            "data": "0x",
            "gas": 21_000,
            "maxFeePerGas": 2 * base + 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    tx_hash = await chain_w3.eth.send_raw_transaction(signed.raw)
    assert "0x" + bytes(tx_hash).hex() == signed.tx_hash
    receipt = await chain_w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    assert receipt["status"] == 1
    assert await chain_w3.eth.get_balance(dest) == 12345
