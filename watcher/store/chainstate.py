"""Per-network chain state: the scan cursor and the stored canonical block window.

The cursor row (``network_cursors``) says "every Deposit log up to and including
``scanned_block`` (whose hash is ``scanned_hash``) is stored". The ``blocks`` table
holds the canonical hashes the listener verified: every block of the unconfirmed
window, plus, below it, the blocks that carried deposits and the ends of scanned
ranges. Reorgs are detected against these hashes (principle 4).

Every function here runs inside the caller's DB transaction; none commits.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.domain.reorg import BlockRef
from watcher.store.ledger import dialect_name
from watcher.store.models import Block, NetworkCursor, utcnow


async def cursor(session: AsyncSession, chain_id: int) -> NetworkCursor | None:
    return await session.get(NetworkCursor, chain_id, populate_existing=True)


async def ensure_cursor(
    session: AsyncSession, chain_id: int, name: str, start_block: int
) -> NetworkCursor:
    """The network's cursor, created at ``start_block - 1`` (nothing scanned yet)."""
    row = await cursor(session, chain_id)
    if row is None:
        row = NetworkCursor(
            chain_id=chain_id, name=name, scanned_block=start_block - 1, scanned_hash=None
        )
        session.add(row)
        await session.flush()
    return row


async def canonical_window(session: AsyncSession, chain_id: int) -> dict[int, BlockRef]:
    """Every stored block of the network, by number."""
    rows = await session.scalars(select(Block).where(Block.chain_id == chain_id))
    return {
        r.number: BlockRef(
            number=r.number, hash=r.hash, parent_hash=r.parent_hash, timestamp=r.timestamp
        )
        for r in rows
    }


async def store_blocks(session: AsyncSession, chain_id: int, blocks: Iterable[BlockRef]) -> None:
    """Upsert verified canonical headers (a re-scan after a reorg overwrites)."""
    rows = [
        {
            "chain_id": chain_id,
            "number": b.number,
            "hash": b.hash,
            "parent_hash": b.parent_hash,
            "timestamp": b.timestamp,
        }
        for b in blocks
    ]
    if not rows:
        return
    ins = postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert
    stmt = ins(Block)
    stmt = stmt.on_conflict_do_update(
        index_elements=["chain_id", "number"],
        set_={
            "hash": stmt.excluded.hash,
            "parent_hash": stmt.excluded.parent_hash,
            "timestamp": stmt.excluded.timestamp,
        },
    )
    for start in range(0, len(rows), 1000):
        await session.execute(stmt, rows[start : start + 1000])


async def drop_blocks_above(session: AsyncSession, chain_id: int, number: int) -> None:
    """Forget the stored blocks above the common ancestor ``number`` (a reorg)."""
    await session.execute(delete(Block).where(Block.chain_id == chain_id, Block.number > number))


async def prune_blocks_below(session: AsyncSession, chain_id: int, number: int) -> None:
    """Forget stored blocks below ``number``: they are older than any reorg we resolve."""
    await session.execute(delete(Block).where(Block.chain_id == chain_id, Block.number < number))


def advance(
    row: NetworkCursor,
    *,
    to: BlockRef,
    head: int,
    head_time: int | None,
    safe: int | None,
    finalized: int | None,
) -> None:
    """Move the cursor to ``to`` (whose logs are now stored) and record the heads."""
    row.scanned_block = to.number
    row.scanned_hash = to.hash
    row.head = head
    row.head_time = head_time
    if safe is not None:
        row.safe = safe
    if finalized is not None:
        row.finalized = finalized
    row.updated_at = utcnow()


def set_backfill(row: NetworkCursor, backfill_from: int | None, backfill_to: int | None) -> None:
    """Backfill progress for ``watcher status``: None/None when caught up."""
    row.backfill_from = backfill_from
    row.backfill_to = backfill_to


def rewind(row: NetworkCursor, ancestor: BlockRef) -> None:
    """Reset the cursor to the common ancestor of a reorg; the next step re-scans above it."""
    row.scanned_block = ancestor.number
    row.scanned_hash = ancestor.hash
    row.updated_at = utcnow()
