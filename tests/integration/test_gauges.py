"""Gauges read from the database on each /metrics scrape: alarms and withdrawals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.helpers import write_config
from watcher.app import App, build
from watcher.chain.devnet import Deployment
from watcher.services.gauges import refresh_gauges
from watcher.settings import load_settings
from watcher.store.alarms import AlarmKind, acknowledge, active_alarms, raise_alarm

pytestmark = pytest.mark.usefixtures("chain_snapshot")


@pytest.fixture
async def app(tmp_path: Path, db_url: str, deployment: Deployment) -> AsyncIterator[App]:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    a = await build(load_settings(cfg, env={}, database_url=db_url), services=False)
    yield a
    await a.close()


def _sample(app: App, name: str, **labels: str) -> float | None:
    value = app.metrics.registry.get_sample_value(name, labels)
    return value


async def test_alarms_and_withdrawal_states_are_exported(app: App) -> None:
    await refresh_gauges(app)
    # Every known kind and state is a series even when nothing is there.
    assert _sample(app, "watcher_alarms_active", kind="finality_violated") == 0
    assert _sample(app, "watcher_withdrawals", state="queued") == 0
    assert _sample(app, "watcher_withdrawal_oldest_age_seconds", state="queued") == 0
    assert _sample(app, "watcher_withdrawal_oldest_age_seconds", state="completed") is None
    assert _sample(app, "watcher_withdrawals", state="completed") is None
    assert _sample(app, "watcher_withdrawals_stored") == 0

    async with app.sessions.begin() as s:
        await raise_alarm(s, AlarmKind.HOT_WALLET_LOW, "31337:USDT", "queued: lacks USDT")
        await raise_alarm(s, AlarmKind.HOT_WALLET_LOW, "31337:gas", "queued: lacks gas")
    await refresh_gauges(app)
    assert _sample(app, "watcher_alarms_active", kind="hot_wallet_low") == 2
    assert _sample(app, "watcher_alarms_active", kind="rpc_down") == 0

    async with app.sessions.begin() as s:
        for alarm in await active_alarms(s):
            await acknowledge(s, alarm.id, "ops")
    await refresh_gauges(app)
    assert _sample(app, "watcher_alarms_active", kind="hot_wallet_low") == 0


async def test_withdrawals_by_state_and_oldest_age(app: App) -> None:
    """The states withdrawals pass through are counted; the final ones (which only
    grow) are not exported, the withdrawals ever stored are (the highest id)."""
    from datetime import timedelta

    from watcher.store.models import Account, Withdrawal, utcnow

    user = "0x" + "ab" * 20
    async with app.sessions.begin() as s:
        account = Account(key=user, kind="user")
        s.add(account)
        await s.flush()
        states = [("queued", 700), ("queued", 100), ("completed", 9), ("cancelled", 5000)]
        for nonce, (state, age) in enumerate(states):
            s.add(
                Withdrawal(
                    account=user,
                    account_id=account.id,
                    chain_id=31337,
                    token="0x" + "00" * 20,
                    asset="ETH",
                    amount=1,
                    ledger_amount=1,
                    destination=user,
                    nonce=nonce,
                    deadline=2**63,
                    signature="0x",
                    request_digest="0x",
                    state=state,
                    updated_at=utcnow() - timedelta(seconds=age),
                )
            )
    await refresh_gauges(app)
    assert _sample(app, "watcher_withdrawals", state="queued") == 2
    assert _sample(app, "watcher_withdrawals", state="signed") == 0
    for final in ("completed", "failed", "rejected", "cancelled"):
        assert _sample(app, "watcher_withdrawals", state=final) is None
        assert _sample(app, "watcher_withdrawal_oldest_age_seconds", state=final) is None
    async with app.sessions() as s:
        highest = await s.scalar(select(func.max(Withdrawal.id)))
    assert highest is not None and _sample(app, "watcher_withdrawals_stored") == highest
    age = _sample(app, "watcher_withdrawal_oldest_age_seconds", state="queued")
    assert age is not None and 700 <= age < 760
    assert _sample(app, "watcher_withdrawal_oldest_age_seconds", state="signed") == 0
