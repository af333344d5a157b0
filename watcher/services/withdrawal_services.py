"""Builds the withdrawal sender and tracker of every enabled network.

**Decision (no signer configured):** the intake still accepts withdrawals (their
funds go on hold, state ``requested``) but nothing is signed or sent; a warning says
so at start and `watcher status` shows them waiting. An operator can configure the
key and restart; the queue is then sent in order. Refusing intake instead would make
a key rotation an outage for users.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from watcher.chain.signer import HotSigner
from watcher.services.sender import Sender
from watcher.services.tracker import Tracker

if TYPE_CHECKING:
    from watcher.app import App, Service

log = logging.getLogger("watcher.withdrawals")


def withdrawal_services(app: App) -> list[Service]:
    signer = HotSigner.from_secrets(app.settings.secrets)
    if signer is None:
        log.warning(
            "no hot-wallet key configured (WATCHER_SIGNER_KEY or WATCHER_SIGNER_KEYSTORE): "
            "withdrawals are accepted and held but NOT sent"
        )
        return []
    log.info("withdrawal sender: hot wallet %s", signer.address)
    token = app.settings.secrets.cosigner_token
    services: list[Service] = []
    for network in app.settings.enabled_networks:
        if not network.cosigners:
            log.warning(
                "%s: no co-signers configured (cosigners = [...]): the vault pays nothing "
                "without its validators' signatures, so withdrawals stay queued",
                network.name,
            )
        elif token is None:
            log.warning(
                "%s: WATCHER_COSIGNER_TOKEN is not set: the co-signers will refuse the sender",
                network.name,
            )
        common = {
            "network": network,
            "settings": app.settings.withdrawals,
            "sessions": app.sessions,
            "rpc": app.rpc[network.name],
            "http": app.http,
            "signer": signer,
            "foreground": app.foreground,
        }
        cosigner_token = token.get_secret_value() if token else None
        services.append(
            Sender(**common, cosigner_token=cosigner_token, metrics=app.metrics)  # type: ignore[arg-type]
        )
        services.append(Tracker(**common, metrics=app.metrics))  # type: ignore[arg-type]
    return services
