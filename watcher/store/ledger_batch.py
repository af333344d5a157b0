"""Posting many journal transactions at once (the bulk path of deposit crediting).

Same guarantees as :func:`watcher.store.ledger.post`, for a list: every transaction
is checked balanced before anything is written; posting is idempotent on ``ref``
(refs that already exist are skipped and reported as not created); all entries and
the balance changes land in the caller's DB transaction or not at all. It writes
with a handful of multi-row statements instead of ~10 round trips per transaction,
which is what lets a backfill credit tens of thousands of deposits per second.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.domain.journal import Leg, TxKind, check_balanced
from watcher.store.ledger import _balance_row, ensure_account
from watcher.store.models import JournalEntry, JournalTransaction, utcnow

_CHUNK = 5000  # IN-list and executemany size: under asyncpg's 32767 parameters


@dataclass(frozen=True)
class Posting:
    kind: TxKind
    ref: str
    legs: Sequence[Leg]
    account_key: str | None = None
    memo: str = ""


async def existing_refs(session: AsyncSession, refs: Sequence[str]) -> dict[str, int]:
    """{ref: journal transaction id} for the refs that are already posted."""
    found: dict[str, int] = {}
    for start in range(0, len(refs), _CHUNK):
        chunk = refs[start : start + _CHUNK]
        rows = await session.execute(
            select(JournalTransaction.ref, JournalTransaction.id).where(
                JournalTransaction.ref.in_(chunk)
            )
        )
        found.update({ref: tx_id for ref, tx_id in rows.all()})
    return found


async def post_many(session: AsyncSession, postings: Sequence[Posting]) -> dict[str, int]:
    """Post every posting whose ref is new; return {ref: transaction id} for all of them."""
    checked = [(p, check_balanced(p.legs)) for p in postings]
    refs = [p.ref for p in postings]
    if len(set(refs)) != len(refs):
        raise ValueError("post_many: the same ref twice in one batch")
    ids = await existing_refs(session, refs)
    todo = [(p, legs) for p, legs in checked if p.ref not in ids]
    if not todo:
        return ids

    account_ids: dict[str, int] = {}
    keys = {leg.account for _, legs in todo for leg in legs}
    keys |= {p.account_key for p, _ in todo if p.account_key}
    for key in sorted(keys):
        account_ids[key] = (await ensure_account(session, key)).id

    now = utcnow()
    tx_rows = [
        {
            "kind": str(p.kind),
            "ref": p.ref,
            "account_id": account_ids[p.account_key] if p.account_key else None,
            "memo": p.memo,
            "created_at": now,
        }
        for p, _ in todo
    ]
    # Plain executemany, then read the new ids back: RETURNING with a guaranteed row
    # order falls back to one statement per row on SQLite. Rows above the highest id
    # seen before the insert are ours or (PostgreSQL) a concurrent poster's; the
    # unique ref tells them apart.
    before = await session.scalar(select(func.max(JournalTransaction.id))) or 0
    table = cast(Table, JournalTransaction.__table__)
    for start in range(0, len(tx_rows), _CHUNK):
        await session.execute(table.insert(), tx_rows[start : start + _CHUNK])
    rows = await session.execute(
        select(JournalTransaction.ref, JournalTransaction.id).where(JournalTransaction.id > before)
    )
    created = {ref: tx_id for ref, tx_id in rows.all()}
    new_ids = [created[p.ref] for p, _ in todo]

    entries: list[dict[str, object]] = []
    deltas: dict[tuple[int, str, str], int] = defaultdict(int)
    for tx_id, (p, legs) in zip(new_ids, todo, strict=True):
        ids[p.ref] = tx_id
        for leg in legs:
            account_id = account_ids[leg.account]
            entries.append(
                {
                    "transaction_id": tx_id,
                    "account_id": account_id,
                    "asset": leg.asset,
                    "wallet": leg.wallet,
                    "amount": leg.amount,
                }
            )
            deltas[(account_id, leg.asset, leg.wallet)] += leg.amount
    for start in range(0, len(entries), _CHUNK):
        await session.execute(
            cast(Table, JournalEntry.__table__).insert(), entries[start : start + _CHUNK]
        )
    # Lock balance rows in a stable order (same order as ledger.post: no deadlock).
    for account_id, asset, wallet in sorted(deltas):
        delta = deltas[(account_id, asset, wallet)]
        if delta == 0:
            continue
        row = await _balance_row(session, account_id, asset, wallet)
        row.amount = row.amount + delta
        row.updated_at = now
    await session.flush()
    return ids
