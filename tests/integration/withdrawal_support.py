"""Helpers for the withdrawal tests: an App wired to a real anvil with the hot key, signed
requests, deposits through the real listener, and direct ledger credits."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3

from tests.fixtures_chain import transact
from tests.helpers import write_config
from watcher.api.devnet_cosigners import LocalCosigners, local_cosigners
from watcher.app import App, build
from watcher.chain import eip712
from watcher.chain import payout as payouts
from watcher.chain.artifacts import WITHDRAWN_TOPIC, load_artifact
from watcher.chain.devnet import Deployment, dev_account, devnet_validator_key
from watcher.chain.vault import ZERO_ADDRESS
from watcher.domain.journal import CROSS, Leg, TxKind, vault_account
from watcher.services.sender import Sender
from watcher.services.tracker import Tracker
from watcher.settings import load_settings
from watcher.store import ledger

OPERATOR = dev_account(1)  # the vault's operator in deploy_devnet: the hot wallet


def operator_key() -> str:
    return "0x" + bytes(OPERATOR.key).hex()


@asynccontextmanager
async def withdrawal_app(
    tmp_path: Path,
    deployment: Deployment,
    db_url: str,
    *,
    extra_toml: str = "",
    confirmations: int = 3,
    signer: bool = True,
    cosigners: LocalCosigners | None = None,
) -> AsyncIterator[App]:
    """An App on the devnet ``deployment``; its sender asks ``cosigners`` (default: the
    devnet's three co-signers, started for the App's lifetime)."""
    async with AsyncExitStack() as stack:
        if cosigners is None:
            cosigners = await stack.enter_async_context(
                local_cosigners(deployment, tmp_path / "cosigners")
            )
        cfg = write_config(
            tmp_path,
            [("devnet", deployment, confirmations)],
            default_toml_extra=extra_toml,
            cosigners=cosigners.urls,
        )
        env = {"WATCHER_DATABASE_URL": db_url, "WATCHER_COSIGNER_TOKEN": cosigners.token}
        if signer:
            env["WATCHER_SIGNER_KEY"] = operator_key()
        app = await build(load_settings(cfg, env=env))
        try:
            yield app
        finally:
            await app.close()


def service(app: App, prefix: str) -> Any:
    for s in app.services:
        if s.name.startswith(prefix):
            return s
    raise LookupError(prefix)


def sender(app: App) -> Sender:
    found: Sender = service(app, "sender:")
    return found


def fresh_sender(app: App) -> Sender:
    """A sender as a restarted process builds it: no in-memory state."""
    old = sender(app)
    return Sender(
        network=old.network,
        settings=old.settings,
        sessions=app.sessions,
        rpc=old.rpc,
        http=old.http,
        signer=old.signer,
        cosigner_token=old.cosigning.token,
    )


def authorized(
    dep: Deployment, withdrawal_id: int, token: str, to: str, amount: int, *, signers: int = 2
) -> tuple[int, str, str, int, int, list[bytes]]:
    """The arguments of ``vault.withdraw`` for a payout authorized by the first
    ``signers`` devnet validators (a far deadline): what a foreign transaction of the
    hot key with co-signatures looks like."""
    deadline = 2**40
    auth = payouts.Payout(dep.chain_id, dep.vault, withdrawal_id, token, to, amount, deadline)
    pairs = [
        (
            payouts.PayoutSigner(devnet_validator_key(i)).address,
            payouts.sign(auth, devnet_validator_key(i)),
        )
        for i in range(signers)
    ]
    return withdrawal_id, token, to, amount, deadline, payouts.signatures_blob(pairs)


def tracker(app: App) -> Tracker:
    found: Tracker = service(app, "tracker:")
    return found


def signed_body(
    user: LocalAccount,
    deployment: Deployment,
    *,
    token: str,
    amount: str,
    amount_units: int,
    destination: str,
    nonce: int,
    deadline: int | None = None,
    chain_id: int | None = None,
    signer: LocalAccount | None = None,
    sign_chain_id: int | None = None,
    body_token: str | None = None,
) -> dict[str, Any]:
    chain = deployment.chain_id if chain_id is None else chain_id
    deadline = int(time.time()) + 3600 if deadline is None else deadline
    message = {
        "account": user.address,
        "token": token,
        "amount": amount_units,
        "destination": destination,
        "nonce": nonce,
        "deadline": deadline,
    }
    signature = eip712.sign(
        "Withdraw",
        message,
        sign_chain_id if sign_chain_id is not None else chain,
        deployment.vault,
        bytes((signer or user).key),
    )
    return {
        "account": user.address,
        "chainId": chain,
        "token": body_token if body_token is not None else token,
        "amount": amount,
        "destination": destination,
        "nonce": nonce,
        "deadline": deadline,
        "signature": signature,
    }


def usdt_body(
    dep: Deployment, user: LocalAccount, whole: int, nonce: int, dest: str
) -> dict[str, Any]:
    """A request of ``whole`` USDT (the devnet token, 18 decimals) to ``dest``."""
    return signed_body(
        user,
        dep,
        token=dep.tokens["USDT"].address,
        amount=str(whole),
        amount_units=whole * 10**18,
        destination=dest,
        nonce=nonce,
    )


async def credit(app: App, account: str, asset: str, units: int, ref: str) -> None:
    """A direct ledger credit (as a deposit would post), for tests that need many funded
    accounts; end-to-end tests deposit on chain through the real listener instead."""
    async with app.sessions.begin() as s:
        await ledger.post(
            s,
            kind=TxKind.DEPOSIT,
            ref=ref,
            legs=[
                Leg(vault_account(31337), asset, -units, CROSS),
                Leg(account, asset, units, CROSS),
            ],
            account_key=account,
        )


async def deposit_token(
    w3: AsyncWeb3[Any], user: LocalAccount, deployment: Deployment, symbol: str, units: int
) -> None:
    token = w3.eth.contract(
        address=deployment.tokens[symbol].address, abi=load_artifact("TestToken").abi
    )
    vault = w3.eth.contract(address=deployment.vault, abi=load_artifact("Vault").abi)  # type: ignore[call-overload]
    await transact(w3, user, token.functions.approve(deployment.vault, units))
    await transact(w3, user, vault.functions.deposit(deployment.tokens[symbol].address, units))


async def deposit_native(
    w3: AsyncWeb3[Any], user: LocalAccount, deployment: Deployment, wei: int
) -> None:
    vault = w3.eth.contract(address=deployment.vault, abi=load_artifact("Vault").abi)  # type: ignore[call-overload]
    await transact(w3, user, vault.functions.depositNative(), value=wei)


async def mine(w3: AsyncWeb3[Any], blocks: int = 1) -> None:
    await w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]


async def balance_of(w3: AsyncWeb3[Any], token: str, holder: str) -> int:
    if token == ZERO_ADDRESS:
        return int(await w3.eth.get_balance(holder))  # type: ignore[arg-type]
    contract = w3.eth.contract(address=token, abi=load_artifact("TestToken").abi)  # type: ignore[arg-type]
    return int(await contract.functions.balanceOf(holder).call())


async def run_pipeline(app: App, w3: AsyncWeb3[Any], *, rounds: int = 6) -> None:
    """Sender and tracker ticks with a mined block in between, until nothing moves."""
    for _ in range(rounds):
        await sender(app).tick()
        await tracker(app).tick()
        await mine(w3, 1)


async def track_rounds(app: App, w3: AsyncWeb3[Any], rounds: int) -> None:
    """Tracker ticks, a block mined after each (no sender tick)."""
    for _ in range(rounds):
        await tracker(app).tick()
        await mine(w3, 1)


async def withdrawn_events(w3: AsyncWeb3[Any], dep: Deployment) -> list[Any]:
    """Every ``Withdrawn`` event of the vault so far (each is one payout on chain)."""
    return list(
        await w3.eth.get_logs(
            {"address": dep.vault, "topics": [WITHDRAWN_TOPIC], "fromBlock": 0, "toBlock": "latest"}
        )
    )
