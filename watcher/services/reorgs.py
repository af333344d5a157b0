"""Reorg handling for a listener: detect, confirm, find the common ancestor, roll back.

Guarantees across crash, restart and reorg:

* **Detection** is by hash (anvil, like many nodes, never sends ``removed`` logs):
  the headers of a step must link to the stored window — block ``cursor + 1``'s
  parent hash equals the stored hash of ``cursor`` (with nothing new, block
  ``cursor`` itself is re-read), and a finality tag's block matches what we
  stored at its height. Example: stored 100..102 = a, b, c; the node now says
  103's parent is c' → mismatch at 102.
* **A lagging or lying node is not a reorg.** Before anything is changed the
  mismatching height is read again from every usable endpoint, one attempt each.
  We act only if no endpoint still reports the stored hash and at least one reports
  another one; an endpoint without that block (lagging, ``null``) or failing has no
  vote. With one endpoint this is a second read of the block by number. Not
  confirmed → the step ends without changes; the next tick looks again.
* **Rollback** walks down the stored window (fork_point_step) to the highest
  stored block that is still canonical, the common ancestor A, and then, in ONE DB
  transaction: deletes the stored blocks above A; pending deposits above A become
  ``orphaned``; credited ones are ``reversed`` with a compensating journal entry;
  the cursor is reset to A. A crash before the commit leaves everything as it was
  (the next tick detects the same reorg); after it, the next step re-scans from
  A + 1, where a re-included transaction is found again under its unchanged key
  (chain_id, tx_hash, log_index) and moves back to ``pending`` in its new block.
* A reorg that reversed a credit, or reaches at least the confirmation depth
  (``is_deep``), latches a ``finality_violated`` alarm that stays until an operator
  acknowledges it. A fork point below the stored window (``WindowExhausted``)
  latches the alarm and stops the network's listener (every tick fails) rather than
  guess: the operator must look.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from watcher.chain.errors import InconsistentLogsError
from watcher.chain.rpc import RpcClient
from watcher.domain.reorg import (
    BlockRef,
    Found,
    InconsistentHeaders,
    NeedHashes,
    WindowExhausted,
    compare,
    fork_point_step,
)

log = logging.getLogger("watcher.reorgs")

_MAX_INCONSISTENT = 3


@dataclass(frozen=True)
class Confirmation:
    confirmed: bool
    votes_old: int
    votes_new: int
    silent: int


async def confirm_mismatch(client: RpcClient, number: int, stored_hash: str) -> Confirmation:
    """Ask every endpoint for block ``number``; confirmed when nobody still has ours."""
    answers = await client.get_block_on_each(number)
    old = new = silent = 0
    for answer in answers.values():
        if isinstance(answer, BlockRef):
            if compare(answer.hash, stored_hash):
                old += 1
            else:
                new += 1
        else:
            silent += 1
    return Confirmation(old == 0 and new > 0, old, new, silent)


async def find_ancestor(
    client: RpcClient, stored: Mapping[int, str], start: int
) -> Found | WindowExhausted:
    """The highest stored block that the chain still has, walking down from ``start``."""
    fetched: dict[int, BlockRef] = {}
    inconsistent = 0
    while True:
        step = fork_point_step(stored, fetched, start=start)
        if isinstance(step, NeedHashes):
            for b in await client.get_blocks(step.numbers):
                fetched[b.number] = b
            continue
        if isinstance(step, InconsistentHeaders):
            # The node switched forks during the search: start over with fresh reads.
            inconsistent += 1
            if inconsistent >= _MAX_INCONSISTENT:
                raise InconsistentLogsError(f"ancestor search: {step.reason}")
            fetched.clear()
            continue
        return step
