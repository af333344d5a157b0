"""Nonce manager: one per (network, hot wallet), persisted in the ``nonces`` table.

Guarantees across crash and restart:

* A nonce is taken from the table in the same DB transaction that stores the signed
  attempt using it (``store.withdrawals.take_nonces``), so a restart never signs a
  second transaction under a nonce that a persisted one already holds, and never
  skips one silently.
* On start and before every batch the sender signs (:meth:`NonceManager.sync`) the
  stored next nonce is compared with the chain's: if the chain's *pending* nonce is
  ahead (someone else used the wallet, or the table was lost) we move up to it; if
  the stored one is ahead, the nonces in between are a *gap*: signed in our DB but
  unknown to the node (a crash between persist and broadcast, or a node that lost
  its mempool, or a load-balanced endpoint whose pending count lags: then every
  re-sent one comes back "already known" and nothing else happens). A gap blocks every later
  transaction of the wallet, so :meth:`repair_gap` re-broadcasts each nonce's newest
  persisted attempt (same raw bytes, same hash) and, for a nonce with no attempt at
  all, sends a zero-value transfer to self to fill it.

Worked example: table next = 7, chain latest = 4, pending = 4 → gap {4, 5, 6}; the
attempts with nonces 4, 5, 6 are re-sent as they were signed and the wallet moves on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from watcher.chain.broadcast import Outcome, broadcast_raw
from watcher.chain.rpc import RpcClient
from watcher.chain.signer import HotSigner
from watcher.domain.gas import Fees
from watcher.store import withdrawals as repo
from watcher.store.db import SessionFactory

log = logging.getLogger("watcher.nonces")

FILLER_GAS = 21_000


@dataclass(frozen=True, slots=True)
class NonceSync:
    stored: int | None  # what the table said before the sync
    chain_latest: int  # nonce after the last mined transaction of the wallet
    chain_pending: int  # including the node's pool
    next_nonce: int  # what the table says now

    @property
    def gap(self) -> range:
        """Nonces we hold signed attempts for that the node has not seen."""
        return range(self.chain_pending, self.next_nonce)

    @property
    def unmined(self) -> range:
        return range(self.chain_latest, self.next_nonce)


class NonceManager:
    def __init__(
        self, sessions: SessionFactory, rpc: RpcClient, chain_id: int, address: str
    ) -> None:
        self.sessions = sessions
        self.rpc = rpc
        self.chain_id = chain_id
        self.address = address

    async def chain_nonces(self) -> tuple[int, int]:
        latest, pending = await self.rpc.batch(
            [
                ("eth_getTransactionCount", [self.address, "latest"]),
                ("eth_getTransactionCount", [self.address, "pending"]),
            ]
        )
        return int(latest, 16), int(pending, 16)

    async def sync(self) -> NonceSync:
        latest, pending = await self.chain_nonces()
        async with self.sessions.begin() as s:
            row = await repo.nonce_row(s, self.chain_id, self.address, lock=True)
            stored = row.next_nonce if row is not None else None
            target = pending if stored is None else max(stored, pending)
            if stored is not None and pending > stored:
                log.warning(
                    "hot wallet %s on chain %d: chain pending nonce %d is ahead of ours (%d); "
                    "another sender used this wallet",
                    self.address,
                    self.chain_id,
                    pending,
                    stored,
                    extra={"chain_id": self.chain_id},
                )
            if target != stored:
                await repo.set_next_nonce(s, self.chain_id, self.address, target)
        return NonceSync(stored, latest, pending, target)

    async def repair_gap(
        self,
        sync: NonceSync,
        *,
        http: aiohttp.ClientSession,
        urls: Sequence[str],
        signer: HotSigner,
        filler_fees: Fees,
    ) -> list[int]:
        """Re-send what the node lacks below our next nonce; returns the filled nonces."""
        if not sync.gap:
            return []
        async with self.sessions() as s:
            attempts = await repo.attempts_in(
                s, self.chain_id, repo.LIVE_ATTEMPTS, sender=self.address
            )
        newest: dict[int, str] = {}
        for a in attempts:  # ordered by (nonce, id): the last one per nonce wins
            newest[a.nonce] = a.raw_tx
        raws: list[str] = []
        filled: list[int] = []
        for nonce in sync.gap:
            raw = newest.get(nonce)
            if raw is None:
                raw = signer.sign_transaction(
                    {
                        "type": 2,
                        "chainId": self.chain_id,
                        "nonce": nonce,
                        "to": self.address,
                        "value": 0,
                        "gas": FILLER_GAS,
                        "maxFeePerGas": filler_fees.max_fee_per_gas,
                        "maxPriorityFeePerGas": filler_fees.max_priority_fee_per_gas,
                    }
                ).raw
                filled.append(nonce)
            raws.append(raw)
        results = await broadcast_raw(http, urls, raws)
        if not filled and all(r.outcome is Outcome.KNOWN for r in results):
            # The node had them all (its pending count lagged, e.g. another node of a
            # load-balanced endpoint answered): nothing was missing.
            log.debug(
                "hot wallet %s on chain %d: nonces %d..%d re-sent, all already known",
                self.address,
                self.chain_id,
                sync.gap.start,
                sync.gap.stop - 1,
            )
            return filled
        log.warning(
            "hot wallet %s on chain %d: repaired nonce gap %d..%d (%d re-sent, %d filled): %s",
            self.address,
            self.chain_id,
            sync.gap.start,
            sync.gap.stop - 1,
            len(raws) - len(filled),
            len(filled),
            ", ".join(sorted({r.outcome.value for r in results})),
            extra={"chain_id": self.chain_id},
        )
        return filled
