"""Engine-side routes: how the trading engine feeds what the risk gate reads.

All need ``Authorization: Bearer $WATCHER_ADMIN_TOKEN`` (compared in constant time;
401 otherwise, and always 401 when no token is configured). Each request is validated
completely before anything is written, and is written in one DB transaction with the
account locked: a rejected request changes nothing.

* ``POST /v1/engine/entries`` — realized PnL / funding fee / commission, a signed
  decimal string in asset units, posted against ``system:engine``; it may drive the
  balance negative. Idempotent on ``refId``: 201 the first time, 200 with the same
  result for the same body again, 409 ``REF_ID_CONFLICT`` for a different body.
* ``PUT /v1/engine/positions/{account}`` — the full list (replaces all). Each symbol
  must have brackets; ``leverage`` must not exceed the bracket maximum for the notional
  at the current mark (and at entry, the notional the rules check later); a mark price
  must be set first. Rows with size 0 are dropped. ``isolatedWallet`` is *not* an
  input: isolated margin lives in the ledger and moves only through the isolated-margin
  transfer. It may be sent (Binance-shaped payloads carry it) but must then equal the
  ledger's ``iso:<SYMBOL>`` wallet exactly, else 409 ``ISOLATED_WALLET_MISMATCH``.
  When the update closes an isolated position (its symbol is gone, its size is 0, or
  it is now cross), the wallet's remaining margin returns to the cross wallet in the
  same DB transaction, journaled as an ``isolated_transfer`` (listed in the response's
  ``returnedIsolatedMargin`` and in the history); the same update again finds the
  wallet empty and moves nothing.
* ``PUT /v1/engine/open-orders/{account}`` — ``[{symbol, marginMode, initialMargin}]``.
* ``PUT /v1/engine/prices`` — ``[{symbol|asset, markPrice|price}]``, price > 0. A mark
  is the market's truth and is always kept, even when it puts an open position's
  notional past its last bracket: such accounts are listed in ``unevaluableAccounts``
  and an ``account_unevaluable`` alarm naming each is latched (once while active);
  their withdrawals and transfers answer 422 until a price or the positions change.
* ``PUT /v1/engine/accounts/{account}/mode`` — ``{multiAssetMode: bool}``.
"""

from __future__ import annotations

import hmac
from decimal import Decimal

from aiohttp import web

from watcher.api.errors import ApiError, bad_request, conflict, json_response, unauthorized
from watcher.api.schemas import (
    EntryBody,
    ModeBody,
    OrderBody,
    PositionBody,
    PriceBody,
    address,
    dec,
    ledger_units,
    parse,
    parse_list,
    read_json,
)
from watcher.domain.account import Position, exact
from watcher.domain.amounts import format_amount
from watcher.domain.brackets import BracketError
from watcher.domain.journal import TxKind
from watcher.domain.margin import PositionError, check_leverage
from watcher.settings import Settings
from watcher.store import accounts as store
from watcher.store import ledger
from watcher.store.alarms import AlarmKind, latch_alarm


def require_engine(request: web.Request) -> None:
    """401 unless the request carries the admin bearer token."""
    from watcher.api.server import app_of

    token = app_of(request).settings.secrets.admin_token
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise unauthorized("UNAUTHORIZED", "engine routes need 'Authorization: Bearer <token>'")
    if token is None:
        raise unauthorized(
            "UNAUTHORIZED", "the engine API is disabled: WATCHER_ADMIN_TOKEN is not set"
        )
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise unauthorized("UNAUTHORIZED", "wrong admin token")


def _settings(request: web.Request) -> Settings:
    from watcher.api.server import app_of

    return app_of(request).settings


def known_asset(settings: Settings, asset: str) -> int:
    """The asset's ledger precision, or 400 ``UNKNOWN_ASSET``."""
    cfg = settings.assets.get(asset)
    if cfg is None:
        raise bad_request(
            "UNKNOWN_ASSET",
            f"asset {asset!r} is not configured; known: {sorted(settings.assets)}",
            asset=asset,
        )
    return cfg.precision


def known_symbol(settings: Settings, symbol: str, field: str = "symbol") -> None:
    if symbol not in settings.brackets:
        raise bad_request(
            "UNKNOWN_SYMBOL",
            f"{field} {symbol!r} has no leverage brackets; known: {sorted(settings.brackets)}",
            symbol=symbol,
            field=field,
        )


# --------------------------------------------------------------------------- entries


async def post_entry(request: web.Request) -> web.Response:
    from watcher.api.server import app_of

    require_engine(request)
    app = app_of(request)
    body = parse(EntryBody, await read_json(request))
    account = address(body.account)
    precision = known_asset(app.settings, body.asset)
    units = ledger_units(body.amount, precision, signed=True)
    if units == 0:
        raise bad_request("INVALID_AMOUNT", "amount must not be zero")
    try:
        async with app.sessions.begin() as session:
            entry = await store.post_engine_entry(
                session,
                app.settings,
                key=account,
                asset=body.asset,
                units=units,
                kind=TxKind(body.kind),
                ref_id=body.ref_id,
            )
    except store.EntryConflict as exc:
        raise conflict(
            "REF_ID_CONFLICT",
            f"refId {body.ref_id!r} was already used for a different entry",
            refId=body.ref_id,
            stored=exc.stored,
        ) from None
    return json_response(entry.as_dict(), status=201 if entry.created else 200)


