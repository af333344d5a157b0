"""The deposit listener of one network: a tick is fetch → reconcile → persist.

One :class:`DepositListener` per enabled network; the daemon runs them
concurrently. A tick runs *steps* until the cursor reaches the head (or the
tick's time budget is spent, so a long backfill still lets the daemon stop
between steps). A step:

1. **read state** — the cursor C and the stored block window (DB, short read);
2. **fetch** — the head (:func:`watcher.services.poller.read_heads`, from every
   endpoint), *observed at once* (metrics, health, lag alarm: a step that fails after
   it still shows how far behind the cursor is), then
   :func:`watcher.services.poller.scan`: the tag block under a tag rule, headers, and
   the vault's Deposit logs of ``[C+1, min(head, C+R)]``, verified against the
   headers (no DB transaction is open meanwhile);
3. **reconcile** — the headers must link to the stored window; if not, the reorg is
   confirmed with the other endpoints and rolled back (:mod:`reorgs`), and the next
   step re-scans from the common ancestor;
4. **persist** — in ONE DB transaction: the verified headers of the window, the new
   deposits (``pending``, or ``credited`` at once if already final, or
   ``unsupported``), the credits of pending deposits that became final
   (:mod:`confirmer`), and the cursor moved to the range end.

Guarantees across crash, restart and reorg:

* **Exactly once.** A deposit is keyed on (chain_id, tx_hash, log_index) and its
  credit on the same key; a step commits its deposits, credits and cursor together
  or not at all. Killed mid-step (cursor 100, range 101..120): nothing of the step
  is stored; the restarted listener scans 101..120 again and stores each deposit
  once. Killed just after the commit: it continues at 121.
* **The cursor never passes a block that failed.** Any RPC error, inconsistent log
  or header aborts the step before its transaction; the next tick retries from
  the same cursor. Example: logs of 101..120 fail on every endpoint → cursor stays
  100, lag grows, ``health_reasons`` reports it past the budget with the tick's
  error and the failing endpoints (:class:`StepFailure`, redacted URLs), and the
  watchdog latches ``lag_over_budget`` once it does not move.
* **The cursor only moves if nobody else moved it** (checked inside the transaction),
  so a second daemon pointed at the same database cannot interleave steps.
* **Lagging nodes.** A head below the cursor (cursor 120, node says 115) is a
  lagging node: the step does nothing. Reorgs are only acted on after a cross-check
  (see :mod:`watcher.services.reorgs`).
* **Reorgs.** Stored 100..102 (depth 3, deposit in 101 pending with 2 confirmations),
  the chain replaces 101..102: the step finds ancestor 100, orphans the deposit,
  resets the cursor to 100 and re-scans; if its transaction was re-included in
  block 101' it is pending again there and credited at tip 103'. Had it been
  credited (a 5-block reorg 98..102 after credit at tip 102), it is reversed with a
  compensating entry, and a ``finality_violated`` alarm is latched.
* **Backfill** from ``start_block``: ranges of ``max_log_range`` blocks, headers
  only where needed; progress is logged and stored on the cursor row
  (``backfill_from``/``backfill_to``) for ``watcher status``, and cleared when the
  cursor reaches the head.

Lifecycle lines (INFO, written after the step's commit, so never for a step that
rolled back): in steady state one line per event, ``deposit seen chain=… tx=… log=…
block=… account=… asset=… amount=… (pending n/N)`` (``(final)`` when already final,
``(unsupported token: not credited)``), ``deposit credited …``, ``deposit seen again …``
after a reorg re-included it; on a reorg ``reorg detected chain=… depth=… ancestor=…``
(WARNING) then ``deposit orphaned …`` / ``deposit reversed …`` (WARNING) per deposit. A
backfill step (the cursor more than ``max_log_range`` behind the head) writes no line
per deposit but its progress line with the step's counts (``devnet backfill: block B of
F..T (p%): blocks a..b: 812 deposits seen, 800 credited``): a backfill of 20,000
deposits would otherwise write 40,000 lines. A steady-state step with more than
:data:`PER_EVENT_LOG_LIMIT` events (a burst after a pause) writes one summary line
``deposits chain=… blocks=a..b: n seen, m credited (summary: k events in one step)``.
Nothing is formatted when INFO is disabled.

Throughput (README, Deposits): a step of 20,000 final deposits is one ``eth_getLogs``,
two header batches and one transaction whose rows are written in bulk
(:mod:`watcher.store.bulk`, :func:`watcher.store.ledger_batch.post_pairs`); the cyclic
garbage collector is paused during a step (:func:`collector_paused`). In steady state
a step is 3 RPC calls per new block (with one endpoint; each further endpoint adds
one eth_blockNumber and one eth_getLogs) and a handful of indexed queries.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from watcher.chain.errors import NoUsableEndpointError, RetryableRpcError, RpcError
from watcher.chain.rpc import RpcClient
from watcher.crashpoints import crash_point
from watcher.domain.amounts import format_amount
from watcher.domain.confirmations import confirmations
from watcher.domain.reorg import (
    BlockRef,
    ReorgDepthExceeded,
    WindowExhausted,
    check_continuity,
    is_deep,
)
from watcher.domain.states import DepositState
from watcher.metrics import Metrics
from watcher.services.vault_pause import VAULT_STATE_TOPICS, observe_pause_events
from watcher.settings import AssetConfig, ListenerSettings, NetworkConfig
from watcher.store import chainstate, deposits
from watcher.store.alarms import AlarmKind, raise_alarm
from watcher.store.db import SessionFactory
from watcher.store.models import Deposit

from . import confirmer, poller, reorgs

log = logging.getLogger("watcher.listener")

# Already-final blocks whose headers we keep above the confirmation window: the
# deepest reorg whose common ancestor we can still find without guessing.
REORG_MARGIN = 64
TICK_BUDGET_SECONDS = 10.0
#: A steady-state step with more deposit events than this logs one summary line.
PER_EVENT_LOG_LIMIT = 100


@dataclass(frozen=True)
class StepFailure:
    """Why the listener's steps fail, for /healthz, the lag alarm and `watcher status`.

    ``error`` is the exception's class, ``message`` its text, ``endpoint`` the endpoint
    it names, and ``endpoints`` every endpoint that is failing or lagging now as
    (url, state, how): all redacted, never a credential. ``since`` is the wall time of
    the first failure in a row, ``count`` how many ticks failed in a row."""

    error: str
    message: str
    endpoint: str | None
    endpoints: tuple[tuple[str, str, str], ...]
    since: float
    count: int

    def describe(self) -> str:
        text = f"{self.error}: {self.message}"
        if self.endpoints:
            text += "; failing endpoints: " + ", ".join(
                f"{url} ({state}: {how})" for url, state, how in self.endpoints
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "message": self.message,
            "endpoint": self.endpoint,
            "endpoints": [{"url": u, "state": st, "how": how} for u, st, how in self.endpoints],
            "since": self.since,
            "failedTicks": self.count,
        }


@dataclass
class _Seen:
    head: int | None = None  # the best head any endpoint reported
    cursor: int | None = None
    rpc_down: str | None = None
    failure: StepFailure | None = None  # the last tick's failure; None once one succeeds
    observed_at: float | None = None  # wall time of the last head or cursor observation
    advanced_at: float | None = None  # wall time the cursor last moved
    ticked_at: float | None = None  # wall time the last tick ended (either way)


_pauses = 0  # listeners (of any network) inside a step, see collector_paused


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the duration of a step.

    A step holds O(logs) objects (the parsed ``eth_getLogs`` answer, the decoded logs,
    the rows) that all stay alive until its transaction ends. Every collection during
    the step traverses them and, once enough of them survive, the whole heap, and frees
    nothing: at 20,000 logs that was two full collections of ~100 ms each on the
    reference machine, a fifth of the step. Reference counting still frees everything
    acyclic meanwhile; cyclic garbage made during the step (by any task) is collected
    after it, when the last listener inside a step leaves (nested use by several
    networks' listeners is counted). A collector that was already disabled by someone
    else is left alone.
    """
    global _pauses
    if _pauses == 0 and not gc.isenabled():
        yield
        return
    if _pauses == 0:
        gc.disable()
    _pauses += 1
    try:
        yield
    finally:
        _pauses -= 1
        if _pauses == 0:
            gc.enable()


