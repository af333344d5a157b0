"""The Vault's payout defense on a real anvil: validator quorum over EIP-712 `Payout`
signatures, signature hygiene, the hourly USD limit that pauses, guardian-only unpause,
and the owner's validator/limit administration.

Most tests run on the shared session chain inside an evm snapshot (reverted after each
test) and install validator sets of throwaway keys with ``setValidators``. The tests
that move the chain's clock (hour windows, the deadline boundary) get an anvil of their
own, so the shared chain's time is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.contract.async_contract import AsyncContractFunction
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD
from web3.providers.rpc import AsyncHTTPProvider
from web3.types import TxParams, TxReceipt

from tests.fixtures_chain import DevnetFactory, revert_selector, transact
from watcher.chain.artifacts import load_artifact
from watcher.chain.devnet import (
    DEVNET_HOURLY_LIMIT_USD,
    DEVNET_PRICES_USD,
    Deployment,
    dev_account,
    devnet_validator_address,
    devnet_validator_key,
)
from watcher.chain.payout import (
    Payout,
    PayoutSigner,
    digest,
    domain_separator,
    recover,
    sign,
    signatures_blob,
)

pytestmark = pytest.mark.usefixtures("chain_snapshot")

VAULT = load_artifact("Vault")
TOKEN = load_artifact("TestToken")
ZERO = "0x0000000000000000000000000000000000000000"
FAR_DEADLINE = 2**40
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

OWNER = dev_account(0)  # also the guardian in the deployment
OPERATOR = dev_account(1)
ALICE = dev_account(2)
BOB = dev_account(3)
STRANGER = dev_account(4)

USDC_UNIT = 10**6
USD = 10**18  # the vault's USD amounts have 18 decimals


def throwaway_key(label: str) -> str:
    """A private key of no account anyone holds (keccak of a label): test-only."""
    return "0x" + keccak(text=f"vault quorum test key {label}").hex()


def address_of(key: str) -> str:
    return PayoutSigner(key).address


DEVNET_KEYS = [devnet_validator_key(i) for i in range(3)]


# ---------------------------------------------------------------------------- helpers


def contract_for(w3: AsyncWeb3[Any], dep: Deployment) -> AsyncContract:
    return w3.eth.contract(address=to_checksum_address(dep.vault), abi=VAULT.abi)


def token_for(w3: AsyncWeb3[Any], dep: Deployment, symbol: str) -> AsyncContract:
    return w3.eth.contract(address=to_checksum_address(dep.tokens[symbol].address), abi=TOKEN.abi)


@pytest.fixture
def vault(chain_w3: AsyncWeb3[Any], deployment: Deployment) -> AsyncContract:
    return contract_for(chain_w3, deployment)


@pytest.fixture
def usdc(chain_w3: AsyncWeb3[Any], deployment: Deployment) -> AsyncContract:
    return token_for(chain_w3, deployment, "USDC")


@pytest.fixture
async def funded(
    chain_snapshot: str, chain_w3: AsyncWeb3[Any], vault: AsyncContract, usdc: AsyncContract
) -> None:
    """10,000 USDC deposited into the vault by Alice. Depends on ``chain_snapshot`` so
    the deposit lands inside the test's snapshot (a function's own ``usefixtures`` mark
    is set up before the module's ``pytestmark``)."""
    await deposit(chain_w3, vault, usdc, 10_000 * USDC_UNIT)


async def deposit(
    w3: AsyncWeb3[Any], vault: AsyncContract, token: AsyncContract, amount: int
) -> None:
    await transact(w3, ALICE, token.functions.approve(vault.address, amount))
    await transact(w3, ALICE, vault.functions.deposit(token.address, amount))


def usdc_payout(dep: Deployment, id_: int, amount: int = USDC_UNIT, **changes: Any) -> Payout:
    """A payout of ``amount`` USDC base units to Bob, far deadline."""
    base = Payout(
        chain_id=dep.chain_id,
        vault=dep.vault,
        id=id_,
        token=dep.tokens["USDC"].address,
        to=BOB.address,
        amount=amount,
        deadline=FAR_DEADLINE,
    )
    return replace(base, **changes)


def signed_by(payout: Payout, keys: Sequence[str]) -> list[bytes]:
    """Signatures of ``keys`` over ``payout``, sorted by signer as the vault wants."""
    return signatures_blob((address_of(k), sign(payout, k)) for k in keys)


def withdraw(vault: AsyncContract, payout: Payout, sigs: Sequence[bytes]) -> AsyncContractFunction:
    return vault.functions.withdraw(
        payout.id, payout.token, payout.to, payout.amount, payout.deadline, list(sigs)
    )


