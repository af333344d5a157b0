"""The fetch half of a listener step: read the chain for the next range, touch no DB.

Guarantees (what a :class:`Scan` holds when :func:`scan` returns):

* ``head`` is a head some endpoint reported. With several endpoints every one is
  asked (:func:`read_heads`, at once; one in cooldown is not asked) and the head is
  the highest that a quorum (two) of them reached: heads 120, 110 (lagging), 121 →
  120. A head below our cursor is a *lagging* node (``Scan.lagging``), never a
  reorg: nothing is fetched or changed.
* The range is ``[cursor + 1, min(head, cursor + max_range)]``. Every header we
  return was fetched in this step: the range end, the link block (``cursor + 1``,
  whose parent hash proves the stored tip is still canonical; with nothing new, the
  tip itself), and every block of the range inside the *header window*
  (``head - window + 1 .. head``: the blocks not yet final by the network's rule plus
  ``margin`` final ones, stored gap-free so that the ancestor of any reorg is found).
  Example, cursor 100, head 103, window 67: headers 101, 102, 103 (1 batch).
  Backfill, cursor 1000, head 50,000, range 2000: headers 1001 and 3000 only,
  whatever the number of deposits (one batch of two, plus one ``eth_getLogs``): blocks
  below the window are final (``Scan.sparse_upto``) and need no header of their own —
  by the rule they will not change, and a deposit in one is credited in the step that
  reads it. The one-time cost is the window's headers when a backfill reaches the
  head (67 for 3 confirmations).
* Every log is a well-formed vault ``Deposit`` inside the range. A log of a block in
  the window has the hash of the header we fetched for its block; the logs of a block
  below it agree on one hash (within an answer and, with several endpoints, between
  answers). Otherwise the step fails (:class:`InconsistentLogsError`,
  retryable) and nothing is persisted.
* **Truncated log lists.** With one endpoint, its answer is trusted to be complete
  (JSON-RPC gives no way to prove completeness short of reading every receipt).
  With several endpoints, every usable endpoint is asked for the range (each
  pinned: one attempt, refused at once while it cools down after a failure, so a
  hanging endpoint costs one ``rpc_timeout`` per cooldown, not per step) except one
  whose last reported head is below the range end (a lagging node answers the part
  it has: a truncated list that would look consistent; it counts as failed), and
  the answers are merged by the deposit key;
  the range is accepted only when at least TWO endpoints answered with logs that
  match the headers. So a log is missed only if two independent nodes both
  omitted it. If fewer than two answer (one of two endpoints down), the step
  fails and the cursor stays: we stall (lag grows, health says why) rather than
  trust one possibly truncated list — configure three endpoints to ride out one
  outage. Cost: one eth_blockNumber and one eth_getLogs per endpoint per step
  (steady state with one endpoint: 3 calls per new block — eth_blockNumber, one
  header, one eth_getLogs; backfill of final blocks: about 4 calls per ``max_range``
  blocks).
* After the head, the headers we know we need and the logs are read concurrently
  (a failure of either cancels the other and fails the step). The headers of the
  blocks a raw answer names (inside the range) are requested while it is decoded,
  one batch per ``max_batch_size``, all at once; they are hints only: every log is
  still checked against the header of its block, and a header a verified log needs
  that the hint missed (or whose read failed) is read after, as before. One
  endpoint's answer is already deduplicated and sorted by
  :func:`~watcher.chain.fetch.fetch_deposit_logs` and used as is; several are merged
  by the deposit key and sorted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from watcher.chain.errors import InconsistentLogsError, RpcError
from watcher.chain.fetch import RawHook, fetch_deposit_logs
from watcher.chain.logs import DepositLog
from watcher.chain.rpc import RpcClient
from watcher.domain.confirmations import ConfirmationRule, final_upto
from watcher.domain.reorg import BlockRef

log = logging.getLogger("watcher.poller")

A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True)
class Scan:
    head: int
    tagged: BlockRef | None
    from_block: int
    to_block: int  # from_block - 1 when there is nothing new
    headers: dict[int, BlockRef] = field(default_factory=dict)
    logs: list[DepositLog] = field(default_factory=list)
    lagging: bool = False
    divergent_endpoints: int = 0  # endpoints whose log lists differed from the merge
    # The highest block final by the rule at ``head`` (-1: none).
    final: int = -1
    # Blocks at or below this one (final, below the header window) were read without a
    # header of their own: their logs were checked for one hash per block (and agreement
    # between endpoints) instead.
    sparse_upto: int = -1

    @property
    def empty(self) -> bool:
        return self.to_block < self.from_block


class _Pinned:
    """A :class:`~watcher.chain.fetch.LogSource` pinned to one endpoint (one attempt;
    refused at once while the endpoint is in cooldown)."""

    def __init__(self, client: RpcClient, index: int) -> None:
        self.client = client
        self.index = index
        self.expected_chain_id = client.expected_chain_id

    async def get_logs(
        self,
        address: str | Sequence[str] | None,
        topics: Sequence[str | Sequence[str] | None] | None,
        from_block: int | str | None = None,
        to_block: int | str | None = None,
        block_hash: str | None = None,
    ) -> list[dict[str, Any]]:
        return await self.client.get_logs(
            address, topics, from_block, to_block, block_hash, endpoint=self.index
        )


def quorum(asked: int) -> int:
    """How many endpoints must agree on a range's logs: two when several are configured."""
    return min(2, asked)


