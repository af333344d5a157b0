"""``watcher devnet`` (run a local devnet) and its development-only helpers:
``watcher devnet deposit``, ``watcher devnet withdraw`` and ``watcher devnet demo``.

The helpers act as one of the devnet's funded dev accounts (anvil's well-known public
test keys) and refuse any network that is not a devnet (``devnet = true`` in its
network file, which ``watcher devnet`` writes, or chain id 31337 / 1337), and a node
whose chain id is not the configured one.

- ``deposit`` approves and deposits a token (``depositNative`` for the network's coin)
  from account N into the vault; prints the transaction hash.
- ``withdraw`` signs the EIP-712 ``Withdraw`` the API verifies as account N, POSTs it
  and prints ``withdrawal <id> <state>``; ``--wait`` prints each state change until
  ``completed`` (exit 0) or a failure (exit 1).
- ``demo`` runs deposit → credited → withdraw → completed against a running daemon.

Exit status: 0 done, 1 the chain or the API refused or failed (or ``--wait`` timed out),
2 bad input or configuration (nothing was sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from watcher.settings import NetworkConfig, TokenConfig

T = TypeVar("T")

DEFAULT_DEVNET_DIR = Path("var/devnet")
DEFAULT_API_URL = "http://127.0.0.1:8080"
#: Withdrawal states after which nothing more happens to it.
FAILED_STATES = frozenset({"failed", "rejected", "cancelled"})
#: States in which only an operator moves a withdrawal on (--wait keeps waiting).
OPERATOR_HINTS = {
    "review": " (waits for an operator: watcher withdrawals approve|reject ID)",
    "stalled": " (waits for an operator: watcher withdrawals retry|cancel ID)",
}

devnet_app = typer.Typer(
    help="Local devnet (anvil, vault, test tokens) and its deposit/withdraw helpers "
    "(development only)"
)


class HelperError(Exception):
    """A helper refused or failed: one line for the user, and the exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _say(line: str) -> None:
    typer.echo(line)


def _run(main: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(main)
    except HelperError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.code) from None


# ---------------------------------------------------------------------------- watcher devnet


@devnet_app.callback(invoke_without_command=True)
def devnet(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="anvil port")] = 8545,
    chain_id: Annotated[int, typer.Option(help="chain id")] = 31337,
    block_time: Annotated[
        float | None, typer.Option(help="seconds per block (default: mine on each tx)")
    ] = 1.0,
    name: Annotated[str, typer.Option(help="network name in the written config")] = "devnet",
    out: Annotated[Path, typer.Option(help="config directory to write")] = DEFAULT_DEVNET_DIR,
    confirmations: Annotated[int, typer.Option(help="confirmation depth")] = 3,
    listen: Annotated[
        str, typer.Option(help="listen address of anvil and the co-signers")
    ] = "127.0.0.1",
    advertise: Annotated[
        str | None,
        typer.Option(
            help="host the written network file names for anvil and the co-signers "
            "(default: the listen address, 127.0.0.1 for 0.0.0.0; compose: the service name)"
        ),
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="keep the chain across restarts: save it to OUT/anvil/NAME.json on stop "
            "and reload it (and the written config) on the next start instead of deploying",
        ),
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="base config copied into OUT")
    ] = None,
) -> None:
    """Start anvil, deploy the vault and test tokens, fund accounts, write the config,
    and print the RPC URL, addresses, funded accounts and their (public test) keys."""
    if ctx.invoked_subcommand is not None:
        return
    from watcher.chain.devnet import DevnetError, run_devnet
    from watcher.settings import DEFAULT_CONFIG_DIR

    bt = None if block_time is None or block_time <= 0 else block_time

    async def main() -> None:
        task = asyncio.ensure_future(
            run_devnet(
                port=port,
                chain_id=chain_id,
                block_time=bt,
                out_dir=out,
                name=name,
                base_config=config or DEFAULT_CONFIG_DIR,
                confirmations=confirmations,
                listen_host=listen,
                advertise_host=advertise,
                keep=keep,
                echo=_say,
            )
        )
        # SIGTERM stops it like Ctrl-C: anvil is stopped (and saves a kept chain) first.
        # (Only the main thread can handle signals; elsewhere, e.g. a test, it cannot.)
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
    except DevnetError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


