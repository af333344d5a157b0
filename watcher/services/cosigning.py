"""The sender's collection of co-signatures: for the withdrawals about to be signed, ask
every configured co-signer at once (each with a timeout) for its signature of each payout
authorization, and decide whether the signatures gathered reach the vault's quorum. A
co-signer gets the batch's payouts in requests of up to :data:`BATCH_SIZE`
(``/v1/cosign/batch``: one HTTP round trip and one store transaction for all of them);
one without that endpoint (an older version) is asked one payout per request.

The quorum is the vault's own rule over its on-chain validator set (read from
``validators()`` by the sender before each batch): the signers' power ``signed`` must
satisfy ``3 * signed >= 2 * total``. A signature only counts when it recovers to a
registered validator (``cosign_client.ask`` has checked that it recovers to the signer
the co-signer named); each validator counts once whichever URL served it.

Outcomes per withdrawal:

* :class:`Quorum`: enough power signed; the signatures (sorted by signer, the order the
  vault takes them) and the payout deadline they cover go into the transaction;
* :class:`Short`: not enough. ``refused`` is true when stored refusals leave too little
  power to ever reach the quorum for this payload (final: the withdrawal is not asked
  again; an operator cancels or rejects it); otherwise the withdrawal waits queued and
  is asked again next tick.

Every refusal is returned in ``refusals`` (the sender raises COSIGN_REFUSED for them,
even when the others reached the quorum: one co-signer refusing what others signed is
worth a look). Nothing here touches the database.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from watcher.chain.payout import Payout, sort_signatures
from watcher.services.cosign_client import (
    BatchUnsupported,
    CoSignAnswer,
    CoSignature,
    CoSignRefused,
    CoSignUnavailable,
    ask,
    ask_many,
    cosign_body,
)

#: Reason prefixes a queued withdrawal carries (the text after them says why).
QUORUM_PREFIX = "cosign_quorum"
REFUSED_PREFIX = "cosign_refused"
PAUSED_PREFIX = "vault_paused"

#: Requests to co-signers in flight at once (all co-signers together), for co-signers
#: asked one payout per request.
CONCURRENCY = 64
#: Payouts per batch request (the co-signer's own maximum is 128).
BATCH_SIZE = 64


class CosignRequest:
    """What the co-signers are shown for one withdrawal (a stored row's columns)."""

    __slots__ = ("account", "decimals", "nonce", "payout", "request_deadline", "signature")

    def __init__(
        self,
        payout: Payout,
        *,
        account: str,
        decimals: int,
        nonce: int,
        request_deadline: int,
        signature: str | None,
    ) -> None:
        self.payout = payout
        self.account = account
        self.decimals = decimals
        self.nonce = nonce
        self.request_deadline = request_deadline
        self.signature = signature

    def body(self) -> dict[str, object]:
        return cosign_body(
            self.payout,
            account=self.account,
            decimals=self.decimals,
            nonce=self.nonce,
            request_deadline=self.request_deadline,
            signature=self.signature or None,
        )


@dataclass(frozen=True)
class Quorum:
    deadline: int
    signatures: list[tuple[str, str]]  # (signer, signature), sorted by signer
    refusals: list[CoSignRefused] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps([[s, sig] for s, sig in self.signatures])


@dataclass(frozen=True)
class Short:
    reason: str
    refused: bool
    refusals: list[CoSignRefused] = field(default_factory=list)
    signed: int = 0  # co-signers whose signature counted


Outcome = Quorum | Short


def quorum_met(signed: int, total: int) -> bool:
    """The vault's rule, exactly: ``3 * signed >= 2 * total`` (and a non-empty set)."""
    return total > 0 and 3 * signed >= 2 * total


def stored_signatures(text: str | None) -> list[tuple[str, str]]:
    """The ``cosignatures`` column back as (signer, signature) pairs ([] if empty)."""
    if not text:
        return []
    return [(str(s), str(sig)) for s, sig in json.loads(text)]


#: Refusal codes that a later payload of the same withdrawal can pass (a limit window
#: with room again, a deadline the co-signer accepts): the withdrawal waits and is asked
#: again. Every other refusal is about the withdrawal itself and final.
RETRYABLE_REFUSALS = frozenset(
    {"ACCOUNT_LIMIT_EXCEEDED", "GLOBAL_LIMIT_EXCEEDED", "DEADLINE_PASSED", "DEADLINE_TOO_FAR"}
)


def decide(
    answers: Sequence[CoSignature | CoSignRefused | CoSignUnavailable],
    validators: Mapping[str, int],
    deadline: int,
) -> Outcome:
    """The outcome of one withdrawal's answers (one per co-signer URL) under the vault's
    validator set ({signer: power})."""
    total = sum(validators.values())
    power = {v.lower(): p for v, p in validators.items()}
    signed: dict[str, tuple[str, str]] = {}
    refusals = [a for a in answers if isinstance(a, CoSignRefused)]
    notes: list[str] = []
    for a in answers:
        if isinstance(a, CoSignature):
            if a.signer.lower() in power:
                signed.setdefault(a.signer.lower(), (a.signer, a.signature))
            else:
                notes.append(f"{a.url}: signer {a.signer} is not a validator of the vault")
        elif isinstance(a, CoSignUnavailable):
            notes.append(f"{a.url}: unavailable ({a.reason})")
        else:
            notes.append(f"{a.url}: refused {a.code}: {a.message}")
    signed_power = sum(power[s] for s in signed)
    if quorum_met(signed_power, total):
        return Quorum(deadline, sort_signatures(signed.values()), refusals)
    need = f"{signed_power} of {total} validator power signed (3 x signed >= 2 x total needed)"
    detail = "; ".join(notes) if notes else "no answer"
    # Final only when nobody is left who could still sign this withdrawal: every
    # co-signer answered, and the ones that did not sign refused for good.
    final = bool(refusals) and all(
        isinstance(a, CoSignature)
        or (isinstance(a, CoSignRefused) and a.code not in RETRYABLE_REFUSALS)
        for a in answers
    )
    if final:
        return Short(f"{REFUSED_PREFIX}: {need}; {detail}", True, refusals, len(signed))
    return Short(f"{QUORUM_PREFIX}: {need}; {detail}", False, refusals, len(signed))


class Cosigning:
    """Asks one network's co-signers (``urls``) with the bearer ``token``."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        urls: Sequence[str],
        token: str | None,
        *,
        timeout_s: float,
    ) -> None:
        self.http = http
        self.urls = list(urls)
        self.token = token or ""
        self.timeout_s = timeout_s
        self._gate = asyncio.Semaphore(CONCURRENCY)
        self._single: set[str] = set()  # co-signers without the batch endpoint

    async def _ask(
        self, url: str, req: CosignRequest
    ) -> CoSignature | CoSignRefused | CoSignUnavailable:
        async with self._gate:
            return await ask(
                self.http, url, self.token, req.payout, req.body(), timeout_s=self.timeout_s
            )

    async def _ask_all(self, url: str, requests: Sequence[CosignRequest]) -> list[CoSignAnswer]:
        """Every request's answer from the co-signer at ``url``: batches of
        :data:`BATCH_SIZE`, one after the other (the co-signer decides one request at a
        time anyway, so each batch's timeout covers its own work only); one request per
        payout for a co-signer without the batch endpoint."""
        if url in self._single:
            return list(await asyncio.gather(*(self._ask(url, req) for req in requests)))
        out: list[CoSignAnswer] = []
        for i in range(0, len(requests), BATCH_SIZE):
            chunk = requests[i : i + BATCH_SIZE]
            try:
                out.extend(
                    await ask_many(
                        self.http,
                        url,
                        self.token,
                        [(req.payout, req.body()) for req in chunk],
                        timeout_s=self.timeout_s,
                    )
                )
            except BatchUnsupported:
                self._single.add(url)
                return out + await self._ask_all(url, requests[i:])
        return out

    async def collect(
        self, requests: Sequence[CosignRequest], validators: Mapping[str, int]
    ) -> list[Outcome]:
        """One outcome per request, in order; the co-signers asked concurrently, each
        for all the requests in batches."""
        if not self.urls:
            return [
                Short(f"{QUORUM_PREFIX}: no co-signers configured for this network", False)
                for _ in requests
            ]
        per_url = await asyncio.gather(*(self._ask_all(url, requests) for url in self.urls))
        return [
            decide([answers[i] for answers in per_url], validators, req.payout.deadline)
            for i, req in enumerate(requests)
        ]