def error_data(name: str, *args: Any) -> str:
    """0x-hex revert data of the Vault's custom error ``name`` with ``args``."""
    (entry,) = [e for e in VAULT.abi if e.get("type") == "error" and e.get("name") == name]
    types = [str(i["type"]) for i in entry.get("inputs", [])]
    return revert_selector(VAULT, name) + abi_encode(types, list(args)).hex()


async def assert_reverts(
    call: AsyncContractFunction, sender: str, name: str, *args: Any, **tx: Any
) -> None:
    """eth_call ``call`` from ``sender``: it must revert with exactly ``name(args)``."""
    with pytest.raises(ContractCustomError) as info:
        await call.call(cast(TxParams, {"from": sender, **tx}))
    assert str(info.value.data) == error_data(name, *args), name


async def install(
    w3: AsyncWeb3[Any], vault: AsyncContract, powers: Sequence[int], tag: str = "v"
) -> list[str]:
    """Replace the validator set with throwaway keys of ``powers``; returns the keys in
    the order of ``powers``."""
    keys = [throwaway_key(f"{tag}{i}") for i in range(len(powers))]
    await transact(
        w3, OWNER, vault.functions.setValidators([address_of(k) for k in keys], list(powers))
    )
    assert await vault.functions.totalPower().call() == sum(powers)
    return keys


async def pays(
    w3: AsyncWeb3[Any],
    vault: AsyncContract,
    token: AsyncContract,
    payout: Payout,
    sigs: Sequence[bytes],
) -> TxReceipt:
    """Send the withdrawal from the operator and check the payout arrived."""
    to_before = await token.functions.balanceOf(payout.to).call()
    vault_before = await token.functions.balanceOf(vault.address).call()
    receipt = await transact(w3, OPERATOR, withdraw(vault, payout, sigs))
    (event,) = vault.events.Withdrawn().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["id"] == payout.id
    assert event["args"]["to"] == payout.to
    assert event["args"]["token"] == payout.token
    assert event["args"]["amount"] == payout.amount
    assert await token.functions.balanceOf(payout.to).call() == to_before + payout.amount
    assert await token.functions.balanceOf(vault.address).call() == vault_before - payout.amount
    assert await vault.functions.withdrawn(payout.id).call() is True
    return receipt


# ---------------------------------------------------------------------------- digest


async def test_vault_digest_matches_python(deployment: Deployment, vault: AsyncContract) -> None:
    """What the co-signers sign (watcher.chain.payout) is what the vault checks."""
    payout = usdc_payout(deployment, 12345, 67_890_123)
    assert bytes(await vault.functions.domainSeparator().call()) == domain_separator(
        deployment.chain_id, deployment.vault
    )
    on_chain = await vault.functions.payoutDigest(
        payout.id, payout.token, payout.to, payout.amount, payout.deadline
    ).call()
    assert bytes(on_chain) == digest(payout)
    signers, powers = await vault.functions.validators().call()
    assert list(signers) == [devnet_validator_address(i) for i in range(3)]
    assert list(powers) == [1, 1, 1]
    assert await vault.functions.totalPower().call() == 3


# ---------------------------------------------------------------------------- quorum


@pytest.mark.usefixtures("funded")
async def test_operator_alone_or_one_validator_is_not_enough(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract, usdc: AsyncContract
) -> None:
    payout = usdc_payout(deployment, 1)
    await assert_reverts(withdraw(vault, payout, []), OPERATOR.address, "QuorumNotMet", 0, 3)
    one = signed_by(payout, DEVNET_KEYS[:1])
    await assert_reverts(withdraw(vault, payout, one), OPERATOR.address, "QuorumNotMet", 1, 3)
    # Two of the devnet's three pay.
    await pays(chain_w3, vault, usdc, payout, signed_by(payout, DEVNET_KEYS[1:]))


@pytest.mark.usefixtures("funded")
async def test_non_operator_cannot_withdraw_even_with_every_signature(
    deployment: Deployment, vault: AsyncContract
) -> None:
    payout = usdc_payout(deployment, 2)
    sigs = signed_by(payout, DEVNET_KEYS)
    for sender in (STRANGER, OWNER, BOB, ALICE):
        await assert_reverts(withdraw(vault, payout, sigs), sender.address, "NotOperator")
    assert await vault.functions.withdrawn(2).call() is False


