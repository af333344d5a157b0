"""Transaction tracker: follows every broadcast withdrawal attempt to its receipt and
then to the network's confirmation rule (depth N, or the safe/finalized tag).

Guarantees across crash, restart and reorg:

* Everything it knows is in the DB (attempt state, block number and hash); a tick
  starts from there, so a restart loses nothing. On its first tick it re-broadcasts
  every unmined attempt's raw bytes (a node may have lost its pool while we were down).
* **Receipt → mined.** An attempt with a receipt becomes ``mined`` (block number and
  hash stored) and the withdrawal ``confirming``; the other attempts under the same
  nonce (fee bumps) become ``dropped``: only one transaction per nonce can be mined.
* **Reorg.** Each tick compares a mined attempt's block hash with the canonical hash
  at that height. If it differs, the attempt goes back to ``broadcast``, the
  withdrawal back to ``broadcast``, and the raw tx is re-sent; the next receipt
  (same hash, new block) is tracked from scratch. Worked example, depth 3: mined in
  block 100 (hash 0xaa), head 101 → 2 confirmations; a reorg replaces 100 with 0xbb
  → back to broadcast; re-mined in 102, final at head 104.
* **Final.** Success → withdrawal ``completed`` and the hold settled (hold →
  ``system:vault:<chain>`` + fee account) in one DB transaction. A revert → the vault
  is asked ``withdrawn(id)``: false → ``failed`` and the hold released; true means
  another transaction paid this id (the vault's guard made ours revert with
  AlreadyWithdrawn), so the payer is looked up by the ``Withdrawn`` event, recorded as
  the withdrawal's tx hash, and the hold is settled, never released: a second payout
  is impossible on chain and a double credit impossible in the ledger.
* **Nonce consumed by a foreign transaction** (someone else used the hot key): when
  the wallet's nonce as of the newest FINAL block (depth N: ``head - N + 1``; a tag:
  that block) is above an unmined attempt's nonce and none of the withdrawal's
  attempts has a receipt, nothing of ours can be mined any more (short of a reorg
  deeper than the rule). Seen so at two ticks with the head advanced in between (one
  read can be a node that counted a block whose receipts it has not indexed yet), a
  NONCE_CONSUMED alarm is latched, the attempts become
  ``dropped``, and the vault's ``withdrawn(id)`` at that block decides: true (the
  foreign tx paid this id) → ``completed``, payer recorded, hold settled; false →
  ``stalled`` until an operator decides: ``watcher withdrawals retry ID`` (→
  ``queued``, signed again under a new nonce; if an old attempt ever landed after all,
  the new one reverts with AlreadyWithdrawn and is settled as paid elsewhere, see
  Final), or ``cancel``/``reject ID`` (hold released, only if the vault still says
  unpaid at the latest block).
* **Stuck.** The newest attempt of a nonce not mined after ``stuck_after_seconds``
  (or ``stuck_after_blocks`` blocks after the head at its broadcast, persisted on the
  attempt as ``broadcast_block`` so a restart keeps counting) is replaced under the
  SAME nonce with both fee fields bumped by ≥ max(10 %, fee_bump_percent), capped by
  the configured maximum (``domain.gas.bumped_fees``). The replacement is persisted
  (``signed``) with the old one marked ``replaced`` in one DB transaction before it
  is broadcast. If the caps forbid a valid bump, a WITHDRAWAL_STUCK alarm is latched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from watcher.chain.broadcast import Outcome, broadcast_raw, fee_quote
from watcher.chain.rpc import RpcClient
from watcher.chain.signer import HotSigner
from watcher.chain.vault import (
    WITHDRAWN_TOPIC,
    decode_uint,
    id_topic,
    paused_request,
    withdrawn_request,
)
from watcher.crashpoints import crash_point
from watcher.domain.confirmations import confirmations, final_upto, is_final
from watcher.domain.gas import Fees, bumped_fees
from watcher.domain.states import AttemptState, WithdrawalState
from watcher.metrics import Metrics
from watcher.services.cosigning import PAUSED_PREFIX, stored_signatures
from watcher.services.foreground import Foreground
from watcher.services.sender import build_withdraw_tx, fee_caps
from watcher.settings import NetworkConfig, WithdrawalSettings
from watcher.store import vaults
from watcher.store import withdrawals as repo
from watcher.store.alarms import AlarmKind, raise_alarm
from watcher.store.db import SessionFactory
from watcher.store.events import after_commit
from watcher.store.ledger_batch import Posting
from watcher.store.models import TxAttempt, utcnow

#: An attempt's stored status when its transaction succeeded but paid nothing (no
#: ``Withdrawn`` of its id): the vault paused itself instead (``WithdrawPaused``).
STATUS_UNPAID = 2

#: Withdrawals per DB transaction when the tracker records receipts or settles: a tick
#: after a burst has hundreds; one transaction for all of them holds the (on SQLite,
#: only) writer connection for tens of ms, and every request of the API waits behind it.
#: Fewer while withdrawal requests are coming in (``Foreground.chunk_size``).
TX_CHUNK = 64

log = logging.getLogger("watcher.tracker")

W = WithdrawalState
A = AttemptState
UNMINED = repo.MINABLE_ATTEMPTS


def _drop(a: TxAttempt) -> None:
    """An attempt whose nonce another transaction has taken can never be mined: one not
    mined yet becomes ``dropped`` (a signed one by way of ``replaced``, as the state
    machine has it); a mined or final one is left alone."""
    if a.state == A.SIGNED.value:
        repo.move_attempt(a, A.REPLACED)
    if a.state in UNMINED:
        repo.move_attempt(a, A.DROPPED)


@dataclass
class TrackReport:
    mined: int = 0
    completed: int = 0
    failed: int = 0
    reorged: int = 0
    replaced: int = 0
    stalled: int = 0  # nonce consumed by a foreign tx, vault says unpaid


class Tracker:
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
        fee_account: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.network = network
        self.metrics = metrics
        self.settings = settings
        self.sessions = sessions
        self.rpc = rpc
        self.http = http
        self.signer = signer
        self.clock = clock
        self.foreground = foreground or Foreground()
        self.chain_id = network.chain_id
        self.rule = network.rule
        self.fee_account = fee_account or settings.fee_account
        self.name = f"tracker:{network.name}"
        self.interval_seconds = float(settings.poll_interval_seconds)
        self.caps = fee_caps(settings)
        self.rebroadcast_on_start = True
        self.last = TrackReport()
        # The attempt(s) holding the wallet's next nonce, and since when (clock).
        self._waiting: tuple[tuple[int, ...], float] | None = None
        # Withdrawals whose nonce looked consumed by a foreign tx, and the head then:
        # acted on only when it still looks so at a later head (see _check_consumed).
        self._suspect: dict[int, int] = {}

    def forget(self) -> None:
        """Drop what this process believed about the wallet's attempts (a new lease:
        another replica may have sent meanwhile); the next tick rebroadcasts first."""
        self.rebroadcast_on_start = True
        self._waiting = None
        self._suspect = {}

    async def tick(self) -> None:
        self.last = TrackReport()
        head = await self.rpc.block_number()
        tagged = None
        if self.rule.is_tag:
            ref = await self.rpc.get_block(str(self.rule.tag))
            tagged = ref.number if ref is not None else None
        if self.rebroadcast_on_start:
            await self._rebroadcast_unmined()
            self.rebroadcast_on_start = False
        unmined, mined_count = await self._find_receipts(head)
        await self._resend_next_nonce(unmined, mined_count)
        await self._check_consumed(unmined, head, tagged)
        await self._check_mined(head, tagged)
        await self._replace_stuck(head)
        if self.metrics is not None:
            count = self.metrics.withdrawal_events
            for event, n in vars(self.last).items():
                if n:
                    count.labels(self.network.name, event).inc(n)

    # ------------------------------------------------------------------ receipts

    async def _attempts(self, states: Sequence[str]) -> list[TxAttempt]:
        async with self.sessions() as s:
            return await repo.attempts_in(s, self.chain_id, states, sender=self.signer.address)

    async def _rebroadcast_unmined(self) -> None:
        attempts = await self._attempts([A.BROADCAST.value])
        if attempts:
            await broadcast_raw(self.http, self.network.rpc_urls, [a.raw_tx for a in attempts])

    async def _refs(self, states: Sequence[str]) -> list[repo.AttemptRef]:
        async with self.sessions() as s:
            return await repo.attempt_refs(s, self.chain_id, states, sender=self.signer.address)

    async def _find_receipts(self, head: int) -> tuple[list[repo.AttemptRef], int]:
        """Record the attempts that got a receipt; returns the ones still without, and
        how many transactions of the hot wallet the node had mined (its nonce count at
        the latest block, read before the receipts).

        A wallet's transactions are mined in nonce order, so an attempt whose nonce is
        not below that count has no receipt yet and is not asked for: with hundreds in
        flight most of them are in the node's pool, and asking for each receipt every
        tick is work for the node (which is also mining them) and for the tracker."""
        attempts = await self._refs(UNMINED)
        if not attempts:
            return [], 0
        mined_count = int(
            await self.rpc.call("eth_getTransactionCount", [self.signer.address, "latest"]), 16
        )
        asked = [a for a in attempts if a.nonce < mined_count]
        receipts = (
            await self.rpc.batch([("eth_getTransactionReceipt", [a.tx_hash]) for a in asked])
            if asked
            else []
        )
        found = [(a, r) for a, r in zip(asked, receipts, strict=True) if r]
        # A queued intake batch goes first before each chunk.
        async for chunk in self.foreground.chunks(found, TX_CHUNK):
            await self._record_mined(chunk, head)
        with_receipt = {a.id for a, _ in found}
        return [a for a in attempts if a.id not in with_receipt], mined_count

    async def _resend_next_nonce(self, unmined: Sequence[repo.AttemptRef], mined: int) -> None:
        """A node mines a wallet's transactions in nonce order. If the attempt holding
        the wallet's next nonce (its count of mined transactions) has waited unmined for
        ``resend_after_seconds``, the node may have lost it (a restart, a pool eviction)
        while every later one waits behind it: re-send it as it was signed (same bytes,
        same hash; harmless if the node still has it). An underpriced one is still
        bumped by the stuck timer."""
        if not unmined:
            self._waiting = None
            return
        ids = tuple(sorted(a.id for a in unmined if a.nonce == mined))
        now = self.clock()
        if not ids:
            self._waiting = None  # the next nonce is not one of ours in flight
            return
        if self._waiting is None or self._waiting[0] != ids:
            self._waiting = (ids, now)
            return
        if now - self._waiting[1] < float(self.settings.resend_after_seconds):
            return
        async with self.sessions() as s:
            newest = (await repo.attempts_by_id(s, [ids[-1]]))[ids[-1]]
        (result,) = await broadcast_raw(self.http, self.network.rpc_urls, [newest.raw_tx])
        waited = now - self._waiting[1]
        self._waiting = (ids, now)
        # "known": the node still has it (waiting for its fee, or a node that does not
        # promote it: the stuck timer bumps it); "accepted": it had been lost.
        level = logging.DEBUG if result.outcome is Outcome.KNOWN else logging.WARNING
        log.log(
            level,
            "attempt %d of withdrawal %d (nonce %d) waited %.0f s unmined with later ones "
            "behind it: re-sent as signed (%s)",
            newest.id,
            newest.withdrawal_id,
            newest.nonce,
            waited,
            result.outcome.value,
            extra={"chain_id": self.chain_id, "withdrawal_id": newest.withdrawal_id},
        )

    async def _record_mined(
        self, found: Sequence[tuple[repo.AttemptRef, dict[str, Any]]], head: int
    ) -> None:
        """Attempts with a receipt → mined, their withdrawals → confirming, the other
        attempts of those withdrawals dropped (one chunk; ``repo.record_mined``)."""
        receipts = [
            repo.Receipt(
                attempt_id=a.id,
                withdrawal_id=a.withdrawal_id,
                block_number=int(receipt["blockNumber"], 16),
                block_hash=str(receipt["blockHash"]),
                status=self._status(a.withdrawal_id, receipt),
            )
            for a, receipt in found
        ]
        async with self.sessions.begin() as s:
            self.last.mined += await repo.record_mined(s, receipts, head)
            crash_point("tracker.receipt.before_commit")
        crash_point("tracker.receipt.after_commit")

    def _status(self, withdrawal_id: int, receipt: dict[str, Any]) -> int:
        """The receipt's status, except that a successful transaction of ours that paid
        nothing (no ``Withdrawn`` of this id from the vault: the payout would have
        passed the hourly limit and the vault paused instead) is ``STATUS_UNPAID``."""
        status = int(receipt["status"], 16)
        if status != 1:
            return status
        vault = self.network.vault.lower()
        topic = id_topic(withdrawal_id)
        for entry in receipt.get("logs") or []:
            topics = entry.get("topics") or []
            if (
                str(entry.get("address", "")).lower() == vault
                and len(topics) > 1
                and topics[0] == WITHDRAWN_TOPIC
                and topics[1] == topic
            ):
                return 1
        return STATUS_UNPAID

    # ------------------------------------------------------------------ confirmations

    async def _check_mined(self, head: int, tagged: int | None) -> None:
        attempts = await self._refs([A.MINED.value])
        if not attempts:
            return
        numbers = sorted({a.block_number for a in attempts if a.block_number is not None})
        raws = await self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        # A height the node no longer has (the chain got shorter) counts as reorged out.
        canonical = {n: (raw or {}).get("hash") for n, raw in zip(numbers, raws, strict=True)}
        reorged = {a.id for a in attempts if canonical.get(a.block_number or -1) != a.block_hash}
        final = {
            a.id
            for a in attempts
            if a.id not in reorged
            and a.block_number is not None
            and is_final(self.rule, a.block_number, head, tagged)
        }
        paid_elsewhere = {
            a.withdrawal_id: await self._payer(a.withdrawal_id)
            for a in attempts
            if a.id in final and a.status == 0
        }
        # Reverted, unpaid, and the vault paused in that block: it reverted because the
        # vault was paused (EnforcedPause); the withdrawal waits for the unpause instead
        # of failing.
        paused_blocks: dict[int, bool] = {}
        for a in attempts:
            if a.status == 0 and paid_elsewhere.get(a.withdrawal_id, "") is None:
                assert a.block_number is not None
                if a.block_number not in paused_blocks:
                    paused_blocks[a.block_number] = await self._paused_at(a.block_number)
        reverted_paused = {
            a.withdrawal_id
            for a in attempts
            if a.status == 0 and paused_blocks.get(a.block_number or -1, False)
        }
        # A queued intake batch goes first before each chunk.
        async for chunk in self.foreground.chunks(attempts, TX_CHUNK):
            # Each chunk's reorged-out transactions are re-sent once it is committed (a
            # later chunk failing does not leave them waiting for the stuck timer).
            resend = await self._settle(
                chunk, head, reorged, final, paid_elsewhere, reverted_paused
            )
            if resend:
                await broadcast_raw(self.http, self.network.rpc_urls, resend)

    async def _settle(
        self,
        attempts: Sequence[repo.AttemptRef],
        head: int,
        reorged: set[int],
        final: set[int],
        paid_elsewhere: dict[int, str | None],
        reverted_paused: set[int],
    ) -> list[str]:
        """One chunk of mined attempts: confirmations counted; final ones completed and
        settled (or failed and released); reorged ones back to broadcast. Returns the raw
        transactions to re-send."""
        resend: list[str] = []
        unpaid: list[int] = []
        async with self.sessions.begin() as s:
            # Confirmation counts of everything still mined: one statement, from each
            # row's block, writing only the rows whose count changed.
            await repo.set_confirmations(
                s, [a.withdrawal_id for a in attempts if a.id not in reorged], head
            )
            # Final and successful (the usual case): set-based, with their settlements.
            paid = [a.id for a in attempts if a.id in final and a.status == 1]
            completed = await repo.complete_paid(s, paid)
            postings: list[Posting] = [repo.settle_posting(w, self.fee_account) for w in completed]
            self.last.completed += len(completed)
            done = {w.id for w in completed}
            # Reorged out, reverted, or anything the set-based path left: row by row.
            rest = [
                a
                for a in attempts
                if (a.id in reorged or a.id in final) and a.withdrawal_id not in done
            ]
            rows = await repo.attempts_by_id(s, [a.id for a in rest])
            ws = await repo.withdrawals_by_id(s, [a.withdrawal_id for a in rest])
            for detached in rest:
                a = rows[detached.id]
                if a.state != A.MINED.value:
                    continue
                w = ws[a.withdrawal_id]
                if detached.id in reorged:
                    resend.append(a.raw_tx)
                    repo.move_attempt(a, A.BROADCAST)
                    a.block_number = a.block_hash = a.status = None
                    a.broadcast_at = utcnow()
                    a.broadcast_block = head
                    repo.move(w, W.BROADCAST, "block reorged out; re-sent")
                    w.block_number = None
                    w.confirmations = 0
                    self.last.reorged += 1
                    continue
                assert a.block_number is not None
                w.confirmations = confirmations(head, a.block_number)
                repo.move_attempt(a, A.CONFIRMED)
                requeue = None
                if a.status == STATUS_UNPAID:
                    # Mined, paid nothing: the vault paused itself (its hourly limit)
                    # or no longer pays this call.
                    requeue = (
                        f"{PAUSED_PREFIX}: our transaction {a.tx_hash} paid nothing: the "
                        "vault paused itself (its hourly limit would have been passed); "
                        "waits until its guardian unpauses it"
                    )
                elif a.status == 0 and w.id in reverted_paused:
                    requeue = (
                        f"{PAUSED_PREFIX}: our transaction {a.tx_hash} reverted: the vault "
                        "was paused; waits until its guardian unpauses it"
                    )
                if requeue is not None and paid_elsewhere.get(w.id) is None:
                    # The hold stays; back to the queue, asked for fresh signatures once
                    # the vault runs again (the id is unpaid: the vault guards it).
                    repo.move(w, W.QUEUED, requeue)
                    w.payout_deadline = None
                    w.cosignatures = None
                    w.block_number = None
                    w.confirmations = 0
                    unpaid.append(w.id)
                    continue
                if a.status == 1:
                    repo.move(w, W.COMPLETED)
                    w.tx_hash = a.tx_hash
                    postings.append(repo.settle_posting(w, self.fee_account))
                    self.last.completed += 1
                elif (payer := paid_elsewhere.get(w.id)) is not None:
                    repo.move(w, W.COMPLETED, f"paid by {payer} (our {a.tx_hash} reverted)")
                    w.tx_hash = payer
                    postings.append(repo.settle_posting(w, self.fee_account))
                    self.last.completed += 1
                else:
                    repo.move(w, W.FAILED, f"transaction {a.tx_hash} reverted")
                    postings.append(repo.release_posting(w, "failed: reverted on chain"))
                    self.last.failed += 1
            if unpaid:
                reason = (
                    f"{PAUSED_PREFIX}: withdrawals {', '.join(map(str, unpaid[:20]))} were "
                    "not paid: the vault is paused (its hourly limit, or its guardian)"
                )
                await vaults.record(
                    s, self.chain_id, self.network.vault, paused=True, reason=reason
                )
                await raise_alarm(
                    s,
                    AlarmKind.VAULT_PAUSED,
                    f"{self.chain_id}",
                    f"{self.network.name}: {reason}; they are queued again and go once "
                    "its guardian unpauses it",
                    {
                        "chainId": self.chain_id,
                        "vault": self.network.vault,
                        "withdrawalIds": unpaid[:50],
                    },
                )
            # Every settlement and release of the chunk in one set of multi-row statements.
            await repo.post_all(s, postings)
            if postings:
                crash_point("tracker.settle.before_commit")
        if postings:
            crash_point("tracker.settle.after_commit")
        return resend

    async def _paused_at(self, block: int) -> bool:
        """The vault's ``paused()`` as of ``block`` (after its transactions)."""
        result = await self.rpc.call(*paused_request(self.network.vault, hex(block)))
        return bool(decode_uint(result))

    async def _payer(self, withdrawal_id: int, block: int | str = "latest") -> str | None:
        """The tx that paid ``withdrawal_id`` if the vault says it was paid (as of
        ``block``), else None."""
        at = block if isinstance(block, str) else hex(block)
        result = await self.rpc.call(*withdrawn_request(self.network.vault, withdrawal_id, at))
        if not decode_uint(result):
            return None
        logs: list[dict[str, Any]] = await self.rpc.get_logs(
            self.network.vault,
            [WITHDRAWN_TOPIC, id_topic(withdrawal_id)],
            from_block=self.network.start_block,
            to_block=block,
        )
        return str(logs[-1]["transactionHash"]) if logs else "unknown (vault says paid)"

    # ------------------------------------------------------------------ foreign nonce

    async def _check_consumed(
        self, attempts: Sequence[repo.AttemptRef], head: int, tagged: int | None
    ) -> None:
        """Withdrawals whose nonce a transaction that is none of their attempts used
        (``attempts``: the unmined ones, as :meth:`_find_receipts` left them)."""
        final = final_upto(self.rule, head, tagged)
        if not attempts or final is None:
            return
        used = int(
            await self.rpc.call("eth_getTransactionCount", [self.signer.address, hex(final)]), 16
        )
        lost = {a.withdrawal_id for a in attempts if a.nonce < used}
        if not lost:
            return
        async with self.sessions() as s:
            siblings = await repo.attempts_of_many(s, sorted(lost))
        hashes = [(wid, a.tx_hash) for wid, rows in siblings.items() for a in rows]
        receipts = await self.rpc.batch([("eth_getTransactionReceipt", [h]) for _, h in hashes])
        # One of ours has a receipt after all: the receipt path handles it.
        lost -= {wid for (wid, _), r in zip(hashes, receipts, strict=True) if r}
        # Acted on only when seen again at a higher head: a node answering the nonce
        # count from a block it has not yet indexed the receipts of (anvil under load;
        # a load-balanced provider whose backends lag each other) looks exactly like a
        # foreign tx for one read. A real one stays so; the wait is one block.
        seen_before = {wid for wid in lost if self._suspect.get(wid, head) < head}
        self._suspect = {wid: self._suspect.get(wid, head) for wid in lost}
        lost = seen_before
        if not lost:
            return
        paid = {wid: await self._payer(wid, final) for wid in sorted(lost)}
        async with self.sessions.begin() as s:
            ws = await repo.withdrawals_by_id(s, sorted(lost))
            rows = await repo.attempts_of_many(s, sorted(lost))
            postings: list[Posting] = []
            for wid in sorted(lost):
                w = ws[wid]
                mine = rows[wid]
                if w.state != W.BROADCAST.value or any(
                    a.state in (A.MINED.value, A.CONFIRMED.value) for a in mine
                ):
                    continue  # moved on meanwhile
                nonces = sorted({a.nonce for a in mine if a.state in repo.DROPPABLE_ATTEMPTS})
                ours = [a.tx_hash for a in mine if a.state in repo.DROPPABLE_ATTEMPTS]
                for a in mine:
                    _drop(a)
                nonce_text = ", ".join(str(n) for n in nonces)
                payer = paid[wid]
                if payer is not None:
                    repo.move(
                        w,
                        W.COMPLETED,
                        f"paid by {payer}; nonce {nonce_text} was used by a tx not ours",
                    )
                    w.tx_hash = payer
                    postings.append(repo.settle_posting(w, self.fee_account))
                    self.last.completed += 1
                else:
                    repo.move(
                        w,
                        W.STALLED,
                        f"nonce {nonce_text} was used by a tx not ours and the vault says "
                        f"unpaid; `watcher withdrawals retry {w.id}` signs it under a new "
                        f"nonce, `watcher withdrawals cancel {w.id}` releases the hold if "
                        "the vault still says unpaid at the latest block",
                    )
                    self.last.stalled += 1
                await raise_alarm(
                    s,
                    AlarmKind.NONCE_CONSUMED,
                    f"{self.chain_id}:{self.signer.address}:{nonce_text}",
                    f"{self.network.name}: nonce {nonce_text} of hot wallet "
                    f"{self.signer.address} was used by a transaction that is not one of "
                    f"withdrawal {w.id}'s attempts (someone else holds the key?); "
                    f"withdrawal {w.id} is now {w.state}",
                    {"withdrawalId": w.id, "attempts": ours, "paidBy": payer},
                )
                log.error(
                    "withdrawal %d: nonce %s consumed by a foreign transaction; now %s",
                    w.id,
                    nonce_text,
                    w.state,
                    extra={"chain_id": self.chain_id, "withdrawal_id": w.id},
                )
            await repo.post_all(s, postings)

    # ------------------------------------------------------------------ stuck

    async def _replace_stuck(self, head: int) -> None:
        """Attempts not mined after ``stuck_after_blocks`` blocks since the head at their
        broadcast, or ``stuck_after_seconds`` since it, are replaced (see the module
        docstring); the selection runs in SQL (``repo.stuck_attempts``)."""
        sent_before = datetime.fromtimestamp(self.clock() - self.settings.stuck_after_seconds, UTC)
        async with self.sessions.begin() as s:
            stuck = await repo.stuck_attempts(
                s,
                self.chain_id,
                self.signer.address,
                head=head,
                after_blocks=self.settings.stuck_after_blocks,
                sent_before=sent_before,
            )
        if not stuck:
            return
        quote = await fee_quote(self.rpc)
        replacements: list[tuple[TxAttempt, TxAttempt]] = []
        too_expensive: list[TxAttempt] = []
        async with self.sessions() as s:
            ws = await repo.withdrawals_by_id(s, [a.withdrawal_id for a in stuck])
        for old in stuck:
            fees = bumped_fees(
                Fees(old.max_fee_per_gas, old.max_priority_fee_per_gas),
                quote.base_fee,
                quote.tip,
                self.settings.fee_bump_percent,
                self.caps,
            )
            if fees is None:
                too_expensive.append(old)
                continue
            w = ws[old.withdrawal_id]
            if w.payout_deadline is None or not w.cosignatures:
                # Signed before co-signing was stored (cannot happen for rows this
                # version signed): nothing to rebuild the same call from.
                too_expensive.append(old)
                continue
            tx = build_withdraw_tx(
                chain_id=self.chain_id,
                vault=self.network.vault,
                w=w,
                nonce=old.nonce,
                gas=self.settings.gas_limit,
                fees=fees,
                deadline=w.payout_deadline,
                signatures=stored_signatures(w.cosignatures),
            )
            signed = self.signer.sign_transaction(tx)
            new = TxAttempt(
                withdrawal_id=old.withdrawal_id,
                chain_id=self.chain_id,
                sender=self.signer.address,
                nonce=old.nonce,
                tx_hash=signed.tx_hash,
                raw_tx=signed.raw,
                max_fee_per_gas=fees.max_fee_per_gas,
                max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
                state=A.SIGNED.value,
            )
            replacements.append((old, new))
        async with self.sessions.begin() as s:
            persisted: list[TxAttempt] = []
            olds = await repo.attempts_by_id(s, [old.id for old, _ in replacements])
            owners = await repo.withdrawals_by_id(s, [old.withdrawal_id for old, _ in replacements])
            for old_detached, new in replacements:
                current = olds[old_detached.id]
                if current.state != A.BROADCAST.value:
                    continue  # mined meanwhile
                repo.move_attempt(current, A.REPLACED)
                s.add(new)
                w = owners[current.withdrawal_id]
                w.tx_hash = new.tx_hash
                w.updated_at = utcnow()
                persisted.append(new)
                after_commit(
                    s,
                    log,
                    "withdrawal replaced id=%d chain=%d nonce=%d old=%s new=%s "
                    "max_fee_per_gas=%d max_priority_fee_per_gas=%d",
                    (
                        w.id,
                        self.chain_id,
                        new.nonce,
                        current.tx_hash,
                        new.tx_hash,
                        new.max_fee_per_gas,
                        new.max_priority_fee_per_gas,
                    ),
                    extra={"withdrawal_id": w.id, "chain_id": self.chain_id},
                )
            for a in too_expensive:
                await raise_alarm(
                    s,
                    AlarmKind.WITHDRAWAL_STUCK,
                    f"{self.chain_id}:{a.withdrawal_id}",
                    f"{self.network.name}: withdrawal {a.withdrawal_id} (nonce {a.nonce}) is "
                    "not mined and the fee caps allow no further bump",
                    {"txHash": a.tx_hash, "maxFeePerGas": str(a.max_fee_per_gas)},
                )
            await s.flush()
            ids = [(n.id, n.raw_tx, n.withdrawal_id) for n in persisted]
        if not ids:
            return
        crash_point("tracker.replace.after_commit")
        results = await broadcast_raw(self.http, self.network.rpc_urls, [r for _, r, _ in ids])
        crash_point("tracker.replace.after_send")
        async with self.sessions.begin() as s:
            sent_rows = await repo.attempts_by_id(s, [attempt_id for attempt_id, _, _ in ids])
            for (attempt_id, _, withdrawal_id), result in zip(ids, results, strict=True):
                sent = sent_rows[attempt_id]
                if sent.state != A.SIGNED.value:
                    continue
                if result.outcome.is_in_pool or result.outcome is Outcome.NONCE_USED:
                    repo.move_attempt(sent, A.BROADCAST)
                    sent.broadcast_at = datetime.fromtimestamp(self.clock(), UTC)
                    sent.broadcast_block = head
                    self.last.replaced += 1
                else:
                    log.warning(
                        "fee-bumped attempt %s of withdrawal %d not accepted: %s",
                        sent.tx_hash,
                        withdrawal_id,
                        "; ".join(result.messages),
                        extra={"chain_id": self.chain_id, "withdrawal_id": withdrawal_id},
                    )
