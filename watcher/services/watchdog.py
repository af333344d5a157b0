"""Watchdog: turns the listeners' live health into latched alarms.

``/healthz`` already reports an RPC outage or a lagging cursor while it lasts; an
operator also needs a record that stays until acknowledged. Every check:

- ``rpc_down``: every endpoint of a network failed the listener's last tick;
- ``lag_over_budget``: the cursor is more than ``listener.lag_budget_blocks`` behind
  the best head any endpoint reports *and* has not moved since the previous check
  (stalled, not catching up: a backfill that advances each check is not an alarm),
  whatever the cause (every step failing, too few endpoints answering for the logs);
  the message and details name the last error and the failing endpoints.

An alarm is raised when its condition starts (not on every check while it lasts, so a
webhook is not spammed) and stays latched until acknowledged; if the condition ends
and starts again, it is raised again (bumping the latched alarm's count). Holds no
state that matters across restarts: after a restart a lasting condition is raised
once more, which only bumps the same latched alarm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from watcher.services.listener import DepositListener
from watcher.store.alarms import AlarmKind, raise_alarm

if TYPE_CHECKING:
    from watcher.app import App


class Watchdog:
    name = "watchdog"
    delay_first = True

    def __init__(
        self,
        app: App,
        listeners: list[DepositListener],
        interval_seconds: float = 15.0,
        active: Callable[[DepositListener], bool] | None = None,
    ) -> None:
        self.app = app
        self.listeners = listeners
        # Replicas: only the listeners running here (their lease held) are watched.
        self.active = active or (lambda _listener: True)
        self.interval_seconds = interval_seconds
        self.budget = app.settings.listener.lag_budget_blocks
        self._last_cursor: dict[str, int | None] = {}
        self._on: set[tuple[AlarmKind, str]] = set()
        self._details: dict[str, dict[str, Any]] = {}

    def conditions(self) -> list[tuple[AlarmKind, str, bool, str]]:
        found = []
        for listener in self.listeners:
            if not self.active(listener):
                continue
            name, seen = listener.network.name, listener.seen
            found.append(
                (
                    AlarmKind.RPC_DOWN,
                    name,
                    seen.rpc_down is not None,
                    f"{name}: all RPC endpoints down ({seen.rpc_down})",
                )
            )
            lag = listener.lag() or 0
            stalled = lag > self.budget and self._last_cursor.get(name) == seen.cursor
            self._last_cursor[name] = seen.cursor
            message = (
                f"{name}: cursor {seen.cursor} stalled {lag} blocks behind head "
                f"{seen.head} (budget {self.budget})"
            )
            if why := listener.why():
                message += f"; {why}"
            found.append((AlarmKind.LAG_OVER_BUDGET, name, stalled, message))
            if stalled:
                self._details[name] = {
                    "head": seen.head,
                    "cursor": seen.cursor,
                    "lag": lag,
                    "budget": self.budget,
                    "failure": seen.failure.as_dict() if seen.failure is not None else None,
                    "endpoints": listener.report()["endpoints"],
                }
        return found

    async def tick(self) -> None:
        starting = []
        for kind, key, on, message in self.conditions():
            if on and (kind, key) not in self._on:
                starting.append((kind, key, message))
                self._on.add((kind, key))
            elif not on:
                self._on.discard((kind, key))
        if starting:
            async with self.app.sessions.begin() as s:
                for kind, key, message in starting:
                    details = self._details.get(key) if kind == AlarmKind.LAG_OVER_BUDGET else None
                    await raise_alarm(s, kind, key, message, details)
