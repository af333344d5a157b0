"""The co-signer: an independent check of each payout before it adds its signature.

It runs as its own process (``watcher cosign run``) with its own key, its own
configuration and its own store (store/cosigner.py); the watcher's database is never
read. The sender presents, for each payout, the user's signed ``Withdraw`` request as
the watcher received it; the co-signer signs the payout authorization
(chain/payout.py) only when, in this order (the first failure answers, and that
refusal is stored: final for that payload):

1. the payout's chain and vault are configured here (``UNKNOWN_VAULT``), its token too
   (``UNKNOWN_TOKEN``), the request is for the same chain (``CHAIN_MISMATCH``), names
   the same token and has an amount that parses in its decimals (``REQUEST_MISMATCH``:
   the typed message needs both);
2. the user's EIP-712 ``Withdraw`` signature (domain {Watcher, 1, chainId, vault}) is
   present and recovers to the request's account (``USER_SIGNATURE_INVALID``): a
   payout with no user behind it (a row written into the watcher's database) stops here;
3. the request matches the payout: destination == to, amount in base units == the
   payout's (``REQUEST_MISMATCH``), > 0 (``AMOUNT_NOT_POSITIVE``);
4. the payout id was never signed with other contents (``PAYOUT_ID_REUSED``) and the
   request's (account, nonce) never for another payout id (``NONCE_REUSED``); the
   same id with the same contents and a later deadline is signed again, counted once;
5. the request is not older than ``max_request_age_s`` past its deadline
   (``REQUEST_TOO_OLD``); the payout's deadline is in the future
   (``DEADLINE_PASSED``) and at most ``max_deadline_s`` ahead (``DEADLINE_TOO_FAR``);
6. the destination is not the zero address, not on the deny-list
   (``DESTINATION_DENIED``) and on the allow-list when there is one
   (``DESTINATION_NOT_ALLOWED``);
7. the per-account and global limits over the last ``window_s`` (3600 s: a sliding
   hour) in USD at the configured fixed prices and/or in token units
   (``ACCOUNT_LIMIT_EXCEEDED``, ``GLOBAL_LIMIT_EXCEEDED``).

Decisions are serialized (one at a time per process) and each commits in one
transaction with what it signed before it is answered, so limits and uniqueness hold
under concurrency and across crashes. One process per store (the limit window's totals
are kept in memory).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import tomllib
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from watcher.chain import eip712
from watcher.chain.eip712 import WITHDRAW_TYPE
from watcher.chain.payout import Payout, PayoutSigner
from watcher.chain.vault import ZERO_ADDRESS
from watcher.domain.amounts import AmountFormatError, parse_decimal_amount
from watcher.domain.errors import DomainError, ErrorKind
from watcher.domain.parsing import InputError, parse_address, parse_uint
from watcher.store import cosigner as store

log = logging.getLogger("watcher.cosigner")

_DECIMAL_RE = re.compile(r"[0-9]{1,78}(\.[0-9]{1,78})?")

# ----------------------------------------------------------------------------- codes

MALFORMED_PAYLOAD = "MALFORMED_PAYLOAD"
UNAUTHORIZED = "UNAUTHORIZED"
UNKNOWN_VAULT = "UNKNOWN_VAULT"
UNKNOWN_TOKEN = "UNKNOWN_TOKEN"
CHAIN_MISMATCH = "CHAIN_MISMATCH"
USER_SIGNATURE_INVALID = "USER_SIGNATURE_INVALID"
REQUEST_MISMATCH = "REQUEST_MISMATCH"
AMOUNT_NOT_POSITIVE = "AMOUNT_NOT_POSITIVE"
PAYOUT_ID_REUSED = "PAYOUT_ID_REUSED"
NONCE_REUSED = "NONCE_REUSED"
REQUEST_TOO_OLD = "REQUEST_TOO_OLD"
DEADLINE_PASSED = "DEADLINE_PASSED"
DEADLINE_TOO_FAR = "DEADLINE_TOO_FAR"
DESTINATION_DENIED = "DESTINATION_DENIED"
DESTINATION_NOT_ALLOWED = "DESTINATION_NOT_ALLOWED"
ACCOUNT_LIMIT_EXCEEDED = "ACCOUNT_LIMIT_EXCEEDED"
GLOBAL_LIMIT_EXCEEDED = "GLOBAL_LIMIT_EXCEEDED"
STORE_UNAVAILABLE = "STORE_UNAVAILABLE"

#: Every code the co-signer answers with: (HTTP status, stored as final?, when).
CODES: dict[str, tuple[int, bool, str]] = {
    MALFORMED_PAYLOAD: (400, False, "the body is not {payout, request} of the documented shape"),
    UNAUTHORIZED: (401, False, "no or a wrong bearer token"),
    USER_SIGNATURE_INVALID: (
        403,
        True,
        "the user's Withdraw signature is missing, malformed, or not the account's",
    ),
    PAYOUT_ID_REUSED: (409, True, "this payout id was signed before with other contents"),
    NONCE_REUSED: (409, True, "this (account, nonce) was signed before for another payout id"),
    UNKNOWN_VAULT: (422, True, "the payout's chain id and vault are not configured here"),
    UNKNOWN_TOKEN: (422, True, "the token is not configured for that chain"),
    CHAIN_MISMATCH: (422, True, "the request's chainId is not the payout's"),
    REQUEST_MISMATCH: (422, True, "token, destination or amount differ (details.field)"),
    AMOUNT_NOT_POSITIVE: (422, True, "the amount is zero"),
    REQUEST_TOO_OLD: (422, True, "the request's deadline is more than max_request_age_s ago"),
    DEADLINE_PASSED: (422, True, "the payout's deadline is not in the future"),
    DEADLINE_TOO_FAR: (422, True, "the payout's deadline is more than max_deadline_s ahead"),
    DESTINATION_DENIED: (422, True, "the destination is on the deny-list or the zero address"),
    DESTINATION_NOT_ALLOWED: (422, True, "an allow-list is configured and lacks the destination"),
    ACCOUNT_LIMIT_EXCEEDED: (422, True, "the account's total in the window would pass its limit"),
    GLOBAL_LIMIT_EXCEEDED: (422, True, "everyone's total in the window would pass the limit"),
    STORE_UNAVAILABLE: (503, False, "the store could not be used; retry"),
}


class Refusal(DomainError):
    """A co-signer refusal: a code of :data:`CODES` and its HTTP status."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        status = CODES[code][0]
        kind = {
            400: ErrorKind.INVALID,
            401: ErrorKind.UNAUTHORIZED,
            403: ErrorKind.UNAUTHORIZED,
            409: ErrorKind.CONFLICT,
            422: ErrorKind.RULE,
            503: ErrorKind.UNAVAILABLE,
        }[status]
        super().__init__(code, message, details, kind=kind)
        self.status = status

    @property
    def final(self) -> bool:
        return CODES[self.code][1]