# (powers, indices of the signers, expected signed power or None when it pays)
QUORUM_CASES = [
    pytest.param([1, 1, 1, 1], [0, 1], 2, id="2-of-4-exactly-half-fails"),
    pytest.param([1, 1, 1, 1], [0, 1, 2], None, id="3-of-4-pays"),
    pytest.param([1, 1, 1, 1], [0, 1, 2, 3], None, id="4-of-4-pays"),
    pytest.param([1, 1, 1], [0, 1], None, id="2-of-3-pays"),
    pytest.param([1, 1, 1], [2], 1, id="1-of-3-fails"),
    pytest.param([2, 1], [0], None, id="power-2-of-3-alone-pays"),
    pytest.param([2, 1], [1], 1, id="power-1-of-3-alone-fails"),
    pytest.param([1, 1, 1, 3], [3, 0], None, id="4-of-6-boundary-pays"),
    pytest.param([1, 1, 1, 3], [3], 3, id="heavy-3-of-6-alone-fails"),
    pytest.param([1, 1, 1, 3], [0, 1, 2], 3, id="three-light-3-of-6-fail"),
    pytest.param([1, 1, 1, 3], [1, 2, 3], None, id="5-of-6-pays"),
    pytest.param([1] * 5, [0, 1], 2, id="2-of-5-fails"),
    pytest.param([1] * 5, [0, 2, 4], 3, id="3-of-5-fails"),
    pytest.param([1] * 5, [0, 1, 2, 4], None, id="4-of-5-pays"),
    pytest.param([1] * 7, [0, 1, 2, 3], 4, id="4-of-7-fails"),
    pytest.param([1] * 7, [0, 1, 2, 3, 4], None, id="5-of-7-pays"),
    pytest.param([10**30] * 3, [0, 2], None, id="huge-powers-2-of-3-pays"),
    pytest.param([10**30] * 3, [1], 10**30, id="huge-powers-1-of-3-fails"),
]


@pytest.mark.usefixtures("funded")
@pytest.mark.parametrize(("powers", "signers", "short"), QUORUM_CASES)
async def test_quorum_is_two_thirds_of_the_power_exactly(
    chain_w3: AsyncWeb3[Any],
    deployment: Deployment,
    vault: AsyncContract,
    usdc: AsyncContract,
    powers: list[int],
    signers: list[int],
    short: int | None,
) -> None:
    keys = await install(chain_w3, vault, powers)
    total = sum(powers)
    signed = sum(powers[i] for i in signers)
    assert (short is None) == (3 * signed >= 2 * total)  # the table itself is right
    payout = usdc_payout(deployment, 100 + len(signers), 5 * USDC_UNIT)
    sigs = signed_by(payout, [keys[i] for i in signers])
    if short is None:
        await pays(chain_w3, vault, usdc, payout, sigs)
    else:
        assert short == signed
        await assert_reverts(
            withdraw(vault, payout, sigs), OPERATOR.address, "QuorumNotMet", signed, total
        )
        assert await vault.functions.withdrawn(payout.id).call() is False


# A floored threshold `signed >= total * 2 // 3` would let each of these through.
@pytest.mark.usefixtures("funded")
@pytest.mark.parametrize(("total", "signed"), [(4, 2), (5, 3), (7, 4), (10, 6), (13, 8)])
async def test_floored_two_thirds_would_pass_but_the_vault_refuses(
    chain_w3: AsyncWeb3[Any],
    deployment: Deployment,
    vault: AsyncContract,
    usdc: AsyncContract,
    total: int,
    signed: int,
) -> None:
    assert signed >= total * 2 // 3 and 3 * signed < 2 * total
    keys = await install(chain_w3, vault, [1] * total)
    payout = usdc_payout(deployment, 7)
    await assert_reverts(
        withdraw(vault, payout, signed_by(payout, keys[:signed])),
        OPERATOR.address,
        "QuorumNotMet",
        signed,
        total,
    )
    # One more signer reaches two thirds.
    await pays(chain_w3, vault, usdc, payout, signed_by(payout, keys[: signed + 1]))


@pytest.mark.usefixtures("funded")
async def test_replaced_validators_no_longer_count(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract, usdc: AsyncContract
) -> None:
    keys = await install(chain_w3, vault, [1, 1, 1])
    for i in range(3):
        assert await vault.functions.validatorPower(devnet_validator_address(i)).call() == 0
    payout = usdc_payout(deployment, 8)
    old = signed_by(payout, DEVNET_KEYS)
    lowest_old = min((devnet_validator_address(i) for i in range(3)), key=lambda a: int(a, 16))
    await assert_reverts(withdraw(vault, payout, old), OPERATOR.address, "NotValidator", lowest_old)
    await pays(chain_w3, vault, usdc, payout, signed_by(payout, keys[:2]))


# ---------------------------------------------------------------------------- signatures


