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
6. deadline passed (401 ``SIGNATURE_EXPIRED``); destination not the zero address
   (400 ``INVALID_DESTINATION``; a malformed one or a wrong checksum is 400
   ``INVALID_ADDRESS`` at step 1) and on the account's allow-list if it has one (422
   ``DESTINATION_NOT_ALLOWED``); amount ≥ the token's ``min_withdrawal`` (422
   ``BELOW_MIN_WITHDRAWAL``); amount representable in the ledger asset's precision
   (422 ``AMOUNT_PRECISION``);
7. in ONE DB transaction with the account locked: the 24-hour USD limit (422
   ``DAILY_LIMIT_EXCEEDED``), then the risk gate (``services.risk_gate.LockedBatch``,
   the same rule as ``withdrawal_hold``: ``NEGATIVE_BALANCE``,
   ``INSUFFICIENT_WITHDRAWABLE``) on amount + fee, and the hold (cross → hold, amount +
   fee) with the withdrawal row. Requests waiting meanwhile share that transaction
   (group commit, see :class:`Intake`); a rejection writes nothing of its request.

Fee (per network and token, ``withdraw_fee``; ``native_withdraw_fee`` for the coin):
the user receives exactly ``amount`` on chain; the ledger holds and later debits
``amount + fee``; on completion the fee moves to ``withdrawals.fee_account``
(``system:fees``). A withdrawal of at least ``review_threshold[asset]`` is stored in
``review`` and waits for ``watcher withdrawals approve|reject``.

