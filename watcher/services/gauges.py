"""Gauges read from the database when /metrics is scraped: withdrawals in each state
they pass through and the age of the oldest one in each, the withdrawals ever stored,
and latched alarms by kind. Every live state and known alarm kind is exported (0 when
none), so alert rules and dashboards always see the series.

The final withdrawal states (completed, failed, rejected, cancelled) are not counted:
their rows only grow, and counting them read the whole table at every scrape (issue
22). What is counted here is an index seek over the few rows in progress, plus the
highest id (``watcher_withdrawals_stored``, one seek), as ``watcher status`` does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select

from watcher.domain.states import WITHDRAWAL_HOLDING
from watcher.store.alarms import AlarmKind
from watcher.store.models import Alarm, Withdrawal, utcnow

if TYPE_CHECKING:
    from watcher.app import App

#: The states a withdrawal passes through (its hold is still held), as exported.
LIVE = sorted(s.value for s in WITHDRAWAL_HOLDING)


async def refresh_gauges(app: App) -> None:
    m = app.metrics
    now = utcnow()
    async with app.sessions() as s:
        rows = (
            await s.execute(
                select(Withdrawal.state, func.count(), func.min(Withdrawal.updated_at))
                .where(Withdrawal.state.in_(LIVE))
                .group_by(Withdrawal.state)
            )
        ).all()
        stored = await s.scalar(select(func.max(Withdrawal.id)))
        alarms = (
            await s.execute(
                select(Alarm.kind, func.count())
                .where(Alarm.acknowledged_at.is_(None))
                .group_by(Alarm.kind)
            )
        ).all()
    counts = {state: (int(n), oldest) for state, n, oldest in rows}
    for state in LIVE:
        n, oldest = counts.get(state, (0, None))
        m.withdrawals.labels(state).set(n)
        age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        m.withdrawal_oldest.labels(state).set(age)
    m.withdrawals_stored.set(int(stored or 0))
    active = {kind: int(n) for kind, n in alarms}
    for known in AlarmKind:
        m.alarms.labels(known.value).set(active.pop(known.value, 0))
    for other, n in active.items():
        m.alarms.labels(other).set(n)