# ---------------------------------------------------------------------------- the target


@dataclass(frozen=True)
class Target:
    """The devnet network the helpers act on, from the written config."""

    config_dir: Path
    network: NetworkConfig


@dataclass(frozen=True)
class Asset:
    symbol: str
    address: str  # the zero address for the native coin
    decimals: int

    @property
    def native(self) -> bool:
        return int(self.address, 16) == 0


def config_dir_of(config: Path | None) -> Path:
    """--config, else $WATCHER_CONFIG_DIR, else the running daemon's config dir (so the
    helpers work from any directory beside `make run`), else var/devnet."""
    if config is not None:
        return config
    if env := os.environ.get("WATCHER_CONFIG_DIR"):
        return Path(env)
    if not (DEFAULT_DEVNET_DIR / "networks").is_dir():
        from watcher.runtime import RuntimeProblem, running_daemons

        try:
            live = running_daemons()
        except (OSError, RuntimeProblem):
            live = []
        if len(live) == 1:
            return live[0].config_dir
    return DEFAULT_DEVNET_DIR


def load_target(config: Path | None, network: str | None) -> Target:
    """The one devnet network of the config dir (or ``network``); refuses the others."""
    from watcher.chain.devnet import LOCAL_CHAIN_IDS, is_devnet
    from watcher.settings import ConfigError, load_settings

    cdir = config_dir_of(config)
    if not (cdir / "networks").is_dir():
        hint = " (start it with `make run` or `watcher devnet`)" if config is None else ""
        raise HelperError(f"{cdir}: no devnet config here{hint}; pass --config DIR")
    try:
        settings = load_settings(cdir)
    except ConfigError as exc:
        raise HelperError(f"configuration error: {exc}".replace("\n", "; ")) from None
    rule = f"a devnet is marked `devnet = true` or has chain id {sorted(LOCAL_CHAIN_IDS)}"
    if network is not None:
        chosen = settings.networks.get(network)
        if chosen is None:
            raise HelperError(
                f"no network {network!r} in {cdir} (there: {', '.join(sorted(settings.networks))})"
            )
        if not is_devnet(chosen.chain_id, chosen.devnet):
            raise HelperError(
                f"network {network!r} has chain id {chosen.chain_id} and is not a devnet "
                f"({rule}): the devnet helpers only act on local chains"
            )
        if not chosen.enabled or not chosen.rpc_urls or not chosen.vault:
            raise HelperError(f"network {network!r} in {cdir} is disabled or has no vault/RPC")
        return Target(cdir, chosen)
    enabled = [n for n in settings.networks.values() if n.enabled]
    devnets = [n for n in enabled if is_devnet(n.chain_id, n.devnet)]
    if not devnets:
        others = ", ".join(f"{n.name} (chain id {n.chain_id})" for n in enabled) or "none"
        raise HelperError(
            f"no devnet among the enabled networks of {cdir} ({others}; {rule}): "
            "the devnet helpers only act on local chains"
        )
    if len(devnets) > 1:
        names = ", ".join(n.name for n in devnets)
        raise HelperError(f"several devnets in {cdir} ({names}): pick one with --network")
    return Target(cdir, devnets[0])


def resolve_asset(network: NetworkConfig, symbol: str) -> Asset:
    from watcher.chain.vault import ZERO_ADDRESS

    if symbol.upper() == network.native_asset.upper():
        return Asset(network.native_asset, ZERO_ADDRESS, network.native_decimals)
    token: TokenConfig | None = next(
        (t for t in network.tokens if t.symbol.upper() == symbol.upper()), None
    )
    if token is None:
        known = ", ".join([network.native_asset, *(t.symbol for t in network.tokens)])
        raise HelperError(f"unknown token {symbol!r} on {network.name}: use one of {known}")
    return Asset(token.symbol, token.address, token.decimals)