@dataclass(frozen=True)
class Heads:
    """The head to scan to and the best head any endpoint reported.

    ``scan_to`` is the highest head that a quorum of endpoints has reached (the second
    highest of three answers), so that every endpoint asked for the range can vouch for
    all of it and a node running ahead alone is not followed; ``best`` is the highest
    answer (what the lag is measured against). ``failures`` are the endpoints that did
    not answer (position → error)."""

    scan_to: int
    best: int
    failures: dict[int, RpcError] = field(default_factory=dict)


async def read_heads(client: RpcClient) -> Heads:
    """Every usable endpoint's head at once (pinned: an endpoint in cooldown is not
    asked). With one endpoint, or when no endpoint answers the pinned read, one read
    with failover and retry (which raises when every endpoint fails)."""
    if len(client.usable_endpoints) <= 1:
        head = await client.block_number()
        return Heads(head, head)
    votes = await client.head_votes()
    numbers = sorted((v for v in votes.values() if isinstance(v, int)), reverse=True)
    failures = {i: v for i, v in votes.items() if not isinstance(v, int)}
    if not numbers:
        head = await client.block_number()
        return Heads(head, head, failures)
    need = quorum(len(votes))
    scan_to = numbers[need - 1] if len(numbers) >= need else numbers[-1]
    return Heads(scan_to, numbers[0], failures)


async def read_head(client: RpcClient, rule: ConfirmationRule) -> tuple[int, BlockRef | None]:
    head = await client.block_number()
    tagged = await client.get_block(rule.tag) if rule.tag is not None else None
    return head, tagged


def window_size(rule: ConfirmationRule, head: int, tagged: BlockRef | None, margin: int) -> int:
    """How many blocks below the head we keep every header of: the blocks not yet
    final, plus ``margin`` already-final ones (room to find the ancestor of a reorg
    deeper than the rule). Depth 3, margin 64 → 67."""
    if rule.depth is not None:
        return rule.depth + margin
    unfinal = head - tagged.number + 1 if tagged is not None else 0
    return max(unfinal, 1) + margin


def final_by_rule(rule: ConfirmationRule, head: int, tagged: BlockRef | None) -> int:
    """The highest block final by the network's rule at ``head`` (-1 when none is)."""
    upto = final_upto(rule, head, tagged.number if tagged is not None else None)
    return -1 if upto is None else upto


