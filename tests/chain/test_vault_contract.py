"""The compiled Vault and TestToken on a real anvil.

Every test runs inside an evm snapshot of the shared session chain and is reverted
afterwards, so tests may pause, rotate roles or set fees freely.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from eth_utils.address import to_checksum_address
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.contract.async_contract import AsyncContractFunction
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD
from web3.types import TxParams, Wei

from tests.fixtures_chain import revert_selector, send_value, transact
from watcher.chain.artifacts import DEPOSIT_TOPIC, WITHDRAWN_TOPIC, load_artifact
from watcher.chain.devnet import (
    DEVNET_VALIDATORS,
    Deployment,
    dev_account,
    devnet_validator_address,
    devnet_validator_key,
)
from watcher.chain.payout import Payout, sign, signatures_blob

pytestmark = pytest.mark.usefixtures("chain_snapshot")

VAULT = load_artifact("Vault")
TOKEN = load_artifact("TestToken")
ZERO = "0x0000000000000000000000000000000000000000"

OWNER = dev_account(0)  # also the guardian and the tokens' owner
OPERATOR = dev_account(1)
ALICE = dev_account(2)
BOB = dev_account(3)
STRANGER = dev_account(4)
FAR_DEADLINE = 2**40  # year ~36800: never expires in these tests


@pytest.fixture
def vault(chain_w3: AsyncWeb3[Any], deployment: Deployment) -> AsyncContract:
    return chain_w3.eth.contract(address=to_checksum_address(deployment.vault), abi=VAULT.abi)


def token_contract(w3: AsyncWeb3[Any], dep: Deployment, symbol: str) -> AsyncContract:
    return w3.eth.contract(address=to_checksum_address(dep.tokens[symbol].address), abi=TOKEN.abi)


async def assert_reverts(call: AsyncContractFunction, sender: str, error: str, **tx: Any) -> str:
    """eth_call ``call`` from ``sender`` and check it reverts with the Vault's ``error``."""
    with pytest.raises(ContractCustomError) as info:
        await call.call(cast(TxParams, {"from": sender, **tx}))
    data = str(info.value.data)
    assert data.startswith(revert_selector(VAULT, error)), (error, data)
    return data


def signatures(
    dep: Deployment,
    id_: int,
    token: str,
    to: str,
    amount: int,
    *,
    deadline: int = FAR_DEADLINE,
    signers: range = range(DEVNET_VALIDATORS),
) -> list[bytes]:
    """The devnet validators' (all three by default) signatures over this payout, sorted
    by signer: the ``bytes[]`` ``withdraw`` takes."""
    payout = Payout(dep.chain_id, dep.vault, id_, token, to, amount, deadline)
    return signatures_blob(
        (devnet_validator_address(i), sign(payout, devnet_validator_key(i))) for i in signers
    )


def withdraw(
    vault: AsyncContract, dep: Deployment, id_: int, token: str, to: str, amount: int
) -> AsyncContractFunction:
    """``vault.withdraw`` with a far deadline and a full quorum of devnet signatures."""
    sigs = signatures(dep, id_, token, to, amount)
    return vault.functions.withdraw(id_, token, to, amount, FAR_DEADLINE, sigs)


async def deposit_token(
    w3: AsyncWeb3[Any], vault: AsyncContract, token: AsyncContract, who: Any, amount: int
) -> Any:
    await transact(w3, who, token.functions.approve(vault.address, amount))
    return await transact(w3, who, vault.functions.deposit(token.address, amount))


# ---------------------------------------------------------------------------- deposits


@pytest.mark.parametrize(("symbol", "amount"), [("USDT", 12_345 * 10**16), ("USDC", 42_000_001)])
async def test_token_deposit_emits_deposit(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract, symbol: str, amount: int
) -> None:
    token = token_contract(chain_w3, deployment, symbol)
    before_user = await token.functions.balanceOf(ALICE.address).call()
    receipt = await deposit_token(chain_w3, vault, token, ALICE, amount)

    events = vault.events.Deposit().process_receipt(receipt, errors=DISCARD)
    assert len(events) == 1
    assert events[0]["args"]["account"] == ALICE.address
    assert events[0]["args"]["token"] == token.address
    assert events[0]["args"]["amount"] == amount
    # The raw log layout the watcher decodes by hand.
    (log,) = [lg for lg in receipt["logs"] if lg["address"] == vault.address]
    assert log["topics"][0].to_0x_hex() == DEPOSIT_TOPIC
    assert log["topics"][1].to_0x_hex() == "0x" + "00" * 12 + ALICE.address[2:].lower()
    assert log["topics"][2].to_0x_hex() == "0x" + "00" * 12 + token.address[2:].lower()
    assert int.from_bytes(log["data"], "big") == amount

    assert await token.functions.balanceOf(vault.address).call() == amount
    assert await token.functions.balanceOf(ALICE.address).call() == before_user - amount


