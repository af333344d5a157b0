"""Local devnet: an anvil process, the contract deployment, and its network config.

Guarantees:
- ``start_anvil`` never leaks the anvil process. It is terminated (then killed
  after a grace period) when the context exits for any reason, including
  cancellation; on Linux the child also gets SIGTERM from the kernel if the
  Python process dies without running its cleanup (``PR_SET_PDEATHSIG``).
- ``deploy_devnet`` deploys from dev account 0 with nonces 0, 1, 2 in a fixed
  order (Vault, USDT, USDC), so on a fresh chain with id 31337 the addresses are
  always 0x5FbDB2315678afecb367f032d93F642f64180aa3, 0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512
  and 0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0. Every transaction's receipt
  is awaited and must have status 1.
- ``run_devnet`` writes the network file atomically, so two devnets sharing one
  config directory never see each other's half-written files.

This module is for local chains and tests only; nothing in the watcher's run
path imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, cast

import aiohttp
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.providers.rpc import AsyncHTTPProvider
from web3.types import TxParams

from watcher.chain.artifacts import Artifact, load_artifact
from watcher.domain.amounts import format_amount

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
ANVIL_RELATIVE = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")

DEV_MNEMONIC = "test test test test test test test test test test test junk"

STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
_POLL_INTERVAL_S = 0.05
_PORT_ATTEMPTS = 5

# (symbol, name, decimals), deployed in this order after the vault.
DEVNET_TOKENS: tuple[tuple[str, str, int], ...] = (
    ("USDT", "Tether USD (devnet)", 18),
    ("USDC", "USD Coin (devnet)", 6),
)


#: The devnet's validator (co-signer) keys: public test keys, derived from fixed text,
#: never for a real network. The devnet vault registers the first
#: ``DEVNET_VALIDATORS`` of them with power 1 each: a 2-of-3 quorum.
DEVNET_VALIDATORS = 3
#: Fixed USD prices (18 decimals per whole token) and hourly limits the devnet vault
#: is deployed with; the limit is high enough that only a test that lowers it pauses.
DEVNET_PRICES_USD = {"ETH": 2000 * 10**18, "USDT": 10**18, "USDC": 10**18}
DEVNET_HOURLY_LIMIT_USD = 10**12 * 10**18


def devnet_validator_key(index: int) -> str:
    """Devnet validator ``index``'s private key (0x-hex); public, devnets only."""
    if index < 0:
        raise ValueError(f"validator index must be >= 0, got {index}")
    return "0x" + keccak(text=f"watcher devnet validator {index}").hex()


def devnet_validator_address(index: int) -> str:
    return str(Account.from_key(devnet_validator_key(index)).address)


class DevnetError(RuntimeError):
    """anvil could not be started, or a devnet deployment step failed."""


# ---------------------------------------------------------------------------- anvil


def anvil_binary() -> Path:
    """The anvil binary: WATCHER_ANVIL, then PATH, then contracts/node_modules."""
    from watcher.chain.anvil_bin import AnvilNotFoundError, find_anvil

    try:
        return find_anvil()
    except AnvilNotFoundError as exc:
        raise DevnetError(str(exc)) from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class AnvilNode:
    url: str
    port: int
    chain_id: int
    process: asyncio.subprocess.Process
    cache_path: Path  # where anvil keeps the states it moves to disk; removed after


def _death_signal_preexec() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when its parent dies.

    libc and prctl are resolved here, before the fork, so the child only makes
    one foreign call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return preexec


async def _rpc_chain_id(session: aiohttp.ClientSession, url: str) -> int | None:
    """eth_chainId, or None if the node does not answer (yet)."""
    payload = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    try:
        async with session.post(url, json=payload) as resp:
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    result = body.get("result") if isinstance(body, dict) else None
    return int(result, 16) if isinstance(result, str) else None


def _tail(stream: IO[bytes], limit: int = 2000) -> str:
    stream.seek(0)
    text = stream.read().decode("utf-8", errors="replace").strip()
    return text[-limit:] if text else "(no output)"


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Terminate, wait, kill after STOP_TIMEOUT_S. Kills synchronously if cancelled."""
    if process.returncode is not None:
        return
    try:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    except BaseException:
        # Cancelled (or worse) while waiting: make sure the process does not outlive us.
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        raise


class _PortInUse(DevnetError):
    pass


def _check_port_free(port: int) -> None:
    """Fail fast if something listens on the port: otherwise the readiness poll
    could be answered by that other node while our anvil is still failing to bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise _PortInUse(f"port {port} on 127.0.0.1 is already in use: {exc}") from None