# ---------------------------------------------------------------------------- config


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _address(value: Any) -> str:
    try:
        return parse_address(value, "address")
    except InputError as exc:
        raise ValueError(exc.message) from None


def _positive_decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        raise ValueError("write amounts and prices as strings, not floats")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal") from None
    if not result.is_finite() or result < 0:
        raise ValueError(f"{value!r} must be a non-negative decimal")
    return result


class TokenConfig(_Model):
    symbol: str
    address: str  # the zero address for the native coin
    decimals: int = Field(ge=0, le=77)
    price_usd: Decimal | None = None
    account_limit: Decimal | None = None  # token units per account per window
    global_limit: Decimal | None = None  # token units for everyone per window

    _addr = field_validator("address", mode="before")(_address)
    _dec = field_validator("price_usd", "account_limit", "global_limit", mode="before")(
        _positive_decimal
    )


class ChainConfig(_Model):
    chain_id: int = Field(gt=0)
    vault: str
    tokens: list[TokenConfig] = Field(default_factory=list)

    _addr = field_validator("vault", mode="before")(_address)

    def token_by_address(self, address: str) -> TokenConfig | None:
        for t in self.tokens:
            if t.address.lower() == address.lower():
                return t
        return None

    def token_by_symbol(self, symbol: str) -> TokenConfig | None:
        for t in self.tokens:
            if t.symbol == symbol:
                return t
        return None