@pytest.mark.usefixtures("funded")
async def test_duplicate_and_unsorted_signers_revert(
    deployment: Deployment, vault: AsyncContract
) -> None:
    payout = usdc_payout(deployment, 9)
    first, second = signed_by(payout, DEVNET_KEYS[:2])
    await assert_reverts(
        withdraw(vault, payout, [first, first]), OPERATOR.address, "SignersNotAscending", 1
    )
    # The same signer three times cannot reach 2 of 3 either.
    await assert_reverts(
        withdraw(vault, payout, [second, second, second]),
        OPERATOR.address,
        "SignersNotAscending",
        1,
    )
    await assert_reverts(
        withdraw(vault, payout, [second, first]), OPERATOR.address, "SignersNotAscending", 1
    )
    third = signed_by(payout, DEVNET_KEYS)
    await assert_reverts(
        withdraw(vault, payout, [third[0], third[2], third[1]]),
        OPERATOR.address,
        "SignersNotAscending",
        2,
    )
    # Sorted, the same signatures are fine (eth_call: nothing is paid here).
    await withdraw(vault, payout, [first, second]).call({"from": OPERATOR.address})


@pytest.mark.usefixtures("funded")
async def test_non_validator_signature_reverts(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract, usdc: AsyncContract
) -> None:
    payout = usdc_payout(deployment, 10)
    outsider = throwaway_key("outsider")
    # Two validators already make the quorum: an extra signer that is no validator
    # still spoils the call, wherever it sorts.
    sigs = signed_by(payout, [*DEVNET_KEYS[:2], outsider])
    await assert_reverts(
        withdraw(vault, payout, sigs), OPERATOR.address, "NotValidator", address_of(outsider)
    )
    # A dev account (the operator itself) is no validator either.
    sigs = signed_by(payout, [bytes(OPERATOR.key).hex()])
    await assert_reverts(
        withdraw(vault, payout, sigs), OPERATOR.address, "NotValidator", OPERATOR.address
    )
    await pays(chain_w3, vault, usdc, payout, signed_by(payout, DEVNET_KEYS[:2]))


@pytest.mark.usefixtures("funded")
async def test_malformed_signatures_revert_bad_signature(
    deployment: Deployment, vault: AsyncContract
) -> None:
    payout = usdc_payout(deployment, 11)
    good = signed_by(payout, DEVNET_KEYS[:2])
    broken: list[tuple[str, bytes]] = [
        ("64 bytes (no v)", good[1][:64]),
        ("66 bytes", good[1] + b"\x00"),
        ("empty", b""),
        ("v = 0", good[1][:64] + bytes([good[1][64] - 27])),
        ("v = 29", good[1][:64] + b"\x1d"),
        ("r = 0", b"\x00" * 32 + good[1][32:]),
    ]
    for what, sig in broken:
        with pytest.raises(ContractCustomError) as info:
            await withdraw(vault, payout, [good[0], sig]).call({"from": OPERATOR.address})
        assert str(info.value.data) == error_data("BadSignature", 1), what


