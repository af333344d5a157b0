"""The recovery log: on start, one INFO line per network with what the previous run left
in flight and what this run resumes — the listener's cursor, deposits pending, and the
withdrawals by state, naming those signed but not broadcast (the sender sends them first,
byte for byte, so nothing is signed twice).

Nothing here changes state: the roles resume from the database by themselves; this only
makes what they resume visible to the operator after a crash or a restart.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from watcher.store.inflight import ChainInFlight, in_flight

if TYPE_CHECKING:
    from watcher.settings import Settings
    from watcher.store.db import SessionFactory

log = logging.getLogger("watcher.recovery")


def describe(name: str, chain_id: int, found: ChainInFlight) -> str:
    cursor = found.cursor
    if cursor is None:
        where = "no cursor yet (first start on this network: starts at its configured block)"
    else:
        where = f"cursor at block {cursor.scanned_block}"
        if cursor.head is not None:
            where += f" (head {cursor.head} when last seen)"
        if cursor.backfill_from is not None and cursor.backfill_to is not None:
            where += f", backfill {cursor.backfill_from}..{cursor.backfill_to} to finish"
    parts = [f"resuming {name} (chain {chain_id}): {where}"]
    parts.append(f"deposits pending {found.deposits_pending}")
    if found.withdrawals:
        states = " ".join(f"{s}={n}" for s, n in sorted(found.withdrawals.items()))
        parts.append(f"withdrawals in flight: {states}")
    else:
        parts.append("no withdrawal in flight")
    unsent = found.attempts.get("signed", 0)
    if unsent:
        ids = ",".join(str(i) for i in found.unsent_ids)
        more = (
            "" if unsent <= len(found.unsent_ids) else f" and {unsent - len(found.unsent_ids)} more"
        )
        parts.append(
            f"{unsent} attempt(s) signed but not broadcast, re-sent first byte for byte "
            f"(withdrawals {ids}{more})"
        )
    followed = found.attempts.get("broadcast", 0) + found.attempts.get("mined", 0)
    if followed:
        parts.append(f"{followed} attempt(s) sent and followed for their receipt")
    return "; ".join(parts)


async def log_recovery(settings: Settings, sessions: SessionFactory) -> dict[int, ChainInFlight]:
    """Log what each enabled network resumes; returns the figures (tests read them)."""
    networks = settings.enabled_networks
    async with sessions() as s:
        found = await in_flight(s, [n.chain_id for n in networks])
    for n in networks:
        log.info(describe(n.name, n.chain_id, found[n.chain_id]), extra={"chain_id": n.chain_id})
    return found