# --------------------------------------------------------------------------- positions


def _position_row(index: int, p: PositionBody, settings: Settings) -> store.PositionInput:
    where = f"[{index}]"
    known_symbol(settings, p.symbol, f"{where}.symbol")
    size = p.quantity
    if p.entry_price < 0 or (size != 0 and p.entry_price == 0):
        raise bad_request(
            "INVALID_PRICE",
            f"{where}.entryPrice must be > 0 for an open position, got {dec(p.entry_price)}",
            symbol=p.symbol,
        )
    return store.PositionInput(p.symbol, size, p.entry_price, p.leverage, p.margin_mode)


def _check_leverage_at(
    index: int, row: store.PositionInput, mark: Decimal, settings: Settings
) -> None:
    table = settings.brackets[row.symbol]
    with exact():
        at_mark = abs(row.size) * mark
    try:
        allowed = table.max_leverage(at_mark)
        check_leverage(
            Position(row.symbol, row.size, row.entry_price, row.leverage, row.margin_mode), table
        )
    except BracketError as exc:
        raise ApiError(
            "NOTIONAL_ABOVE_BRACKETS",
            f"[{index}] {row.symbol}: {exc}",
            {"symbol": row.symbol, "maxNotional": dec(table.max_notional)},
            status=422,
        ) from None
    except PositionError as exc:
        raise ApiError(
            "LEVERAGE_TOO_HIGH", f"[{index}] {exc}", {"symbol": row.symbol}, status=422
        ) from None
    if row.leverage > allowed:
        raise ApiError(
            "LEVERAGE_TOO_HIGH",
            f"[{index}] {row.symbol}: leverage {row.leverage}× exceeds {allowed}× allowed "
            f"for notional {dec(at_mark)} at mark {dec(mark)}",
            {
                "symbol": row.symbol,
                "leverage": row.leverage,
                "maxLeverage": allowed,
                "notional": dec(at_mark),
                "markPrice": dec(mark),
            },
            status=422,
        )


def position_dict(row: store.PositionInput) -> dict[str, object]:
    return {
        "symbol": row.symbol,
        "positionAmt": dec(row.size),
        "entryPrice": dec(row.entry_price),
        "leverage": row.leverage,
        "marginMode": row.margin_mode,
    }


async def put_positions(request: web.Request) -> web.Response:
    from watcher.api.server import app_of

    require_engine(request)
    app = app_of(request)
    settings = app.settings
    account = address(request.match_info["account"])
    bodies = parse_list(PositionBody, await read_json(request), "positions")
    rows: list[store.PositionInput] = []
    seen: set[str] = set()
    for index, body in enumerate(bodies):
        row = _position_row(index, body, settings)
        if row.symbol in seen:
            raise bad_request(
                "DUPLICATE_SYMBOL",
                f"[{index}] {row.symbol} is listed twice (one position per symbol)",
                symbol=row.symbol,
            )
        seen.add(row.symbol)
        rows.append(row)
    async with app.sessions.begin() as session:
        locked = await ledger.lock_account(session, account)
        marks, _ = await store.prices(session)
        state = await store.load_state(session, settings, account)
        for index, (body, row) in enumerate(zip(bodies, rows, strict=True)):
            if body.isolated_wallet is not None:
                units = state.isolated.get(row.symbol, 0) if row.margin_mode == "isolated" else 0
                held = store.units_to_decimal(
                    units, settings.assets[settings.ledger.settlement_asset].precision
                )
                if body.isolated_wallet != held:
                    raise conflict(
                        "ISOLATED_WALLET_MISMATCH",
                        f"[{index}] {row.symbol}: isolatedWallet {dec(body.isolated_wallet)} "
                        f"differs from the ledger's {dec(held)}; isolated margin moves only "
                        "through POST /v1/accounts/{address}/isolated-margin",
                        symbol=row.symbol,
                        given=dec(body.isolated_wallet),
                        ledger=dec(held),
                    )
            if row.size == 0:
                continue
            mark = marks.get(row.symbol)
            if mark is None:
                raise ApiError(
                    "MISSING_MARK_PRICE",
                    f"[{index}] {row.symbol} has no mark price; PUT /v1/engine/prices first",
                    {"symbol": row.symbol},
                    status=422,
                )
            _check_leverage_at(index, row, mark, settings)
        kept = [r for r in rows if r.size != 0]
        await store.replace_positions(session, account, kept)
        returned = await store.return_leftover_isolated(
            session,
            settings,
            key=account,
            isolated=state.isolated,
            open_isolated={r.symbol for r in kept if r.margin_mode == "isolated"},
            version=locked.version,
        )
    precision = settings.assets[settings.ledger.settlement_asset].precision
    return json_response(
        {
            "account": account,
            "positions": [position_dict(r) for r in kept],
            "returnedIsolatedMargin": [
                {
                    "symbol": r.symbol,
                    "asset": r.asset,
                    "amount": format_amount(r.units, precision),
                    "transactionId": r.transaction_id,
                }
                for r in returned
            ],
        }
    )