@pytest.mark.usefixtures("funded")
async def test_high_s_twin_of_a_valid_signature_reverts(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    payout = usdc_payout(deployment, 12)
    low = signed_by(payout, DEVNET_KEYS[:2])
    r, s, v = low[0][:32], int.from_bytes(low[0][32:64], "big"), low[0][64]
    assert s <= SECP256K1_N // 2
    high = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # 27 <-> 28
    # The twin is a valid signature of the same signer: the ecrecover precompile
    # returns that signer, so only the vault's low-s rule refuses it.
    d = digest(payout)
    raw = await chain_w3.eth.call(
        {
            "to": to_checksum_address("0x" + "00" * 19 + "01"),
            "data": d + (55 - v).to_bytes(32, "big") + high[:64],
        }
    )
    assert to_checksum_address(raw[-20:]) == recover(payout, low[0])
    await assert_reverts(
        withdraw(vault, payout, [high, low[1]]), OPERATOR.address, "BadSignature", 0
    )
    await withdraw(vault, payout, low).call({"from": OPERATOR.address})


def _wrong_fields(dep: Deployment, payout: Payout) -> list[tuple[str, Payout]]:
    return [
        ("another chain id", replace(payout, chain_id=1)),
        ("another vault", replace(payout, vault=dep.tokens["USDT"].address)),
        ("another id", replace(payout, id=payout.id + 1)),
        ("another amount", replace(payout, amount=payout.amount + 1)),
        ("another recipient", replace(payout, to=ALICE.address)),
        ("another token", replace(payout, token=dep.tokens["USDT"].address)),
        ("another deadline", replace(payout, deadline=payout.deadline - 1)),
    ]


@pytest.mark.usefixtures("funded")
async def test_signature_for_another_payout_does_not_count(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract, usdc: AsyncContract
) -> None:
    """A signature over any other (chain, vault, id, amount, to, token, deadline) is a
    valid signature of *another* digest: ecrecover on this payout's digest yields an
    unrelated address, not zero, so the vault reports NotValidator(that address) rather
    than BadSignature. The sigs are ordered by what the vault will recover so the
    ascending check passes and the validator check is what refuses them."""
    payout = usdc_payout(deployment, 13, 3 * USDC_UNIT)
    validators = {devnet_validator_address(i) for i in range(3)}
    for what, other in _wrong_fields(deployment, payout):
        assert digest(other) != digest(payout), what
        sigs = [sign(other, k) for k in DEVNET_KEYS]
        recovered = sorted(
            ((recover(payout, s), s) for s in sigs), key=lambda pair: int(pair[0], 16)
        )
        assert not validators & {a for a, _ in recovered}, what
        ordered = [bytes.fromhex(s[2:]) for _, s in recovered]
        with pytest.raises(ContractCustomError) as info:
            await withdraw(vault, payout, ordered).call({"from": OPERATOR.address})
        assert str(info.value.data) == error_data("NotValidator", recovered[0][0]), what
    await pays(chain_w3, vault, usdc, payout, signed_by(payout, DEVNET_KEYS))


async def test_same_vault_address_on_another_chain_does_not_share_signatures(
    devnet_factory: DevnetFactory, deployment: Deployment
) -> None:
    """The same deployer and nonce put the vault at the same address on every devnet,
    so only the chain id in the domain keeps a signature for one chain from paying on
    another (own anvil with chain id 31338)."""
    async with devnet_factory(chain_id=31338) as (node, dep):
        w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(node.url))
        try:
            assert dep.vault == deployment.vault and dep.chain_id != deployment.chain_id
            vault = contract_for(w3, dep)
            usdc = token_for(w3, dep, "USDC")
            await deposit(w3, vault, usdc, 100 * USDC_UNIT)
            here = usdc_payout(dep, 1)
            there = replace(here, chain_id=deployment.chain_id)
            sigs = [sign(there, k) for k in DEVNET_KEYS]
            recovered = sorted(((recover(here, s), s) for s in sigs), key=lambda p: int(p[0], 16))
            await assert_reverts(
                withdraw(vault, here, [bytes.fromhex(s[2:]) for _, s in recovered]),
                OPERATOR.address,
                "NotValidator",
                recovered[0][0],
            )
            await pays(w3, vault, usdc, here, signed_by(here, DEVNET_KEYS[:2]))
        finally:
            await w3.provider.disconnect()


# ---------------------------------------------------------------------------- other checks


@pytest.mark.usefixtures("funded")
async def test_expired_unlisted_and_already_paid(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract, usdc: AsyncContract
) -> None:
    latest = await chain_w3.eth.get_block("latest")
    expired = usdc_payout(deployment, 14, deadline=int(latest["timestamp"]) - 1)
    await assert_reverts(
        withdraw(vault, expired, signed_by(expired, DEVNET_KEYS)),
        OPERATOR.address,
        "PayoutExpired",
        expired.deadline,
    )

    never_listed = to_checksum_address("0x" + "ab" * 20)
    unlisted = usdc_payout(deployment, 15, token=never_listed)
    await assert_reverts(
        withdraw(vault, unlisted, signed_by(unlisted, DEVNET_KEYS)),
        OPERATOR.address,
        "TokenNotListed",
        never_listed,
    )

    payout = usdc_payout(deployment, 16)
    sigs = signed_by(payout, DEVNET_KEYS[:2])
    await pays(chain_w3, vault, usdc, payout, sigs)
    await assert_reverts(withdraw(vault, payout, sigs), OPERATOR.address, "AlreadyWithdrawn", 16)
    # Fresh signatures or another amount under the same id do not help.
    again = replace(payout, amount=2 * USDC_UNIT)
    await assert_reverts(
        withdraw(vault, again, signed_by(again, DEVNET_KEYS)),
        OPERATOR.address,
        "AlreadyWithdrawn",
        16,
    )


