"""Which services the daemon runs, built from the settings. Each capability adds its
services here (deposit listeners per network, withdrawal sender and tracker, ...).

Chain roles are leased (services/leases.py): the scheduler runs each through a
:class:`LeasedService`, which ticks only while this replica holds the role's lease.
An API-only replica (``watcher run --roles api``) builds none of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from watcher.app import App, Service
    from watcher.services.leases import LeaseKeeper


def role_of(service: Service) -> str:
    """The lease name of a chain service: its name, plus the hot wallet for a sender or
    tracker (two deployments with different hot wallets never share a nonce lease)."""
    signer = getattr(service, "signer", None)
    if signer is not None:
        return f"{service.name}:{signer.address.lower()}"
    return service.name


async def build_services(app: App) -> list[Service]:
    if app.roles == "api":
        return []
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


def leased(services: list[Service], keeper: LeaseKeeper) -> list[Service]:
    """The services as the scheduler runs them: every chain role behind its lease.

    The watchdog reads the listeners' live health, so it runs beside them and watches
    only those whose lease this replica holds (its alarms latch and bump: replicas
    watching different networks never conflict); it holds no lease of its own."""
    from watcher.services.leases import LeasedService
    from watcher.services.watchdog import Watchdog

    wrapped: list[Service] = []
    for service in services:
        if isinstance(service, Watchdog):
            service.active = lambda listener: keeper.fence(role_of(listener)) is not None
            wrapped.append(service)
            continue
        wrapped.append(LeasedService(service, keeper, role_of(service), reset=_reset_of(service)))
    return wrapped


def _reset_of(service: Service) -> Callable[[], None] | None:
    """What a sender or tracker forgets when it (re)takes its lease: another replica may
    have used the hot wallet's nonces and sent transactions meanwhile."""
    from watcher.services.sender import Sender
    from watcher.services.tracker import Tracker

    if isinstance(service, Sender):
        return service.forget
    if isinstance(service, Tracker):
        return service.forget
    return None