def parse_amount(text: str, asset: Asset) -> int:
    """Token units (exact decimal text) to base units; refuses more decimals than the
    token has, zero and anything that is not a plain positive decimal."""
    from watcher.domain.amounts import AmountFormatError, parse_decimal_amount

    try:
        units = parse_decimal_amount(text, asset.decimals)
    except AmountFormatError as exc:
        raise HelperError(f"--amount: {exc} for {asset.symbol}") from None
    if units <= 0:
        raise HelperError(f"--amount must be more than 0, got {text!r}")
    return units


def dev_key(index: int) -> Any:
    """Funded dev account ``index`` (a LocalAccount)."""
    from watcher.chain.devnet import DEVNET_ACCOUNTS, dev_account

    if not 0 <= index < DEVNET_ACCOUNTS:
        raise HelperError(
            f"unknown account index {index}: the devnet funds accounts 0-{DEVNET_ACCOUNTS - 1}"
        )
    return dev_account(index)


async def _chain(target: Target) -> Any:
    """An AsyncWeb3 on the devnet's RPC, after checking it serves the configured chain."""
    import aiohttp
    from web3 import AsyncWeb3
    from web3.providers.rpc import AsyncHTTPProvider

    url = target.network.rpc_urls[0]
    w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": 10}))
    try:
        answered = int(await w3.eth.chain_id)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        await w3.provider.disconnect()
        raise HelperError(
            f"the devnet's RPC {url} does not answer ({exc.__class__.__name__}: {exc}); "
            "is `make run` / `watcher devnet` running?",
            1,
        ) from None
    if answered != target.network.chain_id:
        await w3.provider.disconnect()
        raise HelperError(
            f"the node at {url} serves chain id {answered}, not the devnet's "
            f"{target.network.chain_id}: refusing to send",
            1,
        )
    return w3


# ---------------------------------------------------------------------------- deposit

FromOpt = Annotated[int, typer.Option("--from", help="dev account index (0-9)")]
TokenOpt = Annotated[
    str, typer.Option("--token", help="token symbol, or the network's native coin (ETH)")
]
AmountOpt = Annotated[str, typer.Option("--amount", help="amount in token units, e.g. 12.5")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="devnet config dir (default: $WATCHER_CONFIG_DIR, var/devnet or the daemon's)",
    ),
]
NetworkOpt = Annotated[
    str | None, typer.Option("--network", help="network name, when the dir has several devnets")
]


@dataclass(frozen=True)
class Deposited:
    tx_hash: str
    block: int
    account: str


async def deposit(target: Target, index: int, asset: Asset, units: int) -> Deposited:
    """approve + deposit (or depositNative) from dev account ``index``; waits for the
    receipts and returns the deposit transaction's hash."""
    from web3.exceptions import ContractLogicError, Web3Exception

    from watcher.chain.artifacts import load_artifact
    from watcher.domain.amounts import format_amount

    user = dev_key(index)
    w3 = await _chain(target)
    try:
        vault = w3.eth.contract(address=target.network.vault, abi=load_artifact("Vault").abi)
        operator = str(await vault.functions.operator().call())
        if operator.lower() == user.address.lower():
            raise HelperError(
                f"account {index} ({user.address}) is the hot wallet (the vault operator that "
                "sends payouts); a transaction from it would take a nonce the daemon's sender "
                "counts on: deposit from another account (e.g. --from 2)"
            )
        if asset.native:
            held = int(await w3.eth.get_balance(user.address))
        else:
            token = w3.eth.contract(address=asset.address, abi=load_artifact("TestToken").abi)
            held = int(await token.functions.balanceOf(user.address).call())
        if held < units:
            raise HelperError(
                f"account {index} holds {format_amount(held, asset.decimals)} {asset.symbol}, "
                f"less than {format_amount(units, asset.decimals)}",
                1,
            )
        try:
            if asset.native:
                receipt = await _send(w3, user, vault.functions.depositNative(), units)
            else:
                await _send(w3, user, token.functions.approve(target.network.vault, units))
                receipt = await _send(w3, user, vault.functions.deposit(asset.address, units))
        except (ContractLogicError, Web3Exception) as exc:
            raise HelperError(f"the deposit transaction failed: {exc}", 1) from None
        return Deposited(
            receipt["transactionHash"].to_0x_hex(), receipt["blockNumber"], user.address
        )
    finally:
        await w3.provider.disconnect()


