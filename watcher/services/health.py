"""Health: healthy when the database answers, no alarm is latched and every service
that reports health (network listeners: lag within budget, RPC reachable) is fine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from watcher.store.models import Alarm

if TYPE_CHECKING:
    from watcher.app import App


async def health(app: App) -> dict[str, Any]:
    reasons: list[str] = []
    try:
        async with app.sessions() as s:
            alarms = (await s.scalars(select(Alarm).where(Alarm.acknowledged_at.is_(None)))).all()
    except Exception as exc:  # reported, not swallowed: it is the answer
        return {"status": "down", "reasons": [f"database unreachable: {type(exc).__name__}"]}
    for alarm in alarms:
        reasons.append(f"alarm {alarm.id} {alarm.kind}: {alarm.message}")
    for service in app.services:
        check = getattr(service, "health_reasons", None)
        if check is not None:
            reasons.extend(check())
    return {"status": "ok" if not reasons else "degraded", "reasons": reasons}
