"""The payout authorization digest (chain/payout.py): a fixed vector, agreement with
eth_account's encode_typed_data on random payouts, signing byte-identical to
eth_account, recovery, the binding of chain, vault and id, and the signer order."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.chain import payout as P

VAULT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
TOKEN = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
# anvil's test account 1 (public, well known)
KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
VECTOR = P.Payout(31337, VAULT, 7, TOKEN, TO, 1_234_500_000, 1_767_225_600)

address = st.binary(min_size=20, max_size=20).map(lambda b: str(to_checksum_address(b)))
uint256 = st.integers(min_value=0, max_value=2**256 - 1)
payouts = st.builds(
    P.Payout,
    chain_id=st.integers(min_value=1, max_value=2**64),
    vault=address,
    id=uint256,
    token=address,
    to=address,
    amount=uint256,
    deadline=uint256,
)


def slow_digest(p: P.Payout) -> bytes:
    m = encode_typed_data(full_message=P.typed_data(p))
    return keccak(b"\x19" + bytes(m.version) + m.header + m.body)


def test_known_vector() -> None:
    assert P.PAYOUT_TYPEHASH.hex() == (
        "5dace6545b4621b3148fa7bc56cdbc3de1752fc44e8d7f26e15a5897a4a4f35d"
    )
    assert P.domain_separator(31337, VAULT).hex() == (
        "07074f34c14b20f3e542eda6f204e639e809d1855c34a002ad10140dd23a4c98"
    )
    assert P.digest(VECTOR).hex() == (
        "eb957f7d64dce1262d86912b8ca7d40b15307a963d0dfa8937117391c7a3833e"
    )
    assert P.sign(VECTOR, KEY) == (
        "0x240d4f974be701f2afb872de34c5f385aa1f93a234263c158271dd40edd80bf0"
        "6e4b125bdcc3745540eadfd10666515e3ef94f44cf4f199aaaacbd6856e5063f1c"
    )
    assert slow_digest(VECTOR) == P.digest(VECTOR)


@settings(max_examples=60, deadline=None)
@given(payouts)
def test_digest_equals_eth_account(p: P.Payout) -> None:
    assert P.digest(p) == slow_digest(p)


@settings(max_examples=20, deadline=None)
@given(payouts, st.binary(min_size=32, max_size=32))
def test_signature_is_eth_accounts_and_recovers(p: P.Payout, seed: bytes) -> None:
    key = keccak(seed)  # a valid secp256k1 scalar with overwhelming probability
    account = Account.from_key(key)
    signature = P.sign(p, key)
    expected = Account.sign_message(encode_typed_data(full_message=P.typed_data(p)), key)
    assert signature == "0x" + bytes(expected.signature).hex()
    assert int(signature[-2:], 16) in (27, 28)
    assert P.recover(p, signature) == account.address


def test_chain_vault_and_id_are_bound() -> None:
    signature = P.sign(VECTOR, KEY)
    signer = Account.from_key(KEY).address
    others = [
        P.Payout(1, VAULT, 7, TOKEN, TO, VECTOR.amount, VECTOR.deadline),
        P.Payout(31337, TOKEN, 7, TOKEN, TO, VECTOR.amount, VECTOR.deadline),
        P.Payout(31337, VAULT, 8, TOKEN, TO, VECTOR.amount, VECTOR.deadline),
        P.Payout(31337, VAULT, 7, TOKEN, TO, VECTOR.amount + 1, VECTOR.deadline),
        P.Payout(31337, VAULT, 7, TOKEN, VAULT, VECTOR.amount, VECTOR.deadline),
        P.Payout(31337, VAULT, 7, TOKEN, TO, VECTOR.amount, VECTOR.deadline + 1),
    ]
    for other in others:
        assert P.recover(other, signature) != signer


def test_signer_keeps_its_key_out_of_repr() -> None:
    signer = P.PayoutSigner(KEY)
    assert signer.address == Account.from_key(KEY).address
    assert KEY[2:] not in repr(signer) and KEY[2:] not in str(signer)
    with pytest.raises(ValueError) as info:
        P.PayoutSigner("0x" + "zz" * 32)
    assert "zz" not in str(info.value)
    with pytest.raises(ValueError):
        P.PayoutSigner("0x" + "00" * 32)  # zero is not a key


def test_malformed_signature_does_not_recover() -> None:
    with pytest.raises(ValueError):
        P.recover(VECTOR, "0x1234")
    with pytest.raises(ValueError):
        P.recover(VECTOR, "0x" + "00" * 65)


def test_sort_signatures_by_signer_ascending_and_unique() -> None:
    keys = [keccak(bytes([i])) for i in range(5)]
    pairs = [(Account.from_key(k).address, P.sign(VECTOR, k)) for k in keys]
    ordered = P.sort_signatures(reversed(pairs))
    numbers = [int(signer, 16) for signer, _ in ordered]
    assert numbers == sorted(numbers) and len(set(numbers)) == 5
    assert {s for _, s in ordered} == {s for _, s in pairs}
    assert {a for a, _ in ordered} == {a for a, _ in pairs}  # EIP-55, as Account gives them
    # lower-case input is compared as a number, returned checksummed
    low = P.sort_signatures([(a.lower(), s) for a, s in pairs])
    assert low == ordered
    with pytest.raises(ValueError, match="twice"):
        P.sort_signatures([pairs[0], (pairs[0][0].lower(), pairs[1][1])])
    assert P.signatures_blob(pairs) == [bytes.fromhex(s[2:]) for _, s in ordered]