async def _send(w3: Any, account: Any, call: Any, value: int = 0) -> Any:
    params = {
        "from": account.address,
        "value": value,
        "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
    }
    tx = dict(await call.build_transaction(params))
    signed = account.sign_transaction(tx)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.1)
    if receipt["status"] != 1:
        raise HelperError(f"transaction {tx_hash.to_0x_hex()} reverted", 1)
    return receipt


@devnet_app.command("deposit")
def deposit_command(
    from_: FromOpt,
    token: TokenOpt,
    amount: AmountOpt,
    config: ConfigOpt = None,
    network: NetworkOpt = None,
) -> None:
    """Approve and deposit a token (or the native coin) into the vault from dev account N;
    prints the transaction hash. Development only: refuses a network that is not a devnet."""

    async def go() -> None:
        target = load_target(config, network)
        user = dev_key(from_)
        asset = resolve_asset(target.network, token)
        units = parse_amount(amount, asset)
        done = await deposit(target, from_, asset, units)
        _say(
            f"deposit {done.tx_hash} (block {done.block}): {amount} {asset.symbol} from "
            f"account {from_} {user.address} to the vault {target.network.vault}"
        )

    _run(go())


# ---------------------------------------------------------------------------- withdraw

ApiOpt = Annotated[
    str | None,
    typer.Option(
        "--api",
        help="API URL (default: $WATCHER_API_URL, the daemon running on the config dir, "
        "or http://127.0.0.1:8080)",
    ),
]


def api_url_for(api: str | None, config_dir: Path) -> str:
    if api:
        return api.rstrip("/")
    if env := os.environ.get("WATCHER_API_URL"):
        return env.rstrip("/")
    from watcher.runtime import running_daemons

    here = config_dir.resolve()
    for daemon in running_daemons():
        if daemon.config_dir.resolve() == here:
            return daemon.api_url
    return DEFAULT_API_URL


def withdrawal_body(
    account: str,
    key: bytes,
    *,
    chain_id: int,
    vault: str,
    token: str,
    units: int,
    amount: str,
    destination: str,
    nonce: int,
    deadline: int,
) -> dict[str, Any]:
    """A POST /v1/withdrawals body signed with ``key`` (the account's), by the API's own
    EIP-712 code (``watcher.chain.eip712``, type ``Withdraw``): ``units`` is the amount in
    the token's base units as signed, ``amount`` the same as the body's decimal text.
    Integers travel as decimal strings, as uint256 fields do."""
    from watcher.chain import eip712

    message = {
        "account": account,
        "token": token,
        "amount": units,
        "destination": destination,
        "nonce": nonce,
        "deadline": deadline,
    }
    return {
        "account": account,
        "chainId": chain_id,
        "token": token,
        "amount": amount,
        "destination": destination,
        "nonce": str(nonce),
        "deadline": str(deadline),
        "signature": eip712.sign("Withdraw", message, chain_id, vault, key),
    }


def signed_withdrawal(
    target: Target,
    index: int,
    asset: Asset,
    units: int,
    amount: str,
    destination: str,
    *,
    nonce: int | None = None,
    deadline: int | None = None,
) -> dict[str, Any]:
    """The POST /v1/withdrawals body, signed as dev account ``index``."""
    user = dev_key(index)
    return withdrawal_body(
        user.address,
        bytes(user.key),
        chain_id=target.network.chain_id,
        vault=target.network.vault,
        token=asset.address,
        units=units,
        amount=amount,
        destination=destination,
        nonce=time.time_ns() if nonce is None else nonce,
        deadline=int(time.time()) + 3600 if deadline is None else deadline,
    )