async def _spawn_and_wait(args: list[str], url: str, chain_id: int) -> asyncio.subprocess.Process:
    """Spawn anvil and return once eth_chainId answers; the process is stopped on failure."""
    with tempfile.TemporaryFile() as stderr:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=_death_signal_preexec(),
        )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            timeout = aiohttp.ClientTimeout(total=0.5)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while True:
                    if process.returncode is not None:
                        output = _tail(stderr)
                        message = (
                            f"anvil exited with code {process.returncode} before answering "
                            f"on {url}: {output}"
                        )
                        if "address already in use" in output.lower():
                            raise _PortInUse(message)
                        raise DevnetError(message)
                    answered = await _rpc_chain_id(session, url)
                    if answered is not None:
                        if answered != chain_id:
                            raise DevnetError(
                                f"node on {url} reports chain id {answered}, expected "
                                f"{chain_id} (is another node on that port?)"
                            )
                        return process
                    if time.monotonic() > deadline:
                        raise DevnetError(
                            f"anvil did not answer eth_chainId on {url} within "
                            f"{STARTUP_TIMEOUT_S:.0f} s: {_tail(stderr)}"
                        )
                    # returncode is only updated by the child watcher; give it a chance.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(process.wait(), _POLL_INTERVAL_S)
        except BaseException:
            await _stop(process)
            raise


@asynccontextmanager
async def start_anvil(
    port: int | None = None,
    chain_id: int = 31337,
    block_time: float | None = None,
    extra_args: Sequence[str] = (),
    state_path: Path | None = None,
) -> AsyncIterator[AnvilNode]:
    """Run anvil on 127.0.0.1 for the duration of the context.

    ``block_time`` None means automine (a block per transaction). With
    ``state_path``, the state is loaded from it if the file exists and dumped
    back to it when anvil stops. With ``port`` None a free port is picked, and
    another one tried if it is taken in the meantime.
    """
    binary = anvil_binary()
    # anvil moves the states of older blocks to disk (gigabytes over a long run) and
    # never deletes them: by default under ~/.foundry/anvil/tmp, one directory per
    # run, whatever signal stops it. Each node gets a directory of its own here,
    # removed once the node has stopped.
    cache = Path(tempfile.mkdtemp(prefix="watcher-anvil-"))
    try:
        attempts = _PORT_ATTEMPTS if port is None else 1
        process: asyncio.subprocess.Process | None = None
        chosen = 0
        for attempt in range(attempts):
            chosen = port if port is not None else free_port()
            args = _anvil_args(binary, chosen, chain_id, block_time, state_path, extra_args)
            args += ["--cache-path", str(cache)]
            try:
                _check_port_free(chosen)
            except _PortInUse:
                if attempt + 1 >= attempts:
                    raise
                continue
            url = f"http://127.0.0.1:{chosen}"
            try:
                process = await _spawn_and_wait(args, url, chain_id)
                break
            except _PortInUse:
                if attempt + 1 >= attempts:
                    raise
        assert process is not None
        try:
            yield AnvilNode(
                url=f"http://127.0.0.1:{chosen}",
                port=chosen,
                chain_id=chain_id,
                process=process,
                cache_path=cache,
            )
        finally:
            await _stop(process)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _anvil_args(
    binary: Path,
    port: int,
    chain_id: int,
    block_time: float | None,
    state_path: Path | None,
    extra_args: Sequence[str],
) -> list[str]:
    args = [
        str(binary),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--chain-id",
        str(chain_id),
        "--mnemonic",
        DEV_MNEMONIC,
        "--silent",
    ]
    if block_time is not None:
        args += ["--block-time", _format_seconds(block_time)]
    if state_path is not None:
        # Load only what exists (first run starts empty); always dump back on exit.
        if state_path.exists():
            args += ["--load-state", str(state_path)]
        args += ["--dump-state", str(state_path)]
    return args + list(extra_args)


def _format_seconds(value: float) -> str:
    if value <= 0:
        raise ValueError(f"block_time must be positive, got {value}")
    # anvil accepts fractional seconds; repr keeps e.g. 0.5 exact and 1.0 as "1".
    return str(int(value)) if float(value).is_integer() else repr(value)


# ---------------------------------------------------------------------------- accounts