async def test_usd_value_rounds_up(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    usdt = deployment.tokens["USDT"].address
    usdc = deployment.tokens["USDC"].address
    assert await vault.functions.usdValue(usdt, 1).call() == 1  # 1e-18 USD exactly
    assert await vault.functions.usdValue(usdt, 10**18).call() == USD
    assert await vault.functions.usdValue(usdc, 1).call() == 10**12
    assert await vault.functions.usdValue(ZERO, 1).call() == 2000  # 1 wei at $2000
    assert await vault.functions.usdValue(usdt, 0).call() == 0

    # A price that leaves a remainder: 1 base unit of an 18-decimal token worth
    # 1e-18 USD per whole token is 1e-36 USD, floored 0, rounded up 1.
    await transact(chain_w3, OWNER, vault.functions.setTokenLimit(usdt, 18, 1, 0))
    assert await vault.functions.usdValue(usdt, 1).call() == 1
    assert await vault.functions.usdValue(usdt, 10**18).call() == 1
    assert await vault.functions.usdValue(usdt, 10**18 + 1).call() == 2
    await transact(chain_w3, OWNER, vault.functions.setTokenLimit(usdc, 6, USD + 1, USD))
    assert await vault.functions.usdValue(usdc, 1).call() == 10**12 + 1
    assert await vault.functions.usdValue(usdc, USDC_UNIT).call() == USD + 1


async def test_rounded_up_value_hits_a_zero_limit(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    """Under a floored value the 1e-36 USD payout would fit a limit of 0 and pay; rounded
    up it is 1 > 0 and the vault pauses instead."""
    usdt = token_for(chain_w3, deployment, "USDT")
    await deposit(chain_w3, vault, usdt, 10**18)
    await transact(chain_w3, OWNER, vault.functions.setTokenLimit(usdt.address, 18, 1, 0))
    payout = replace(usdc_payout(deployment, 17, 1), token=usdt.address)
    receipt = await transact(
        chain_w3, OPERATOR, withdraw(vault, payout, signed_by(payout, DEVNET_KEYS))
    )
    (paused,) = vault.events.WithdrawPaused().process_receipt(receipt, errors=DISCARD)
    assert paused["args"]["amount"] == 1
    assert vault.events.Withdrawn().process_receipt(receipt, errors=DISCARD) == ()
    assert await vault.functions.paused().call() is True
    assert await usdt.functions.balanceOf(vault.address).call() == 10**18


# ---------------------------------------------------------------------------- hourly limit


async def _set_next_timestamp(w3: AsyncWeb3[Any], timestamp: int) -> None:
    response = await w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])
    assert "error" not in response, response


async def test_hourly_limit_pauses_and_only_the_guardian_resumes(
    devnet_factory: DevnetFactory,
) -> None:
    """Own anvil: the test pins the clock to the start of an hour so both payouts fall
    in one hourly window, then moves it to the next hour."""
    async with devnet_factory() as (node, dep):
        w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(node.url))
        try:
            await _hourly_limit_scenario(w3, dep)
        finally:
            await w3.provider.disconnect()