async def _api(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One API call: the JSON document of a 2xx answer; HelperError(1) otherwise."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.request(method, url, json=body) as resp,
        ):
            try:
                doc = await resp.json(content_type=None)
            except ValueError:
                doc = None
            if resp.status >= 400 or not isinstance(doc, dict):
                if isinstance(doc, dict) and "code" in doc:
                    raise HelperError(
                        f"the API refused ({resp.status} {doc['code']}): {doc.get('message')}", 1
                    )
                raise HelperError(f"{method} {url} answered {resp.status}", 1)
            return doc
    except aiohttp.ClientConnectorError as exc:
        raise HelperError(
            f"cannot reach the API at {url} ({exc.os_error or exc}); is `make run` / "
            "`watcher run` running? (--api URL)",
            1,
        ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise HelperError(f"{method} {url} failed: {exc.__class__.__name__} {exc}", 1) from None


async def follow(
    api: str,
    withdrawal_id: int,
    *,
    seen: str,
    within: float,
    interval: float = 0.5,
    say: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """Poll GET /v1/withdrawals/{id}, printing each state change, until completed (the
    document) or a failure (HelperError 1), or ``within`` seconds (HelperError 1)."""
    deadline = time.monotonic() + within
    doc: dict[str, Any] = {"state": seen}
    while True:
        if doc["state"] == "completed":
            return doc
        if doc["state"] in FAILED_STATES:
            raise HelperError(
                f"withdrawal {withdrawal_id} {doc['state']}: {doc.get('reason') or 'no reason'}",
                1,
            )
        if time.monotonic() > deadline:
            raise HelperError(
                f"withdrawal {withdrawal_id} still {doc['state']} after {within:g} s", 1
            )
        await asyncio.sleep(interval)
        doc = await _api("GET", f"{api}/v1/withdrawals/{withdrawal_id}")
        if doc["state"] != seen:
            seen = doc["state"]
            tx = f" tx {doc['txHash']}" if doc.get("txHash") else ""
            say(f"withdrawal {withdrawal_id} {seen}{tx}{OPERATOR_HINTS.get(seen, '')}")


async def withdraw(
    target: Target,
    api: str,
    index: int,
    asset: Asset,
    amount: str,
    destination: str | None,
    *,
    wait: bool,
    within: float,
    say: Callable[[str], None] = _say,
) -> dict[str, Any]:
    from watcher.domain.parsing import InputError, parse_address

    units = parse_amount(amount, asset)
    user = dev_key(index)
    if destination is None:
        to = user.address
    else:
        try:
            to = parse_address(destination, "--to")
        except InputError as exc:
            raise HelperError(exc.message) from None
    body = signed_withdrawal(target, index, asset, units, amount, to)
    doc = await _api("POST", f"{api}/v1/withdrawals", body)
    say(f"withdrawal {doc['id']} {doc['state']}{OPERATOR_HINTS.get(str(doc['state']), '')}")
    if wait:
        doc = await follow(api, int(doc["id"]), seen=str(doc["state"]), within=within, say=say)
    return doc


@devnet_app.command("withdraw")
def withdraw_command(
    from_: FromOpt,
    token: TokenOpt,
    amount: AmountOpt,
    to: Annotated[
        str | None, typer.Option("--to", help="destination address (default: the account)")
    ] = None,
    api: ApiOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow it to completed (exit 0) or a failure (1)")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits at most")] = 120.0,
    config: ConfigOpt = None,
    network: NetworkOpt = None,
) -> None:
    """Sign a Withdraw (EIP-712) as dev account N and POST it to the API; prints
    `withdrawal <id> <state>`. Development only: refuses a network that is not a devnet."""

    async def go() -> None:
        target = load_target(config, network)
        dev_key(from_)
        asset = resolve_asset(target.network, token)
        parse_amount(amount, asset)
        url = api_url_for(api, target.config_dir)
        await withdraw(target, url, from_, asset, amount, to, wait=wait, within=timeout)

    _run(go())