async def scan(
    client: RpcClient,
    *,
    vault: str,
    rule: ConfirmationRule,
    cursor: int,
    max_range: int,
    margin: int,
    heads: Heads | None = None,
    hint_topics: Sequence[str] = (),
    on_hint: RawHook | None = None,
) -> Scan:
    """The next range's headers and verified logs. ``heads`` (from :func:`read_heads`,
    read by the caller so that it can report the head even when this fails) gives the
    head; without it the head is read here. ``hint_topics``/``on_hint``: other vault
    events read by the same ``eth_getLogs``, handed over raw (see
    :func:`~watcher.chain.fetch.fetch_deposit_logs`)."""
    if heads is None:
        head, tagged = await read_head(client, rule)
    else:
        head = heads.scan_to
        tagged = await client.get_block(rule.tag) if rule.tag is not None else None
    if head < cursor:
        return Scan(head, tagged, cursor + 1, cursor, lagging=True)
    start, end = cursor + 1, min(head, cursor + max_range)
    final = final_by_rule(rule, head, tagged)
    window = window_size(rule, head, tagged, margin)
    # Blocks below the window are final: no header of their own (RPC economy: a
    # backfill of final blocks costs one eth_getLogs per range and two headers, not one
    # header per block with a deposit). The window — every block not yet final plus
    # ``margin`` final ones — keeps a header per block, stored gap-free: the ancestor
    # of any reorg, even one deeper than the rule, is found and measured exactly.
    sparse = min(final, head - window)
    needed: set[int] = {end} if end >= start else set()
    if cursor >= 0:
        needed.add(cursor + 1 if end >= start else cursor)
    needed.update(range(max(start, head - window + 1), end + 1))
    if end < start:
        headers = {b.number: b for b in await client.get_blocks(sorted(needed))}
        if tagged is not None:
            headers.setdefault(tagged.number, tagged)
        return Scan(head, tagged, start, end, headers, final=final, sparse_upto=sparse)
    # The headers and the logs are independent reads: ask for both at once (one round
    # trip less per step; the same calls, so still 3 per new block in steady state).
    # The headers of the non-final blocks an answer names are asked for while it is
    # decoded.
    prefetch = _HeaderPrefetch(client, needed, max(start, sparse + 1), end)
    try:
        blocks, answers = await _together(
            client.get_blocks(sorted(needed)),
            _answers(client, vault, start, end, max_range, prefetch, hint_topics, on_hint),
        )
        headers = {b.number: b for b in blocks}
        headers.update(await prefetch.collect())
    finally:
        await prefetch.close()
    if tagged is not None:
        headers.setdefault(tagged.number, tagged)
    logs, divergent = await _merge(client, start, end, headers, sparse, *answers)
    return Scan(head, tagged, start, end, headers, logs, divergent_endpoints=divergent, final=final)


