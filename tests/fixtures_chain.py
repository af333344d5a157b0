"""Pytest plugin: real anvil nodes with the compiled contracts deployed.

Session fixtures (one anvil for the whole run, automine, chain id 31337):

- ``anvil``       the running node (``AnvilNode``: url, port, chain_id, process)
- ``deployment``  ``deploy_devnet`` on it: vault + USDT (18) + USDC (6), dev accounts funded
- ``chain_w3``    an ``AsyncWeb3`` connected to ``anvil``

Per test:

- ``chain_snapshot`` takes ``evm_snapshot`` before the test and ``evm_revert``s after
  it. Use it in any test that changes the shared chain in a way later tests could
  notice (pausing, role changes, fees): ``pytestmark = pytest.mark.usefixtures("chain_snapshot")``.
- ``anvil_factory`` for a test that needs its own node (reorgs, block time, its own
  chain id). The node is stopped when the ``async with`` block exits::

      async def test_x(anvil_factory):
          async with anvil_factory(block_time=1, chain_id=1337) as node:
              dep = await deploy_devnet(node.url)

- ``devnet_factory`` the same, with the contracts already deployed::

      async with devnet_factory(chain_id=31338) as (node, dep): ...

Helpers (plain functions, import them): ``transact`` signs, sends and waits for a
successful receipt; ``revert_selector`` returns the 4-byte selector of a custom error
from the ABI, to compare with ``ContractCustomError.data``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.contract.async_contract import AsyncContractFunction
from web3.providers.rpc import AsyncHTTPProvider
from web3.types import TxParams, TxReceipt, Wei

from watcher.api.devnet_cosigners import LocalCosigners
from watcher.chain.artifacts import Artifact
from watcher.chain.devnet import AnvilNode, Deployment, deploy_devnet, start_anvil

AnvilFactory = Callable[..., AbstractAsyncContextManager[AnvilNode]]
DevnetFactory = Callable[..., AbstractAsyncContextManager[tuple[AnvilNode, Deployment]]]


@pytest.fixture(scope="session")
async def anvil() -> AsyncIterator[AnvilNode]:
    async with start_anvil(chain_id=31337) as node:
        yield node


@pytest.fixture(scope="session")
async def deployment(anvil: AnvilNode) -> Deployment:
    return await deploy_devnet(anvil.url)


@pytest.fixture(scope="session")
async def chain_w3(anvil: AnvilNode) -> AsyncIterator[AsyncWeb3[Any]]:
    w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(anvil.url))
    try:
        yield w3
    finally:
        await w3.provider.disconnect()


@pytest.fixture
async def chain_snapshot(chain_w3: AsyncWeb3[Any], deployment: Deployment) -> AsyncIterator[str]:
    """Snapshot the shared chain (after the deployment) and revert it after the test."""
    response = await chain_w3.provider.make_request("evm_snapshot", [])
    snapshot_id = str(response["result"])
    try:
        yield snapshot_id
    finally:
        reverted = await chain_w3.provider.make_request("evm_revert", [snapshot_id])
        assert reverted.get("result") is True, f"evm_revert failed: {reverted}"


@pytest.fixture
def anvil_factory() -> AnvilFactory:
    """``start_anvil`` itself: an async context manager taking start_anvil's arguments."""
    return start_anvil


@pytest.fixture
def devnet_factory() -> DevnetFactory:
    @asynccontextmanager
    async def factory(**anvil_kwargs: Any) -> AsyncIterator[tuple[AnvilNode, Deployment]]:
        async with start_anvil(**anvil_kwargs) as node:
            yield node, await deploy_devnet(node.url)

    return factory


async def transact(
    w3: AsyncWeb3[Any],
    account: LocalAccount,
    call: AsyncContractFunction,
    *,
    value: int = 0,
) -> TxReceipt:
    """Sign ``call`` with ``account``, send it and return its receipt; fail on status 0."""
    params: TxParams = {
        "from": account.address,
        "value": Wei(value),
        "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
    }
    tx: dict[str, Any] = dict(await call.build_transaction(params))
    signed = account.sign_transaction(tx)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.02)
    assert receipt["status"] == 1, f"transaction {tx_hash.to_0x_hex()} reverted"
    return receipt


async def send_value(w3: AsyncWeb3[Any], account: LocalAccount, to: str, value: int) -> TxReceipt:
    """A plain value transfer (no calldata); fails on status 0."""
    tx: dict[str, Any] = {
        "from": account.address,
        "to": to,
        "value": value,
        "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
        "chainId": await w3.eth.chain_id,
        "gas": 100_000,
        "maxFeePerGas": 10 * await w3.eth.gas_price,
        "maxPriorityFeePerGas": 1,
    }
    signed = account.sign_transaction(tx)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.02)
    assert receipt["status"] == 1, f"transaction {tx_hash.to_0x_hex()} reverted"
    return receipt


def revert_selector(artifact: Artifact, error_name: str) -> str:
    """0x-hex 4-byte selector of the custom error ``error_name`` in ``artifact``'s ABI."""
    for entry in artifact.abi:
        if entry.get("type") == "error" and entry.get("name") == error_name:
            types = ",".join(str(i["type"]) for i in entry.get("inputs", []))
            return "0x" + keccak(text=f"{error_name}({types})")[:4].hex()
    raise KeyError(f"{artifact.name} has no error {error_name}")


CosignersFor = Callable[..., Awaitable[LocalCosigners]]


@pytest.fixture
async def cosigners_for(tmp_path: Path) -> AsyncIterator[CosignersFor]:
    """Start the devnet's co-signers for a deployment (in this process, real HTTP and
    stores), stopped after the test: ``cs = await cosigners_for(dep)``; ``up=[0, 1]``
    starts only those. A daemon of the test gets ``cs.urls`` in its network file
    (``write_config(..., cosigners=cs.urls)``) and ``WATCHER_COSIGNER_TOKEN=cs.token``."""
    started: list[LocalCosigners] = []

    async def start(dep: Deployment, up: Sequence[int] | None = None) -> LocalCosigners:
        cs = LocalCosigners(dep, tmp_path / f"cosigners-{len(started)}")
        started.append(cs)
        await cs.start_all(up)
        return cs

    yield start
    for cs in started:
        await cs.close()
