"""Gauges read from the database when /metrics is scraped: withdrawals by state and the
age of the oldest one in each open state, and latched alarms by kind. Every known state
and alarm kind is exported (0 when none), so alert rules and dashboards always see the
series."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select

from watcher.domain.states import WITHDRAWAL_TERMINAL, WithdrawalState
from watcher.store.alarms import AlarmKind
from watcher.store.models import Alarm, Withdrawal, utcnow

if TYPE_CHECKING:
    from watcher.app import App

_FINAL = {s.value for s in WITHDRAWAL_TERMINAL}


async def refresh_gauges(app: App) -> None:
    m = app.metrics
    now = utcnow()
    async with app.sessions() as s:
        rows = (
            await s.execute(
                select(Withdrawal.state, func.count(), func.min(Withdrawal.updated_at)).group_by(
                    Withdrawal.state
                )
            )
        ).all()
        alarms = (
            await s.execute(
                select(Alarm.kind, func.count())
                .where(Alarm.acknowledged_at.is_(None))
                .group_by(Alarm.kind)
            )
        ).all()
    counts = {state: (int(n), oldest) for state, n, oldest in rows}
    for state in WithdrawalState:
        n, oldest = counts.get(state.value, (0, None))
        m.withdrawals.labels(state.value).set(n)
        if state.value not in _FINAL:
            age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
            m.withdrawal_oldest.labels(state.value).set(age)
    active = {kind: int(n) for kind, n in alarms}
    for known in AlarmKind:
        m.alarms.labels(known.value).set(active.pop(known.value, 0))
    for other, n in active.items():
        m.alarms.labels(other).set(n)