class _HeaderPrefetch:
    """Reads the headers of the blocks a raw ``eth_getLogs`` answer names (inside the
    range, not already asked for) while the answer is decoded and verified. The numbers
    are untrusted hints: the logs are still checked against whatever headers we end up
    with, and any block a verified log needs that was not read here is read after
    (:func:`_merge`), as before."""

    def __init__(self, client: RpcClient, requested: set[int], start: int, end: int) -> None:
        self.client = client
        self.requested = set(requested)
        self.start, self.end = start, end
        self.tasks: list[asyncio.Future[list[BlockRef]]] = []

    async def __call__(self, raw_logs: Sequence[Mapping[str, Any]]) -> None:
        numbers: set[int] = set()
        for raw in raw_logs:
            value = raw.get("blockNumber")
            if isinstance(value, str) and raw.get("removed") is not True:
                try:
                    numbers.add(int(value, 16))
                except ValueError:
                    continue  # malformed: decoding the log will say so
        new = sorted(n for n in numbers - self.requested if self.start <= n <= self.end)
        if new:
            self.requested.update(new)
            size = self.client.max_batch_size  # one batch each, all on the wire at once
            for i in range(0, len(new), size):
                chunk = new[i : i + size]
                self.tasks.append(asyncio.ensure_future(self.client.get_blocks(chunk)))
            await asyncio.sleep(0)  # let the requests start before the decoding does

    async def collect(self) -> dict[int, BlockRef]:
        out: dict[int, BlockRef] = {}
        for task in self.tasks:
            try:
                out.update({b.number: b for b in await task})
            except RpcError as exc:
                # Not fatal here: _merge reads the headers still missing, under the
                # retry policy, and fails the step if it cannot.
                log.info("header prefetch failed: %s", exc)
        return out

    async def close(self) -> None:
        pending = [t for t in self.tasks if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _together(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Await both concurrently; the first failure cancels the other and is raised as is."""
    one, two = asyncio.ensure_future(first), asyncio.ensure_future(second)
    try:
        await asyncio.wait((one, two), return_when=asyncio.FIRST_EXCEPTION)
    finally:
        if not (one.done() and two.done()):
            one.cancel()
            two.cancel()
            await asyncio.gather(one, two, return_exceptions=True)
    for task in (one, two):
        if not task.cancelled() and task.exception() is not None:
            raise cast(BaseException, task.exception())
    return one.result(), two.result()


async def _answers(
    client: RpcClient,
    vault: str,
    start: int,
    end: int,
    max_range: int,
    on_answer: RawHook | None = None,
    hint_topics: Sequence[str] = (),
    on_hint: RawHook | None = None,
) -> tuple[list[list[DepositLog]], list[str], int]:
    """Each usable endpoint's verified logs of the range (one endpoint: its answer),
    the failures, and how many endpoints were asked."""
    endpoints = client.usable_endpoints
    if len(endpoints) <= 1:
        logs = await fetch_deposit_logs(
            client,
            vault,
            start,
            end,
            max_range,
            on_answer=on_answer,
            hint_topics=hint_topics,
            on_hint=on_hint,
        )
        return [logs], [], 1
    answers: list[list[DepositLog]] = []
    failures: list[str] = []
    # An endpoint that last reported a head below the range end cannot vouch for the
    # range (a lagging node answers the part it has: a truncated list that would look
    # consistent); it is not asked, and counts as a failure for the quorum.
    asked = len(endpoints)
    # (One in cooldown is still "asked": it refuses at once, saying why it cools down.)
    behind = {
        i
        for i in endpoints
        if (h := client.seen_head(i)) is not None and h < end and not client.in_cooldown(i)
    }
    for i in sorted(behind):
        failures.append(
            f"{client.endpoint_labels[i]} is lagging: its head {client.seen_head(i)} is below {end}"
        )
    endpoints = [i for i in endpoints if i not in behind]
    results = await asyncio.gather(
        *(
            fetch_deposit_logs(
                _Pinned(client, i),
                vault,
                start,
                end,
                max_range,
                on_answer=on_answer,
                hint_topics=hint_topics,
                on_hint=on_hint,
            )
            for i in endpoints
        ),
        return_exceptions=True,
    )
    for i, result in zip(endpoints, results, strict=True):
        if isinstance(result, asyncio.CancelledError):
            raise result
        if isinstance(result, RpcError):
            log.info("logs %d..%d from endpoint #%d failed: %s", start, end, i, result)
            failures.append(str(result))
            continue
        if isinstance(result, BaseException):
            raise result
        answers.append(result)
    return answers, failures, asked


async def _merge(
    client: RpcClient,
    start: int,
    end: int,
    headers: dict[int, BlockRef],
    sparse_upto: int,
    answers: list[list[DepositLog]],
    failures: list[str],
    asked: int,
) -> tuple[list[DepositLog], int]:
    """Check the answers against the headers (fetching those of non-final blocks with
    logs) and merge them by deposit key; at least ``min(2, asked)`` must be consistent.
    Logs of final blocks without a header of their own must agree on one hash per block,
    within an answer and between answers."""
    missing = sorted(
        {d.block_number for a in answers for d in a if d.block_number > sparse_upto} - set(headers)
    )
    if missing:
        headers.update({b.number: b for b in await client.get_blocks(missing)})
    consistent = [a for a in answers if _matches(a, headers, sparse_upto)]
    need = quorum(asked)
    if len(consistent) < need:
        why = "; ".join(failures) or "answers do not match the canonical headers"
        raise InconsistentLogsError(
            f"logs of {start}..{end}: {len(consistent)} of {asked} endpoints gave "
            f"usable answers, {need} needed to rule out a truncated list ({why})",
            method="eth_getLogs",
        )
    if len(answers) == 1:
        # One endpoint: its answer is already deduplicated and sorted (fetch_deposit_logs).
        return answers[0], 0
    merged: dict[tuple[str, int], DepositLog] = {}
    hashes: dict[int, str] = {}
    for answer in consistent:
        for d in answer:
            merged.setdefault((d.tx_hash, d.log_index), d)
            if hashes.setdefault(d.block_number, d.block_hash) != d.block_hash:
                raise InconsistentLogsError(
                    f"logs of {start}..{end}: endpoints name two hashes for final block "
                    f"{d.block_number} ({hashes[d.block_number]}, {d.block_hash})",
                    method="eth_getLogs",
                )
    divergent = sum(1 for a in answers if len(a) != len(merged))
    if divergent:
        log.warning(
            "logs of %d..%d: %d endpoint(s) disagree with the merged %d logs (sizes %s)",
            start,
            end,
            divergent,
            len(merged),
            [len(a) for a in answers],
        )
    out = sorted(merged.values(), key=lambda d: (d.block_number, d.log_index))
    return out, divergent


def _matches(logs: Sequence[DepositLog], headers: Mapping[int, BlockRef], sparse_upto: int) -> bool:
    """Every log's block hash is its header's; a final block below the header window
    without a header of its own (see :func:`scan`) has one hash for all its logs. Any
    other block needs its header."""
    seen: dict[int, str] = {}
    for d in logs:
        header = headers.get(d.block_number)
        if header is not None:
            expected = header.hash
        elif d.block_number <= sparse_upto:
            expected = seen.setdefault(d.block_number, d.block_hash)
        else:
            return False
        if expected != d.block_hash:
            return False
    return True
