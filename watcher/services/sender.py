"""Withdrawal sender: one per (network, hot wallet). Turns approved withdrawals into
signed ``vault.withdraw(id, token, to, amount)`` EIP-1559 transactions and broadcasts
them to every configured RPC endpoint.

Guarantees across crash, restart and reorg:

* **Persist, then broadcast.** A batch is signed outside the database (signing is the
  slow part and must not hold SQLite's writer lock), then ONE DB transaction stores
  every signed raw tx and its hash (attempt ``signed``), moves the withdrawals to
  ``signed`` and advances the stored nonce. Only after that commit is anything sent.
  A crash before the commit leaves nothing signed anywhere; a crash after it leaves
  ``signed`` attempts that the next tick broadcasts byte for byte (same hash), so a
  withdrawal is never signed twice under two nonces.
* If any withdrawal of the batch changed state meanwhile (an operator cancelled it) or
  the stored nonce is not the one the batch was signed with, the whole batch is
  dropped unsent and rebuilt next tick: no nonce is ever skipped.
* Funds first: the VAULT pays the token (``withdraw`` transfers from its balance) and
  the HOT WALLET pays gas. Before signing, the vault's balance of each token minus the
  amounts already signed but not mined must cover the withdrawal, and the hot
  wallet's ETH must cover ``gas_limit × maxFeePerGas`` for it and for every unmined
  attempt. Otherwise the withdrawal waits as ``queued`` with the reason in its
  ``reason`` field and a HOT_WALLET_LOW alarm is latched; it is sent on the first
  tick after the funds arrive.
* On start, and again before each batch is signed, the stored nonce is synced with
  the chain (see ``services.nonces``): moved up to the chain's pending nonce if a
  foreign transaction of the hot key passed it, and a gap (nonces we hold attempts
  for that the node does not know, e.g. after it lost its pool) is repaired by
  re-sending those attempts before anything new is signed.
  The vault's id guard (``AlreadyWithdrawn``) makes a second payout of one id
  impossible whatever happens here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from watcher.chain.broadcast import Outcome, broadcast_raw, fee_quote
from watcher.chain.payout import Payout as PayoutAuth
from watcher.chain.payout import signatures_blob
from watcher.chain.rpc import RpcClient
from watcher.chain.signer import HotSigner, SignedTx
from watcher.chain.vault import (
    ZERO_ADDRESS,
    balance_request,
    decode_uint,
    decode_validators,
    paused_request,
    validators_request,
    withdraw_calldata,
)
from watcher.crashpoints import crash_point
from watcher.domain.amounts import format_amount
from watcher.domain.gas import FeeCaps, Fees, gwei_to_wei, initial_fees
from watcher.domain.states import AttemptState, WithdrawalState
from watcher.metrics import Metrics
from watcher.services.cosigning import (
    PAUSED_PREFIX,
    QUORUM_PREFIX,
    REFUSED_PREFIX,
    Cosigning,
    CosignRequest,
    Quorum,
    Short,
)
from watcher.services.cosigning import Outcome as CosignOutcome
from watcher.services.foreground import Foreground
from watcher.services.nonces import NonceManager, NonceSync
from watcher.services.vault_pause import store_pause
from watcher.settings import NetworkConfig, WithdrawalSettings
from watcher.store import withdrawals as repo
from watcher.store.alarms import AlarmKind, raise_alarm
from watcher.store.db import SessionFactory
from watcher.store.events import after_commit
from watcher.store.models import TxAttempt, utcnow

#: Signatures between two yields to the event loop (~0.1 ms each).
SIGN_SLICE = 16
#: Withdrawals signed and persisted per DB transaction (see :meth:`Sender.sign_ready`);
#: fewer while withdrawal requests are coming in (``Foreground.chunk_size``).
SIGN_CHUNK = 64
#: A tick that found work looks again at once, for up to this many poll intervals:
#: requests that arrived while a batch was signed do not wait for the next interval
#: (with ``max_instances=1`` a tick that overran its interval also lost the next slot).
BUSY_TICK_INTERVALS = 5

log = logging.getLogger("watcher.sender")

#: Queued reasons whose alarms the sender raises where it decides them (not HOT_WALLET_LOW).
OWN_PREFIXES = (PAUSED_PREFIX, QUORUM_PREFIX, REFUSED_PREFIX)

W = WithdrawalState
A = AttemptState


def fee_caps(settings: WithdrawalSettings) -> FeeCaps:
    return FeeCaps(
        max_fee_per_gas=gwei_to_wei(settings.max_fee_per_gas_gwei),
        max_priority_fee_per_gas=gwei_to_wei(settings.max_priority_fee_per_gas_gwei),
    )


class Payout(Protocol):
    """What a ``vault.withdraw`` transaction is built from (a row or its columns)."""

    @property
    def id(self) -> int: ...
    @property
    def token(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def amount(self) -> int: ...


def build_withdraw_tx(
    *,
    chain_id: int,
    vault: str,
    w: Payout,
    nonce: int,
    gas: int,
    fees: Fees,
    deadline: int,
    signatures: Sequence[tuple[str, str]],
) -> dict[str, object]:
    """The EIP-1559 ``vault.withdraw`` transaction of ``w``, authorized by the
    validators' ``signatures`` (signer, signature) over the payout with ``deadline``."""
    blob = signatures_blob(signatures)
    return {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "to": vault,
        "value": 0,
        "data": withdraw_calldata(w.id, w.token, w.destination, w.amount, deadline, blob),
        "gas": gas,
        "maxFeePerGas": fees.max_fee_per_gas,
        "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
    }