# --------------------------------------------------------------------------- orders


async def put_open_orders(request: web.Request) -> web.Response:
    from watcher.api.server import app_of

    require_engine(request)
    app = app_of(request)
    account = address(request.match_info["account"])
    bodies = parse_list(OrderBody, await read_json(request), "open-order margins")
    rows: list[store.OrderInput] = []
    seen: set[tuple[str, str]] = set()
    for index, body in enumerate(bodies):
        known_symbol(app.settings, body.symbol, f"[{index}].symbol")
        if body.initial_margin < 0:
            raise bad_request(
                "INVALID_AMOUNT",
                f"[{index}].initialMargin must be ≥ 0, got {dec(body.initial_margin)}",
                symbol=body.symbol,
            )
        key = (body.symbol, body.margin_mode)
        if key in seen:
            raise bad_request(
                "DUPLICATE_SYMBOL",
                f"[{index}] {body.symbol} {body.margin_mode} is listed twice",
                symbol=body.symbol,
            )
        seen.add(key)
        if body.initial_margin != 0:
            rows.append(store.OrderInput(body.symbol, body.margin_mode, body.initial_margin))
    async with app.sessions.begin() as session:
        await store.replace_open_orders(session, account, rows)
    return json_response(
        {
            "account": account,
            "openOrders": [
                {
                    "symbol": r.symbol,
                    "marginMode": r.margin_mode,
                    "initialMargin": dec(r.initial_margin),
                }
                for r in rows
            ],
        }
    )


# --------------------------------------------------------------------------- prices


async def put_prices(request: web.Request) -> web.Response:
    from watcher.api.server import app_of

    require_engine(request)
    app = app_of(request)
    bodies = parse_list(PriceBody, await read_json(request), "prices")
    marks: dict[str, Decimal] = {}
    assets: dict[str, Decimal] = {}
    for index, body in enumerate(bodies):
        if body.symbol is not None:
            known_symbol(app.settings, body.symbol, f"[{index}].symbol")
            target, key = marks, body.symbol
        else:
            assert body.asset is not None
            known_asset(app.settings, body.asset)
            target, key = assets, body.asset
        if body.value <= 0:
            raise bad_request(
                "INVALID_PRICE",
                f"[{index}] {key}: price must be > 0, got {dec(body.value)}",
                key=key,
                price=dec(body.value),
            )
        if key in target:
            raise bad_request("DUPLICATE_SYMBOL", f"[{index}] {key} is listed twice", key=key)
        target[key] = body.value
    async with app.sessions.begin() as session:
        await store.upsert_prices(session, marks, assets)
        past = await store.positions_past_brackets(session, app.settings, marks)
        by_account: dict[str, list[store.PastBrackets]] = {}
        for item in past:
            by_account.setdefault(item.account, []).append(item)
        for account, items in by_account.items():
            await latch_alarm(
                session,
                AlarmKind.ACCOUNT_UNEVALUABLE,
                account,
                f"account {account} cannot be evaluated (withdrawals and transfers refused): "
                + "; ".join(i.message() for i in items),
                {
                    "account": account,
                    "problems": [
                        {
                            "symbol": i.symbol,
                            "code": "NOTIONAL_ABOVE_BRACKETS",
                            "message": i.message(),
                        }
                        for i in items
                    ],
                },
            )
    return json_response(
        {
            "markPrices": {k: dec(v) for k, v in sorted(marks.items())},
            "assetPrices": {k: dec(v) for k, v in sorted(assets.items())},
            "unevaluableAccounts": [{"account": i.account, **_past_dict(i)} for i in past],
        }
    )


def _past_dict(item: store.PastBrackets) -> dict[str, object]:
    return {"symbol": item.symbol, "code": "NOTIONAL_ABOVE_BRACKETS", "message": item.message()}


# --------------------------------------------------------------------------- mode


async def put_mode(request: web.Request) -> web.Response:
    from watcher.api.server import app_of

    require_engine(request)
    app = app_of(request)
    account = address(request.match_info["account"])
    body = parse(ModeBody, await read_json(request))
    async with app.sessions.begin() as session:
        await store.set_multi_asset_mode(session, account, body.multi_asset_mode)
    return json_response({"account": account, "multiAssetMode": body.multi_asset_mode})


def add_routes(web_app: web.Application) -> None:
    web_app.router.add_post("/v1/engine/entries", post_entry)
    web_app.router.add_put("/v1/engine/positions/{account}", put_positions)
    web_app.router.add_put("/v1/engine/open-orders/{account}", put_open_orders)
    web_app.router.add_put("/v1/engine/prices", put_prices)
    web_app.router.add_put("/v1/engine/accounts/{account}/mode", put_mode)