Log lines (INFO, after the batch's transaction committed): ``withdrawal accepted id=…
chain=… account=… asset=… amount=… fee=… to=… nonce=… state=requested|review`` and, for
the step 7 decisions, ``withdrawal rejected chain=… account=… asset=… amount=… nonce=…
reason=INSUFFICIENT_WITHDRAWABLE``. Steps 1-6 answer malformed, unsigned or expired
input with its 4xx only: anyone can send those, and they change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from eth_utils.address import to_checksum_address
from sqlalchemy.exc import IntegrityError

from watcher.chain import eip712
from watcher.chain.vault import ZERO_ADDRESS
from watcher.crashpoints import crash_point
from watcher.domain.amounts import (
    AmountFormatError,
    chain_to_ledger,
    format_amount,
    parse_decimal_amount,
)
from watcher.domain.errors import (
    DomainError,
    ErrorKind,
    conflict,
    invalid,
    rule,
    unauthorized,
    unavailable,
)
from watcher.domain.parsing import UINT256_MAX, InputError, parse_address, parse_uint
from watcher.domain.states import WithdrawalState
from watcher.services.foreground import Foreground
from watcher.services.risk_gate import AccountStateError, LockedBatch
from watcher.settings import NetworkConfig, Settings
from watcher.store import withdrawals as repo
from watcher.store.db import SessionFactory
from watcher.store.models import Withdrawal

log = logging.getLogger("watcher.intake")

_DECIMAL_RE = re.compile(r"[0-9]+(\.[0-9]+)?")
DAY = timedelta(days=1)
#: A batch with fewer requests than LINGER_BELOW waits until its oldest request is
#: LINGER_S old before it starts, for others to join (see :class:`Intake`).
LINGER_S = 0.005
LINGER_BELOW = 8


@dataclass(frozen=True)
class TokenRef:
    address: str  # checksummed; ZERO_ADDRESS for the native coin
    symbol: str
    asset: str
    decimals: int
    min_withdrawal: Decimal
    fee: Decimal


REQUEST_FIELDS = (
    "account",
    "chainId",
    "token",
    "amount",
    "destination",
    "nonce",
    "deadline",
    "signature",
)


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
            raise invalid("MALFORMED_REQUEST", "the body must be a JSON object")
        missing = [k for k in REQUEST_FIELDS if k not in body]
        if missing:
            raise invalid("MISSING_FIELD", f"missing fields: {', '.join(missing)}", missing=missing)
        unknown = sorted(k for k in body if k not in REQUEST_FIELDS)
        if unknown:
            errors = [{"field": k, "message": "unknown field"} for k in unknown]
            raise invalid("INVALID_REQUEST", f"unknown fields: {', '.join(unknown)}", errors=errors)
        return cls(
            account=_address(body["account"], "account"),
            chain_id=_uint(body["chainId"], "chainId"),
            token=_text(body["token"], "token"),
            amount=_text(body["amount"], "amount"),
            destination=_address(body["destination"], "destination"),
            nonce=_uint(body["nonce"], "nonce"),
            deadline=_uint(body["deadline"], "deadline"),
            signature=_text(body["signature"], "signature"),
        )


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise invalid("MALFORMED_REQUEST", f"{name} must be a string", field=name)
    return value


def _uint(value: Any, name: str) -> int:
    # JSON numbers or strings of ASCII digits (uint256 nonces do not fit a JS number).
    try:
        return parse_uint(value, name)
    except InputError as exc:
        raise invalid(exc.code, exc.message, field=name) from None


def _address(value: Any, name: str) -> str:
    try:
        return parse_address(value, name)
    except InputError as exc:
        raise invalid(exc.code, exc.message, field=name) from None


def resolve_token(network: NetworkConfig, token: str) -> TokenRef | None:
    """A token by address, the zero address (native), or a configured symbol. Text that
    starts like an address is held to the address rule (``InputError`` otherwise)."""
    if token[:2] in ("0x", "0X"):
        token = parse_address(token, "token")
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


@dataclass
class _Queued:
    """A request that passed every check that needs no database, waiting for a batch."""

    row: Withdrawal
    digest: str
    future: asyncio.Future[Accepted]
    at: float  # the event loop's time when it was queued

    @property
    def key(self) -> tuple[str, int]:
        return (self.row.account, self.row.nonce)


#: What a queued request ends as: accepted (new or replayed), or a 4xx to raise.
_Outcome = Accepted | DomainError


class Intake:
    """Checks requests, then group-commits them: every request waiting while the previous
    batch was being written goes into ONE DB transaction (``max_batch`` at most).

    A batch: replays found with one query; the accounts locked in key order and their
    rows loaded with a fixed number of queries (:class:`~watcher.services.risk_gate.
    LockedBatch`); each request decided in arrival order on the state that includes the
    holds approved before it (the 24-hour limit likewise); the approved withdrawals and
    their holds written with multi-row statements. A rejected request writes nothing; an
    accepted one commits with its batch. If the batch's transaction fails (a concurrent
    twin on another replica, a database error), each of its requests is retried alone,
    so one bad request never sinks the others.

    Linger: a batch of fewer than ``LINGER_BELOW`` requests starts when its oldest
    request is ``linger_s`` old (5 ms), so that requests arriving meanwhile share its
    transaction. A batch costs ~2.9 ms of CPU on SQLite whatever its size, plus
    ~0.3-0.4 ms per request (bench/intake.py: a dozen statements, the session's BEGIN and
    COMMIT); at 500 requests/s batches hold a few requests, so the part per batch is most
    of the intake's CPU. Measured on the withdrawal bench (bench/README.md), A/B
    interleaved: with 5 ms instead of 2 ms the intake alone at 500/s used 78-80 % of a
    core instead of 83-88 % (its p99 the same within the runs' noise, 34-51 ms), and with
    the payout pipeline beside it the open loop's p99 was lower in four of five pairs.
    Under load the queue is longer than that and nothing lingers: the requests that
    arrived during the previous batch are the next one. A lone request waits 5 ms more.
    """

    def __init__(
        self,
        settings: Settings,
        sessions: SessionFactory,
        *,
        clock: Callable[[], float] = time.time,
        max_batch: int = 256,
        linger_s: float = LINGER_S,
        foreground: Foreground | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.clock = clock
        self.max_batch = max_batch
        self.linger_s = linger_s
        # Announces queued requests to the background roles (sender, tracker), which
        # let the batch go first (services/foreground.py).
        self.foreground = foreground or Foreground()
        self._queue: list[_Queued] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # committed batch transactions (for tests and metrics)

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
        try:
            token = resolve_token(network, req.token)
        except InputError as exc:
            raise invalid(exc.code, exc.message, field="token") from None
        if token is None:
            raise rule(
                "UNSUPPORTED_TOKEN",
                f"token {req.token!r} is not configured on {network.name}",
                token=req.token,
                chainId=req.chain_id,
            )
        if _DECIMAL_RE.fullmatch(req.amount) is None:
            raise invalid("INVALID_AMOUNT", f"amount {req.amount!r} is not a plain decimal string")
        try:
            amount = parse_decimal_amount(req.amount, token.decimals)
        except AmountFormatError as exc:
            raise invalid("AMOUNT_PRECISION", str(exc), decimals=token.decimals) from None
        if amount <= 0:
            raise rule("AMOUNT_NOT_POSITIVE", "amount must be greater than zero")
        if amount > UINT256_MAX:
            raise invalid(
                "INVALID_AMOUNT",
                f"amount {req.amount} is above what a uint256 holds in base units",
                field="amount",
            )

        # Signature: recover once, and use the same encoded message for the digest.
        message = {
            "account": req.account,
            "token": token.address,
            "amount": amount,
            "destination": req.destination,
            "nonce": req.nonce,
            "deadline": req.deadline,
        }
        if eip712.SIGNATURE_RE.fullmatch(req.signature) is None:
            raise unauthorized("BAD_SIGNATURE", "signature must be 0x followed by 130 hex digits")
        try:
            signed = eip712.digest_bytes("Withdraw", message, req.chain_id, network.vault)
            signer = eip712.recover_signer(signed, bytes.fromhex(req.signature[2:]))
        except ValueError as exc:
            raise unauthorized("BAD_SIGNATURE", f"signature does not recover: {exc}") from None
        if signer != bytes.fromhex(req.account[2:]):
            other = str(to_checksum_address(signer))
            raise unauthorized(
                "WRONG_SIGNER",
                f"signed by {other}, not by the account {req.account}",
                signer=other,
                account=req.account,
            )
        digest = "0x" + signed.hex()
        try:
            row = self._prepare(req, network, token, amount, digest)
        except DomainError:
            # A replay is answered before these checks: a client's retry of an accepted
            # request gets its withdrawal back even after the deadline passed.
            existing = await self._lookup(req.account, req.nonce)
            if existing is not None:
                return _replay(existing, digest)
            raise
        return await self._enqueue(row, digest)

    def _prepare(
        self,
        req: WithdrawalRequest,
        network: NetworkConfig,
        token: TokenRef,
        amount: int,
        digest: str,
    ) -> Withdrawal:
        """The checks after the replay check that need no database; the new row."""
        now = self.clock()
        if req.deadline <= now:
            raise unauthorized(
                "SIGNATURE_EXPIRED",
                f"the request's deadline {req.deadline} has passed (now {int(now)})",
                deadline=req.deadline,
                now=int(now),
            )
        destination = req.destination  # checksummed by from_json (parse_address)
        if int(destination, 16) == 0:
            raise invalid("INVALID_DESTINATION", "destination must not be the zero address")
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
            raise invalid(
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
        return Withdrawal(
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
            payout_deadline=None,
            cosignatures=None,
        )

    async def _lookup(self, account: str, nonce: int) -> Withdrawal | None:
        async with self.sessions() as s:
            return await repo.find_by_account_nonce(s, account, nonce)

    def _allowlist(self, account: str) -> set[str] | None:
        for key, destinations in self.settings.withdrawals.allowlist.items():
            if key.lower() == account.lower():
                return {d.lower() for d in destinations}
        return None

    # ------------------------------------------------------------------ group commit

    async def _enqueue(self, row: Withdrawal, digest: str) -> Accepted:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        self._queue.append(_Queued(row, digest, future, loop.time()))
        if self._worker is None or self._worker.done():
            self.foreground.enter()
            self._worker = asyncio.create_task(self._drain(), name="withdrawal-intake")
        # Shielded: a client that hangs up does not cancel a decision in flight (it
        # commits or not with its batch; the client's retry gets it back as a replay).
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            await self._drain_queue()
        finally:
            self.foreground.leave()

    async def _drain_queue(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if len(self._queue) < LINGER_BELOW:
                # Few requests waiting: give the next ones a moment to join the batch
                # (counted from the oldest's arrival; one that waited through the
                # previous batch does not wait again).
                wait = self._queue[0].at + self.linger_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            batch = self._queue[: self.max_batch]
            del self._queue[: len(batch)]
            outcomes: list[_Outcome | BaseException]
            try:
                outcomes = list(await self._commit(batch))
            except Exception:
                outcomes = [await self._alone(q) for q in batch]
            for q, outcome in zip(batch, outcomes, strict=True):
                if q.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    q.future.set_exception(outcome)
                else:
                    q.future.set_result(outcome)

    async def _alone(self, q: _Queued) -> _Outcome | BaseException:
        """A request of a failed batch, in its own transaction."""
        try:
            return (await self._commit([q]))[0]
        except IntegrityError:
            # A concurrent twin with the same (account, nonce) committed first.
            existing = await self._lookup(q.row.account, q.row.nonce)
            if existing is None:
                return _failed("the withdrawal could not be stored; retry the request")
            return _replayed(existing, q.digest)
        except Exception as exc:  # delivered to the request that caused it
            return exc

    async def _commit(self, batch: list[_Queued]) -> list[_Outcome]:
        outcomes: dict[int, _Outcome] = {}
        twins: dict[int, _Queued] = {}  # index → the earlier request of the batch it repeats
        rejected: list[tuple[Withdrawal, str]] = []
        async with self.sessions.begin() as s:
            existing = await repo.find_by_account_nonces(s, [q.key for q in batch])
            fresh = [q for q in batch if q.key not in existing]
            gate = await LockedBatch.lock(s, self.settings, [q.row.account for q in fresh])
            limit = self.settings.withdrawals.daily_limit_usd
            taken: dict[str, list[tuple[str, int]]] = {}
            if limit is not None and fresh:
                since = datetime.fromtimestamp(self.clock(), UTC) - DAY
                taken = await repo.held_since_many(s, [q.row.account for q in fresh], since)
            accepted: dict[tuple[str, int], _Queued] = {}
            for i, q in enumerate(batch):
                if q.key in existing:
                    outcomes[i] = _replayed(existing[q.key], q.digest)
                elif q.key in accepted:
                    twins[i] = accepted[q.key]
                else:
                    try:
                        self._decide(gate, q, limit, taken)
                    except DomainError as exc:
                        outcomes[i] = exc
                        rejected.append((q.row, exc.code))
                    else:
                        accepted[q.key] = q
            rows = [q.row for q in accepted.values()]
            # Ids first (the withdrawals' and their holds', one statement), so the holds
            # and the rows that point at them are written once each, with no read-back
            # and no update.
            new_ids, hold_ids = await repo.new_ids_with_holds(s, len(rows))
            for row, new_id in zip(rows, new_ids, strict=True):
                row.id = new_id
                row.account_id = gate.accounts[row.account].id
            hold_tx_ids = await gate.post_holds(s, rows, hold_ids)
            for row, hold_tx_id in zip(rows, hold_tx_ids, strict=True):
                row.hold_tx_id = hold_tx_id
            await repo.insert_new(s, rows)
            if rows:
                crash_point("intake.before_commit")
        if rows:
            crash_point("intake.after_commit")
        self.batches += 1
        if log.isEnabledFor(logging.INFO):
            self._log_decisions(rows, rejected)
        for i, q in enumerate(batch):
            if i in twins:
                outcomes[i] = _replayed(twins[i].row, q.digest)
            elif i not in outcomes:
                outcomes[i] = Accepted(q.row, created=True)
        return [outcomes[i] for i in range(len(batch))]

    def _log_decisions(
        self, accepted: list[Withdrawal], rejected: list[tuple[Withdrawal, str]]
    ) -> None:
        """One line per decision of a committed batch (amounts in asset units, the fee
        apart)."""
        for row in accepted:
            precision = self.settings.assets[row.asset].precision
            log.info(
                "withdrawal accepted id=%d chain=%d account=%s asset=%s amount=%s fee=%s "
                "to=%s nonce=%d state=%s",
                row.id,
                row.chain_id,
                row.account,
                row.asset,
                format_amount(row.ledger_amount - row.fee, precision),
                format_amount(row.fee, precision),
                row.destination,
                row.nonce,
                row.state,
                extra={"withdrawal_id": row.id, "chain_id": row.chain_id},
            )
        for row, reason in rejected:
            precision = self.settings.assets[row.asset].precision
            log.info(
                "withdrawal rejected chain=%d account=%s asset=%s amount=%s nonce=%d reason=%s",
                row.chain_id,
                row.account,
                row.asset,
                format_amount(row.ledger_amount - row.fee, precision),
                row.nonce,
                reason,
                extra={"chain_id": row.chain_id},
            )

    def _decide(
        self,
        gate: LockedBatch,
        q: _Queued,
        limit: Decimal | None,
        taken: dict[str, list[tuple[str, int]]],
    ) -> None:
        """Raises the request's 4xx, or approves it (its hold counts from now on)."""
        row = q.row
        if limit is not None:
            self._check_daily_limit(row, limit, taken[row.account], gate.market.asset_prices)
        try:
            result = gate.withdrawal(row.account, row.asset, row.ledger_amount)
        except AccountStateError:
            # Fail closed with a clear answer (422 ACCOUNT_STATE_INCOMPLETE); nothing of
            # this request is written.
            raise
        if not result.allowed:
            raise _rejected(result.reason or "REJECTED", dict(result.details))
        if limit is not None:
            taken[row.account].append((row.asset, row.ledger_amount))

    def _check_daily_limit(
        self,
        row: Withdrawal,
        limit: Decimal,
        taken: list[tuple[str, int]],
        asset_prices: Mapping[str, Decimal],
    ) -> None:
        total = Decimal(0)
        for asset, units in [*taken, (row.asset, row.ledger_amount)]:
            total += self._usd(asset, units, asset_prices)
        if total > limit:
            raise rule(
                "DAILY_LIMIT_EXCEEDED",
                f"withdrawals of the last 24 h would total {total} USD, above the limit {limit}",
                limitUsd=limit,
                totalUsd=total,
            )

    def _usd(self, asset: str, units: int, asset_prices: Mapping[str, Decimal]) -> Decimal:
        cfg = self.settings.assets[asset]
        price = asset_prices.get(asset)
        if price is None:
            if asset != self.settings.ledger.settlement_asset:
                raise rule("PRICE_UNAVAILABLE", f"no USD price for {asset} to check the limit")
            price = Decimal(1)
        return Decimal(units).scaleb(-cfg.precision) * price


def _replay(existing: Withdrawal, digest: str) -> Accepted:
    if existing.request_digest != digest:
        raise conflict(
            "NONCE_REUSED",
            f"nonce {existing.nonce} of {existing.account} was already used by another "
            f"request (withdrawal {existing.id})",
            withdrawalId=existing.id,
        )
    return Accepted(existing, created=False)


def _replayed(existing: Withdrawal, digest: str) -> _Outcome:
    try:
        return _replay(existing, digest)
    except DomainError as exc:
        return exc


_REJECTION_MESSAGES = {
    "NEGATIVE_BALANCE": "the account has a negative balance; withdrawals are blocked",
    "INSUFFICIENT_WITHDRAWABLE": "the amount plus fee exceeds the max withdrawable",
}


def _rejected(code: str, details: dict[str, object]) -> DomainError:
    """The risk gate's refusal as a rule error."""
    return DomainError(
        code, _REJECTION_MESSAGES.get(code, code.lower()), dict(details), kind=ErrorKind.RULE
    )


def _failed(message: str) -> DomainError:
    """The batch could not be stored: retrying the same signed request is safe."""
    return unavailable("INTAKE_FAILED", message)