@dataclass
class SendReport:
    signed: int = 0
    broadcast: int = 0
    queued: int = 0
    reasons: dict[int, str] = field(default_factory=dict)


class Sender:
    def __init__(
        self,
        *,
        network: NetworkConfig,
        settings: WithdrawalSettings,
        sessions: SessionFactory,
        rpc: RpcClient,
        http: aiohttp.ClientSession,
        signer: HotSigner,
        clock: Callable[[], float] = time.time,
        foreground: Foreground | None = None,
        cosigner_token: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.network = network
        self.settings = settings
        self.sessions = sessions
        self.rpc = rpc
        self.http = http
        self.signer = signer
        self.clock = clock
        self.foreground = foreground or Foreground()
        self.chain_id = network.chain_id
        self.name = f"sender:{network.name}"
        self.interval_seconds = float(settings.poll_interval_seconds)
        self.caps = fee_caps(settings)
        self.nonces = NonceManager(sessions, rpc, network.chain_id, signer.address)
        self.cosigning = Cosigning(
            http,
            network.cosigners,
            cosigner_token,
            timeout_s=float(settings.cosign_timeout_seconds),
        )
        self.metrics = metrics
        # Withdrawals below the quorum: since when (clock) each has waited in this process.
        self._short_since: dict[int, float] = {}
        # The vault's pause as last stored (None: not read yet in this process).
        self._paused: bool | None = None
        self.started = False
        self.last = SendReport()

    # ------------------------------------------------------------------ tick

    async def tick(self) -> None:
        self.last = SendReport()
        resuming = not self.started
        if resuming:
            await self.start()
        await self.broadcast_signed(resuming=resuming)
        if self._paused is None or self._paused:
            # Learn the pause at start, and keep reading it while paused, so that status
            # shows an unpause even when no withdrawal is waiting.
            await self._watch_pause()
        until = time.monotonic() + BUSY_TICK_INTERVALS * self.interval_seconds
        while await self.sign_ready():
            await self.broadcast_signed()
            if time.monotonic() >= until:
                break
        if self.metrics is not None:
            for event in ("signed", "broadcast"):
                if n := getattr(self.last, event):
                    self.metrics.withdrawal_events.labels(self.network.name, event).inc(n)

    def forget(self) -> None:
        """A new lease: another replica may have used the wallet's nonces meanwhile; the
        next tick syncs the stored nonce with the chain again first."""
        self.started = False

    async def start(self) -> None:
        """Sync the stored nonce with the chain and repair a gap (once per process)."""
        await self._repair_gap(await self.nonces.sync(), None)
        self.started = True

    async def _repair_gap(self, sync: NonceSync, fees: Fees | None) -> None:
        """After a sync with the chain (the stored next nonce never below the chain's
        pending one), repair a gap: nonces we hold signed attempts for that the node
        does not know (it restarted and lost its pool, or never got them) are re-sent,
        or everything signed after them would wait until the stuck timer bumps it."""
        if not sync.gap:
            return
        if fees is None:
            quote = await fee_quote(self.rpc)
            fees = initial_fees(quote.base_fee, quote.tip, self.caps)
        await self.nonces.repair_gap(
            sync,
            http=self.http,
            urls=self.network.rpc_urls,
            signer=self.signer,
            filler_fees=fees,
        )

    # ------------------------------------------------------------------ broadcast

    async def broadcast_signed(self, *, resuming: bool = False) -> int:
        """Broadcast every persisted attempt not yet known to be sent (crash recovery and
        the normal path alike), in nonce order. ``resuming``: the first call of this
        process (or lease), whose pending attempts were signed before it took over."""
        async with self.sessions() as s:
            pending = await repo.raw_in(
                s, self.chain_id, [A.SIGNED.value], sender=self.signer.address
            )
        if not pending:
            return 0
        if resuming:
            log.info(
                "re-sending %d attempt(s) signed before this start, byte for byte: withdrawals %s",
                len(pending),
                ",".join(str(w) for _, w, _ in pending[:50]),
                extra={"chain_id": self.chain_id},
            )
        head = await self.rpc.block_number()  # stuck_after_blocks counts from here
        results = await broadcast_raw(
            self.http, self.network.rpc_urls, [raw for _, _, raw in pending]
        )
        crash_point("sender.broadcast.after_send")
        sent: list[tuple[int, int]] = []
        for (attempt_id, withdrawal_id, _), result in zip(pending, results, strict=True):
            # "nonce too low" means the nonce is consumed, most likely by this very tx
            # before a crash; the tracker finds its receipt (or alarms if another won).
            if result.outcome.is_in_pool or result.outcome is Outcome.NONCE_USED:
                sent.append((attempt_id, withdrawal_id))
            else:
                log.warning(
                    "attempt %d of withdrawal %d not accepted: %s %s",
                    attempt_id,
                    withdrawal_id,
                    result.outcome.value,
                    "; ".join(result.messages),
                    extra={"chain_id": self.chain_id, "withdrawal_id": withdrawal_id},
                )
        if sent:
            await self._mark_broadcast(sent, head)
            crash_point("sender.broadcast.after_mark")
        self.last.broadcast += len(sent)
        return len(sent)

    async def _mark_broadcast(self, sent: Sequence[tuple[int, int]], head: int) -> None:
        async with self.sessions.begin() as s:
            # Still-signed attempts only: the tracker may have got there first.
            await repo.mark_broadcast(s, [attempt_id for attempt_id, _ in sent], head=head)

    # ------------------------------------------------------------------ sign

    async def sign_ready(self) -> int:
        """Sign and persist the next batch of approved withdrawals; returns how many."""
        async with self.sessions() as s:
            candidates = await repo.ready_to_send(s, self.chain_id, self.settings.batch_size)
            if not candidates:
                return 0
            outflow = await repo.in_flight_outflow(s, self.chain_id)
            unmined = await repo.count_unmined(s, self.chain_id)
            snapshot = {w.id: w.state for w in candidates}
        tokens = sorted({w.token for w in candidates})
        # The chain reads at once: one round trip to the node instead of several (each
        # waits behind the node's mining when it is busy, and the sender has nothing
        # else to do meanwhile).
        quote, sync, chain = await asyncio.gather(
            fee_quote(self.rpc), self.nonces.sync(), self._chain_reads(tokens)
        )
        vault_balances, gas_balance, paused, validators = chain
        if paused:
            reason = (
                f"{PAUSED_PREFIX}: the vault {self.network.vault} is paused on chain; "
                "withdrawals wait until its guardian unpauses it"
            )
            await self._store_pause(True, reason)
            await self._persist([], dict.fromkeys(snapshot, reason), snapshot, 0, None, {})
            self.last.queued += len(snapshot)
            return 0
        if self._paused:
            await self._store_pause(False, None)
        fees = initial_fees(quote.base_fee, quote.tip, self.caps)
        # Never sign under a nonce the chain has already used (a foreign transaction of
        # the hot key took it; the sync moved past it), nor behind a gap the node has.
        await self._repair_gap(sync, fees)
        first_nonce = sync.next_nonce
        gas_each = self.settings.gas_limit * fees.max_fee_per_gas
        gas_left = gas_balance - unmined * gas_each
        available = {t: vault_balances[t] - outflow.get(t, 0) for t in tokens}

        funded: list[repo.Ready] = []
        short: dict[int, str] = {}
        for w in candidates:
            if gas_left < gas_each:
                short[w.id] = (
                    f"hot wallet {self.signer.address} lacks gas: needs "
                    f"{format_amount(gas_each, 18)} {self.network.native_asset} per withdrawal, "
                    f"{format_amount(max(gas_left, 0), 18)} free"
                )
                continue
            if available[w.token] < w.amount:
                short[w.id] = (
                    f"vault lacks {self._token_label(w.token)}: needs {w.amount} base units, "
                    f"{max(available[w.token], 0)} free"
                )
                continue
            available[w.token] -= w.amount
            gas_left -= gas_each
            funded.append(w)

        # The validators' signatures, asked only for what can be paid now (a co-signer
        # counts what it signs against its limits).
        chosen, cosigned = await self._cosign(funded, validators, short)

        # In chunks, each signed then persisted in its own transaction and broadcast:
        # a short hold of the writer connection each. A chunk's broadcast runs while
        # the next chunk is signed and persisted (the node's answer takes ~10 ms for a
        # chunk, the sender would only wait for it); one broadcast at a time, so the
        # node gets the nonces in order. The first chunk goes even if nothing was
        # chosen: it stores the queued reasons.
        done = 0
        start = 0  # the position of the chunk in ``chosen``: its nonces follow from it
        broadcasting: asyncio.Task[int] | None = None
        try:
            # A queued intake batch goes first before each chunk.
            async for chunk in self.foreground.chunks(chosen, SIGN_CHUNK, at_least_one=True):
                signed: list[tuple[repo.Ready, int, SignedTx]] = []
                for offset, w in enumerate(chunk):
                    nonce = first_nonce + start + offset
                    q = cosigned[w.id]
                    tx = build_withdraw_tx(
                        chain_id=self.chain_id,
                        vault=self.network.vault,
                        w=w,
                        nonce=nonce,
                        gas=self.settings.gas_limit,
                        fees=fees,
                        deadline=q.deadline,
                        signatures=q.signatures,
                    )
                    signed.append((w, nonce, self.signer.sign_transaction(tx)))
                    if offset % SIGN_SLICE == SIGN_SLICE - 1:
                        # Let requests and DB results waiting on the event loop through.
                        await asyncio.sleep(0)
                # The queued reasons go with the first chunk.
                reasons = short if start == 0 else {}
                ids = [w.id for w in chunk] + list(reasons)
                ok = await self._persist(
                    signed,
                    reasons,
                    {i: snapshot[i] for i in ids},
                    first_nonce + start,
                    fees,
                    {w.id: cosigned[w.id] for w, _, _ in signed},
                )
                if not ok:
                    break
                done += len(signed)
                self.last.queued += len(reasons)
                self.last.reasons.update(reasons)
                start += len(chunk)
                if signed and start < len(chosen):
                    if broadcasting is not None:
                        await broadcasting
                    broadcasting = asyncio.create_task(
                        self.broadcast_signed(), name=f"{self.name}:broadcast"
                    )
        except BaseException:
            # Persisted attempts are safe to leave unsent (the next tick sends them):
            # stop the broadcast in flight, then let the error through.
            if broadcasting is not None:
                broadcasting.cancel()
                await asyncio.wait([broadcasting])
            raise
        if broadcasting is not None:
            await broadcasting
        self.last.signed += done
        return done

    async def _persist(
        self,
        signed: Sequence[tuple[repo.Ready, int, SignedTx]],
        short: dict[int, str],
        snapshot: dict[int, str],
        first_nonce: int,
        fees: Fees | None,
        cosigned: dict[int, Quorum],
    ) -> bool:
        async with self.sessions.begin() as s:
            current = await repo.states_of(s, list(snapshot), lock=True)
            changed = [i for i, state in snapshot.items() if current.get(i) != state]
            stored = await repo.next_nonce(s, self.chain_id, self.signer.address, lock=True)
            # The nonce matters only to what is signed; reasons alone store at any nonce.
            if changed or (signed and (stored is None or stored != first_nonce)):
                log.info(
                    "sign batch dropped unsent (withdrawals %s changed or nonce moved); "
                    "rebuilding next tick",
                    changed[:5],
                    extra={"chain_id": self.chain_id},
                )
                return False
            if signed:
                assert fees is not None
                await repo.take_nonces(s, self.chain_id, self.signer.address, len(signed))
            await repo.insert_attempts(
                s,
                [
                    TxAttempt(
                        withdrawal_id=w.id,
                        chain_id=self.chain_id,
                        sender=self.signer.address,
                        nonce=nonce,
                        tx_hash=tx.tx_hash,
                        raw_tx=tx.raw,
                        max_fee_per_gas=fees.max_fee_per_gas if fees else 0,
                        max_priority_fee_per_gas=fees.max_priority_fee_per_gas if fees else 0,
                        state=A.SIGNED.value,
                        block_number=None,
                        block_hash=None,
                        status=None,
                        broadcast_at=None,
                        broadcast_block=None,
                    )
                    for w, nonce, tx in signed
                ],
            )
            # Each withdrawal → signed with its attempt's hash, in one statement; the
            # co-signatures its transaction carries beside it (a fee bump rebuilds it).
            await repo.mark_signed(s, [w.id for w, _, _ in signed])
            await repo.set_cosignatures(
                s, {i: (q.deadline, q.to_json()) for i, q in cosigned.items()}
            )
            for ready, nonce, tx in signed:
                after_commit(
                    s,
                    log,
                    "withdrawal signed id=%d chain=%d nonce=%d tx=%s",
                    (ready.id, self.chain_id, nonce, tx.tx_hash),
                    extra={"withdrawal_id": ready.id, "chain_id": self.chain_id},
                )
            ws = await repo.withdrawals_by_id(s, list(short))
            alarms: dict[str, str] = {}
            for withdrawal_id, reason in short.items():
                w = ws[withdrawal_id]
                if w.state == W.REQUESTED.value:
                    repo.move(w, W.QUEUED, reason)
                elif w.reason != reason:
                    w.reason = reason
                    w.updated_at = utcnow()
                if reason.startswith(OWN_PREFIXES):
                    continue  # their alarms are raised where they are decided
                key = "gas" if "lacks gas" in reason else w.token
                alarms.setdefault(key, reason)
            for key, reason in alarms.items():
                await raise_alarm(
                    s,
                    AlarmKind.HOT_WALLET_LOW,
                    f"{self.chain_id}:{key}",
                    f"{self.network.name}: withdrawals queued: {reason}",
                    {"chainId": self.chain_id, "hotWallet": self.signer.address},
                    severity="warning",
                )
            if signed:
                crash_point("sender.persist.before_commit")
        if signed:
            crash_point("sender.persist.after_commit")
        return True

    # ------------------------------------------------------------------ chain reads

    async def _chain_reads(
        self, tokens: Sequence[str]
    ) -> tuple[dict[str, int], int, bool, dict[str, int]]:
        """In one batch: the vault's balance of each token, the hot wallet's gas, the
        vault's ``paused()`` and its validator set ({signer: power})."""
        vault = self.network.vault
        requests = [balance_request(token, vault) for token in tokens]
        requests.append(balance_request(ZERO_ADDRESS, self.signer.address))
        requests.append(paused_request(vault))
        requests.append(validators_request(vault))
        results = await self.rpc.batch(requests)
        n = len(tokens)
        balances = {t: int(r, 16) for t, r in zip(tokens, results[:n], strict=True)}
        return (
            balances,
            int(results[n], 16),
            bool(decode_uint(results[n + 1])),
            decode_validators(results[n + 2]),
        )

    # ------------------------------------------------------------------ co-signing

    async def _cosign(
        self,
        funded: Sequence[repo.Ready],
        validators: dict[str, int],
        short: dict[int, str],
    ) -> tuple[list[repo.Ready], dict[int, Quorum]]:
        """Ask the co-signers for every funded withdrawal; returns the ones that reached
        the quorum (in order) with their signatures. The others get their reason in
        ``short``; refusals and a quorum waited on too long raise their alarms."""
        if not funded:
            return [], {}
        deadline = int(self.clock()) + self.settings.payout_deadline_seconds
        requests = [self._cosign_request(w, deadline) for w in funded]
        began = time.monotonic()
        outcomes = await self.cosigning.collect(requests, validators)
        if self.metrics is not None:
            name = self.network.name
            self.metrics.cosign_round.labels(name).observe(time.monotonic() - began)
            answers = self.metrics.cosign_answers
            for outcome in outcomes:
                n_signed = (
                    len(outcome.signatures) if isinstance(outcome, Quorum) else outcome.signed
                )
                n_refused = len(outcome.refusals)
                answers.labels(name, "signed").inc(n_signed)
                answers.labels(name, "refused").inc(n_refused)
                answers.labels(name, "unavailable").inc(
                    max(0, len(self.cosigning.urls) - n_signed - n_refused)
                )
        chosen: list[repo.Ready] = []
        cosigned: dict[int, Quorum] = {}
        refused: list[tuple[repo.Ready, CosignOutcome]] = []
        waiting: list[repo.Ready] = []
        now = self.clock()
        for w, outcome in zip(funded, outcomes, strict=True):
            if outcome.refusals:
                refused.append((w, outcome))
            if isinstance(outcome, Quorum):
                chosen.append(w)
                cosigned[w.id] = outcome
                self._short_since.pop(w.id, None)
                continue
            short[w.id] = outcome.reason
            if outcome.refused:
                self._short_since.pop(w.id, None)
            else:
                since = self._short_since.setdefault(w.id, now)
                if now - since >= self.settings.cosign_alarm_after_seconds:
                    waiting.append(w)
        if refused or waiting:
            await self._cosign_alarms(refused, waiting, short)
        return chosen, cosigned

    def _cosign_request(self, w: repo.Ready, deadline: int) -> CosignRequest:
        if w.token == ZERO_ADDRESS:
            decimals = self.network.native_decimals
        else:
            cfg = self.network.token_by_address(w.token)
            decimals = cfg.decimals if cfg is not None else 0
        return CosignRequest(
            PayoutAuth(
                chain_id=self.chain_id,
                vault=self.network.vault,
                id=w.id,
                token=w.token,
                to=w.destination,
                amount=w.amount,
                deadline=deadline,
            ),
            account=w.account,
            decimals=decimals,
            nonce=int(w.nonce),
            request_deadline=int(w.deadline),
            signature=w.signature,
        )

    async def _cosign_alarms(
        self,
        refused: Sequence[tuple[repo.Ready, CosignOutcome]],
        waiting: Sequence[repo.Ready],
        short: dict[int, str],
    ) -> None:
        async with self.sessions.begin() as s:
            for w, outcome in refused:
                codes = sorted({f"{r.code}" for r in outcome.refusals})
                final = isinstance(outcome, Short) and outcome.refused
                await raise_alarm(
                    s,
                    AlarmKind.COSIGN_REFUSED,
                    f"{self.chain_id}:{w.id}",
                    f"{self.network.name}: withdrawal {w.id} of {w.account} refused by "
                    f"{len(outcome.refusals)} co-signer(s): {', '.join(codes)}"
                    + ("; it will not be paid unless an operator acts" if final else ""),
                    {
                        "chainId": self.chain_id,
                        "withdrawalId": w.id,
                        "account": w.account,
                        "refusals": [
                            {"url": r.url, "code": r.code, "message": r.message}
                            for r in outcome.refusals
                        ],
                    },
                )
            if waiting:
                ids = [w.id for w in waiting]
                await raise_alarm(
                    s,
                    AlarmKind.COSIGN_QUORUM,
                    f"{self.chain_id}",
                    f"{self.network.name}: {len(ids)} withdrawal(s) waited more than "
                    f"{self.settings.cosign_alarm_after_seconds} s for the validators' "
                    f"quorum: {short[ids[0]]}",
                    {"chainId": self.chain_id, "withdrawalIds": ids[:50]},
                )

    # ------------------------------------------------------------------ pause

    async def _watch_pause(self) -> None:
        """Read ``paused()`` and store it (start, and every tick while paused)."""
        try:
            paused = bool(decode_uint(await self.rpc.call(*paused_request(self.network.vault))))
        except Exception as exc:  # the next batch reads it again; not worth failing a tick
            log.debug("reading paused() failed: %s", exc, extra={"chain_id": self.chain_id})
            return
        if paused != self._paused:
            await self._store_pause(
                paused,
                f"{PAUSED_PREFIX}: the vault {self.network.vault} is paused on chain"
                if paused
                else None,
            )

    async def _store_pause(self, paused: bool, reason: str | None) -> None:
        await store_pause(
            self.sessions, self.network, paused=paused, reason=reason, metrics=self.metrics
        )
        self._paused = paused

    def _token_label(self, token: str) -> str:
        if token == ZERO_ADDRESS:
            return self.network.native_asset
        cfg = self.network.token_by_address(token)
        return cfg.symbol if cfg else token