class LimitsConfig(_Model):
    window_s: int = Field(default=3600, gt=0)
    account_usd: Decimal | None = None
    global_usd: Decimal | None = None

    _dec = field_validator("account_usd", "global_usd", mode="before")(_positive_decimal)


class DestinationsConfig(_Model):
    allow: list[str] | None = None  # None: any destination (but the denied ones)
    deny: list[str] = Field(default_factory=list)

    @field_validator("allow", "deny", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        if value is None:
            return None
        return [_address(v) for v in value]


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8547, ge=0, le=65535)


class CosignerConfig(_Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    store: str = "sqlite+aiosqlite:///var/cosigner.sqlite"
    max_deadline_s: int = Field(default=86_400, gt=0)
    max_request_age_s: int = Field(default=30 * 86_400, ge=0)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    destinations: DestinationsConfig = Field(default_factory=DestinationsConfig)
    chains: list[ChainConfig]
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _consistent(self) -> CosignerConfig:
        seen: set[int] = set()
        for chain in self.chains:
            if chain.chain_id in seen:
                raise ValueError(f"chain {chain.chain_id} is configured twice")
            seen.add(chain.chain_id)
            symbols = [t.symbol for t in chain.tokens]
            if len(set(symbols)) != len(symbols):
                raise ValueError(f"chain {chain.chain_id}: a token symbol is listed twice")
            if self.limits.account_usd is not None or self.limits.global_usd is not None:
                unpriced = [t.symbol for t in chain.tokens if t.price_usd is None]
                if unpriced:
                    raise ValueError(
                        f"chain {chain.chain_id}: USD limits need price_usd for {unpriced}"
                    )
        return self

    def chain(self, chain_id: int) -> ChainConfig | None:
        for c in self.chains:
            if c.chain_id == chain_id:
                return c
        return None


class CosignerConfigError(ValueError):
    """The configuration file cannot be used (the message names the file and the key)."""


def load_config(path: Path, **overrides: Any) -> CosignerConfig:
    """The TOML file, with top-level overrides (``store=...``, ``server={...}``) applied."""
    try:
        doc: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CosignerConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CosignerConfigError(f"{path}: {exc}") from None
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict):
            doc[key] = {**doc.get(key, {}), **{k: v for k, v in value.items() if v is not None}}
        else:
            doc[key] = value
    try:
        return CosignerConfig.model_validate(doc)
    except ValidationError as exc:
        lines = [
            f"{path}: {'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()
        ]
        raise CosignerConfigError("\n".join(lines)) from None


# --------------------------------------------------------------------------- payload


@dataclass(frozen=True)
class UserRequest:
    account: str
    chain_id: int
    token: str
    amount: str
    destination: str
    nonce: int
    deadline: int
    signature: str | None


