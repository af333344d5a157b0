"""Withdrawal intake: a user-signed request becomes a withdrawal with its funds on hold,
or a 4xx with a reason code and nothing changed.

Order of checks (the first failure answers):

1. shape: addresses, integers, the amount as a plain decimal string (400);
2. network: ``chainId`` is a configured, enabled network (422 ``UNSUPPORTED_CHAIN``);
   token: an address configured on that network, the zero address for the native
   coin, or a configured symbol (422 ``UNSUPPORTED_TOKEN``);
3. the amount parses with the token's decimals (422 ``AMOUNT_PRECISION`` when it has
   more) and is > 0 (422 ``AMOUNT_NOT_POSITIVE``);
4. EIP-712 ``Withdraw(address account,address token,uint256 amount,address destination,
   uint256 nonce,uint256 deadline)`` over the domain {Watcher, 1, chainId, vault}; the
   message's amount is the body's amount in token base units, so the two agree exactly
   or the signer does not recover to the account (401 ``BAD_SIGNATURE`` /
   ``WRONG_SIGNER``);
5. replay: (account, nonce) already used → the same signed message returns the existing
   withdrawal (200); any other → 409 ``NONCE_REUSED``. Checked before the deadline so a
   client's retry of an accepted request always gets its withdrawal back;
6. deadline passed (401 ``SIGNATURE_EXPIRED``); destination a valid non-zero address
   (400 ``INVALID_DESTINATION``) and on the account's allow-list if it has one (422
   ``DESTINATION_NOT_ALLOWED``); amount ≥ the token's ``min_withdrawal`` (422
   ``BELOW_MIN_WITHDRAWAL``); amount representable in the ledger asset's precision
   (422 ``AMOUNT_PRECISION``);
7. in ONE DB transaction with the account locked: the 24-hour USD limit (422
   ``DAILY_LIMIT_EXCEEDED``), then the risk gate (``services.risk_gate.withdrawal_hold``:
   ``NEGATIVE_BALANCE``, ``INSUFFICIENT_WITHDRAWABLE``) on amount + fee, which posts the
   hold (cross → hold, amount + fee) with the withdrawal row. A rejection rolls the
   whole transaction back.

Fee (per network and token, ``withdraw_fee``; ``native_withdraw_fee`` for the coin):
the user receives exactly ``amount`` on chain; the ledger holds and later debits
``amount + fee``; on completion the fee moves to ``withdrawals.fee_account``
(``system:fees``). A withdrawal of at least ``review_threshold[asset]`` is stored in
``review`` and waits for ``watcher withdrawals approve|reject``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from eth_account import Account
from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak
from sqlalchemy.exc import IntegrityError

from watcher.api import eip712
from watcher.api.errors import ApiError, bad_request, conflict, rule, unauthorized
from watcher.chain.vault import ZERO_ADDRESS
from watcher.domain.amounts import AmountFormatError, chain_to_ledger, parse_decimal_amount
from watcher.domain.states import WithdrawalState
from watcher.services.risk_gate import AccountStateError, withdrawal_hold
from watcher.settings import NetworkConfig, Settings
from watcher.store import ledger
from watcher.store import withdrawals as repo
from watcher.store.accounts import prices
from watcher.store.db import SessionFactory, is_sqlite
from watcher.store.models import Withdrawal

WITHDRAW_TYPE = (
    "Withdraw(address account,address token,uint256 amount,address destination,"
    "uint256 nonce,uint256 deadline)"
)
eip712.register_type("Withdraw", WITHDRAW_TYPE)

_DECIMAL_RE = re.compile(r"[0-9]+(\.[0-9]+)?")
_SIGNATURE_RE = re.compile(r"0x[0-9a-fA-F]{130}")
UINT256_MAX = 2**256 - 1
DAY = timedelta(days=1)


@dataclass(frozen=True)
class TokenRef:
    address: str  # checksummed; ZERO_ADDRESS for the native coin
    symbol: str
    asset: str
    decimals: int
    min_withdrawal: Decimal
    fee: Decimal


@dataclass(frozen=True)
class WithdrawalRequest:
    account: str
    chain_id: int
    token: str
    amount: str
    destination: str
    nonce: int
    deadline: int
    signature: str

    @classmethod
    def from_json(cls, body: Any) -> WithdrawalRequest:
        if not isinstance(body, dict):
            raise bad_request("MALFORMED_REQUEST", "the body must be a JSON object")
        missing = [
            k
            for k in (
                "account",
                "chainId",
                "token",
                "amount",
                "destination",
                "nonce",
                "deadline",
                "signature",
            )
            if k not in body
        ]
        if missing:
            raise bad_request(
                "MISSING_FIELD", f"missing fields: {', '.join(missing)}", missing=missing
            )
        return cls(
            account=_address(body["account"], "account", "INVALID_ACCOUNT"),
            chain_id=_uint(body["chainId"], "chainId"),
            token=_text(body["token"], "token"),
            amount=_text(body["amount"], "amount"),
            destination=_text(body["destination"], "destination"),
            nonce=_uint(body["nonce"], "nonce"),
            deadline=_uint(body["deadline"], "deadline"),
            signature=_text(body["signature"], "signature"),
        )


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise bad_request("MALFORMED_REQUEST", f"{name} must be a string", field=name)
    return value


def _uint(value: Any, name: str) -> int:
    # JSON numbers or decimal strings (uint256 nonces do not fit a JS number).
    if isinstance(value, bool):
        raise bad_request("MALFORMED_REQUEST", f"{name} must be an integer", field=name)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
        raise bad_request("MALFORMED_REQUEST", f"{name} must be a uint256 integer", field=name)
    return value


def _address(value: Any, name: str, code: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise bad_request(code, f"{name} is not an EVM address: {value!r}", field=name)
    return str(to_checksum_address(value))


def resolve_token(network: NetworkConfig, token: str) -> TokenRef | None:
    """A token by address, the zero address (native), or a configured symbol."""
    if is_address(token):
        if int(token, 16) == 0:
            return _native(network)
        cfg = network.token_by_address(token)
    else:
        if token == network.native_asset:
            return _native(network)
        cfg = network.token_by_symbol(token)
    if cfg is None:
        return None
    return TokenRef(
        address=cfg.address,
        symbol=cfg.symbol,
        asset=cfg.asset,
        decimals=cfg.decimals,
        min_withdrawal=cfg.min_withdrawal,
        fee=cfg.withdraw_fee,
    )


def _native(network: NetworkConfig) -> TokenRef:
    return TokenRef(
        address=ZERO_ADDRESS,
        symbol=network.native_asset,
        asset=network.native_asset,
        decimals=network.native_decimals,
        min_withdrawal=network.native_min_withdrawal,
        fee=network.native_withdraw_fee,
    )


def _units(value: Decimal, decimals: int) -> int:
    scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than {decimals} decimals")
    return int(scaled)


@dataclass(frozen=True)
class Accepted:
    withdrawal: Withdrawal
    created: bool  # False: the same signed request was already accepted


class Intake:
    def __init__(
        self,
        settings: Settings,
        sessions: SessionFactory,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.clock = clock
        # SQLite has one writer: queue our own writers here instead of letting each
        # connection sleep-poll in SQLite's busy handler (which turned 32 concurrent
        # requests into multi-second tails). PostgreSQL locks per account row.
        self._writer = asyncio.Lock() if is_sqlite(settings.database.url) else None

    async def submit(self, req: WithdrawalRequest) -> Accepted:
        network = self.settings.network_by_chain(req.chain_id)
        if network is None or not network.enabled or not network.vault:
            enabled = sorted(n.chain_id for n in self.settings.enabled_networks)
            raise rule(
                "UNSUPPORTED_CHAIN",
                f"chainId {req.chain_id} is not an enabled network ({enabled})",
                chainId=req.chain_id,
                enabledChainIds=enabled,
            )
        token = resolve_token(network, req.token)
        if token is None:
            raise rule(
                "UNSUPPORTED_TOKEN",
                f"token {req.token!r} is not configured on {network.name}",
                token=req.token,
                chainId=req.chain_id,
            )
        if _DECIMAL_RE.fullmatch(req.amount) is None:
            raise bad_request(
                "INVALID_AMOUNT", f"amount {req.amount!r} is not a plain decimal string"
            )
        try:
            amount = parse_decimal_amount(req.amount, token.decimals)
        except AmountFormatError as exc:
            raise bad_request("AMOUNT_PRECISION", str(exc), decimals=token.decimals) from None
        if amount <= 0:
            raise rule("AMOUNT_NOT_POSITIVE", "amount must be greater than zero")

        # Signature: recover once, and use the same encoded message for the digest.
        message = {
            "account": req.account,
            "token": token.address,
            "amount": amount,
            "destination": req.destination,
            "nonce": req.nonce,
            "deadline": req.deadline,
        }
        if not is_address(req.destination):
            # The message cannot even be encoded: malformed, not a bad signature.
            raise bad_request(
                "INVALID_DESTINATION", f"destination is not an EVM address: {req.destination!r}"
            )
        if _SIGNATURE_RE.fullmatch(req.signature) is None:
            raise unauthorized("BAD_SIGNATURE", "signature must be 0x followed by 130 hex digits")
        signable = eip712.signable("Withdraw", message, req.chain_id, network.vault)
        try:
            signer = Account.recover_message(signable, signature=bytes.fromhex(req.signature[2:]))
        except (ValueError, TypeError) as exc:
            raise unauthorized("BAD_SIGNATURE", f"signature does not recover: {exc}") from None
        if signer.lower() != req.account.lower():
            raise unauthorized(
                "WRONG_SIGNER",
                f"signed by {to_checksum_address(signer)}, not by the account {req.account}",
                signer=to_checksum_address(signer),
                account=req.account,
            )
        digest = (
            "0x" + keccak(b"\x19" + bytes(signable.version) + signable.header + signable.body).hex()
        )

        async with self.sessions() as s:
            existing = await repo.find_by_account_nonce(s, req.account, req.nonce)
        if existing is not None:
            return self._replay(existing, digest)

        now = self.clock()
        if req.deadline <= now:
            raise unauthorized(
                "SIGNATURE_EXPIRED",
                f"the request's deadline {req.deadline} has passed (now {int(now)})",
                deadline=req.deadline,
                now=int(now),
            )
        destination = str(to_checksum_address(req.destination))
        if int(destination, 16) == 0:
            raise bad_request("INVALID_DESTINATION", "destination must not be the zero address")
        allowed = self._allowlist(req.account)
        if allowed is not None and destination.lower() not in allowed:
            raise rule(
                "DESTINATION_NOT_ALLOWED",
                f"{destination} is not on the allow-list of {req.account}",
                destination=destination,
            )
        if amount < _units(token.min_withdrawal, token.decimals):
            raise rule(
                "BELOW_MIN_WITHDRAWAL",
                f"the minimum withdrawal of {token.symbol} on {network.name} is "
                f"{token.min_withdrawal}",
                minimum=token.min_withdrawal,
            )
        asset_cfg = self.settings.assets.get(token.asset)
        if asset_cfg is None:
            raise rule("UNSUPPORTED_TOKEN", f"asset {token.asset} is not a ledger asset")
        ledger_units, dust = chain_to_ledger(amount, token.decimals, asset_cfg.precision)
        if dust:
            raise bad_request(
                "AMOUNT_PRECISION",
                f"{req.amount} {token.symbol} has more decimals than the ledger keeps "
                f"({asset_cfg.precision})",
                precision=asset_cfg.precision,
            )
        fee = _units(token.fee, asset_cfg.precision)
        review_at = self.settings.withdrawals.review_threshold.get(token.asset)
        state = WithdrawalState.REQUESTED
        if review_at is not None and ledger_units >= _units(review_at, asset_cfg.precision):
            state = WithdrawalState.REVIEW

        row = Withdrawal(
            account=req.account,
            chain_id=req.chain_id,
            token=token.address,
            asset=token.asset,
            amount=amount,
            ledger_amount=ledger_units + fee,
            fee=fee,
            destination=destination,
            nonce=req.nonce,
            deadline=req.deadline,
            signature=req.signature,
            request_digest=digest,
            state=state.value,
            reason="above the review threshold" if state is WithdrawalState.REVIEW else None,
        )
        try:
            if self._writer is None:
                return await self._decide_and_hold(row)
            async with self._writer:
                return await self._decide_and_hold(row)
        except IntegrityError:
            # A concurrent twin with the same (account, nonce) committed first.
            async with self.sessions() as s:
                existing = await repo.find_by_account_nonce(s, req.account, req.nonce)
            if existing is None:
                raise
            return self._replay(existing, digest)

    def _replay(self, existing: Withdrawal, digest: str) -> Accepted:
        if existing.request_digest != digest:
            raise conflict(
                "NONCE_REUSED",
                f"nonce {existing.nonce} of {existing.account} was already used by another "
                f"request (withdrawal {existing.id})",
                withdrawalId=existing.id,
            )
        return Accepted(existing, created=False)

    def _allowlist(self, account: str) -> set[str] | None:
        for key, destinations in self.settings.withdrawals.allowlist.items():
            if key.lower() == account.lower():
                return {d.lower() for d in destinations}
        return None

    async def _decide_and_hold(self, row: Withdrawal) -> Accepted:
        async with self.sessions.begin() as s:
            account = await ledger.lock_account(s, row.account)
            row.account_id = account.id
            limit = self.settings.withdrawals.daily_limit_usd
            if limit is not None:
                await self._check_daily_limit(s, row, limit)
            s.add(row)
            await s.flush()
            try:
                result = await withdrawal_hold(
                    s,
                    self.settings,
                    account=row.account,
                    asset=row.asset,
                    units=row.ledger_amount,
                    ref=f"withdrawal:{row.id}:hold",
                    memo=f"withdrawal {row.id} on chain {row.chain_id}",
                )
            except AccountStateError as exc:
                # Fail closed with a clear answer; the transaction rolls back whole.
                raise rule(
                    "ACCOUNT_STATE_INCOMPLETE", f"the account cannot be evaluated: {exc}"
                ) from None
            if not result.allowed:
                raise _Rejected(result.reason or "REJECTED", dict(result.details))
            assert result.transaction is not None
            row.hold_tx_id = result.transaction.id
        return Accepted(row, created=True)

    async def _check_daily_limit(self, s: Any, row: Withdrawal, limit: Decimal) -> None:
        since = datetime.fromtimestamp(self.clock(), UTC) - DAY
        taken = await repo.held_since(s, row.account, since)
        _, stored = await prices(s)
        total = Decimal(0)
        for asset, units in [*taken, (row.asset, row.ledger_amount)]:
            total += self._usd(asset, units, stored)
        if total > limit:
            raise rule(
                "DAILY_LIMIT_EXCEEDED",
                f"withdrawals of the last 24 h would total {total} USD, above the limit {limit}",
                limitUsd=limit,
                totalUsd=total,
            )

    def _usd(self, asset: str, units: int, stored: dict[str, Decimal]) -> Decimal:
        cfg = self.settings.assets[asset]
        price = stored.get(asset, cfg.price)
        if price is None:
            if asset != self.settings.ledger.settlement_asset:
                raise rule("PRICE_UNAVAILABLE", f"no USD price for {asset} to check the limit")
            price = Decimal(1)
        return Decimal(units).scaleb(-cfg.precision) * price


class _Rejected(ApiError):
    def __init__(self, code: str, details: dict[str, object]) -> None:
        messages = {
            "NEGATIVE_BALANCE": "the account has a negative balance; withdrawals are blocked",
            "INSUFFICIENT_WITHDRAWABLE": "the amount plus fee exceeds the max withdrawable",
        }
        super().__init__(code, messages.get(code, code.lower()), details, status=422)