class DepositListener:
    """A :class:`watcher.app.Service` for one network."""

    def __init__(
        self,
        network: NetworkConfig,
        listener: ListenerSettings,
        assets: Mapping[str, AssetConfig],
        sessions: SessionFactory,
        client: RpcClient,
        metrics: Metrics | None = None,
        *,
        margin: int = REORG_MARGIN,
        tick_budget_seconds: float = TICK_BUDGET_SECONDS,
    ) -> None:
        if not network.vault:
            raise ValueError(f"network {network.name}: no vault address")
        self.network = network
        self.listener = listener
        self.assets = assets
        self.sessions = sessions
        self.client = client
        self.metrics = metrics or Metrics()
        self.rule = network.rule
        self.margin = margin
        self.blocks_read = 0  # blocks whose logs this process read (RPC calls per block)
        self.tick_budget_seconds = tick_budget_seconds
        self.max_range = network.max_log_range or listener.max_log_range
        self.name = f"deposits:{network.name}"
        self.interval_seconds = float(listener.poll_interval_seconds)
        self.seen = _Seen()
        self._best_head: int | None = None
        # Raw pause events of the vault seen in the ranges read, not yet acted on.
        self._pause_hints: list[dict[str, Any]] = []
        self._rpc_fed: dict[tuple[str, ...], int] = {}

    @property
    def chain_id(self) -> int:
        return self.network.chain_id

    # --- service ------------------------------------------------------------

    async def tick(self) -> None:
        deadline = time.monotonic() + self.tick_budget_seconds
        try:
            while await self.step() and time.monotonic() < deadline:
                pass
            self.seen.rpc_down = None
            self.seen.failure = None
        except (RetryableRpcError, NoUsableEndpointError) as exc:
            states = {s.state for s in self.client.health()}
            if states <= {"cooldown", "excluded"} or isinstance(exc, NoUsableEndpointError):
                self.seen.rpc_down = self.client.scrub(str(exc))
            self._failed(exc)
            raise
        except Exception as exc:
            self._failed(exc)
            raise
        finally:
            self.seen.ticked_at = time.time()
            self._feed_rpc_metrics()

    def lag(self) -> int | None:
        """Blocks between the best head any endpoint reported and the cursor."""
        if self.seen.head is None or self.seen.cursor is None:
            return None
        return max(0, self.seen.head - self.seen.cursor)

    def health_reasons(self) -> list[str]:
        reasons = []
        name = self.network.name
        if self.seen.rpc_down is not None:
            reasons.append(f"{name}: all RPC endpoints down ({self.seen.rpc_down})")
        lag = self.lag()
        if lag is not None and lag > self.listener.lag_budget_blocks:
            reason = (
                f"{name}: cursor {self.seen.cursor} is {lag} blocks behind head "
                f"{self.seen.head} (budget {self.listener.lag_budget_blocks})"
            )
            if why := self.why():
                reason += f"; {why}"
            reasons.append(reason)
        return reasons

    def why(self) -> str | None:
        """Why the cursor does not keep up, if known: the last tick's error and the
        failing endpoints, or (steps succeed but follow a slow quorum) the lagging or
        failing endpoints."""
        failure = self.seen.failure
        if failure is not None:
            stalled = int(time.time() - failure.since)
            return f"not advancing for {stalled} s, last error: {failure.describe()}"
        if trouble := self._trouble():
            return "lagging or failing endpoints: " + ", ".join(
                f"{url} ({state}: {how})" for url, state, how in trouble
            )
        return None

    def report(self) -> dict[str, Any]:
        """The listener's live view for the daemon's heartbeat (read by `watcher status`
        from another process): head, cursor, lag and the failure of its last tick."""
        seen = self.seen
        return {
            "head": seen.head,
            "cursor": seen.cursor,
            "lagBlocks": self.lag(),
            "budgetBlocks": self.listener.lag_budget_blocks,
            "observedAt": seen.observed_at,
            "advancedAt": seen.advanced_at,
            "tickedAt": seen.ticked_at,
            "failure": seen.failure.as_dict() if seen.failure is not None else None,
            "endpoints": [{"url": u, "state": st, "how": how} for u, st, how in self._trouble()],
        }

    def _trouble(self) -> tuple[tuple[str, str, str], ...]:
        """The endpoints failing (cooling down, excluded, last call failed) or lagging
        (head more than the client's lag tolerance behind the best), as (url, state,
        how); URLs redacted."""
        statuses = self.client.health()
        best = max((h.last_seen_head or 0 for h in statuses), default=0)
        tolerance = self.client.lag_tolerance or 0
        found: list[tuple[str, str, str]] = []
        for h in statuses:
            if h.state in ("cooldown", "excluded") or h.consecutive_failures:
                found.append((h.url, h.state, h.last_error or "failing"))
            elif h.last_seen_head is not None and best - h.last_seen_head > tolerance:
                behind = best - h.last_seen_head
                found.append((h.url, "lagging", f"head {h.last_seen_head}, {behind} behind"))
        return tuple(found)

    def _failed(self, exc: BaseException) -> None:
        previous = self.seen.failure
        endpoint = exc.endpoint if isinstance(exc, RpcError) else None
        self.seen.failure = StepFailure(
            error=type(exc).__name__,
            message=self.client.scrub(str(exc))[:500],
            endpoint=endpoint,
            endpoints=self._trouble(),
            since=previous.since if previous is not None else time.time(),
            count=(previous.count if previous is not None else 0) + 1,
        )

    # --- one step -----------------------------------------------------------

    async def step(self) -> bool:
        """One fetch → reconcile → persist round; True if more work is waiting."""
        with collector_paused():
            return await self._step()

    async def _step(self) -> bool:
        async with self.sessions.begin() as s:
            row = await chainstate.ensure_cursor(
                s, self.chain_id, self.network.name, self.network.start_block
            )
            start_cursor = row.scanned_block
            stored = await chainstate.canonical_window(s, self.chain_id)

        # The head first, on its own: observed (metrics, health, lag alarm) even when
        # the rest of the step fails, e.g. when too few endpoints answer for the logs.
        heads = await poller.read_heads(self.client)
        self._best_head = heads.best
        self._observe(heads.best, start_cursor)
        scan = await poller.scan(
            self.client,
            vault=self.network.vault,
            rule=self.rule,
            cursor=start_cursor,
            max_range=self.max_range,
            margin=self.margin,
            heads=heads,
            hint_topics=VAULT_STATE_TOPICS,
            on_hint=self._note_pause_events,
        )
        more = await self._advance(scan, stored, start_cursor)
        if self._pause_hints:
            await self._observe_pause()
        return more

    async def _note_pause_events(self, raw_logs: Sequence[Mapping[str, Any]]) -> None:
        self._pause_hints.extend(dict(raw) for raw in raw_logs)

    async def _observe_pause(self) -> None:
        """The vault paused or resumed in a range just read (the only way the watcher
        learns of a guardian's pause while no withdrawal waits): store what the vault
        says now. A failed read keeps the events for the next step."""
        try:
            paused = await observe_pause_events(
                self.client, self.sessions, self.network, self._pause_hints, metrics=self.metrics
            )
        except Exception as exc:
            log.warning(
                "%s: the vault's pause events seen, reading paused() failed: %s",
                self.network.name,
                exc,
                extra={"chain_id": self.chain_id},
            )
            return
        self._pause_hints.clear()
        if paused is not None:
            log.info(
                "%s: pause events of the vault seen; it is %s",
                self.network.name,
                "paused" if paused else "running",
                extra={"chain_id": self.chain_id},
            )

    async def _advance(
        self, scan: poller.Scan, stored: dict[int, BlockRef], start_cursor: int
    ) -> bool:
        if scan.lagging:
            log.warning(
                "%s: node head %d is below our cursor %d: lagging node, waiting",
                self.network.name,
                scan.head,
                start_cursor,
            )
            return False

        continuity = check_continuity(
            {n: b.hash for n, b in stored.items()}, list(scan.headers.values())
        )
        if not continuity.ok:
            assert continuity.mismatch_at is not None
            if continuity.mismatch_at not in stored:
                raise RetryableRpcError(f"headers do not link: {continuity.reason}")
            return await self._reorg(continuity.mismatch_at, stored, start_cursor, scan.tagged)

        return await self._persist(scan, stored, start_cursor)

    async def _persist(
        self, scan: poller.Scan, stored: dict[int, BlockRef], start_cursor: int
    ) -> bool:
        network = self.network
        tip = scan.headers[scan.to_block] if not scan.empty else stored.get(start_cursor)
        tip_number = tip.number if tip is not None else start_cursor
        window = poller.window_size(self.rule, scan.head, scan.tagged, self.margin)
        keep_from = scan.head - window + 1
        log_blocks = {d.block_number for d in scan.logs}
        keep = [
            b
            for n, b in scan.headers.items()
            if scan.from_block <= n <= scan.to_block
            and (n >= keep_from or n in log_blocks or n == scan.to_block)
        ]
        canonical = {n: b.hash for n, b in stored.items()}
        canonical.update({b.number: b.hash for b in keep})
        # Final by the rule at the head (not at the range's end): a backfill credits every
        # deposit of a final block in the step that reads it, and only blocks above the
        # final one (whose headers the scan read) hold pending deposits.
        upto = min(scan.final, tip_number) if scan.final >= 0 else None
        behind = scan.head - tip_number

        async with self.sessions.begin() as s:
            row = await chainstate.cursor(s, self.chain_id)
            if row is None or row.scanned_block != start_cursor:
                log.warning("%s: cursor moved under us; step abandoned", network.name)
                return False
            await chainstate.store_blocks(s, self.chain_id, keep)
            recorded = await deposits.record_logs(
                s, scan.logs, network, self.assets, final_upto=upto, above=start_cursor
            )
            credited = await confirmer.credit_final(s, self.chain_id, upto, canonical)
            if tip is not None:
                safe = scan.tagged.number if scan.tagged and self.rule.tag == "safe" else None
                fin = scan.tagged.number if scan.tagged and self.rule.tag == "finalized" else None
                chainstate.advance(
                    row,
                    to=tip,
                    head=scan.head,
                    head_time=tip.timestamp if behind == 0 else None,
                    safe=safe,
                    finalized=fin,
                )
            if behind > self.max_range:
                start = row.backfill_from if row.backfill_from is not None else scan.from_block
                chainstate.set_backfill(row, start, scan.head)
            elif row.backfill_from is not None:
                chainstate.set_backfill(row, None, None)
            lowest_pending = await deposits.lowest_pending_block(s, self.chain_id)
            prune = keep_from if lowest_pending is None else min(keep_from, lowest_pending)
            await chainstate.prune_blocks_below(s, self.chain_id, min(prune, tip_number))
            backfill = (row.backfill_from, row.backfill_to)
            moved = bool(recorded.new or recorded.credited or recorded.repointed or credited)
            if moved:
                crash_point("listener.step.before_commit")
        if moved:
            crash_point("listener.step.after_commit")

        if backfill[0] is not None and backfill[1] is not None:
            total = max(1, backfill[1] - backfill[0] + 1)
            done = tip_number - backfill[0] + 1
            log.info(
                "%s backfill: block %d of %d..%d (%d%%): blocks %d..%d: %d deposits seen, "
                "%d credited",
                network.name,
                tip_number,
                backfill[0],
                backfill[1],
                100 * done // total,
                scan.from_block,
                scan.to_block,
                recorded.new + recorded.repointed,
                recorded.credited + len(credited),
                extra={"chain_id": self.chain_id},
            )
        elif log.isEnabledFor(logging.INFO):
            self._log_events(scan, recorded, credited, tip_number)
        self._count(recorded, credited_later=len(credited))
        self._count_blocks(scan)
        self._observe(max(scan.head, self._best_head or 0), tip_number, tip)
        return behind > 0

    async def _reorg(
        self,
        mismatch_at: int,
        stored: dict[int, BlockRef],
        start_cursor: int,
        tagged: BlockRef | None,
    ) -> bool:
        name = self.network.name
        confirmation = await reorgs.confirm_mismatch(
            self.client, mismatch_at, stored[mismatch_at].hash
        )
        if not confirmation.confirmed:
            log.warning(
                "%s: block %d differs from the stored hash on one read but not confirmed "
                "(still ours: %d, other: %d, silent: %d); waiting",
                name,
                mismatch_at,
                confirmation.votes_old,
                confirmation.votes_new,
                confirmation.silent,
            )
            return False
        hashes = {n: b.hash for n, b in stored.items()}
        found = await reorgs.find_ancestor(self.client, hashes, mismatch_at)
        if isinstance(found, WindowExhausted):
            async with self.sessions.begin() as s:
                await raise_alarm(
                    s,
                    AlarmKind.FINALITY_VIOLATED,
                    f"chain:{self.chain_id}",
                    f"{name}: reorg deeper than the stored window "
                    f"(no stored block from {found.lowest_checked} to {found.tip} is canonical)",
                    {"lowest_checked": found.lowest_checked, "tip": found.tip},
                )
            log.error(
                "reorg detected chain=%d network=%s deeper than the stored window: no "
                "stored block from %d to %d is canonical; listener stopped",
                self.chain_id,
                name,
                found.lowest_checked,
                found.tip,
                extra={"chain_id": self.chain_id},
            )
            self.metrics.reorgs.labels(name).inc()
            raise ReorgDepthExceeded(
                chain_id=self.chain_id, tip=found.tip, depth=found.min_depth, rule=self.rule
            )
        ancestor = stored[found.number]
        depth = start_cursor - ancestor.number
        async with self.sessions.begin() as s:
            row = await chainstate.cursor(s, self.chain_id)
            if row is None or row.scanned_block != start_cursor:
                log.warning("%s: cursor moved under us; reorg handling abandoned", name)
                return False
            last_tagged = row.finalized if self.rule.tag == "finalized" else row.safe
            dropped = await deposits.drop_above(s, self.chain_id, ancestor.number)
            await chainstate.drop_blocks_above(s, self.chain_id, ancestor.number)
            chainstate.rewind(row, ancestor)
            deep = is_deep(depth, self.rule, tip=start_cursor, tagged_block_number=last_tagged)
            if dropped.reversed or deep:
                reversed_keys = [f"{d.tx_hash}:{d.log_index}" for d in dropped.reversed]
                await raise_alarm(
                    s,
                    AlarmKind.FINALITY_VIOLATED,
                    f"chain:{self.chain_id}",
                    f"{name}: reorg of {depth} blocks above {ancestor.number} "
                    f"(rule {self.rule}); {len(reversed_keys)} credited deposit(s) reversed",
                    {
                        "ancestor": ancestor.number,
                        "tip": start_cursor,
                        "depth": depth,
                        "reversed": reversed_keys,
                    },
                )
        log.warning(
            "reorg detected chain=%d network=%s depth=%d ancestor=%d ancestor_hash=%s "
            "tip=%d: %d deposit(s) orphaned, %d reversed",
            self.chain_id,
            name,
            depth,
            ancestor.number,
            ancestor.hash,
            start_cursor,
            len(dropped.orphaned),
            len(dropped.reversed),
            extra={"chain_id": self.chain_id},
        )
        for what, rows, level in (
            ("orphaned", dropped.orphaned, logging.INFO),
            ("reversed", dropped.reversed, logging.WARNING),
        ):
            for d in rows:
                self._log_deposit(
                    what,
                    d.tx_hash,
                    d.log_index,
                    d.block_number,
                    d.account,
                    d.asset,
                    d.ledger_amount,
                    level,
                )
        self.metrics.reorgs.labels(name).inc()
        self.metrics.reorg_depth.labels(name).set(depth)
        self.metrics.deposits.labels(name, "orphaned").inc(len(dropped.orphaned))
        self.metrics.deposits.labels(name, "reversed").inc(len(dropped.reversed))
        self.metrics.cursor.labels(name).set(ancestor.number)
        return True

    # --- lifecycle lines (after the step's commit) ---------------------------

    def _log_events(
        self,
        scan: poller.Scan,
        recorded: deposits.Recorded,
        credited: list[Deposit],
        tip: int,
    ) -> None:
        """One line per deposit event of a committed steady-state step, or one summary
        line when the step holds more than :data:`PER_EVENT_LOG_LIMIT` events."""
        events = len(recorded.fresh) + recorded.credited + recorded.repointed + len(credited)
        if not events:
            return
        chain = self.chain_id
        if events > PER_EVENT_LOG_LIMIT:
            log.info(
                "deposits chain=%d blocks=%d..%d: %d seen, %d credited (summary: %d events "
                "in one step)",
                chain,
                scan.from_block,
                scan.to_block,
                recorded.new + recorded.repointed,
                recorded.credited + len(credited),
                events,
                extra={"chain_id": chain},
            )
            return
        rule = self.rule
        required = str(rule.depth) if rule.depth is not None else str(rule.tag)
        credited_state, unsupported = str(DepositState.CREDITED), str(DepositState.UNSUPPORTED)
        for d, state, asset, units in zip(
            recorded.fresh,
            recorded.states,
            recorded.assets,
            recorded.ledger_amounts,
            strict=True,
        ):
            if asset is None or units is None or state == unsupported:
                log.info(
                    "deposit seen chain=%d tx=%s log=%d block=%d account=%s token=%s "
                    "amount=%d (unsupported token: not credited)",
                    chain,
                    d.tx_hash,
                    d.log_index,
                    d.block_number,
                    d.account,
                    d.token,
                    d.amount,
                    extra={"chain_id": chain, "tx_hash": d.tx_hash},
                )
                continue
            amount = self._amount(asset, units)
            final = state == credited_state
            log.info(
                "deposit seen chain=%d tx=%s log=%d block=%d account=%s asset=%s amount=%s (%s)",
                chain,
                d.tx_hash,
                d.log_index,
                d.block_number,
                d.account,
                asset,
                amount,
                "final" if final else f"pending {confirmations(tip, d.block_number)}/{required}",
                extra={"chain_id": chain, "tx_hash": d.tx_hash},
            )
            if final:
                self._log_deposit(
                    "credited", d.tx_hash, d.log_index, d.block_number, d.account, asset, units
                )
        for row in recorded.repointed_rows:
            log.info(
                "deposit seen again chain=%d tx=%s log=%d block=%d account=%s "
                "(re-included after a reorg; pending)",
                chain,
                row.tx_hash,
                row.log_index,
                row.block_number,
                row.account,
                extra={"chain_id": chain, "tx_hash": row.tx_hash},
            )
        for row in credited:
            self._log_deposit(
                "credited",
                row.tx_hash,
                row.log_index,
                row.block_number,
                row.account,
                row.asset,
                row.ledger_amount,
            )

    def _log_deposit(
        self,
        what: str,
        tx_hash: str,
        log_index: int,
        block: int,
        account: str,
        asset: str | None,
        units: int | None,
        level: int = logging.INFO,
    ) -> None:
        log.log(
            level,
            "deposit %s chain=%d tx=%s log=%d block=%d account=%s asset=%s amount=%s",
            what,
            self.chain_id,
            tx_hash,
            log_index,
            block,
            account,
            asset,
            self._amount(asset, units),
            extra={"chain_id": self.chain_id, "tx_hash": tx_hash},
        )

    def _amount(self, asset: str | None, units: int | None) -> str:
        cfg = self.assets.get(asset) if asset is not None else None
        if cfg is None or units is None:
            return "?"
        return format_amount(units, cfg.precision)

    # --- observability ------------------------------------------------------

    def _observe(self, head: int, cursor: int, tip: BlockRef | None = None) -> None:
        name = self.network.name
        now = time.time()
        if self.seen.cursor != cursor or self.seen.advanced_at is None:
            self.seen.advanced_at = now
        self.seen.head, self.seen.cursor, self.seen.observed_at = head, cursor, now
        self.metrics.head.labels(name).set(head)
        self.metrics.cursor.labels(name).set(cursor)
        self.metrics.lag_blocks.labels(name).set(max(0, head - cursor))
        if tip is not None:
            self.metrics.lag_seconds.labels(name).set(max(0.0, time.time() - tip.timestamp))

    def _count(self, recorded: deposits.Recorded, *, credited_later: int) -> None:
        name = self.network.name
        m = self.metrics.deposits
        if recorded.new:
            m.labels(name, "seen").inc(recorded.new)
        if recorded.unsupported:
            m.labels(name, "unsupported").inc(recorded.unsupported)
        if recorded.repointed:
            m.labels(name, "repointed").inc(recorded.repointed)
        credited = recorded.credited + credited_later
        if credited:
            m.labels(name, "credited").inc(credited)

    def _count_blocks(self, scan: poller.Scan) -> None:
        if scan.empty:
            return
        name = self.network.name
        self.blocks_read += scan.to_block - scan.from_block + 1
        self.metrics.blocks_scanned.labels(name).inc(scan.to_block - scan.from_block + 1)
        calls = sum(self.client.stats.calls.values())
        self.metrics.rpc_per_1000_blocks.labels(name).set(1000 * calls / self.blocks_read)

    def _feed_rpc_metrics(self) -> None:
        name = self.network.name
        for (endpoint, method), n in self.client.stats.calls.items():
            key: tuple[str, ...] = ("call", endpoint, method)
            delta = n - self._rpc_fed.get(key, 0)
            if delta:
                self.metrics.rpc_calls.labels(name, endpoint, method).inc(delta)
                self._rpc_fed[key] = n
        for (endpoint, method, kind), n in self.client.stats.errors.items():
            key = ("error", endpoint, method, kind)
            delta = n - self._rpc_fed.get(key, 0)
            if delta:
                self.metrics.rpc_errors.labels(name, endpoint, kind).inc(delta)
                self._rpc_fed[key] = n


def build_listener(
    *,
    network: NetworkConfig,
    listener: ListenerSettings,
    assets: Mapping[str, AssetConfig],
    sessions: SessionFactory,
    metrics: Metrics,
    client: RpcClient,
) -> DepositListener:
    """The listener of ``network`` on the daemon's shared RPC client of that network."""
    return DepositListener(network, listener, assets, sessions, client, metrics)


__all__ = ["DepositListener", "RpcError", "build_listener"]
