"""Fetch and verify the vault's ``Deposit`` logs over a block range.

:func:`fetch_deposit_logs` reads ``[from_block, to_block]`` in chunks of at
most ``max_range`` blocks. A provider that refuses a chunk
(:class:`RangeTooLargeError`) gets half of it, down to a single block; the
smaller span is kept for the rest of the call (a provider limit does not
change between chunks). A single block still refused is raised: the caller
cannot make it smaller and must not skip it.

Verification (principle 7, "don't trust the node"), in order:

1. ``removed: true`` logs are dropped (they belong to a block the node itself
   has since reorged out).
2. Every log must be a well-formed ``Deposit`` of the vault, inside the
   requested range (else :class:`MalformedLogError` / :class:`InconsistentLogsError`).
3. When ``canonical`` is given, every log's block hash must equal the
   canonical hash of its block number, else :class:`InconsistentLogsError`:
   the node served logs from another fork than the headers the listener holds.

``canonical`` is either a mapping (block number → hash) — typically the
headers the listener fetched in the same tick for the same range — or an async
function that receives the sorted distinct block numbers that have logs and
returns their hashes (e.g. ``lambda ns: hashes_of(client.get_blocks(ns))``).
A block number missing from the answer is an inconsistency too: the listener
asked for the hashes of the range it is about to process, so a log outside of
what it knows is not to be trusted.

What this cannot see: a node that silently *drops* logs (truncated results)
answers with a well-formed subset. The listener must defend elsewhere: compare
each header's ``logsBloom`` with the vault address and ``DEPOSIT_TOPIC`` (a
block whose bloom matches but that returned no log is suspect), cross-check
the log count of a range with a second endpoint when one is configured, and
re-read ranges (writes are idempotent, principle 5) before crediting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Protocol

from watcher.chain.errors import InconsistentLogsError, MalformedLogError, RangeTooLargeError
from watcher.chain.logs import DEPOSIT_TOPIC, DepositLog, decode_deposit_log

__all__ = [
    "CanonicalHashes",
    "InconsistentLogsError",
    "LogSource",
    "RawHook",
    "fetch_deposit_logs",
    "verify_deposit_logs",
]


class LogSource(Protocol):
    """What :func:`fetch_deposit_logs` needs from :class:`~watcher.chain.rpc.RpcClient`."""

    expected_chain_id: int

    async def get_logs(
        self,
        address: str | Sequence[str] | None,
        topics: Sequence[str | Sequence[str] | None] | None,
        from_block: int | str | None = None,
        to_block: int | str | None = None,
        block_hash: str | None = None,
    ) -> list[dict[str, Any]]: ...


_ORDER = attrgetter("block_number", "log_index")
DECODE_SLICE = 2000

CanonicalHashes = Mapping[int, str] | Callable[[Sequence[int]], Awaitable[Mapping[int, str]]]
RawHook = Callable[[Sequence[Mapping[str, Any]]], Awaitable[None]]


async def fetch_deposit_logs(
    client: LogSource,
    vault: str,
    from_block: int,
    to_block: int,
    max_range: int,
    *,
    canonical: CanonicalHashes | None = None,
    on_answer: RawHook | None = None,
    hint_topics: Sequence[str] = (),
    on_hint: RawHook | None = None,
) -> list[DepositLog]:
    """Deposit logs of ``vault`` in ``[from_block, to_block]``, verified, sorted.

    Sorted by ``(block_number, log_index)``. Raises
    :class:`RangeTooLargeError` if a single block is refused,
    :class:`InconsistentLogsError` if a log does not belong to the range, the
    vault or the canonical chain, and whatever the client raises otherwise.

    ``on_answer`` is awaited with the raw, not yet verified logs before they are
    decoded (the listener starts reading the headers of their blocks meanwhile); it
    must treat them as untrusted.

    ``hint_topics``: other events of the vault read by the same ``eth_getLogs`` (topic0
    any of Deposit and these; no extra call). Their raw logs, not verified and to be
    treated as hints only, are handed to ``on_hint`` (with the range's answer, once);
    the Deposit logs are verified as always.
    """
    if max_range < 1:
        raise ValueError(f"max_range must be >= 1, got {max_range}")
    if from_block < 0 or to_block < from_block:
        raise ValueError(f"invalid block range [{from_block}, {to_block}]")
    raw_logs: list[dict[str, Any]] = []
    topics: list[str | Sequence[str] | None] = (
        [[DEPOSIT_TOPIC, *hint_topics]] if hint_topics else [DEPOSIT_TOPIC]
    )
    span = max_range
    start = from_block
    while start <= to_block:
        end = min(to_block, start + span - 1)
        try:
            chunk = await client.get_logs(vault, topics, start, end)
        except RangeTooLargeError:
            if end == start:
                raise
            # Halve the chunk and retry from the same start. Example: 1000..1999
            # refused → 1000..1499; refused → 1000..1249 → ok, then 1250..1499 …
            span = max(1, (end - start + 1) // 2)
            continue
        raw_logs.extend(chunk)
        start = end + 1
    if hint_topics:
        wanted = {t.lower() for t in hint_topics}
        hints = [raw for raw in raw_logs if _topic0(raw) in wanted]
        if hints:
            raw_logs = [raw for raw in raw_logs if _topic0(raw) not in wanted]
            if on_hint is not None:
                await on_hint(hints)
    if on_answer is not None:
        await on_answer(raw_logs)
    return await verify_deposit_logs(
        raw_logs,
        chain_id=client.expected_chain_id,
        vault=vault,
        from_block=from_block,
        to_block=to_block,
        canonical=canonical,
    )


def _topic0(raw: Mapping[str, Any]) -> str | None:
    topics = raw.get("topics")
    if isinstance(topics, list) and topics and isinstance(topics[0], str):
        return topics[0].lower()
    return None


async def verify_deposit_logs(
    raw_logs: Sequence[Mapping[str, Any]],
    *,
    chain_id: int,
    vault: str,
    from_block: int,
    to_block: int,
    canonical: CanonicalHashes | None = None,
) -> list[DepositLog]:
    """Drop removed logs, decode, check range/address/canonical hash, sort.

    Decodes in slices of :data:`DECODE_SLICE` logs and yields to the event loop between
    them: 20,000 logs are ~70 ms of CPU, which other tasks (the HTTP API, a header read
    already on the wire) should not wait for in one piece."""
    vault_lower = vault.lower()
    decoded: list[DepositLog] = []
    seen: set[tuple[str, int]] = set()
    for index, raw in enumerate(raw_logs):
        if index and not index % DECODE_SLICE:
            await asyncio.sleep(0)
        if raw.get("removed") is True:
            continue
        address = raw.get("address")
        if address != vault_lower and (
            not isinstance(address, str) or address.lower() != vault_lower
        ):
            raise InconsistentLogsError(
                f"node returned a log of {address!r} for a filter on the vault {vault}",
                method="eth_getLogs",
            )
        log = decode_deposit_log(raw, chain_id)
        if not from_block <= log.block_number <= to_block:
            raise InconsistentLogsError(
                f"log in block {log.block_number} outside the requested range "
                f"[{from_block}, {to_block}]",
                method="eth_getLogs",
            )
        key = (log.tx_hash, log.log_index)
        if key in seen:
            # The same log twice (overlapping chunks on a buggy node): harmless
            # once deduplicated, since deposits are keyed on it anyway.
            continue
        seen.add(key)
        decoded.append(log)
    decoded.sort(key=_ORDER)
    if canonical is not None and decoded:
        await _check_canonical(decoded, canonical)
    return decoded


async def _check_canonical(logs: Sequence[DepositLog], canonical: CanonicalHashes) -> None:
    if isinstance(canonical, Mapping):
        hashes: Mapping[int, str] = canonical
    else:
        numbers = sorted({log.block_number for log in logs})
        hashes = await canonical(numbers)
    for log in logs:
        expected = hashes.get(log.block_number)
        if expected is None:
            raise InconsistentLogsError(
                f"no canonical hash known for block {log.block_number} "
                f"(log {log.tx_hash}:{log.log_index})",
                method="eth_getLogs",
            )
        if expected.lower() != log.block_hash:
            raise InconsistentLogsError(
                f"log {log.tx_hash}:{log.log_index} is in block {log.block_number} "
                f"with hash {log.block_hash}, canonical is {expected.lower()}: "
                "the node served logs from another fork",
                method="eth_getLogs",
            )


# Raised by decode_deposit_log; re-exported so callers import errors from one place.
__all__ += ["MalformedLogError", "RangeTooLargeError"]
