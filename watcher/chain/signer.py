"""The hot wallet's key: loaded once, used only to sign transactions.

The key comes from ``WATCHER_SIGNER_KEY`` (hex) or from an encrypted keystore JSON
(``WATCHER_SIGNER_KEYSTORE``) with ``WATCHER_SIGNER_KEYSTORE_PASSWORD``; settings.py
reads both and hands them over as ``SecretStr``. Guarantees:

* The key never leaves this object: ``repr``/``str`` show the address and ``***``,
  and every error raised while loading names the *source* (variable or file), never
  the value. ``eth_account``'s own exceptions are not chained (``from None``) because
  some quote their input.
* Signing is local (eth_account, with coincurve when installed: ~2,000 tx/s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from watcher.settings import Secrets


class SignerError(ValueError):
    """The configured key or keystore cannot be used (the message holds no secret)."""


@dataclass(frozen=True, slots=True)
class SignedTx:
    raw: str  # 0x-hex of the signed, RLP-encoded transaction
    tx_hash: str  # 0x-hex, lower case


class HotSigner:
    """Signs transactions for one address; the key is private to the instance."""

    __slots__ = ("_account", "address")

    def __init__(self, account: LocalAccount) -> None:
        self._account = account
        self.address: str = account.address

    @classmethod
    def from_key(cls, key: str) -> HotSigner:
        text = key.strip()
        try:
            account: LocalAccount = Account.from_key(text)
        except (ValueError, TypeError):
            raise SignerError("WATCHER_SIGNER_KEY is not a valid 32-byte hex private key") from None
        return cls(account)

    @classmethod
    def from_keystore(cls, path: Path, password: str) -> HotSigner:
        try:
            keystore: Any = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SignerError(f"cannot read signer keystore {path}: {exc.strerror}") from None
        except ValueError:
            raise SignerError(f"signer keystore {path} is not valid JSON") from None
        try:
            key = Account.decrypt(keystore, password)
        except (ValueError, TypeError, KeyError):
            raise SignerError(
                f"cannot decrypt signer keystore {path}: wrong password or bad file"
            ) from None
        return cls(Account.from_key(key))

    @classmethod
    def from_secrets(cls, secrets: Secrets) -> HotSigner | None:
        """The configured signer, or None when no key is configured at all."""
        if secrets.signer_key is not None:
            return cls.from_key(secrets.signer_key.get_secret_value())
        if secrets.signer_keystore is not None:
            if secrets.signer_keystore_password is None:
                raise SignerError(
                    "WATCHER_SIGNER_KEYSTORE is set but WATCHER_SIGNER_KEYSTORE_PASSWORD is not"
                )
            return cls.from_keystore(
                secrets.signer_keystore, secrets.signer_keystore_password.get_secret_value()
            )
        return None

    def sign_transaction(self, tx: dict[str, Any]) -> SignedTx:
        signed = self._account.sign_transaction(tx)
        return SignedTx(
            raw="0x" + bytes(signed.raw_transaction).hex(),
            tx_hash="0x" + bytes(signed.hash).hex(),
        )

    def __repr__(self) -> str:
        return f"HotSigner(address={self.address}, key=***)"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickle the key into a cache or a crash dump
        raise TypeError("HotSigner cannot be pickled")
