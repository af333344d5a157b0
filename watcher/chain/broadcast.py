"""Send signed raw transactions to *every* configured RPC endpoint, and read fee data.

Broadcasting is deliberately not a failover call: a transaction only known to one
node can be lost with that node's mempool, so each raw tx goes to all endpoints (in
JSON-RPC batches of at most ``batch_size``; STACK.md: anvil's automine stalls with
~1,000 concurrent submissions, batches of 100 are fine). Each transaction's outcome
is classified per node; it counts as broadcast when at least one node accepted it
or already knows it (tested with a node that refuses every transaction in front of
a working one: accepted, the refusal kept in ``messages``).

``asyncio.CancelledError`` propagates; transport errors of one endpoint are recorded
as that endpoint's outcome, never raised past the others.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp

from watcher.chain.errors import PermanentRpcError
from watcher.chain.rpc import RpcClient, redact_url

_HEADERS = {"Content-Type": "application/json"}
_ids = itertools.count(1)


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # the node took it into its pool now
    KNOWN = "known"  # the node already had it (a re-broadcast)
    NONCE_USED = "nonce_used"  # "nonce too low": a tx with this nonce is already mined
    UNDERPRICED = "underpriced"  # a replacement whose fee bump is too small
    NO_FUNDS = "no_funds"  # the sender cannot pay gas × max fee + value
    ERROR = "error"  # anything else (transport, unknown message)

    @property
    def is_in_pool(self) -> bool:
        return self in (Outcome.ACCEPTED, Outcome.KNOWN)


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    outcome: Outcome
    messages: tuple[str, ...]  # one per endpoint that did not accept it, redacted


def classify(message: str) -> Outcome:
    text = message.lower()
    if "already known" in text or "already imported" in text or "known transaction" in text:
        return Outcome.KNOWN
    if "nonce too low" in text or "nonce is too low" in text or "noncetoolow" in text:
        return Outcome.NONCE_USED
    if "underpriced" in text or "replacement" in text:
        return Outcome.UNDERPRICED
    if "insufficient funds" in text or "insufficientfunds" in text:
        return Outcome.NO_FUNDS
    return Outcome.ERROR


_RANK = {
    Outcome.ACCEPTED: 0,
    Outcome.KNOWN: 1,
    Outcome.NONCE_USED: 2,
    Outcome.UNDERPRICED: 3,
    Outcome.NO_FUNDS: 4,
    Outcome.ERROR: 5,
}


async def _send_batch(
    http: aiohttp.ClientSession, url: str, raws: Sequence[str], limit_s: float
) -> list[tuple[Outcome, str]]:
    ids = [next(_ids) for _ in raws]
    body = [
        {"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": [raw]}
        for i, raw in zip(ids, raws, strict=True)
    ]
    label = redact_url(url)
    try:
        async with http.post(
            url,
            data=json.dumps(body, separators=(",", ":")),
            headers=_HEADERS,
            timeout=aiohttp.ClientTimeout(total=limit_s),
        ) as resp:
            decoded: Any = json.loads(await resp.read())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return [(Outcome.ERROR, f"{label}: {type(exc).__name__}")] * len(raws)
    if not isinstance(decoded, list):
        return [(Outcome.ERROR, f"{label}: batch answered with a single object")] * len(raws)
    by_id = {item.get("id"): item for item in decoded if isinstance(item, dict)}
    out: list[tuple[Outcome, str]] = []
    for i in ids:
        item = by_id.get(i)
        if item is None:
            out.append((Outcome.ERROR, f"{label}: no answer"))
        elif item.get("error") is not None:
            err = item["error"]
            message = str(err.get("message", err)) if isinstance(err, dict) else str(err)
            out.append((classify(message), f"{label}: {message[:200]}"))
        else:
            out.append((Outcome.ACCEPTED, ""))
    return out


async def broadcast_raw(
    http: aiohttp.ClientSession,
    urls: Sequence[str],
    raws: Sequence[str],
    *,
    batch_size: int = 100,
    limit_s: float = 10.0,
) -> list[BroadcastResult]:
    """Send each raw tx to every URL; the best outcome over the endpoints wins."""
    if not raws:
        return []
    per_url: list[list[tuple[Outcome, str]]] = []

    async def one_url(url: str) -> list[tuple[Outcome, str]]:
        results: list[tuple[Outcome, str]] = []
        # Batches go one after another per node: the node sees the nonces in order.
        for start in range(0, len(raws), batch_size):
            chunk = raws[start : start + batch_size]
            results.extend(await _send_batch(http, url, chunk, limit_s))
        return results

    per_url = list(await asyncio.gather(*(one_url(u) for u in urls)))
    out: list[BroadcastResult] = []
    for index in range(len(raws)):
        answers = [answers_of_url[index] for answers_of_url in per_url]
        best = min((o for o, _ in answers), key=_RANK.__getitem__)
        messages = tuple(m for o, m in answers if m and not o.is_in_pool)
        out.append(BroadcastResult(best, messages))
    return out


@dataclass(frozen=True, slots=True)
class FeeQuote:
    base_fee: int  # wei, of the latest block
    tip: int  # wei, the node's suggested priority fee


async def fee_quote(rpc: RpcClient) -> FeeQuote:
    """Latest base fee and the node's priority-fee suggestion (eth_maxPriorityFeePerGas,
    falling back to the median of eth_feeHistory's last blocks at the 50th percentile)."""
    block, tip_hex = await asyncio.gather(
        rpc.call("eth_getBlockByNumber", ["latest", False]),
        _tip(rpc),
    )
    base = int(block.get("baseFeePerGas") or "0x0", 16)
    return FeeQuote(base_fee=base, tip=tip_hex)


async def _tip(rpc: RpcClient) -> int:
    try:
        return int(await rpc.call("eth_maxPriorityFeePerGas"), 16)
    except PermanentRpcError:
        history = await rpc.call("eth_feeHistory", [5, "latest", [50]])
        rewards = [int(r[0], 16) for r in history.get("reward") or [] if r]
        return sorted(rewards)[len(rewards) // 2] if rewards else 0
