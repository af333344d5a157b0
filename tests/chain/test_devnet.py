"""anvil process management, the devnet deployment and its network config."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_utils.address import to_checksum_address
from web3 import AsyncWeb3
from web3.providers.rpc import AsyncHTTPProvider

from tests.fixtures_chain import AnvilFactory, DevnetFactory
from watcher.chain.artifacts import load_artifact
from watcher.chain.devnet import (
    Deployment,
    DevnetError,
    TokenInfo,
    anvil_binary,
    deploy_devnet,
    dev_account,
    free_port,
    network_toml,
    prepare_config_dir,
    run_devnet,
    start_anvil,
)

VAULT_ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
USDT_ADDRESS = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
USDC_ADDRESS = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"


def test_dev_accounts_are_the_anvil_defaults() -> None:
    assert dev_account(0).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert dev_account(1).address == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    assert dev_account(9).address == "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"
    assert anvil_binary().is_file()


async def test_deploy_devnet_is_deterministic_and_funds_accounts(
    devnet_factory: DevnetFactory,
) -> None:
    async with devnet_factory(chain_id=31337) as (node, dep):
        assert dep.chain_id == 31337
        assert dep.rpc_url == node.url
        assert dep.vault == VAULT_ADDRESS
        assert dep.tokens == {
            "USDT": TokenInfo(address=USDT_ADDRESS, decimals=18),
            "USDC": TokenInfo(address=USDC_ADDRESS, decimals=6),
        }
        assert dep.deploy_block == 1
        assert dep.owner == dep.guardian == dev_account(0).address
        assert dep.operator == dev_account(1).address

        w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(node.url))
        try:
            vault = w3.eth.contract(
                address=to_checksum_address(dep.vault), abi=load_artifact("Vault").abi
            )
            assert await vault.functions.operator().call() == dep.operator
            deployed = await w3.eth.get_code(to_checksum_address(dep.vault))
            assert deployed.to_0x_hex() == load_artifact("Vault").deployed_bytecode
            abi = load_artifact("TestToken").abi
            for symbol, info in dep.tokens.items():
                token = w3.eth.contract(address=to_checksum_address(info.address), abi=abi)
                assert await token.functions.symbol().call() == symbol
                assert await token.functions.decimals().call() == info.decimals
                whole = 1_000_000 * 10**info.decimals
                for i in range(10):
                    balance = await token.functions.balanceOf(dev_account(i).address).call()
                    assert balance == whole
                assert await token.functions.balanceOf(dev_account(10).address).call() == 0
                assert await token.functions.totalSupply().call() == 10 * whole
        finally:
            await w3.provider.disconnect()


async def test_operator_is_funded_even_outside_the_funded_range(
    anvil_factory: AnvilFactory,
) -> None:
    async with anvil_factory(chain_id=1337) as node:
        dep = await deploy_devnet(node.url, fund_accounts=1, fund_amount_tokens=5)
        assert dep.chain_id == 1337
        w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(node.url))
        try:
            usdc = w3.eth.contract(
                address=to_checksum_address(dep.tokens["USDC"].address),
                abi=load_artifact("TestToken").abi,
            )
            assert await usdc.functions.balanceOf(dev_account(0).address).call() == 5_000_000
            assert await usdc.functions.balanceOf(dev_account(1).address).call() == 5_000_000
            assert await usdc.functions.balanceOf(dev_account(2).address).call() == 0
        finally:
            await w3.provider.disconnect()


async def test_deploy_with_block_time(anvil_factory: AnvilFactory) -> None:
    async with anvil_factory(block_time=0.2) as node:
        dep = await deploy_devnet(node.url, fund_accounts=2)
        assert dep.vault == VAULT_ADDRESS


def _deployment() -> Deployment:
    return Deployment(
        chain_id=31337,
        rpc_url="http://127.0.0.1:8545",
        vault=VAULT_ADDRESS,
        tokens={
            "USDT": TokenInfo(address=USDT_ADDRESS, decimals=18),
            "USDC": TokenInfo(address=USDC_ADDRESS, decimals=6),
        },
        deploy_block=1,
        operator=dev_account(1).address,
        guardian=dev_account(0).address,
        owner=dev_account(0).address,
    )


def test_network_toml_has_the_loader_fields() -> None:
    parsed = tomllib.loads(network_toml(_deployment(), name="devnet"))
    assert parsed == {
        "name": "devnet",
        "devnet": True,
        "chain_id": 31337,
        "enabled": True,
        "confirmations": 3,
        "block_time_seconds": 1,
        "rpc_urls": ["http://127.0.0.1:8545"],
        "vault": VAULT_ADDRESS,
        "start_block": 1,
        "native_asset": "ETH",
        "native_decimals": 18,
        "cosigners": [],
        "tokens": [
            {
                "symbol": "USDT",
                "asset": "USDT",
                "address": USDT_ADDRESS,
                "decimals": 18,
                "min_withdrawal": "1",
                "withdraw_fee": "0",
            },
            {
                "symbol": "USDC",
                "asset": "USDC",
                "address": USDC_ADDRESS,
                "decimals": 6,
                "min_withdrawal": "1",
                "withdraw_fee": "0",
            },
        ],
    }


def test_network_toml_quotes_strings() -> None:
    name = 'dev "two"\\ \n\t\x01 é'
    text = network_toml(_deployment(), name=name, confirmations=7, block_time_seconds=2)
    parsed = tomllib.loads(text)
    assert parsed["name"] == name
    assert parsed["confirmations"] == 7
    assert parsed["block_time_seconds"] == 2


async def test_anvil_is_stopped_on_exit_and_on_cancel(anvil_factory: AnvilFactory) -> None:
    async with anvil_factory(chain_id=4242) as node:
        assert node.chain_id == 4242
        assert node.process.returncode is None
    assert node.process.returncode is not None

    started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def hold() -> None:
        async with start_anvil() as inner:
            started.set_result(inner)
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    inner = await asyncio.wait_for(started, 15)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inner.process.returncode is not None
    assert not inner.cache_path.exists()


async def test_anvils_states_on_disk_are_its_own_and_removed_after_it() -> None:
    """anvil moves older blocks' states to disk and never deletes them (by default a
    directory per run under ~/.foundry/anvil/tmp: gigabytes after a few benches). Each
    node writes them to its own directory, gone once the node has stopped."""
    async with start_anvil() as node:
        async with aiohttp.ClientSession() as http:
            mine = {"jsonrpc": "2.0", "id": 1, "method": "anvil_mine", "params": ["0x400"]}
            async with http.post(node.url, json=mine) as resp:
                assert (await resp.json())["result"] is None
        written = [p for p in node.cache_path.rglob("*") if p.is_file()]
        assert written, "anvil wrote no state under the node's own directory"
    assert node.process.returncode is not None
    assert not node.cache_path.exists()


async def test_anvil_refuses_a_busy_port(anvil: Any) -> None:
    with pytest.raises(DevnetError, match="in use"):
        async with start_anvil(port=anvil.port):
            pass


async def test_anvil_exiting_early_is_reported() -> None:
    with pytest.raises(DevnetError, match="exited with code"):
        async with start_anvil(extra_args=["--no-such-flag"]):
            pass


async def test_state_is_dumped_and_reloaded(anvil_factory: AnvilFactory, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    async with anvil_factory(state_path=state) as node:
        await deploy_devnet(node.url, fund_accounts=1)
    assert state.is_file()
    async with anvil_factory(state_path=state) as node:
        w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(node.url))
        try:
            code = await w3.eth.get_code(to_checksum_address(VAULT_ADDRESS))
            assert code.to_0x_hex() == load_artifact("Vault").deployed_bytecode
        finally:
            await w3.provider.disconnect()


def _base_config(root: Path) -> Path:
    base = root / "config"
    (base / "networks").mkdir(parents=True)
    (base / "brackets").mkdir()
    (base / "default.toml").write_text("[service]\nname = 'watcher'\n")
    (base / "assets.toml").write_text("[USDT]\nprecision = 8\n")
    (base / "brackets" / "BTCUSDT.json").write_text("[]\n")
    (base / "networks" / "bsc.toml").write_text("name = 'bsc'\n")
    (base / "networks" / "devnet.toml").write_text("name = 'stale devnet'\n")
    (base / "networks" / "devnet2.toml").write_text("name = 'stale devnet2'\n")
    return base


async def test_two_devnets_share_one_config_dir(tmp_path: Path) -> None:
    base = _base_config(tmp_path)
    out = tmp_path / "out"
    lines: dict[str, list[str]] = {"devnet": [], "devnet2": []}
    ready = {name: asyncio.Event() for name in lines}

    def echo_for(name: str) -> Any:
        def echo(text: str) -> None:
            lines[name].append(text)
            if "Ctrl-C" in text:
                ready[name].set()

        return echo

    tasks = [
        asyncio.create_task(
            run_devnet(
                port=free_port(),
                chain_id=chain_id,
                block_time=None,
                out_dir=out,
                name=name,
                base_config=base,
                confirmations=2,
                echo=echo_for(name),
            )
        )
        for name, chain_id in (("devnet", 31337), ("devnet2", 31338))
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready.values())), 30)
        assert (out / "default.toml").read_text() == (base / "default.toml").read_text()
        assert (out / "assets.toml").is_file()
        assert (out / "brackets" / "BTCUSDT.json").is_file()
        assert (out / "networks" / "bsc.toml").is_file()
        for name, chain_id in (("devnet", 31337), ("devnet2", 31338)):
            path = out / "networks" / f"{name}.toml"
            parsed = tomllib.loads(path.read_text())
            assert parsed["name"] == name
            assert parsed["chain_id"] == chain_id
            assert parsed["confirmations"] == 2
            assert parsed["vault"] == VAULT_ADDRESS
            assert any(str(path) in line for line in lines[name])
            assert any(line.startswith("vault       0x5FbDB2") for line in lines[name])
            assert any("<- hot wallet" in line for line in lines[name])
        assert sorted(p.name for p in (out / "networks").iterdir()) == [
            "bsc.toml",
            "devnet.toml",
            "devnet2.toml",
        ]
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results


def test_prepare_config_dir_skips_devnet_networks_and_existing_dirs(tmp_path: Path) -> None:
    base = _base_config(tmp_path)
    out = tmp_path / "out"
    prepare_config_dir(out, base)
    assert sorted(p.name for p in (out / "networks").iterdir()) == ["bsc.toml"]
    assert (out / "brackets" / "BTCUSDT.json").read_text() == "[]\n"

    # A complete directory is left alone (another devnet may be using it).
    (out / "assets.toml").write_text("# edited\n")
    prepare_config_dir(out, base)
    assert (out / "assets.toml").read_text() == "# edited\n"


def test_devnet_config_dir_names_its_own_database(tmp_path: Path) -> None:
    from watcher.chain.devnet import _own_database, prepare_config_dir
    from watcher.settings import DEFAULT_CONFIG_DIR, load_settings

    out = tmp_path / "devnet"
    prepare_config_dir(out, DEFAULT_CONFIG_DIR)
    _own_database(out)
    _own_database(out)  # idempotent
    settings = load_settings(out, env={})
    assert settings.database.url == f"sqlite+aiosqlite:///{(out / 'watcher.db').resolve()}"
    # An operator's own URL is kept.
    custom = out / "default.toml"
    custom.write_text(custom.read_text().replace(str((out / "watcher.db").resolve()), "/x/y.db"))
    _own_database(out)
    assert load_settings(out, env={}).database.url == "sqlite+aiosqlite:////x/y.db"