def dev_account(index: int) -> LocalAccount:
    """Dev account ``index`` of the standard anvil/hardhat mnemonic (m/44'/60'/0'/0/index)."""
    if index < 0:
        raise ValueError(f"account index must be >= 0, got {index}")
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(
        DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"
    )
    return account


# ---------------------------------------------------------------------------- deployment


@dataclass(frozen=True)
class TokenInfo:
    address: str
    decimals: int


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    rpc_url: str
    vault: str
    tokens: dict[str, TokenInfo]
    deploy_block: int
    operator: str
    guardian: str
    owner: str
    #: The vault's validator set at deployment (power 1 each).
    validators: tuple[str, ...] = ()


class _Sender:
    """Signs and sends transactions from one account with locally tracked nonces."""

    def __init__(self, w3: AsyncWeb3[Any], account: LocalAccount, chain_id: int) -> None:
        self.w3 = w3
        self.account = account
        self.chain_id = chain_id
        self.nonce = -1
        self.max_fee = 0
        self.tip = 0

    async def prepare(self) -> None:
        self.nonce = await self.w3.eth.get_transaction_count(self.account.address, "pending")
        latest = await self.w3.eth.get_block("latest")
        base_fee = int(latest.get("baseFeePerGas", 0))
        self.tip = 1_000_000_000
        # Twice the base fee plus the tip survives six full blocks of base-fee increases.
        self.max_fee = 2 * base_fee + self.tip

    async def send(self, tx: dict[str, Any]) -> HexBytes:
        full = {
            "chainId": self.chain_id,
            "nonce": self.nonce,
            "maxFeePerGas": self.max_fee,
            "maxPriorityFeePerGas": self.tip,
            "value": 0,
            **tx,
        }
        if "gas" not in full:
            params = cast(TxParams, {**full, "from": self.account.address})
            estimate = await self.w3.eth.estimate_gas(params)
            full["gas"] = estimate * 6 // 5 + 10_000
        signed = self.account.sign_transaction(full)
        tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
        self.nonce += 1
        return HexBytes(tx_hash)


async def _receipt_ok(w3: AsyncWeb3[Any], tx_hash: HexBytes, what: str) -> dict[str, Any]:
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.05)
    if receipt["status"] != 1:
        raise DevnetError(f"{what} failed (tx {tx_hash.to_0x_hex()}, status {receipt['status']})")
    return dict(receipt)


def constructor_data(artifact: Artifact, *args: Any) -> str:
    """Deployment calldata: the creation bytecode followed by the ABI-encoded arguments."""
    inputs: list[dict[str, Any]] = next(
        (entry.get("inputs", []) for entry in artifact.abi if entry.get("type") == "constructor"),
        [],
    )
    if len(inputs) != len(args):
        raise TypeError(
            f"{artifact.name} constructor takes {len(inputs)} arguments, got {len(args)}"
        )
    encoded = abi_encode([str(i["type"]) for i in inputs], list(args))
    return artifact.bytecode + encoded.hex()


# A mint to a fresh holder writes two zero→non-zero slots (balance, totalSupply
# update is non-zero→non-zero): ~70k gas. A fixed limit lets mints be sent before
# the token's deployment is mined when anvil runs with a block time.
_MINT_GAS = 120_000