async def _hourly_limit_scenario(w3: AsyncWeb3[Any], dep: Deployment) -> None:
    vault = contract_for(w3, dep)
    usdc = token_for(w3, dep, "USDC")
    latest = await w3.eth.get_block("latest")
    hour_start = (int(latest["timestamp"]) // 3600 + 1) * 3600
    await _set_next_timestamp(w3, hour_start + 60)

    receipt = await transact(
        w3, OWNER, vault.functions.setTokenLimit(usdc.address, 6, USD, 100 * USD)
    )
    (changed,) = vault.events.TokenLimitChanged().process_receipt(receipt, errors=DISCARD)
    assert dict(changed["args"]) == {
        "token": usdc.address,
        "decimals": 6,
        "priceUsd": USD,
        "hourlyLimitUsd": 100 * USD,
    }
    await transact(w3, OWNER, vault.functions.setGuardian(BOB.address))
    await deposit(w3, vault, usdc, 1_000 * USDC_UNIT)
    assert await vault.functions.usedThisHour(usdc.address).call() == 0

    first = usdc_payout(dep, 1, 60 * USDC_UNIT, to=STRANGER.address)
    await pays(w3, vault, usdc, first, signed_by(first, DEVNET_KEYS[:2]))
    assert await vault.functions.usedThisHour(usdc.address).call() == 60 * USD

    # $60 + $50 > $100: the transaction succeeds, pays nothing and pauses the vault.
    second = usdc_payout(dep, 2, 50 * USDC_UNIT, to=STRANGER.address)
    second_sigs = signed_by(second, DEVNET_KEYS)
    vault_before = await usdc.functions.balanceOf(vault.address).call()
    to_before = await usdc.functions.balanceOf(STRANGER.address).call()
    receipt = await transact(w3, OPERATOR, withdraw(vault, second, second_sigs))
    assert receipt["status"] == 1
    (held,) = vault.events.WithdrawPaused().process_receipt(receipt, errors=DISCARD)
    assert dict(held["args"]) == {
        "id": 2,
        "token": usdc.address,
        "amount": 50 * USDC_UNIT,
        "usedThisHour": 60 * USD,
    }
    (paused,) = vault.events.Paused().process_receipt(receipt, errors=DISCARD)
    assert paused["args"]["by"] == vault.address
    assert vault.events.Withdrawn().process_receipt(receipt, errors=DISCARD) == ()
    assert await usdc.functions.balanceOf(vault.address).call() == vault_before
    assert await usdc.functions.balanceOf(STRANGER.address).call() == to_before
    assert await vault.functions.withdrawn(2).call() is False
    assert await vault.functions.paused().call() is True
    assert await vault.functions.usedThisHour(usdc.address).call() == 60 * USD

    # Paused: nothing goes out, not even a payout that would fit.
    small = usdc_payout(dep, 3, 1)
    await assert_reverts(
        withdraw(vault, small, signed_by(small, DEVNET_KEYS)), OPERATOR.address, "EnforcedPause"
    )
    await assert_reverts(withdraw(vault, second, second_sigs), OPERATOR.address, "EnforcedPause")

    # The owner is no longer the guardian and cannot resume; the guardian can.
    await assert_reverts(vault.functions.unpause(), OWNER.address, "NotGuardian")
    await assert_reverts(vault.functions.unpause(), OPERATOR.address, "NotGuardian")
    receipt = await transact(w3, BOB, vault.functions.unpause())
    (resumed,) = vault.events.Unpaused().process_receipt(receipt, errors=DISCARD)
    assert resumed["args"]["by"] == BOB.address
    assert await vault.functions.paused().call() is False
    assert await vault.functions.usedThisHour(usdc.address).call() == 0  # reset

    # The same id with the same signatures now pays, in the same hour.
    await pays(w3, vault, usdc, second, second_sigs)
    assert await vault.functions.usedThisHour(usdc.address).call() == 50 * USD
    # Up to the limit exactly still pays ($50 + $50 = $100) ...
    third = usdc_payout(dep, 4, 50 * USDC_UNIT)
    await pays(w3, vault, usdc, third, signed_by(third, DEVNET_KEYS[1:]))
    assert await vault.functions.usedThisHour(usdc.address).call() == 100 * USD
    # ... one base unit more ($1e-6) pauses, with the hour's usage in the event.
    fourth = usdc_payout(dep, 5, 1)
    receipt = await transact(
        w3, OPERATOR, withdraw(vault, fourth, signed_by(fourth, DEVNET_KEYS[:2]))
    )
    (held,) = vault.events.WithdrawPaused().process_receipt(receipt, errors=DISCARD)
    assert held["args"]["usedThisHour"] == 100 * USD
    assert await vault.functions.paused().call() is True
    await transact(w3, BOB, vault.functions.unpause())

    # Usage belongs to its hour: the next hour starts from zero without an unpause.
    fifth = usdc_payout(dep, 6, 90 * USDC_UNIT)
    await pays(w3, vault, usdc, fifth, signed_by(fifth, DEVNET_KEYS[:2]))
    assert await vault.functions.usedThisHour(usdc.address).call() == 90 * USD
    await _set_next_timestamp(w3, hour_start + 3600 + 5)
    await w3.provider.make_request("evm_mine", [])
    assert await vault.functions.usedThisHour(usdc.address).call() == 0
    sixth = usdc_payout(dep, 7, 90 * USDC_UNIT)
    await pays(w3, vault, usdc, sixth, signed_by(sixth, DEVNET_KEYS[:2]))
    assert await vault.functions.usedThisHour(usdc.address).call() == 90 * USD
    # The other tokens' limits were untouched throughout.
    usdt = dep.tokens["USDT"].address
    limit = await vault.functions.tokenLimits(usdt).call()
    assert tuple(limit[:4]) == (18, True, DEVNET_PRICES_USD["USDT"], DEVNET_HOURLY_LIMIT_USD)
    assert await vault.functions.usedThisHour(usdt).call() == 0


async def test_deadline_is_inclusive(devnet_factory: DevnetFactory) -> None:
    """A payout whose deadline is the block's timestamp still pays; one second later
    it is expired (own anvil: the test sets the block time)."""
    async with devnet_factory() as (node, dep):
        w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(node.url))
        try:
            vault = contract_for(w3, dep)
            usdc = token_for(w3, dep, "USDC")
            await deposit(w3, vault, usdc, 100 * USDC_UNIT)
            latest = await w3.eth.get_block("latest")
            at = int(latest["timestamp"]) + 100
            payout = usdc_payout(dep, 1, deadline=at)
            sigs = signed_by(payout, DEVNET_KEYS[:2])
            await _set_next_timestamp(w3, at)
            receipt = await pays(w3, vault, usdc, payout, sigs)
            block = await w3.eth.get_block(receipt["blockNumber"])
            assert block["timestamp"] == at

            await _set_next_timestamp(w3, at + 1)
            await w3.provider.make_request("evm_mine", [])
            late = usdc_payout(dep, 2, deadline=at)
            await assert_reverts(
                withdraw(vault, late, signed_by(late, DEVNET_KEYS)),
                OPERATOR.address,
                "PayoutExpired",
                at,
            )
            # The same payout with a deadline one second later still pays.
            later = usdc_payout(dep, 2, deadline=at + 1)
            await withdraw(vault, later, signed_by(later, DEVNET_KEYS)).call(
                {"from": OPERATOR.address}
            )
        finally:
            await w3.provider.disconnect()


