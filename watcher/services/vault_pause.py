"""Recording a vault's pause where status, gauges and operators see it.

Three roles learn that a vault paused or resumed, each its own way: the sender reads
``paused()`` before each batch (and every tick while paused), the tracker sees a payout
of ours pay nothing (``WithdrawPaused``), and the deposit listener sees the vault's
``Paused``/``Unpaused``/``WithdrawPaused`` events in the ranges it reads (the only one
that notices a guardian's pause while no withdrawal is waiting). They all store it
through :func:`store_pause`: the row in ``vault_states``, the ``vault_paused`` alarm
while paused, the ``watcher_vault_paused`` gauge and one log line per change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from watcher.chain.artifacts import PAUSED_TOPIC, UNPAUSED_TOPIC, WITHDRAW_PAUSED_TOPIC
from watcher.chain.rpc import RpcClient
from watcher.chain.vault import decode_uint, paused_request
from watcher.metrics import Metrics
from watcher.services.cosigning import PAUSED_PREFIX
from watcher.settings import NetworkConfig
from watcher.store import vaults
from watcher.store.alarms import AlarmKind, raise_alarm
from watcher.store.db import SessionFactory

__all__ = ["VAULT_STATE_TOPICS", "observe_pause_events", "store_pause"]

log = logging.getLogger("watcher.vault")

# topic0 of the vault events that change its pause (read by the listener's eth_getLogs).
VAULT_STATE_TOPICS = (PAUSED_TOPIC, UNPAUSED_TOPIC, WITHDRAW_PAUSED_TOPIC)


async def store_pause(
    sessions: SessionFactory,
    network: NetworkConfig,
    *,
    paused: bool,
    reason: str | None,
    metrics: Metrics | None = None,
) -> bool:
    """Store ``network``'s vault as paused (with ``reason``) or running; returns True
    when that changed what was stored."""
    async with sessions.begin() as s:
        changed = await vaults.record(
            s, network.chain_id, network.vault, paused=paused, reason=reason
        )
        if paused:
            await raise_alarm(
                s,
                AlarmKind.VAULT_PAUSED,
                f"{network.chain_id}",
                f"{network.name}: {reason}",
                {"chainId": network.chain_id, "vault": network.vault},
            )
    if changed:
        if paused:
            log.warning(
                "vault %s paused: withdrawals stay queued (%s)",
                network.vault,
                reason,
                extra={"chain_id": network.chain_id},
            )
        else:
            log.info(
                "vault %s is not paused: the withdrawal queue drains",
                network.vault,
                extra={"chain_id": network.chain_id},
            )
    if metrics is not None:
        metrics.vault_paused.labels(network.name).set(1 if paused else 0)
    return changed


async def observe_pause_events(
    client: RpcClient,
    sessions: SessionFactory,
    network: NetworkConfig,
    raw_logs: Sequence[Mapping[str, Any]],
    *,
    metrics: Metrics | None = None,
) -> bool | None:
    """React to pause events the listener saw (raw, unverified: hints only). The events
    say *that* something changed; what is stored is the vault's own ``paused()`` at the
    latest block, so a forged, reorged or stale event changes nothing but one read.
    Returns the pause read (None: no event of ours among ``raw_logs``)."""
    vault = network.vault.lower()
    events = sorted(
        (
            raw
            for raw in raw_logs
            if str(raw.get("address", "")).lower() == vault and raw.get("removed") is not True
        ),
        key=_position,
    )
    if not events:
        return None
    paused = bool(decode_uint(await client.call(*paused_request(network.vault))))
    reason = None
    if paused:
        newest = events[-1]
        # The vault pausing itself emits WithdrawPaused then Paused(vault) in one tx:
        # the first says why.
        why = [
            e
            for e in events
            if e.get("transactionHash") == newest.get("transactionHash")
            and _topic0(e) == WITHDRAW_PAUSED_TOPIC
        ]
        reason = f"{PAUSED_PREFIX}: " + _describe(why[-1] if why else newest, network)
    await store_pause(sessions, network, paused=paused, reason=reason, metrics=metrics)
    return paused


def _topic0(raw: Mapping[str, Any]) -> str:
    topics = raw.get("topics") or []
    return str(topics[0]).lower() if topics else ""


def _position(raw: Mapping[str, Any]) -> tuple[int, int]:
    try:
        return int(str(raw.get("blockNumber")), 16), int(str(raw.get("logIndex")), 16)
    except ValueError:
        return -1, -1


def _describe(raw: Mapping[str, Any], network: NetworkConfig) -> str:
    """What the newest pause event says, for the stored reason and the alarm."""
    topics = [str(t).lower() for t in raw.get("topics") or []]
    block = _position(raw)[0]
    where = f"the vault {network.vault} is paused on chain (event in block {block}"
    try:
        if topics[0] == WITHDRAW_PAUSED_TOPIC and len(topics) >= 3:
            data = bytes.fromhex(str(raw.get("data", "0x")).removeprefix("0x"))
            amount = int.from_bytes(data[:32], "big")
            token = "0x" + topics[2][-40:]
            return (
                f"{where}: withdrawal {int(topics[1], 16)} of {amount} base units of "
                f"token {token} would have crossed its hourly limit); withdrawals wait "
                "until its guardian unpauses it"
            )
        if topics[0] == PAUSED_TOPIC and len(topics) >= 2:
            return (
                f"{where}, paused by {'0x' + topics[1][-40:]}); withdrawals wait until its "
                "guardian unpauses it"
            )
    except ValueError:
        pass
    return f"{where}); withdrawals wait until its guardian unpauses it"