async def deploy_devnet(
    rpc_url: str,
    *,
    fund_accounts: int = 10,
    fund_amount_tokens: int = 1_000_000,
    validators: Sequence[str] | None = None,
    hourly_limit_usd: int = DEVNET_HOURLY_LIMIT_USD,
) -> Deployment:
    """Deploy Vault, USDT (18 decimals) and USDC (6 decimals) and fund the dev accounts.

    Each of dev accounts 0..fund_accounts-1 and the operator (dev account 1, the hot
    wallet) receives ``fund_amount_tokens`` whole tokens of each token. The vault gets
    ``validators`` (default: the devnet's three, :func:`devnet_validator_address`) with
    power 1 each, and every token plus the native coin an hourly limit of
    ``hourly_limit_usd`` (USD, 18 decimals) at the :data:`DEVNET_PRICES_USD`.
    """
    if validators is None:
        validators = [devnet_validator_address(i) for i in range(DEVNET_VALIDATORS)]
    if fund_accounts < 0 or fund_amount_tokens < 0:
        raise ValueError("fund_accounts and fund_amount_tokens must be >= 0")
    owner = dev_account(0)
    operator = dev_account(1)
    guardian = owner
    w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    try:
        chain_id = await w3.eth.chain_id
        sender = _Sender(w3, owner, chain_id)
        await sender.prepare()

        vault_art = load_artifact("Vault")
        token_art = load_artifact("TestToken")
        deploys: list[tuple[str, HexBytes]] = []
        data = constructor_data(vault_art, operator.address, guardian.address)
        deploys.append(("Vault", await sender.send({"data": data})))
        for symbol, name, decimals in DEVNET_TOKENS:
            data = constructor_data(token_art, name, symbol, decimals)
            deploys.append((symbol, await sender.send({"data": data})))

        addresses: dict[str, str] = {}
        deploy_block = 0
        for what, tx_hash in deploys:
            receipt = await _receipt_ok(w3, tx_hash, f"deploying {what}")
            address = receipt.get("contractAddress")
            if not address:
                raise DevnetError(f"deploying {what}: receipt has no contract address")
            addresses[what] = to_checksum_address(address)
            if what == "Vault":
                deploy_block = int(receipt["blockNumber"])

        holders = [dev_account(i).address for i in range(fund_accounts)]
        if operator.address not in holders:
            holders.append(operator.address)
        mints: list[tuple[str, HexBytes]] = []
        if fund_amount_tokens > 0:
            for symbol, _name, decimals in DEVNET_TOKENS:
                token = w3.eth.contract(
                    address=to_checksum_address(addresses[symbol]), abi=token_art.abi
                )
                amount = fund_amount_tokens * 10**decimals
                for holder in holders:
                    data = token.encode_abi("mint", args=[holder, amount])
                    tx = {"to": addresses[symbol], "data": data, "gas": _MINT_GAS}
                    mints.append((f"minting {symbol} to {holder}", await sender.send(tx)))
        vault = w3.eth.contract(address=to_checksum_address(addresses["Vault"]), abi=vault_art.abi)
        setup: list[tuple[str, HexBytes]] = []
        checksummed = [str(to_checksum_address(v)) for v in validators]
        data = vault.encode_abi("setValidators", args=[checksummed, [1] * len(checksummed)])
        setup.append(
            (
                "setting the validators",
                await sender.send(
                    {"to": vault.address, "data": data, "gas": 100_000 + 80_000 * len(checksummed)}
                ),
            )
        )
        limits = [("ETH", "0x0000000000000000000000000000000000000000", 18)] + [
            (symbol, addresses[symbol], decimals) for symbol, _name, decimals in DEVNET_TOKENS
        ]
        for symbol, address, decimals in limits:
            data = vault.encode_abi(
                "setTokenLimit",
                args=[address, decimals, DEVNET_PRICES_USD[symbol], hourly_limit_usd],
            )
            tx = {"to": vault.address, "data": data, "gas": 150_000}
            setup.append((f"setting the {symbol} limit", await sender.send(tx)))
        for what, tx_hash in mints + setup:
            await _receipt_ok(w3, tx_hash, what)

        return Deployment(
            chain_id=chain_id,
            rpc_url=rpc_url,
            vault=addresses["Vault"],
            tokens={
                symbol: TokenInfo(address=addresses[symbol], decimals=decimals)
                for symbol, _name, decimals in DEVNET_TOKENS
            },
            deploy_block=deploy_block,
            operator=operator.address,
            guardian=guardian.address,
            owner=owner.address,
            validators=tuple(checksummed),
        )
    finally:
        await w3.provider.disconnect()


# ---------------------------------------------------------------------------- config