# ---------------------------------------------------------------------------- administration


async def test_set_validators_and_limits_are_owner_only(
    deployment: Deployment, vault: AsyncContract
) -> None:
    usdc = deployment.tokens["USDC"].address
    calls = (
        vault.functions.setValidators([STRANGER.address], [1]),
        vault.functions.setTokenLimit(usdc, 6, USD, 10**30),
    )
    for call in calls:
        for sender in (STRANGER, OPERATOR, BOB):
            await assert_reverts(call, sender.address, "NotOwner")
        await call.call({"from": OWNER.address})


async def test_guardian_cannot_administer(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    await transact(chain_w3, OWNER, vault.functions.setGuardian(BOB.address))
    await assert_reverts(vault.functions.setValidators([BOB.address], [1]), BOB.address, "NotOwner")
    await assert_reverts(vault.functions.setTokenLimit(ZERO, 18, 1, 1), BOB.address, "NotOwner")


async def test_set_validators_event_and_views(
    chain_w3: AsyncWeb3[Any], vault: AsyncContract
) -> None:
    keys = [throwaway_key(f"set{i}") for i in range(3)]
    signers = [address_of(k) for k in keys]
    receipt = await transact(chain_w3, OWNER, vault.functions.setValidators(signers, [5, 1, 3]))
    (event,) = vault.events.ValidatorSetChanged().process_receipt(receipt, errors=DISCARD)
    assert list(event["args"]["signers"]) == signers
    assert list(event["args"]["powers"]) == [5, 1, 3]
    assert event["args"]["totalPower"] == 9
    got_signers, got_powers = await vault.functions.validators().call()
    assert list(got_signers) == signers
    assert list(got_powers) == [5, 1, 3]
    assert await vault.functions.totalPower().call() == 9
    assert await vault.functions.validatorPower(signers[0]).call() == 5
    assert await vault.functions.validatorPower(devnet_validator_address(0)).call() == 0

    # A smaller set replaces it entirely.
    await transact(chain_w3, OWNER, vault.functions.setValidators([signers[2]], [2]))
    got_signers, got_powers = await vault.functions.validators().call()
    assert (list(got_signers), list(got_powers)) == ([signers[2]], [2])
    assert await vault.functions.validatorPower(signers[0]).call() == 0
    assert await vault.functions.totalPower().call() == 2


async def test_set_validators_rejects_bad_sets(vault: AsyncContract) -> None:
    a, b = (address_of(throwaway_key(f"bad{i}")) for i in range(2))
    bad: list[tuple[str, list[str], list[int]]] = [
        ("empty", [], []),
        ("duplicate signer", [a, b, a], [1, 1, 1]),
        ("zero power", [a, b], [1, 0]),
        ("zero address", [a, ZERO], [1, 1]),
        ("length mismatch", [a, b], [1]),
        ("total power of 2^128 or more", [a, b], [2**127, 2**127]),
    ]
    for what, signers, powers in bad:
        with pytest.raises(ContractCustomError) as info:
            await vault.functions.setValidators(signers, powers).call({"from": OWNER.address})
        assert str(info.value.data) == error_data("BadValidatorSet"), what
    await vault.functions.setValidators([a, b], [1, 1]).call({"from": OWNER.address})


async def test_token_limit_event_and_listing(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    new_token = to_checksum_address("0x" + "cd" * 20)
    assert (await vault.functions.tokenLimits(new_token).call())[1] is False
    receipt = await transact(
        chain_w3, OWNER, vault.functions.setTokenLimit(new_token, 8, 3 * USD, 7 * USD)
    )
    (event,) = vault.events.TokenLimitChanged().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {
        "token": new_token,
        "decimals": 8,
        "priceUsd": 3 * USD,
        "hourlyLimitUsd": 7 * USD,
    }
    decimals, listed, price, limit, _hour, _used = await vault.functions.tokenLimits(
        new_token
    ).call()
    assert (decimals, listed, price, limit) == (8, True, 3 * USD, 7 * USD)
    assert await vault.functions.usdValue(new_token, 10**8).call() == 3 * USD
    await assert_reverts(
        vault.functions.setTokenLimit(new_token, 78, 1, 1), OWNER.address, "BadTokenLimit"
    )
