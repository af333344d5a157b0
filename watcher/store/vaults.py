"""What the watcher last saw of each vault's pause (table ``vault_states``). The sender
reads the vault's ``paused()`` before each batch and writes the answer here; the
tracker writes it when a payout of ours paused the vault (``WithdrawPaused``);
``watcher status`` and the gauges read it. Runs inside the caller's transaction."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.store.models import VaultState, utcnow


async def get(session: AsyncSession, chain_id: int) -> VaultState | None:
    return await session.get(VaultState, chain_id, populate_existing=True)


async def all_states(session: AsyncSession) -> list[VaultState]:
    return list(await session.scalars(select(VaultState).order_by(VaultState.chain_id)))


async def record(
    session: AsyncSession, chain_id: int, vault: str, *, paused: bool, reason: str | None
) -> bool:
    """Store the vault's pause; returns True when it changed (or was unknown)."""
    row = await get(session, chain_id)
    if row is None:
        session.add(
            VaultState(
                chain_id=chain_id, vault=vault, paused=paused, reason=reason, changed_at=utcnow()
            )
        )
        return True
    if row.paused == paused and (not paused or row.reason == reason or reason is None):
        return False
    changed = row.paused != paused
    row.paused = paused
    row.vault = vault
    if reason is not None or not paused:
        row.reason = reason
    if changed:
        row.changed_at = utcnow()
    return changed