@dataclass(frozen=True)
class CosignPayload:
    payout: Payout
    request: UserRequest

    def canonical(self) -> str:
        p, r = self.payout, self.request
        return json.dumps(
            {
                "payout": [p.chain_id, p.vault, str(p.id), p.token, p.to, str(p.amount)],
                "deadline": str(p.deadline),
                "request": [
                    r.account,
                    r.chain_id,
                    r.token,
                    r.amount,
                    r.destination,
                    str(r.nonce),
                    str(r.deadline),
                    (r.signature or "").lower(),
                ],
            },
            separators=(",", ":"),
        )

    def hash(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


def _field(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise Refusal(MALFORMED_PAYLOAD, f"{where}.{key} is missing", field=f"{where}.{key}")
    return obj[key]


def _uint(obj: Mapping[str, Any], key: str, where: str) -> int:
    try:
        return parse_uint(_field(obj, key, where), f"{where}.{key}")
    except InputError as exc:
        raise Refusal(MALFORMED_PAYLOAD, exc.message, field=f"{where}.{key}") from None


def _addr(obj: Mapping[str, Any], key: str, where: str) -> str:
    try:
        return parse_address(_field(obj, key, where), f"{where}.{key}")
    except InputError as exc:
        raise Refusal(MALFORMED_PAYLOAD, exc.message, field=f"{where}.{key}") from None


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _field(obj, key, where)
    if not isinstance(value, str) or len(value) > 200:
        raise Refusal(MALFORMED_PAYLOAD, f"{where}.{key} must be a string", field=f"{where}.{key}")
    return value


def parse_payload(body: Any) -> CosignPayload:
    """``{payout: {id, chainId, vault, token, to, amount, deadline}, request: {account,
    chainId, token, amount, destination, nonce, deadline, signature}}``. Integers as
    JSON integers or digit strings; ``request.signature`` may be missing or null (then
    the payload is refused as unsigned, and that refusal is recorded)."""
    if not isinstance(body, dict):
        raise Refusal(MALFORMED_PAYLOAD, "the body must be a JSON object")
    p, r = body.get("payout"), body.get("request")
    if not isinstance(p, dict) or not isinstance(r, dict):
        raise Refusal(MALFORMED_PAYLOAD, "the body needs the objects payout and request")
    signature = r.get("signature")
    if signature is not None and not isinstance(signature, str):
        raise Refusal(MALFORMED_PAYLOAD, "request.signature must be a string or null")
    if signature is not None and len(signature) > 200:
        raise Refusal(MALFORMED_PAYLOAD, "request.signature is too long")
    payout = Payout(
        chain_id=_uint(p, "chainId", "payout"),
        vault=_addr(p, "vault", "payout"),
        id=_uint(p, "id", "payout"),
        token=_addr(p, "token", "payout"),
        to=_addr(p, "to", "payout"),
        amount=_uint(p, "amount", "payout"),
        deadline=_uint(p, "deadline", "payout"),
    )
    request = UserRequest(
        account=_addr(r, "account", "request"),
        chain_id=_uint(r, "chainId", "request"),
        token=_str(r, "token", "request"),
        amount=_str(r, "amount", "request"),
        destination=_addr(r, "destination", "request"),
        nonce=_uint(r, "nonce", "request"),
        deadline=_uint(r, "deadline", "request"),
        signature=signature or None,
    )
    return CosignPayload(payout, request)


# --------------------------------------------------------------------------- metrics


class CosignerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.signed = Counter(
            "watcher_cosigner_signed", "Signatures given (new payloads)", ["chain_id"], registry=r
        )
        self.refused = Counter(
            "watcher_cosigner_refused", "Payloads refused, by reason", ["reason"], registry=r
        )
        self.repeated = Counter(
            "watcher_cosigner_repeated",
            "Payloads asked again and answered from the store",
            ["outcome"],
            registry=r,
        )
        self.unauthorized = Counter(
            "watcher_cosigner_unauthorized", "Requests with no or a wrong bearer token", registry=r
        )


# --------------------------------------------------------------------------- service


@dataclass(frozen=True)
class _Checked:
    payout: Payout
    token: TokenConfig
    account: str
    nonce: int
    request_digest: str
    first: bool  # False: this id was signed before (same contents); not counted again

    def record(self, now: float) -> store.SignedPayout:
        p = self.payout
        return store.SignedPayout(
            chain_id=p.chain_id,
            vault=p.vault,
            payout_id=p.id,
            token=p.token,
            to=p.to,
            amount=p.amount,
            account=self.account,
            nonce=self.nonce,
            request_digest=self.request_digest,
            signed_at=now,
        )


@dataclass(frozen=True)
class _Decided:
    """One payload's answer in a batch, and how it came to be (for the log)."""

    answer: store.Answer
    prior: store.Answer | None  # answered before: this is that answer again
    refusal: Refusal | None
    checked: _Checked | None


class Cosigner:
    def __init__(
        self,
        config: CosignerConfig,
        signer: PayoutSigner,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        metrics: CosignerMetrics | None = None,
    ) -> None:
        self.config = config
        self.signer = signer
        self.engine = engine
        self.clock = clock
        self.metrics = metrics or CosignerMetrics()
        self._lock = asyncio.Lock()
        self._window: _Window | None = None

    async def start(self) -> None:
        await store.create(self.engine)

    async def cosign(self, body: Any) -> store.Answer:
        """The answer to one request body: a signature, or a refusal (stored unless it is
        about the body's shape). Raises :class:`Refusal` for a malformed body or
        ``STORE_UNAVAILABLE``."""
        (answer,) = await self.cosign_many([body])
        if isinstance(answer, Refusal):
            raise answer
        return answer

    async def cosign_many(self, bodies: Sequence[Any]) -> list[store.Answer | Refusal]:
        """The answers to several request bodies, in order, decided one after the other
        as if each came alone (a later one sees what an earlier one signed: its limits,
        its (account, nonce) and id) and committed together in one store transaction.
        A malformed body gets its :class:`Refusal` (not stored) in its place; a store
        failure refuses them all (raises ``STORE_UNAVAILABLE``): nothing was signed."""
        parsed: list[CosignPayload | Refusal] = []
        for body in bodies:
            try:
                parsed.append(parse_payload(body))
            except Refusal as exc:
                parsed.append(exc)
        done: list[_Decided] = []
        try:
            async with self._lock:
                try:
                    async with self.engine.begin() as conn:
                        for payload in parsed:
                            if not isinstance(payload, Refusal):
                                done.append(await self._decide(conn, payload))
                except BaseException:
                    # Nothing of this batch was committed, but it may have added to the
                    # limit window (the payload that failed too): the window is read
                    # back from the store next time.
                    self._window = None
                    raise
        except Refusal:
            raise
        except Exception as exc:
            from sqlalchemy.exc import SQLAlchemyError

            if not isinstance(exc, SQLAlchemyError | OSError):
                raise
            log.warning("store unavailable: %s", type(exc).__name__)
            raise Refusal(STORE_UNAVAILABLE, "the co-signer's store failed; retry") from None
        # Committed: only now are the answers logged, counted and given out.
        out: list[store.Answer | Refusal] = []
        decided = iter(done)
        for payload in parsed:
            if isinstance(payload, Refusal):
                out.append(payload)
                continue
            d = next(decided)
            self._report(payload, d)
            out.append(d.answer)
        return out

    async def _decide(self, conn: Any, payload: CosignPayload) -> _Decided:
        """One payload's answer inside the batch's transaction (under the lock)."""
        p = payload.payout
        prior = await store.find_answer(conn, payload.hash())
        if prior is not None:
            return _Decided(prior, prior, None, None)
        now = self.clock()
        refusal: Refusal | None = None
        checked: _Checked | None = None
        try:
            checked = await self._check(conn, payload, now)
        except Refusal as exc:
            refusal = exc
            answer = store.Answer(
                "refused", exc.status, exc.code, exc.message, dict(exc.details), None, None
            )
        else:
            answer = store.Answer(
                "signed", 200, None, None, {}, self.signer.address, self.signer.sign(checked.payout)
            )
            if checked.first:
                record = checked.record(now)
                await store.put_payout(conn, record)
                if self._window is not None:
                    # The next payload of the batch is checked against it (dropped
                    # with the window if the batch does not commit).
                    self._window.add(record, self._usd(p.chain_id, p.token, p.amount))
        await store.put_answer(
            conn,
            payload.hash(),
            chain_id=p.chain_id,
            vault=p.vault,
            payout_id=p.id,
            answer=answer,
            at=now,
        )
        return _Decided(answer, None, refusal, checked)

    def _report(self, payload: CosignPayload, d: _Decided) -> None:
        p = payload.payout
        if d.prior is not None:
            self.metrics.repeated.labels(d.prior.outcome).inc()
            log.info(
                "answered again chain=%d vault=%s id=%d outcome=%s%s",
                p.chain_id,
                p.vault,
                p.id,
                d.prior.outcome,
                f" reason={d.prior.code}" if d.prior.code else "",
            )
        elif d.refusal is not None:
            self._log_refusal(payload, d.refusal)
        elif d.checked is not None:
            checked = d.checked
            self.metrics.signed.labels(str(p.chain_id)).inc()
            log.info(
                "cosigned chain=%d vault=%s id=%d account=%s nonce=%d token=%s to=%s "
                "amount=%d deadline=%d signer=%s%s",
                p.chain_id,
                p.vault,
                p.id,
                checked.account,
                checked.nonce,
                p.token,
                p.to,
                p.amount,
                p.deadline,
                self.signer.address,
                "" if checked.first else " (again, later deadline)",
            )

    def _log_refusal(self, payload: CosignPayload, refusal: Refusal) -> None:
        p, r = payload.payout, payload.request
        self.metrics.refused.labels(refusal.code).inc()
        log.info(
            "refused chain=%d vault=%s id=%d account=%s nonce=%d to=%s amount=%d reason=%s: %s",
            p.chain_id,
            p.vault,
            p.id,
            r.account,
            r.nonce,
            p.to,
            p.amount,
            refusal.code,
            refusal.message,
        )

    async def _check(self, conn: Any, payload: CosignPayload, now: float) -> _Checked:
        p, r = payload.payout, payload.request
        cfg = self.config
        # 1. what is configured here
        chain = cfg.chain(p.chain_id)
        if chain is None or chain.vault != p.vault:
            raise Refusal(
                UNKNOWN_VAULT,
                f"vault {p.vault} on chain {p.chain_id} is not configured here",
                chainId=p.chain_id,
                vault=p.vault,
            )
        token = chain.token_by_address(p.token)
        if token is None:
            raise Refusal(
                UNKNOWN_TOKEN,
                f"token {p.token} is not configured on chain {p.chain_id}",
                token=p.token,
            )
        if r.chain_id != p.chain_id:
            raise Refusal(
                CHAIN_MISMATCH,
                f"the request is for chain {r.chain_id}, the payout for {p.chain_id}",
                requestChainId=r.chain_id,
            )
        req_token = self._request_token(chain, r.token)
        if req_token is None or req_token.address != token.address:
            raise Refusal(
                REQUEST_MISMATCH,
                f"the request's token {r.token!r} is not the payout's",
                field="token",
            )
        if _DECIMAL_RE.fullmatch(r.amount) is None:
            raise Refusal(
                REQUEST_MISMATCH,
                f"the request's amount {r.amount!r} is not a decimal string",
                field="amount",
            )
        try:
            units = parse_decimal_amount(r.amount, token.decimals)
        except AmountFormatError as exc:
            raise Refusal(REQUEST_MISMATCH, str(exc), field="amount") from None
        # 2. the user's own signature over the request as given
        message = {
            "account": r.account,
            "token": token.address,
            "amount": units,
            "destination": r.destination,
            "nonce": r.nonce,
            "deadline": r.deadline,
        }
        if r.signature is None:
            raise Refusal(
                USER_SIGNATURE_INVALID, "the request carries no user signature", reason="missing"
            )
        if eip712.SIGNATURE_RE.fullmatch(r.signature) is None:
            raise Refusal(
                USER_SIGNATURE_INVALID,
                "the user signature is not 0x followed by 130 hex digits",
                reason="malformed",
            )
        try:
            signed = eip712.digest_bytes("Withdraw", message, r.chain_id, chain.vault)
            signer = eip712.recover_address(signed, bytes.fromhex(r.signature[2:]))
        except ValueError:
            raise Refusal(
                USER_SIGNATURE_INVALID,
                "the user signature does not recover",
                reason="unrecoverable",
            ) from None
        if signer != r.account:
            raise Refusal(
                USER_SIGNATURE_INVALID,
                f"the request is signed by {signer}, not by the account {r.account}",
                reason="wrong_signer",
                signer=signer,
            )
        # 3. the request is this payout
        if r.destination != p.to:
            raise Refusal(
                REQUEST_MISMATCH,
                f"the payout pays {p.to}, the user asked for {r.destination}",
                field="destination",
            )
        if units != p.amount:
            raise Refusal(
                REQUEST_MISMATCH,
                f"the payout is {p.amount} base units, the user asked for {units}",
                field="amount",
                requestUnits=str(units),
            )
        if units <= 0:
            raise Refusal(AMOUNT_NOT_POSITIVE, "the amount is zero")
        request_digest = "0x" + signed.hex()
        # 4. never two contents for one id, never one request for two ids
        first = True
        before = await store.find_payout(conn, p.chain_id, p.vault, p.id)
        if before is not None:
            same = (
                before.token == p.token
                and before.to == p.to
                and before.amount == p.amount
                and before.account == r.account
                and before.nonce == r.nonce
                and before.request_digest == request_digest
            )
            if not same:
                raise Refusal(
                    PAYOUT_ID_REUSED,
                    f"payout {p.id} was signed before for other contents "
                    f"({before.amount} to {before.to}, account {before.account} nonce "
                    f"{before.nonce})",
                    payoutId=str(p.id),
                )
            first = False
        else:
            other = await store.find_by_nonce(conn, r.account, r.nonce)
            if other is not None:
                raise Refusal(
                    NONCE_REUSED,
                    f"nonce {r.nonce} of {r.account} was signed before for payout "
                    f"{other.payout_id} (chain {other.chain_id})",
                    payoutId=str(other.payout_id),
                    chainId=other.chain_id,
                )
        # 5. deadlines
        if r.deadline + cfg.max_request_age_s < now:
            raise Refusal(
                REQUEST_TOO_OLD,
                f"the request's deadline {r.deadline} is more than {cfg.max_request_age_s} s ago",
                deadline=r.deadline,
            )
        if p.deadline <= now:
            raise Refusal(
                DEADLINE_PASSED,
                f"the payout's deadline {p.deadline} has passed (now {int(now)})",
                deadline=p.deadline,
            )
        if p.deadline > now + cfg.max_deadline_s:
            raise Refusal(
                DEADLINE_TOO_FAR,
                f"the payout's deadline {p.deadline} is more than {cfg.max_deadline_s} s ahead",
                deadline=p.deadline,
                maxDeadlineS=cfg.max_deadline_s,
            )
        # 6. destination rules
        rules = cfg.destinations
        if p.to == ZERO_ADDRESS or p.to in rules.deny:
            raise Refusal(DESTINATION_DENIED, f"destination {p.to} is denied", destination=p.to)
        if rules.allow is not None and p.to not in rules.allow:
            raise Refusal(
                DESTINATION_NOT_ALLOWED,
                f"destination {p.to} is not on the allow-list",
                destination=p.to,
            )
        # 7. limits (a repeat of a counted id is not counted again)
        if first:
            await self._check_limits(conn, p, token, r.account, now)
        return _Checked(
            payout=p,
            token=token,
            account=r.account,
            nonce=r.nonce,
            request_digest=request_digest,
            first=first,
        )

    @staticmethod
    def _request_token(chain: ChainConfig, text: str) -> TokenConfig | None:
        if text[:2] in ("0x", "0X"):
            try:
                return chain.token_by_address(parse_address(text, "request.token"))
            except InputError:
                return None
        return chain.token_by_symbol(text)

    def _usd(self, chain_id: int, token_address: str, units: int) -> Decimal:
        with localcontext(EXACT):
            return self._usd_exact(chain_id, token_address, units)

    def _usd_exact(self, chain_id: int, token_address: str, units: int) -> Decimal:
        chain = self.config.chain(chain_id)
        token = None if chain is None else chain.token_by_address(token_address)
        if token is None or token.price_usd is None:
            # A payout signed under a token since removed from the config: count it at
            # the highest configured price rather than as nothing.
            prices = [
                t.price_usd for c in self.config.chains for t in c.tokens if t.price_usd is not None
            ]
            decimals = 0 if token is None else token.decimals
            return Decimal(units).scaleb(-decimals) * max(prices, default=Decimal(0))
        return Decimal(units).scaleb(-token.decimals) * token.price_usd

    async def _check_limits(
        self, conn: Any, p: Payout, token: TokenConfig, account: str, now: float
    ) -> None:
        limits = self.config.limits
        wants = (limits.account_usd, limits.global_usd, token.account_limit, token.global_limit)
        if all(w is None for w in wants):
            return
        window = await self._window_at(conn, now)
        with localcontext(EXACT):
            self._compare_limits(window, p, token, account)

    async def _window_at(self, conn: Any, now: float) -> _Window:
        """The signed payouts of the window, kept in memory (one process per store):
        read from the store once, then added to as each signature commits."""
        if self._window is None:
            window = _Window(self.config.limits.window_s)
            for row in await store.signed_since(conn, now - window.span):
                window.add(row, self._usd(row.chain_id, row.token, row.amount))
            self._window = window
        self._window.prune(now)
        return self._window

    def _compare_limits(self, window: _Window, p: Payout, token: TokenConfig, account: str) -> None:
        limits = self.config.limits

        def check(code: str, used: Decimal, add: Decimal, limit: Decimal | None, unit: str) -> None:
            if limit is not None and used + add > limit:
                who = "the account's" if code == ACCOUNT_LIMIT_EXCEEDED else "everyone's"
                raise Refusal(
                    code,
                    f"{who} payouts of the last {limits.window_s} s would total "
                    f"{_plain(used + add)} {unit}, above the limit {_plain(limit)}",
                    limit=_plain(limit),
                    used=_plain(used),
                    amount=_plain(add),
                    unit=unit,
                    windowS=limits.window_s,
                )

        if token.account_limit is not None or token.global_limit is not None:
            add = Decimal(p.amount).scaleb(-token.decimals)
            mine = window.units_account[(p.chain_id, p.token, account)]
            everyone = window.units_token[(p.chain_id, p.token)]
            check(
                ACCOUNT_LIMIT_EXCEEDED,
                Decimal(mine).scaleb(-token.decimals),
                add,
                token.account_limit,
                token.symbol,
            )
            check(
                GLOBAL_LIMIT_EXCEEDED,
                Decimal(everyone).scaleb(-token.decimals),
                add,
                token.global_limit,
                token.symbol,
            )
        if limits.account_usd is not None or limits.global_usd is not None:
            add = self._usd(p.chain_id, p.token, p.amount)
            check(
                ACCOUNT_LIMIT_EXCEEDED, window.usd_account[account], add, limits.account_usd, "USD"
            )
            check(GLOBAL_LIMIT_EXCEEDED, window.usd_total, add, limits.global_usd, "USD")


#: Exact arithmetic for limit sums: uint256 amounts times prices fit in 200 digits.
EXACT = Context(prec=200)


class _Window:
    """Running totals of the payouts signed in the last ``span`` seconds."""

    def __init__(self, span: int) -> None:
        self.span = span
        self.rows: deque[tuple[store.SignedPayout, Decimal]] = deque()
        self.units_account: defaultdict[tuple[int, str, str], int] = defaultdict(int)
        self.units_token: defaultdict[tuple[int, str], int] = defaultdict(int)
        self.usd_account: defaultdict[str, Decimal] = defaultdict(Decimal)
        self.usd_total = Decimal(0)

    def add(self, row: store.SignedPayout, usd: Decimal) -> None:
        with localcontext(EXACT):
            self.rows.append((row, usd))
            self.units_account[(row.chain_id, row.token, row.account)] += row.amount
            self.units_token[(row.chain_id, row.token)] += row.amount
            self.usd_account[row.account] += usd
            self.usd_total += usd

    def prune(self, now: float) -> None:
        """Drop what was signed ``span`` seconds ago or earlier (rows are in signing
        order; a clock that steps back keeps a row a little longer, never shorter)."""
        cutoff = now - self.span
        with localcontext(EXACT):
            while self.rows and self.rows[0][0].signed_at <= cutoff:
                row, usd = self.rows.popleft()
                self.units_account[(row.chain_id, row.token, row.account)] -= row.amount
                self.units_token[(row.chain_id, row.token)] -= row.amount
                self.usd_account[row.account] -= usd
                self.usd_total -= usd


def _plain(value: Decimal) -> str:
    """A decimal as plain text without trailing zeros: 600.000000 -> "600"."""
    return format(value.normalize(), "f")


__all__ = [
    "CODES",
    "WITHDRAW_TYPE",
    "CosignPayload",
    "Cosigner",
    "CosignerConfig",
    "CosignerConfigError",
    "CosignerMetrics",
    "Refusal",
    "load_config",
    "parse_payload",
]
