"""``POST /v1/withdrawals`` and ``GET /v1/withdrawals/{id}`` (API.md, DOMAIN.md §6).

POST answers 202 with the new withdrawal, 200 with the existing one when the same
signed request is sent again, and a 4xx ``{code, message, details}`` otherwise (see
``services.intake`` for the codes). Amounts are decimal strings: ``amount`` in token
units (what the destination receives), ``fee`` in the ledger asset's units.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from watcher.api.errors import json_response, not_found
from watcher.api.schemas import jsonable, read_json
from watcher.domain.amounts import format_amount
from watcher.services.intake import Intake, WithdrawalRequest, resolve_token
from watcher.settings import Settings
from watcher.store import withdrawals as repo
from watcher.store.models import Withdrawal

INTAKE_KEY: web.AppKey[Intake] = web.AppKey("withdrawal_intake", Intake)


MAX_ROW_ID = 2**31 - 1  # withdrawals.id is INTEGER on PostgreSQL


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def withdrawal_doc(settings: Settings, w: Withdrawal) -> dict[str, Any]:
    network = settings.network_by_chain(w.chain_id)
    token = resolve_token(network, w.token) if network is not None else None
    decimals = token.decimals if token is not None else 0
    asset_cfg = settings.assets.get(w.asset)
    precision = asset_cfg.precision if asset_cfg is not None else 0
    return {
        "id": w.id,
        "account": w.account,
        "chainId": w.chain_id,
        "token": w.token,
        "asset": w.asset,
        "amount": format_amount(w.amount, decimals),
        "fee": format_amount(w.fee, precision),
        "destination": w.destination,
        "nonce": str(w.nonce),
        "state": w.state,
        "txHash": w.tx_hash,
        "blockNumber": w.block_number,
        "confirmations": w.confirmations,
        "createdAt": _iso(w.created_at),
        "updatedAt": _iso(w.updated_at),
        "reason": w.reason,
    }


def _intake(request: web.Request) -> Intake:
    return request.app[INTAKE_KEY]


async def create_withdrawal(request: web.Request) -> web.Response:
    from watcher.api.server import app_of

    body = await read_json(request)
    accepted = await _intake(request).submit(WithdrawalRequest.from_json(body))
    doc = withdrawal_doc(app_of(request).settings, accepted.withdrawal)
    return json_response(doc, status=202 if accepted.created else 200)


async def get_withdrawal(request: web.Request) -> web.Response:
    from watcher.api.server import app_of

    app = app_of(request)
    raw = request.match_info["id"]
    # Ids are ASCII digits; one above the id column's range cannot exist (and would
    # overflow the driver), so it is simply not found.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_ROW_ID:
        raise not_found("WITHDRAWAL_NOT_FOUND", f"no withdrawal {raw[:40]!r}")
    async with app.sessions() as s:
        w = await repo.get(s, int(raw))
    if w is None:
        raise not_found("WITHDRAWAL_NOT_FOUND", f"no withdrawal {raw}")
    return json_response(jsonable(withdrawal_doc(app.settings, w)))


def add_routes(web_app: web.Application) -> None:
    from watcher.api.server import APP_KEY

    app = web_app[APP_KEY]
    web_app[INTAKE_KEY] = Intake(app.settings, app.sessions, foreground=app.foreground)
    web_app.router.add_post("/v1/withdrawals", create_withdrawal)
    web_app.router.add_get("/v1/withdrawals/{id}", get_withdrawal)
