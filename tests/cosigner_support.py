"""Shared pieces of the co-signer tests: a config, a user who signs Withdraw requests,
and the request body the sender would send."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from eth_account import Account
from eth_utils.crypto import keccak

from watcher.chain import eip712
from watcher.services import cosigner as _cosigner  # noqa: F401  (registers Withdraw)

CHAIN_ID = 31337
VAULT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
USDT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
NATIVE = "0x0000000000000000000000000000000000000000"
COSIGNER_KEY = "0x" + keccak(b"cosigner test key").hex()
DENIED = "0x000000000000000000000000000000000000dEaD"
NOW = 1_800_000_000

CONFIG_TOML = f"""
store = "STORE"
max_deadline_s = 3600

[server]
host = "127.0.0.1"
port = 0

[limits]
window_s = 3600
account_usd = "1000"
global_usd = "1500"

[destinations]
deny = ["{DENIED}"]

[[chains]]
chain_id = {CHAIN_ID}
vault = "{VAULT}"

[[chains.tokens]]
symbol = "USDT"
address = "{USDT}"
decimals = 6
price_usd = "1"

[[chains.tokens]]
symbol = "ETH"
address = "{NATIVE}"
decimals = 18
price_usd = "2000"
"""


def config_toml(store: str, port: int = 0, extra: str = "") -> str:
    return CONFIG_TOML.replace("STORE", store).replace("port = 0", f"port = {port}") + extra


@dataclass
class User:
    key: bytes

    @classmethod
    def make(cls, name: str) -> User:
        return cls(keccak(name.encode()))

    @property
    def address(self) -> str:
        return str(Account.from_key(self.key).address)

    def request(
        self,
        amount: str,
        to: str,
        nonce: int,
        *,
        token: str = "USDT",
        token_address: str = USDT,
        decimals: int = 6,
        deadline: int = NOW + 600,
        chain_id: int = CHAIN_ID,
    ) -> dict[str, Any]:
        units = int(Decimal(amount).scaleb(decimals))
        message = {
            "account": self.address,
            "token": token_address,
            "amount": units,
            "destination": to,
            "nonce": nonce,
            "deadline": deadline,
        }
        return {
            "account": self.address,
            "chainId": chain_id,
            "token": token,
            "amount": amount,
            "destination": to,
            "nonce": nonce,
            "deadline": deadline,
            "signature": eip712.sign("Withdraw", message, chain_id, VAULT, self.key),
        }


def body(
    payout_id: int,
    request: dict[str, Any],
    *,
    amount: int | None = None,
    to: str | None = None,
    token: str = USDT,
    deadline: int = NOW + 1800,
    decimals: int = 6,
) -> dict[str, Any]:
    units = int(Decimal(request["amount"]).scaleb(decimals)) if amount is None else amount
    return {
        "payout": {
            "id": payout_id,
            "chainId": CHAIN_ID,
            "vault": VAULT,
            "token": token,
            "to": to or request["destination"],
            "amount": str(units),
            "deadline": deadline,
        },
        "request": request,
    }