# ---------------------------------------------------------------------------- demo


async def _eventually(
    what: str, check: Callable[[], Awaitable[T | None]], within: float, interval: float = 0.5
) -> T:
    deadline = time.monotonic() + within
    while True:
        found = await check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise HelperError(f"{what} within {within:g} s", 1)
        await asyncio.sleep(interval)


async def demo(
    target: Target,
    api: str,
    *,
    index: int = 2,
    symbol: str = "USDT",
    amount: str = "100",
    withdraw_amount: str = "40",
    within: float = 90.0,
    say: Callable[[str], None] = _say,
) -> None:
    """deposit → credited → withdraw → completed, each step printed; HelperError on failure."""
    from watcher.chain.artifacts import load_artifact
    from watcher.domain.amounts import format_amount

    asset = resolve_asset(target.network, symbol)
    units = parse_amount(amount, asset)
    user = dev_key(index)
    account = user.address
    await _api("GET", f"{api}/v1/accounts/{account}")  # the API answers, or a clear error
    say(f"1. deposit {amount} {asset.symbol} from account {index} {account}")
    done = await deposit(target, index, asset, units)
    say(f"   tx {done.tx_hash} in block {done.block}")

    async def credited() -> dict[str, Any] | None:
        doc = await _api("GET", f"{api}/v1/accounts/{account}/history")
        for item in doc.get("history", []):
            if item.get("type") == "deposit" and item.get("txHash") == done.tx_hash:
                return item if item.get("state") == "credited" else None
        return None

    say(f"2. wait until the daemon credits it ({target.network.rule_text})")
    await _eventually("the deposit was not credited", credited, within)
    view = await _api("GET", f"{api}/v1/accounts/{account}")
    balance: dict[str, Any] = next(
        (a for a in view.get("assets", []) if a.get("asset") == asset.symbol), {}
    )
    say(f"   credited: walletBalance {balance.get('walletBalance')} {asset.symbol}")

    async def on_chain() -> int:
        w3 = await _chain(target)
        try:
            token = w3.eth.contract(address=asset.address, abi=load_artifact("TestToken").abi)
            return int(await token.functions.balanceOf(account).call())
        finally:
            await w3.provider.disconnect()

    before = await on_chain() if not asset.native else 0
    say(f"3. withdraw {withdraw_amount} {asset.symbol} to {account} (signed EIP-712 Withdraw)")
    doc = await withdraw(
        target, api, index, asset, withdraw_amount, None, wait=True, within=within, say=say
    )
    if not asset.native:
        gained = await on_chain() - before
        rose = format_amount(gained, asset.decimals)
        say(f"4. completed: tx {doc.get('txHash')}; {account} received {rose} {asset.symbol}")
    else:
        say(f"4. completed: tx {doc.get('txHash')}")


@devnet_app.command("demo")
def demo_command(
    from_: Annotated[int, typer.Option("--from", help="dev account index (0-9)")] = 2,
    token: Annotated[str, typer.Option("--token", help="token symbol")] = "USDT",
    amount: Annotated[str, typer.Option("--amount", help="deposit amount")] = "100",
    withdraw_amount: Annotated[str, typer.Option("--withdraw", help="withdrawal amount")] = "40",
    api: ApiOpt = None,
    timeout: Annotated[float, typer.Option(help="seconds each step waits at most")] = 90.0,
    config: ConfigOpt = None,
    network: NetworkOpt = None,
) -> None:
    """Against a running `make run`: deposit, wait until credited, withdraw, wait until
    completed, printing each step. Exit 0 when the payout completed, 1 otherwise."""

    async def go() -> None:
        target = load_target(config, network)
        url = api_url_for(api, target.config_dir)
        await demo(
            target,
            url,
            index=from_,
            symbol=token,
            amount=amount,
            withdraw_amount=withdraw_amount,
            within=timeout,
        )
        _say("demo done")

    _run(go())
