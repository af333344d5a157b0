"""The sender's side of a co-signer (a seam for the sender's collection of
co-signatures): build the body of ``POST /v1/cosign`` from a withdrawal, ask one
co-signer, and classify its answer. Nothing here retries or decides on a quorum.

:func:`cosign_body` rebuilds the user's request from what the watcher stored: the token
as its address and the amount as the base units written in the token's decimals. The
user's signature covers (account, token address, amount in base units, destination,
nonce, deadline), so this verifies exactly as the body the user sent did.

:func:`ask` answers one of (:func:`ask_many`, one request for several payouts through
``/v1/cosign/batch``, one of them per payout):

* :class:`CoSignature`: 200, and the signature recovers to the signer the co-signer
  named (and to ``expected_signer`` when given) over this payout's digest;
* :class:`CoSignRefused`: a stored, final refusal (403/409/422) — raise the alarm;
* :class:`CoSignUnavailable`: anything else (timeout, connection, 401, 400, 5xx, a
  signature that does not check out) — this co-signer gives no vote now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from watcher.chain import payout as payouts
from watcher.chain.payout import Payout
from watcher.domain.amounts import format_amount

FINAL_STATUSES = frozenset({403, 409, 422})


@dataclass(frozen=True)
class CoSignature:
    url: str
    signer: str
    signature: str


@dataclass(frozen=True)
class CoSignRefused:
    url: str
    status: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CoSignUnavailable:
    url: str
    reason: str


CoSignAnswer = CoSignature | CoSignRefused | CoSignUnavailable


def cosign_body(
    payout: Payout,
    *,
    account: str,
    decimals: int,
    nonce: int,
    request_deadline: int,
    signature: str | None,
) -> dict[str, Any]:
    """The JSON body for one payout and the user request it pays (``payout.amount`` in
    base units; ``decimals`` the token's)."""
    return {
        "payout": {
            "id": str(payout.id),
            "chainId": payout.chain_id,
            "vault": payout.vault,
            "token": payout.token,
            "to": payout.to,
            "amount": str(payout.amount),
            "deadline": payout.deadline,
        },
        "request": {
            "account": account,
            "chainId": payout.chain_id,
            "token": payout.token,
            "amount": format_amount(payout.amount, decimals),
            "destination": payout.to,
            "nonce": str(nonce),
            "deadline": request_deadline,
            "signature": signature,
        },
    }


async def ask(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    payout: Payout,
    body: dict[str, Any],
    *,
    timeout_s: float = 5.0,
    expected_signer: str | None = None,
) -> CoSignAnswer:
    """Ask the co-signer at ``url`` (its base URL) for its signature of ``payout``."""
    got = await _post(http, url.rstrip("/") + "/v1/cosign", token, body, timeout_s)
    if isinstance(got, CoSignUnavailable):
        return CoSignUnavailable(url, got.reason)
    status, doc = got
    if doc is None:
        return CoSignUnavailable(url, f"HTTP {status} without a JSON object")
    return classify(url, status, doc, payout, expected_signer)


class BatchUnsupported(Exception):
    """The co-signer has no ``/v1/cosign/batch`` (404/405: an older version)."""


#: Answers classified between two turns of the event loop.
CLASSIFY_SLICE = 8


async def ask_many(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    items: Sequence[tuple[Payout, dict[str, Any]]],
    *,
    timeout_s: float = 5.0,
) -> list[CoSignAnswer]:
    """Ask the co-signer at ``url`` for several payouts in one request
    (``POST /v1/cosign/batch``); one answer per item, in order, classified as
    :func:`ask` does. A failed request makes every item :class:`CoSignUnavailable`.
    Raises :class:`BatchUnsupported` when the co-signer lacks the endpoint."""
    body = {"items": [b for _, b in items]}
    got = await _post(http, url.rstrip("/") + "/v1/cosign/batch", token, body, timeout_s)
    if isinstance(got, CoSignUnavailable):
        return [CoSignUnavailable(url, got.reason)] * len(items)
    status, doc = got
    if status in (404, 405):
        raise BatchUnsupported(url)
    if doc is None:
        return [CoSignUnavailable(url, f"HTTP {status} without a JSON object")] * len(items)
    if status != 200:
        return [classify(url, status, doc, p, None) for p, _ in items]
    answers = doc.get("answers")
    if not isinstance(answers, list) or len(answers) != len(items):
        return [CoSignUnavailable(url, "batch answer without one answer per item")] * len(items)
    out: list[CoSignAnswer] = []
    for n, ((payout, _), answer) in enumerate(zip(items, answers, strict=True)):
        if n % CLASSIFY_SLICE == CLASSIFY_SLICE - 1:
            # Each signature is recovered (~0.15 ms): a batch of 64 held the loop for
            # ~10 ms; let the intake's requests waiting on the loop through.
            await asyncio.sleep(0)
        if not isinstance(answer, dict) or not isinstance(answer.get("status"), int):
            out.append(CoSignUnavailable(url, "batch answer item without a status"))
            continue
        out.append(classify(url, answer["status"], answer, payout, None))
    return out


async def _post(
    http: aiohttp.ClientSession, endpoint: str, token: str, body: Any, timeout_s: float
) -> tuple[int, dict[str, Any] | None] | CoSignUnavailable:
    """The answer's status and JSON object (None when the body is not one)."""
    try:
        async with http.post(
            endpoint,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            status = resp.status
            try:
                doc = await resp.json(content_type=None)
            except ValueError:
                doc = None
    except (aiohttp.ClientError, TimeoutError) as exc:
        return CoSignUnavailable(endpoint, type(exc).__name__)
    return status, doc if isinstance(doc, dict) else None


def classify(
    url: str,
    status: int,
    doc: Mapping[str, Any],
    payout: Payout,
    expected_signer: str | None,
) -> CoSignAnswer:
    """One answer (HTTP status and JSON object) for ``payout``, checked: a signature
    counts only if it recovers to the signer named (and ``expected_signer``)."""
    if status == 200:
        signer, signature = doc.get("signer"), doc.get("signature")
        if not isinstance(signer, str) or not isinstance(signature, str):
            return CoSignUnavailable(url, "200 without signer and signature")
        try:
            recovered = payouts.recover(payout, signature)
        except ValueError:
            return CoSignUnavailable(url, "the signature does not recover")
        if recovered.lower() != signer.lower() or (
            expected_signer is not None and recovered.lower() != expected_signer.lower()
        ):
            return CoSignUnavailable(url, f"the signature is {recovered}'s, not the expected")
        return CoSignature(url, recovered, signature)
    code, message = str(doc.get("code", "")), str(doc.get("message", ""))
    details = doc.get("details") if isinstance(doc.get("details"), dict) else {}
    if status in FINAL_STATUSES and code:
        return CoSignRefused(url, status, code, message, dict(details or {}))
    return CoSignUnavailable(url, f"HTTP {status} {code}".strip())
