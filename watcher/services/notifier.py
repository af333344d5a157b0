"""Notifier: posts latched alarms to the webhook configured for their kind.

Guarantees: at-least-once delivery per raise. An alarm is marked notified (its
``notified_count`` catches up with ``count``) only after the webhook answered 2xx;
a crash in between re-sends it after restart. Delivery failures are retried with
backoff within a tick and again on the next tick; they never block other services.
Webhook URLs may carry credentials: they are never logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import select
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from watcher.chain.rpc import redact_url
from watcher.store.models import Alarm

if TYPE_CHECKING:
    from watcher.app import App

log = logging.getLogger("watcher.notifier")


class WebhookError(Exception):
    pass


def alarm_document(alarm: Alarm) -> dict[str, Any]:
    return {
        "id": alarm.id,
        "kind": alarm.kind,
        "key": alarm.key,
        "severity": alarm.severity,
        "message": alarm.message,
        "details": alarm.details,
        "count": alarm.count,
        "raisedAt": alarm.raised_at.isoformat(),
        "lastSeenAt": alarm.last_seen_at.isoformat(),
        "acknowledged": alarm.acknowledged_at is not None,
    }


class Notifier:
    name = "notifier"
    interval_seconds = 2.0

    def __init__(self, app: App) -> None:
        self.app = app
        self.hooks = app.settings.alarms.webhooks
        self.timeout = aiohttp.ClientTimeout(
            total=float(app.settings.alarms.webhook_timeout_seconds)
        )

    def url_for(self, kind: str) -> str | None:
        return self.hooks.get(kind) or self.hooks.get("*")

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception_type((WebhookError, aiohttp.ClientError, TimeoutError)),
            reraise=True,
        ):
            with attempt:
                async with self.app.http.post(url, json=body, timeout=self.timeout) as resp:
                    if resp.status >= 300:
                        raise WebhookError(f"webhook answered HTTP {resp.status}")

    async def tick(self) -> None:
        if not self.hooks:
            return
        async with self.app.sessions() as s:
            alarms = list(await s.scalars(select(Alarm).where(Alarm.count > Alarm.notified_count)))
        for alarm in alarms:
            url = self.url_for(alarm.kind)
            if url is None:
                continue
            try:
                await self._post(url, alarm_document(alarm))
            except (WebhookError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("alarm %d: webhook %s failed: %s", alarm.id, redact_url(url), exc)
                continue
            async with self.app.sessions.begin() as s:
                row = await s.get(Alarm, alarm.id)
                if row is not None:
                    row.notified_count = max(row.notified_count, alarm.count)
