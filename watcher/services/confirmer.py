"""Which pending deposits are final, and crediting them (DOMAIN.md §5).

Guarantees:

* Confirmations are counted against the listener's *new tip* — the highest block
  whose header it fetched and verified in this step — not a head number a node
  merely claimed: depth N credits block b when ``tip - b + 1 >= N``. Example with
  N = 3: a deposit in block 100 is pending at tip 101 (2 confirmations) and
  credited at tip 102. Under a tag rule b must be at or below the tagged block
  (``finalized``/``safe``) and at or below the tip; the tagged header was checked
  against the stored window in the same step, so "the hashes agree".
* A deposit is credited only if its block hash equals the canonical hash we hold
  for its height (stored window or this step's headers); otherwise it waits.
* Crediting happens in the listener's step transaction: deposit row → ``credited``,
  balanced journal (user cross +L, ``system:vault:<chain>`` −L), balances — all or
  nothing; the journal ref is the deposit key, so a replay cannot credit twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from watcher.domain.reorg import compare
from watcher.store import deposits
from watcher.store.models import Deposit

log = logging.getLogger("watcher.confirmer")


async def credit_final(
    session: AsyncSession, chain_id: int, upto: int | None, canonical: Mapping[int, str]
) -> list[Deposit]:
    """Credit the pending deposits at or below ``upto`` whose block hash is canonical."""
    if upto is None:
        return []
    ready = []
    for row in await deposits.pending_upto(session, chain_id, upto):
        if compare(canonical.get(row.block_number), row.block_hash):
            ready.append(row)
        else:
            log.warning(
                "deposit %s:%d in block %d: hash %s is not the canonical one; not credited",
                row.tx_hash,
                row.log_index,
                row.block_number,
                row.block_hash,
            )
    if not ready:
        return []
    return await deposits.credit(session, ready)
