"""Which services the daemon runs, built from the settings. Each capability adds its
services here (deposit listeners per network, withdrawal sender and tracker, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from watcher.app import App, Service


async def build_services(app: App) -> list[Service]:
    services: list[Service] = []
    from watcher.services.listener import DepositListener, build_listener

    for network in app.settings.enabled_networks:
        services.append(
            build_listener(
                network=network,
                listener=app.settings.listener,
                assets=app.settings.assets,
                sessions=app.sessions,
                metrics=app.metrics,
                client=app.rpc[network.name],
            )
        )
    from watcher.services.notifier import Notifier
    from watcher.services.reconciler import Reconciler
    from watcher.services.watchdog import Watchdog

    listeners = [s for s in services if isinstance(s, DepositListener)]
    services.append(Watchdog(app, listeners))

    services.append(Reconciler(app))
    services.append(Notifier(app))
    from watcher.services.withdrawal_services import withdrawal_services

    services.extend(withdrawal_services(app))
    return services