def _toml_str(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


#: The bearer token between the devnet's sender and its co-signers (public, devnets only).
DEVNET_COSIGNER_TOKEN = "devnet-cosigner-token"


def cosigner_toml(
    dep: Deployment, *, store: str, port: int, host: str = "127.0.0.1", max_deadline_s: int = 86_400
) -> str:
    """A devnet co-signer's config (docs/cosigner.md): the devnet's vault and tokens at
    the devnet prices, the default deny rule (zero address) and no hourly limits (the
    vault's own limit stands)."""
    lines = [
        f"# Written by `watcher devnet` for the vault {dep.vault} on chain {dep.chain_id}.",
        f"store = {_toml_str(store)}",
        f"max_deadline_s = {int(max_deadline_s)}",
        "",
        "[server]",
        f"host = {_toml_str(host)}",
        f"port = {int(port)}",
        "",
        "[[chains]]",
        f"chain_id = {dep.chain_id}",
        f"vault = {_toml_str(dep.vault)}",
    ]
    tokens = [("ETH", "0x0000000000000000000000000000000000000000", 18)] + [
        (symbol, t.address, t.decimals) for symbol, t in dep.tokens.items()
    ]
    for symbol, address, decimals in tokens:
        price = DEVNET_PRICES_USD.get(symbol, 10**18)
        lines += [
            "",
            "[[chains.tokens]]",
            f"symbol = {_toml_str(symbol)}",
            f"address = {_toml_str(address)}",
            f"decimals = {decimals}",
            f'price_usd = "{format_amount(price, 18)}"',
        ]
    return "\n".join(lines) + "\n"


def network_toml(
    dep: Deployment,
    *,
    name: str,
    confirmations: int = 3,
    block_time_seconds: int = 1,
    cosigners: Sequence[str] = (),
) -> str:
    """The config/networks/<name>.toml text for a devnet deployment (``cosigners``: the
    base URLs of the co-signers the sender asks)."""
    lines = [
        f"# Written by `watcher devnet` for the anvil on {dep.rpc_url}.",
        f"name = {_toml_str(name)}",
        "devnet = true",
        f"chain_id = {dep.chain_id}",
        "enabled = true",
        f"confirmations = {int(confirmations)}",
        f"block_time_seconds = {int(block_time_seconds)}",
        f"rpc_urls = [{_toml_str(dep.rpc_url)}]",
        f"vault = {_toml_str(dep.vault)}",
        f"start_block = {dep.deploy_block}",
        'native_asset = "ETH"',
        "native_decimals = 18",
        f"cosigners = [{', '.join(_toml_str(u) for u in cosigners)}]",
    ]
    for symbol, token in dep.tokens.items():
        lines += [
            "",
            "[[tokens]]",
            f"symbol = {_toml_str(symbol)}",
            f"asset = {_toml_str(symbol)}",
            f"address = {_toml_str(token.address)}",
            f"decimals = {token.decimals}",
            'min_withdrawal = "1"',
            'withdraw_fee = "0"',
        ]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _copy_atomic(src: Path, dst: Path) -> None:
    _write_atomic(dst, src.read_text(encoding="utf-8"))


def prepare_config_dir(out_dir: Path, base_config: Path) -> None:
    """Make ``out_dir`` a full config dir by copying ``base_config`` if it is not one yet.

    Copies default.toml, assets.toml, brackets/ and networks/*.toml except
    networks/devnet*.toml. default.toml is written last: its presence marks a
    complete directory, so a second devnet sharing ``out_dir`` skips the copy.
    """
    if (out_dir / "default.toml").exists():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    assets = base_config / "assets.toml"
    if assets.is_file():
        _copy_atomic(assets, out_dir / "assets.toml")
    brackets = base_config / "brackets"
    if brackets.is_dir():
        for src in sorted(brackets.rglob("*")):
            if src.is_file():
                dst = out_dir / "brackets" / src.relative_to(brackets)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
    networks = base_config / "networks"
    if networks.is_dir():
        for src in sorted(networks.glob("*.toml")):
            if not src.name.startswith("devnet"):
                _copy_atomic(src, out_dir / "networks" / src.name)
    default = base_config / "default.toml"
    if not default.is_file():
        raise DevnetError(f"base config {base_config} has no default.toml")
    _copy_atomic(default, out_dir / "default.toml")


DEFAULT_DB_LINE = 'url = "sqlite+aiosqlite:///var/watcher.db"'


def _own_database(out_dir: Path) -> None:
    """Point a devnet config dir at its own SQLite file (``<out_dir>/watcher.db``), so
    the daemon and every operator command given ``--config <out_dir>`` share one
    ledger, and a fresh devnet chain never meets an old chain's ledger. Only the
    shipped default line is replaced; a URL the operator chose is kept."""
    default = out_dir / "default.toml"
    text = default.read_text()
    if DEFAULT_DB_LINE in text:
        db = (out_dir / "watcher.db").resolve()
        _write_atomic(default, text.replace(DEFAULT_DB_LINE, f'url = "sqlite+aiosqlite:///{db}"'))


# Well-known local chain ids (anvil's and hardhat's defaults): devnets even when their
# config does not say `devnet = true`.
LOCAL_CHAIN_IDS = frozenset({31337, 1337})
#: How many dev accounts `watcher devnet` funds and lists (anvil's default count).
DEVNET_ACCOUNTS = 10


def is_devnet(chain_id: int, marked: bool) -> bool:
    """A local development chain: marked ``devnet = true`` in its network file (what
    `watcher devnet` writes) or one of :data:`LOCAL_CHAIN_IDS`."""
    return marked or chain_id in LOCAL_CHAIN_IDS


@dataclass(frozen=True)
class KeptFiles:
    """Where ``--keep`` saves a devnet's chain: anvil's state dump, and a marker that
    exists while the devnet runs (left behind, it says the last stop was not clean)."""

    state: Path
    running: Path

    @classmethod
    def of(cls, out_dir: Path, name: str) -> KeptFiles:
        folder = out_dir / "anvil"
        return cls(state=folder / f"{name}.json", running=folder / f"{name}.running")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kept_deployment(kept: KeptFiles, target: Path, out_dir: Path, chain_id: int) -> bool:
    """With ``--keep``: True to reload the saved chain and reuse ``target``, False for a
    fresh chain (nothing saved yet); DevnetError when the two would not match."""
    fresh = f"remove {out_dir} (or run without --keep) to start a fresh chain and ledger"
    if kept.running.exists():
        text = kept.running.read_text(encoding="utf-8").strip()
        pid = int(text) if text.isdigit() else 0
        if pid and pid != os.getpid() and _pid_alive(pid):
            raise DevnetError(f"a devnet with --keep already runs on {out_dir} (pid {pid})")
        raise DevnetError(
            f"the previous devnet on {out_dir} did not stop cleanly (pid {pid or '?'}): "
            f"its chain was last saved to {kept.state} before the ledger moved on; {fresh}"
        )
    if kept.state.exists() and target.exists():
        try:
            written = tomllib.loads(target.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DevnetError(f"{target}: cannot read the kept devnet config: {exc}") from None
        if written.get("chain_id") != chain_id:
            raise DevnetError(
                f"the kept devnet in {out_dir} has chain id {written.get('chain_id')}, "
                f"not {chain_id}: pass --chain-id {written.get('chain_id')} or {fresh}"
            )
        return True
    if kept.state.exists():
        raise DevnetError(f"{kept.state} has a saved chain but {target} is missing: {fresh}")
    if target.exists():
        raise DevnetError(
            f"{target} was written by a devnet run without --keep (no chain saved in "
            f"{kept.state}): its ledger belongs to a chain that is gone; {fresh}"
        )
    return False


def deployment_from_toml(path: Path, rpc_url: str) -> Deployment:
    """The deployment a written network file describes, served at ``rpc_url`` now."""
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    try:
        return Deployment(
            chain_id=int(doc["chain_id"]),
            rpc_url=rpc_url,
            vault=to_checksum_address(str(doc["vault"])),
            tokens={
                str(t["symbol"]): TokenInfo(
                    address=to_checksum_address(str(t["address"])), decimals=int(t["decimals"])
                )
                for t in doc.get("tokens", [])
            },
            deploy_block=int(doc.get("start_block", 0)),
            operator=dev_account(1).address,
            guardian=dev_account(0).address,
            owner=dev_account(0).address,
            validators=tuple(devnet_validator_address(i) for i in range(DEVNET_VALIDATORS)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DevnetError(f"{path}: not a devnet network file ({exc})") from None


async def _check_kept_chain(w3: AsyncWeb3[Any], dep: Deployment, state: Path) -> None:
    code = await w3.eth.get_code(to_checksum_address(dep.vault))
    if code.to_0x_hex() != load_artifact("Vault").deployed_bytecode:
        raise DevnetError(
            f"the chain loaded from {state} has no vault at {dep.vault}: the saved state "
            "and the written config do not match"
        )


async def describe_devnet(
    w3: AsyncWeb3[Any], dep: Deployment, *, native: str = "ETH", accounts: int = DEVNET_ACCOUNTS
) -> list[str]:
    """Anvil-style listing: addresses, tokens, each dev account's balances (read from the
    chain now) and role, and the dev accounts' private keys (public test keys)."""
    vault = w3.eth.contract(address=to_checksum_address(dep.vault), abi=load_artifact("Vault").abi)
    operator = str(await vault.functions.operator().call())
    owner = str(await vault.functions.owner().call())
    token_abi = load_artifact("TestToken").abi
    tokens = {
        symbol: w3.eth.contract(address=to_checksum_address(info.address), abi=token_abi)
        for symbol, info in dep.tokens.items()
    }
    lines = [f"vault       {dep.vault}"]
    for symbol, info in dep.tokens.items():
        lines.append(f"token {symbol:<5} {info.address} ({info.decimals} decimals)")
    lines += ["", "Available Accounts", "=================="]
    for i in range(accounts):
        address = dev_account(i).address
        held = [f"{format_amount(int(await w3.eth.get_balance(address)), 18)} {native}"]
        for symbol, token in tokens.items():
            units = int(await token.functions.balanceOf(address).call())
            held.append(f"{format_amount(units, dep.tokens[symbol].decimals)} {symbol}")
        role = ""
        if address == operator:
            role = "  <- hot wallet (vault operator; pays withdrawals): do not deposit from it"
        elif address == owner:
            role = "  <- vault owner and guardian (the deployer)"
        lines.append(f"({i}) {address} ({', '.join(held)}){role}")
    lines += [
        "",
        "Private Keys (anvil's well-known test keys, public: never use them on a real network)",
        "==================",
    ]
    lines += [f"({i}) 0x{bytes(dev_account(i).key).hex()}" for i in range(accounts)]
    return lines


async def run_devnet(
    *,
    port: int,
    chain_id: int,
    block_time: float | None,
    out_dir: Path,
    name: str,
    base_config: Path,
    confirmations: int,
    echo: Callable[[str], None],
    listen_host: str = "127.0.0.1",
    advertise_host: str | None = None,
    keep: bool = False,
) -> None:
    """Start anvil, deploy, write ``out_dir/networks/<name>.toml`` and run until cancelled.

    ``listen_host`` 0.0.0.0 exposes anvil and the co-signers beyond loopback (the
    docker-compose service); ``advertise_host`` is the host the network file names for
    them (default: the listen host, or 127.0.0.1 for 0.0.0.0).

    ``keep``: the chain is saved to ``out_dir/anvil/<name>.json`` when anvil stops and,
    when that file and the network file exist, reloaded instead of deploying again (same
    addresses, blocks, balances), so the ledger next to it stays consistent with the
    chain. A marker ``out_dir/anvil/<name>.running`` exists while it runs; one left by
    a devnet that did not stop cleanly (its chain was not saved) makes the next start
    refuse. Without ``keep`` any saved chain of that name is removed (it is replaced)."""
    extra = ("--host", listen_host) if listen_host != "127.0.0.1" else ()
    target = out_dir / "networks" / f"{name}.toml"
    kept = KeptFiles.of(out_dir, name)
    reuse = False
    if keep:
        reuse = _kept_deployment(kept, target, out_dir, chain_id)
        kept.state.parent.mkdir(parents=True, exist_ok=True)
    else:
        for stale in (kept.state, kept.running):
            stale.unlink(missing_ok=True)
    started = time.time()
    try:
        async with start_anvil(
            port=port,
            chain_id=chain_id,
            block_time=block_time,
            extra_args=extra,
            state_path=kept.state if keep else None,
        ) as node:
            if keep:
                _write_atomic(kept.running, f"{os.getpid()}\n")
            # The co-signers stop before anvil does.
            async with contextlib.AsyncExitStack() as stack:
                await _deploy_and_announce(
                    node,
                    reuse=reuse,
                    keep=keep,
                    kept=kept,
                    target=target,
                    out_dir=out_dir,
                    name=name,
                    base_config=base_config,
                    confirmations=confirmations,
                    block_time=block_time,
                    echo=echo,
                    stack=stack,
                    listen_host=listen_host,
                    advertise_host=advertise_host
                    or ("127.0.0.1" if listen_host in ("0.0.0.0", "::") else listen_host),
                )
                await asyncio.Event().wait()
    finally:
        # anvil has stopped here: with --keep it saved the chain on the way out.
        if keep and kept.running.exists():
            if kept.state.exists() and kept.state.stat().st_mtime >= started:
                kept.running.unlink(missing_ok=True)
            else:
                echo(f"anvil did not save the chain to {kept.state}: the next --keep refuses")


@asynccontextmanager
async def start_cosigners(
    dep: Deployment,
    out_dir: Path,
    *,
    fresh: bool,
    count: int = DEVNET_VALIDATORS,
    host: str = "127.0.0.1",
    advertise: str = "127.0.0.1",
) -> AsyncIterator[list[str]]:
    """The devnet's co-signers as processes of their own (``watcher cosign run``), each
    with its devnet validator key, config, store and log under ``out_dir``; yields
    their URLs once each answers ``/healthz``, stops them on exit (and the kernel stops
    them if this process dies). ``fresh``: their stores are removed first (a new chain
    reuses withdrawal ids)."""
    root = out_dir
    root.mkdir(parents=True, exist_ok=True)
    processes: list[asyncio.subprocess.Process] = []
    urls: list[str] = []
    try:
        for i in range(count):
            store = root / f"cosigner-{i}.sqlite"
            if fresh:
                store.unlink(missing_ok=True)
            port = free_port()
            config = root / f"cosigner-{i}.toml"
            _write_atomic(
                config,
                cosigner_toml(dep, store=f"sqlite+aiosqlite:///{store}", port=port, host=host),
            )
            env = {
                **os.environ,
                "WATCHER_COSIGNER_KEY": devnet_validator_key(i),
                "WATCHER_COSIGNER_TOKEN": DEVNET_COSIGNER_TOKEN,
            }
            with (root / f"cosigner-{i}.log").open("ab") as log_file:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "watcher",
                        "cosign",
                        "run",
                        "--config",
                        str(config),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=log_file,
                        env=env,
                        preexec_fn=_death_signal_preexec(),
                    )
                )
            urls.append(f"http://{advertise}:{port}")
        local = [f"http://127.0.0.1:{u.rsplit(':', 1)[1]}" for u in urls]
        await _wait_healthy(local, processes, root)
        yield urls
    finally:
        await asyncio.gather(*(_stop(p) for p in processes), return_exceptions=True)


async def _wait_healthy(
    urls: list[str], processes: list[asyncio.subprocess.Process], root: Path
) -> None:
    deadline = time.monotonic() + 30
    timeout = aiohttp.ClientTimeout(total=1)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for i, (url, process) in enumerate(zip(urls, processes, strict=True)):
            while True:
                if process.returncode is not None:
                    raise DevnetError(
                        f"co-signer {i} exited with code {process.returncode}; see "
                        f"{root / f'cosigner-{i}.log'}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url + "/healthz") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise DevnetError(f"co-signer {i} did not answer on {url} within 30 s")
                await asyncio.sleep(0.1)


async def _deploy_and_announce(
    node: AnvilNode,
    *,
    reuse: bool,
    keep: bool,
    kept: KeptFiles,
    target: Path,
    out_dir: Path,
    name: str,
    base_config: Path,
    confirmations: int,
    block_time: float | None,
    echo: Callable[[str], None],
    stack: contextlib.AsyncExitStack,
    listen_host: str = "127.0.0.1",
    advertise_host: str = "127.0.0.1",
) -> None:
    """Deploy (or reload), start the co-signers (kept running by ``stack``), write the
    network file and print the listing."""
    w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(node.url))
    try:
        if reuse:
            dep = deployment_from_toml(target, node.url)
            await _check_kept_chain(w3, dep, kept.state)
        else:
            dep = await deploy_devnet(node.url)
        prepare_config_dir(out_dir, base_config)
        _own_database(out_dir)
        block_seconds = max(1, round(block_time)) if block_time is not None else 1
        cosigner_urls = await stack.enter_async_context(
            start_cosigners(
                dep,
                out_dir / "cosigners" / name,
                fresh=not reuse,
                host=listen_host,
                advertise=advertise_host,
            )
        )
        advertised = replace(dep, rpc_url=f"http://{advertise_host}:{node.port}")
        text = network_toml(
            advertised,
            name=name,
            confirmations=confirmations,
            block_time_seconds=block_seconds,
            cosigners=cosigner_urls,
        )
        _write_atomic(target, text)
        height = await w3.eth.block_number
        listing = await describe_devnet(w3, dep)
    finally:
        await w3.provider.disconnect()
    if not keep:
        chain = "fresh, not kept (--keep saves it across restarts)"
    elif reuse:
        chain = f"reloaded from {kept.state} (saved again on stop)"
    else:
        chain = f"fresh, saved to {kept.state} on stop (--keep)"
    echo(f"devnet {name!r} ready: anvil on {node.url}, chain id {node.chain_id}, block {height}")
    echo(f"config      {target}")
    echo(f"co-signers  {', '.join(cosigner_urls)} (2 of these 3 validators authorize each payout)")
    echo(f"chain       {chain}")
    for line in listing:
        echo(line)
    echo("")
    cfg = f" --config {out_dir}" if out_dir != Path("var/devnet") else ""
    echo(f"deposit:  watcher devnet deposit --from 2 --token USDT --amount 100{cfg}")
    echo(f"withdraw: watcher devnet withdraw --from 2 --token USDT --amount 40 --wait{cfg}")
    echo("Press Ctrl-C to stop.")