async def test_native_deposit(chain_w3: AsyncWeb3[Any], vault: AsyncContract) -> None:
    value = 3 * 10**18 + 1
    receipt = await transact(chain_w3, ALICE, vault.functions.depositNative(), value=value)
    (event,) = vault.events.Deposit().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["account"] == ALICE.address
    assert event["args"]["token"] == ZERO
    assert event["args"]["amount"] == value
    assert await chain_w3.eth.get_balance(vault.address) == value


async def test_zero_and_native_via_deposit_are_rejected(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    usdt = deployment.tokens["USDT"].address
    await assert_reverts(vault.functions.deposit(usdt, 0), ALICE.address, "ZeroAmount")
    await assert_reverts(vault.functions.depositNative(), ALICE.address, "ZeroAmount", value=0)
    await assert_reverts(vault.functions.deposit(ZERO, 5), ALICE.address, "NativeViaDepositNative")


async def test_deposit_without_allowance_reverts(
    deployment: Deployment, vault: AsyncContract
) -> None:
    usdt = deployment.tokens["USDT"].address
    data = await assert_reverts(
        vault.functions.deposit(usdt, 1), BOB.address, "TokenTransferFailed"
    )
    assert data.endswith(usdt[2:].lower())


async def test_fee_on_transfer_credits_the_received_amount(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    token = token_contract(chain_w3, deployment, "USDT")
    await transact(chain_w3, OWNER, token.functions.setFeeBps(100))  # 1 %
    supply_before = await token.functions.totalSupply().call()

    # 1,000 requested → 10 burned → 990 received and credited.
    receipt = await deposit_token(chain_w3, vault, token, ALICE, 1_000 * 10**18)

    (event,) = vault.events.Deposit().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["amount"] == 990 * 10**18
    assert await token.functions.balanceOf(vault.address).call() == 990 * 10**18
    assert await token.functions.totalSupply().call() == supply_before - 10 * 10**18


async def test_only_token_owner_sets_the_fee(
    chain_w3: AsyncWeb3[Any], deployment: Deployment
) -> None:
    token = token_contract(chain_w3, deployment, "USDT")
    with pytest.raises(ContractCustomError) as info:
        await token.functions.setFeeBps(5).call({"from": STRANGER.address})
    assert str(info.value.data) == revert_selector(TOKEN, "NotOwner")


async def test_bare_native_send_reverts_but_direct_token_transfer_lands(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    with pytest.raises(ContractCustomError) as info:
        await chain_w3.eth.call({"from": ALICE.address, "to": vault.address, "value": Wei(10**18)})
    assert str(info.value.data) == revert_selector(VAULT, "DirectNativeTransfer")
    with pytest.raises(AssertionError, match="reverted"):
        await send_value(chain_w3, ALICE, vault.address, 10**18)

    token = token_contract(chain_w3, deployment, "USDC")
    receipt = await transact(chain_w3, ALICE, token.functions.transfer(vault.address, 7_000_000))
    assert vault.events.Deposit().process_receipt(receipt, errors=DISCARD) == ()
    assert await token.functions.balanceOf(vault.address).call() == 7_000_000


# ---------------------------------------------------------------------------- withdrawals


async def test_operator_withdraws_tokens(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    token = token_contract(chain_w3, deployment, "USDC")
    await deposit_token(chain_w3, vault, token, ALICE, 500_000_000)
    bob_before = await token.functions.balanceOf(BOB.address).call()

    receipt = await transact(
        chain_w3, OPERATOR, withdraw(vault, deployment, 77, token.address, BOB.address, 123_456_789)
    )

    (event,) = vault.events.Withdrawn().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["id"] == 77
    assert event["args"]["to"] == BOB.address
    assert event["args"]["token"] == token.address
    assert event["args"]["amount"] == 123_456_789
    (log,) = [lg for lg in receipt["logs"] if lg["address"] == vault.address]
    assert log["topics"][0].to_0x_hex() == WITHDRAWN_TOPIC
    assert int.from_bytes(log["topics"][1], "big") == 77

    assert await token.functions.balanceOf(BOB.address).call() == bob_before + 123_456_789
    assert await token.functions.balanceOf(vault.address).call() == 500_000_000 - 123_456_789
    assert await vault.functions.withdrawn(77).call() is True
    assert await vault.functions.isWithdrawn(77).call() is True
    assert await vault.functions.isWithdrawn(78).call() is False


async def test_operator_withdraws_native(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    await transact(chain_w3, ALICE, vault.functions.depositNative(), value=5 * 10**18)
    bob_before = await chain_w3.eth.get_balance(BOB.address)
    receipt = await transact(
        chain_w3, OPERATOR, withdraw(vault, deployment, 1, ZERO, BOB.address, 2 * 10**18)
    )
    (event,) = vault.events.Withdrawn().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["token"] == ZERO
    assert await chain_w3.eth.get_balance(BOB.address) == bob_before + 2 * 10**18
    assert await chain_w3.eth.get_balance(vault.address) == 3 * 10**18


async def test_replayed_withdrawal_id_reverts(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    token = token_contract(chain_w3, deployment, "USDT")
    await deposit_token(chain_w3, vault, token, ALICE, 10 * 10**18)
    await transact(
        chain_w3, OPERATOR, withdraw(vault, deployment, 9, token.address, BOB.address, 1)
    )

    data = await assert_reverts(
        withdraw(vault, deployment, 9, token.address, BOB.address, 1),
        OPERATOR.address,
        "AlreadyWithdrawn",
    )
    assert int(data[10:], 16) == 9
    # A different id still pays.
    await transact(
        chain_w3, OPERATOR, withdraw(vault, deployment, 10, token.address, BOB.address, 1)
    )


async def test_withdraw_rejects_non_operator_and_bad_arguments(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    token = token_contract(chain_w3, deployment, "USDT")
    await deposit_token(chain_w3, vault, token, ALICE, 10 * 10**18)
    call = withdraw(vault, deployment, 1, token.address, STRANGER.address, 10**18)
    await assert_reverts(call, STRANGER.address, "NotOperator")
    await assert_reverts(call, OWNER.address, "NotOperator")
    await assert_reverts(
        withdraw(vault, deployment, 1, token.address, ZERO, 1), OPERATOR.address, "ZeroAddress"
    )
    await assert_reverts(
        withdraw(vault, deployment, 1, token.address, BOB.address, 0),
        OPERATOR.address,
        "ZeroAmount",
    )
    # More than the vault holds: the token refuses and the vault reports which token.
    await assert_reverts(
        withdraw(vault, deployment, 1, token.address, BOB.address, 11 * 10**18),
        OPERATOR.address,
        "TokenTransferFailed",
    )
    assert await vault.functions.isWithdrawn(1).call() is False


# ---------------------------------------------------------------------------- pause


async def test_pause_blocks_deposits_and_withdrawals_until_unpaused(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    token = token_contract(chain_w3, deployment, "USDT")
    await deposit_token(chain_w3, vault, token, ALICE, 10 * 10**18)
    await transact(chain_w3, ALICE, token.functions.approve(vault.address, 10**18))

    await assert_reverts(vault.functions.pause(), STRANGER.address, "NotGuardian")
    receipt = await transact(chain_w3, OWNER, vault.functions.pause())  # owner == guardian
    (paused,) = vault.events.Paused().process_receipt(receipt, errors=DISCARD)
    assert paused["args"]["by"] == OWNER.address
    assert await vault.functions.paused().call() is True

    await assert_reverts(
        vault.functions.deposit(token.address, 10**18), ALICE.address, "EnforcedPause"
    )
    await assert_reverts(vault.functions.depositNative(), ALICE.address, "EnforcedPause", value=1)
    payout = withdraw(vault, deployment, 5, token.address, BOB.address, 10**18)
    await assert_reverts(payout, OPERATOR.address, "EnforcedPause")
    await assert_reverts(vault.functions.pause(), OWNER.address, "EnforcedPause")

    await assert_reverts(vault.functions.unpause(), OPERATOR.address, "NotGuardian")
    await assert_reverts(vault.functions.unpause(), STRANGER.address, "NotGuardian")
    receipt = await transact(chain_w3, OWNER, vault.functions.unpause())  # as the guardian
    (unpaused,) = vault.events.Unpaused().process_receipt(receipt, errors=DISCARD)
    assert unpaused["args"]["by"] == OWNER.address
    assert await vault.functions.paused().call() is False
    await assert_reverts(vault.functions.unpause(), OWNER.address, "ExpectedPause")

    await transact(chain_w3, ALICE, vault.functions.deposit(token.address, 10**18))
    await transact(chain_w3, OPERATOR, payout)


async def test_only_the_guardian_unpauses(chain_w3: AsyncWeb3[Any], vault: AsyncContract) -> None:
    """With a guardian of its own the owner may still pause but no longer unpause."""
    await transact(chain_w3, OWNER, vault.functions.setGuardian(BOB.address))
    assert await vault.functions.guardian().call() == BOB.address

    await transact(chain_w3, BOB, vault.functions.pause())
    await assert_reverts(vault.functions.unpause(), OWNER.address, "NotGuardian")
    await assert_reverts(vault.functions.unpause(), OPERATOR.address, "NotGuardian")
    assert await vault.functions.paused().call() is True
    receipt = await transact(chain_w3, BOB, vault.functions.unpause())
    (unpaused,) = vault.events.Unpaused().process_receipt(receipt, errors=DISCARD)
    assert unpaused["args"]["by"] == BOB.address
    assert await vault.functions.paused().call() is False

    # The owner keeps the emergency brake; only the guardian releases it.
    receipt = await transact(chain_w3, OWNER, vault.functions.pause())
    (paused,) = vault.events.Paused().process_receipt(receipt, errors=DISCARD)
    assert paused["args"]["by"] == OWNER.address
    await assert_reverts(vault.functions.unpause(), OWNER.address, "NotGuardian")
    await transact(chain_w3, BOB, vault.functions.unpause())
    await assert_reverts(vault.functions.unpause(), BOB.address, "ExpectedPause")


# ---------------------------------------------------------------------------- roles


async def test_initial_roles(deployment: Deployment, vault: AsyncContract) -> None:
    assert await vault.functions.owner().call() == deployment.owner == OWNER.address
    assert await vault.functions.operator().call() == deployment.operator == OPERATOR.address
    assert await vault.functions.guardian().call() == deployment.guardian == OWNER.address
    assert await vault.functions.paused().call() is False


async def test_role_rotation_is_owner_only(
    chain_w3: AsyncWeb3[Any], deployment: Deployment, vault: AsyncContract
) -> None:
    for call in (
        vault.functions.setOperator(STRANGER.address),
        vault.functions.setGuardian(STRANGER.address),
        vault.functions.transferOwnership(STRANGER.address),
    ):
        await assert_reverts(call, STRANGER.address, "NotOwner")
        await assert_reverts(call, OPERATOR.address, "NotOwner")
    await assert_reverts(vault.functions.setOperator(ZERO), OWNER.address, "ZeroAddress")

    # Rotate the operator: the new one can pay, the old one no longer can.
    token = token_contract(chain_w3, deployment, "USDT")
    await deposit_token(chain_w3, vault, token, ALICE, 10 * 10**18)
    receipt = await transact(chain_w3, OWNER, vault.functions.setOperator(BOB.address))
    (changed,) = vault.events.OperatorChanged().process_receipt(receipt, errors=DISCARD)
    assert changed["args"]["previousOperator"] == OPERATOR.address
    assert changed["args"]["newOperator"] == BOB.address
    call = withdraw(vault, deployment, 3, token.address, ALICE.address, 1)
    await assert_reverts(call, OPERATOR.address, "NotOperator")
    await transact(chain_w3, BOB, call)

    receipt = await transact(chain_w3, OWNER, vault.functions.setGuardian(ALICE.address))
    (changed,) = vault.events.GuardianChanged().process_receipt(receipt, errors=DISCARD)
    assert changed["args"]["newGuardian"] == ALICE.address
    assert await vault.functions.guardian().call() == ALICE.address


async def test_ownership_transfer_is_two_step(
    chain_w3: AsyncWeb3[Any], vault: AsyncContract
) -> None:
    await transact(chain_w3, OWNER, vault.functions.transferOwnership(ALICE.address))
    assert await vault.functions.owner().call() == OWNER.address
    assert await vault.functions.pendingOwner().call() == ALICE.address
    await assert_reverts(vault.functions.acceptOwnership(), STRANGER.address, "NotPendingOwner")

    receipt = await transact(chain_w3, ALICE, vault.functions.acceptOwnership())
    (event,) = vault.events.OwnershipTransferred().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["previousOwner"] == OWNER.address
    assert event["args"]["newOwner"] == ALICE.address
    assert await vault.functions.owner().call() == ALICE.address
    assert await vault.functions.pendingOwner().call() == ZERO
    await assert_reverts(vault.functions.setOperator(BOB.address), OWNER.address, "NotOwner")
    await transact(chain_w3, ALICE, vault.functions.setOperator(BOB.address))
