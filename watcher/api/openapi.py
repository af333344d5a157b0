"""The OpenAPI 3 description served at ``GET /openapi.json``.

Kept as data next to the routes; a test checks that every route the server
registers is described here and that nothing described is missing from the server.
"""

from __future__ import annotations

from typing import Any

DEC = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": "decimal string"}
UDEC = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "description": "decimal string"}
ADDR = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
UINT = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+$"}]}
SIG = {"type": "string", "pattern": "^0x[0-9a-fA-F]{130}$"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        doc["required"] = required
    return doc


ERROR = _obj(
    {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}},
    ["code", "message"],
)
WITHDRAWAL = _obj(
    {
        "id": {"type": "integer"},
        "account": ADDR,
        "chainId": {"type": "integer"},
        "token": ADDR,
        "asset": {"type": "string"},
        "amount": UDEC,
        "fee": UDEC,
        "destination": ADDR,
        "state": {
            "type": "string",
            "enum": [
                "requested",
                "review",
                "queued",
                "signed",
                "broadcast",
                "confirming",
                "stalled",
                "completed",
                "failed",
                "rejected",
                "cancelled",
            ],
        },
        "txHash": {"type": ["string", "null"]},
        "confirmations": {"type": "integer"},
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
        "reason": {"type": ["string", "null"]},
    }
)
WITHDRAW_REQUEST = _obj(
    {
        "account": ADDR,
        "chainId": {"type": "integer"},
        "token": ADDR,
        "amount": UDEC,
        "destination": ADDR,
        "nonce": UINT,
        "deadline": UINT,
        "signature": SIG,
    },
    ["account", "chainId", "token", "amount", "destination", "nonce", "deadline", "signature"],
)
ASSET_VIEW = _obj(
    {
        k: DEC
        for k in (
            "walletBalance",
            "crossWalletBalance",
            "crossUnPnl",
            "availableBalance",
            "maxWithdrawAmount",
        )
    }
    | {"asset": {"type": "string"}}
)
ACCOUNT = _obj(
    {
        "account": ADDR,
        "multiAssetMode": {"type": "boolean"},
        "assets": {"type": "array", "items": ASSET_VIEW},
        "positions": {"type": "array", "items": {"type": "object"}},
        "canWithdraw": {"type": "boolean"},
        "negativeAssets": {"type": "array", "items": {"type": "string"}},
    }
)
MAX_WITHDRAW = _obj(
    {
        "asset": {"type": "string"},
        "maxWithdrawAmount": DEC,
        "breakdown": _obj(
            {
                k: DEC
                for k in (
                    "A",
                    "B",
                    "crossWalletBalance",
                    "crossUnPnl",
                    "crossInitialMargin",
                    "isolatedOpenOrderInitialMargin",
                    "crossMaintenanceMargin",
                )
            }
        ),
    }
)
HISTORY_ITEM = _obj(
    {
        "type": {"type": "string"},
        "asset": {"type": "string"},
        "amount": DEC,
        "state": {"type": "string"},
        "txHash": {"type": ["string", "null"]},
        "chainId": {"type": ["integer", "null"]},
        "time": {"type": "string", "format": "date-time"},
    }
)
SIGNED = {"nonce": UINT, "deadline": UINT, "signature": SIG}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    admin: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {}}
    for code, schema in responses.items():
        op["responses"][code] = {"description": summary if code[0] == "2" else "error"} | (
            _json(schema) if schema is not None else {}
        )
    for code in ("400", "401", "404", "409", "422"):
        op["responses"].setdefault(code, {"description": "error"} | _json(ERROR))
    if body is not None:
        op["requestBody"] = {"required": True} | _json(body)
    if params:
        op["parameters"] = params
    if admin:
        op["security"] = [{"adminToken": []}]
    return op


ADDRESS_PARAM = {"name": "address", "in": "path", "required": True, "schema": ADDR}
ACCOUNT_PARAM = {"name": "account", "in": "path", "required": True, "schema": ADDR}

PATHS: dict[str, dict[str, Any]] = {
    "/v1/withdrawals": {
        "post": _op(
            "Request a user-signed (EIP-712 Withdraw) withdrawal",
            "user",
            {"202": WITHDRAWAL, "200": WITHDRAWAL},
            body=WITHDRAW_REQUEST,
        )
    },
    "/v1/withdrawals/{id}": {
        "get": _op(
            "A withdrawal's state",
            "user",
            {"200": WITHDRAWAL},
            params=[{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
        )
    },
    "/v1/accounts/{address}": {
        "get": _op(
            "Balances, positions, max withdrawable",
            "user",
            {"200": ACCOUNT},
            params=[ADDRESS_PARAM],
        )
    },
    "/v1/accounts/{address}/max-withdraw": {
        "get": _op(
            "Max withdrawable amount of an asset with its breakdown",
            "user",
            {"200": MAX_WITHDRAW},
            params=[
                ADDRESS_PARAM,
                {"name": "asset", "in": "query", "required": True, "schema": {"type": "string"}},
            ],
        )
    },
    "/v1/accounts/{address}/history": {
        "get": _op(
            "Deposits, withdrawals, auto-conversions and engine entries, newest first",
            "user",
            {"200": {"type": "array", "items": HISTORY_ITEM}},
            params=[ADDRESS_PARAM],
        )
    },
    "/v1/accounts/{address}/rebalance": {
        "post": _op(
            "Auto-convert other assets to clear negative balances (signed Rebalance)",
            "user",
            {"200": {"type": "object"}},
            body=_obj(
                {"chainId": {"type": "integer"}} | SIGNED, ["nonce", "deadline", "signature"]
            ),
            params=[ADDRESS_PARAM],
        )
    },
    "/v1/accounts/{address}/isolated-margin": {
        "post": _op(
            "Move margin between the cross wallet and an isolated position "
            "(signed IsolatedMargin, or the engine's bearer token)",
            "user",
            {"200": {"type": "object"}},
            body=_obj(
                {
                    "symbol": {"type": "string"},
                    "type": {"type": "integer", "enum": [1, 2]},
                    "amount": UDEC,
                    "chainId": {"type": "integer"},
                }
                | SIGNED,
                ["symbol", "type", "amount"],
            ),
            params=[ADDRESS_PARAM],
        )
    },
    "/v1/engine/entries": {
        "post": _op(
            "Post a realized PnL / funding fee / commission entry (idempotent on refId)",
            "engine",
            {"200": {"type": "object"}, "201": {"type": "object"}},
            body=_obj(
                {
                    "account": ADDR,
                    "asset": {"type": "string"},
                    "amount": DEC,
                    "kind": {
                        "type": "string",
                        "enum": ["realized_pnl", "funding_fee", "commission"],
                    },
                    "refId": {"type": "string"},
                },
                ["account", "asset", "amount", "kind", "refId"],
            ),
            admin=True,
        )
    },
    "/v1/engine/positions/{account}": {
        "put": _op(
            "Replace the account's positions",
            "engine",
            {"200": {"type": "object"}},
            body={
                "type": "array",
                "items": _obj(
                    {
                        "symbol": {"type": "string"},
                        "positionAmt": DEC,
                        "entryPrice": UDEC,
                        "leverage": {"type": "integer"},
                        "marginMode": {"type": "string", "enum": ["cross", "isolated"]},
                    }
                ),
            },
            params=[ACCOUNT_PARAM],
            admin=True,
        )
    },
    "/v1/engine/open-orders/{account}": {
        "put": _op(
            "Replace the account's open-order initial margin",
            "engine",
            {"200": {"type": "object"}},
            body={
                "type": "array",
                "items": _obj(
                    {
                        "symbol": {"type": "string"},
                        "marginMode": {"type": "string", "enum": ["cross", "isolated"]},
                        "initialMargin": UDEC,
                    }
                ),
            },
            params=[ACCOUNT_PARAM],
            admin=True,
        )
    },
    "/v1/engine/prices": {
        "put": _op(
            "Set mark prices (per symbol) and asset prices",
            "engine",
            {"200": {"type": "object"}},
            body={
                "type": "array",
                "items": _obj(
                    {
                        "symbol": {"type": "string"},
                        "asset": {"type": "string"},
                        "markPrice": UDEC,
                        "price": UDEC,
                    }
                ),
            },
            admin=True,
        )
    },
    "/v1/engine/accounts/{account}/mode": {
        "put": _op(
            "Switch multi-asset mode",
            "engine",
            {"200": {"type": "object"}},
            body=_obj({"multiAssetMode": {"type": "boolean"}}, ["multiAssetMode"]),
            params=[ACCOUNT_PARAM],
            admin=True,
        )
    },
    "/healthz": {
        "get": {
            "summary": "200 when healthy, 503 with reasons",
            "tags": ["ops"],
            "responses": {
                "200": {"description": "healthy"}
                | _json(_obj({"status": {"type": "string"}, "reasons": {"type": "array"}})),
                "503": {"description": "unhealthy"},
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "tags": ["ops"],
            "responses": {
                "200": {
                    "description": "Prometheus text",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/v1/status": {
        "get": {
            "summary": "The status document (as `watcher status --json`)",
            "tags": ["ops"],
            "responses": {"200": {"description": "status"} | _json({"type": "object"})},
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "tags": ["ops"],
            "responses": {"200": {"description": "OpenAPI 3"} | _json({"type": "object"})},
        }
    },
}


# --------------------------------------------------------------------------- risk views
# Liquidation price, margin ratios, unevaluable accounts and the isolated limits view
# (docs/risk.md). Kept in one block: the account schema gains its risk fields here, and
# the isolated-margin path its GET.

NDEC = {"oneOf": [DEC, {"type": "null"}], "description": "decimal string or null"}
PROBLEM = _obj(
    {
        "symbol": {"type": ["string", "null"]},
        "code": {
            "type": "string",
            "enum": [
                "NOTIONAL_ABOVE_BRACKETS",
                "MISSING_MARK_PRICE",
                "UNKNOWN_SYMBOL",
                "LEVERAGE_TOO_HIGH",
                "ACCOUNT_STATE_INCOMPLETE",
            ],
        },
        "message": {"type": "string"},
    },
    ["symbol", "code", "message"],
)
POSITION_VIEW = _obj(
    {
        "symbol": {"type": "string"},
        "positionAmt": DEC,
        "entryPrice": DEC,
        "markPrice": NDEC,
        "leverage": {"type": "integer"},
        "marginMode": {"type": "string", "enum": ["cross", "isolated"]},
        "isolatedWallet": DEC,
        "notional": NDEC,
        "initialMargin": NDEC,
        "maintMargin": NDEC,
        "unRealizedProfit": NDEC,
        "bracket": {"type": ["integer", "null"]},
        "liquidationPrice": NDEC
        | {
            "description": "mark price at which the margin balance meets the maintenance "
            "margin (rounded up for a long, down for a short); null when no positive price "
            "liquidates the position"
        },
        "marginBalance": NDEC,
        "marginRatio": NDEC
        | {"description": "MM / margin balance (isolated: the position's; cross: the account's)"},
        "problem": {"oneOf": [PROBLEM, {"type": "null"}]},
    }
)
ACCOUNT["properties"].update(
    {
        "positions": {"type": "array", "items": POSITION_VIEW},
        "crossMarginBalance": NDEC,
        "crossMaintMargin": NDEC,
        "marginRatio": NDEC
        | {"description": "cross MM / cross margin balance, rounded up; null when MB ≤ 0"},
        "evaluable": {"type": "boolean"},
        "problems": {"type": "array", "items": PROBLEM},
        "openOrders": {"type": "array", "items": {"type": "object"}},
    }
)
ISOLATED_LIMITS = _obj(
    {
        "account": ADDR,
        "symbol": {"type": "string"},
        "asset": {"type": "string"},
        "isolatedWallet": DEC,
        "maxAdd": DEC,
        "maxReduce": DEC,
        "addBlockedBy": {"type": ["string", "null"]},
        "reduceBlockedBy": {"type": ["string", "null"]},
        "breakdown": _obj(
            {
                "cross": {"type": "object"},
                "isolated": _obj(
                    {
                        k: DEC
                        for k in (
                            "isolatedWallet",
                            "maintenanceMargin",
                            "walletMinusMaintenance",
                            "walletPlusUnPnlMinusInitial",
                        )
                    }
                ),
            }
        ),
    },
    ["symbol", "isolatedWallet", "maxAdd", "maxReduce", "breakdown"],
)
ISOLATED_LIMITS_EXAMPLE = {
    "account": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "symbol": "BTCUSDT",
    "asset": "USDT",
    "isolatedWallet": "1000",
    "maxAdd": "8400",
    "maxReduce": "400",
    "addBlockedBy": None,
    "reduceBlockedBy": None,
    "breakdown": {
        "cross": {
            "A": "9000",
            "B": "9000",
            "crossWalletBalance": "9000",
            "crossUnPnl": "0",
            "crossInitialMargin": "0",
            "isolatedOpenOrderInitialMargin": "0",
            "crossMaintenanceMargin": "0",
            "maxWithdrawAmount": "9000",
            "availableBalance": "9000",
        },
        "isolated": {
            "isolatedWallet": "1000",
            "maintenanceMargin": "24",
            "walletMinusMaintenance": "976",
            "walletPlusUnPnlMinusInitial": "400",
        },
    },
}
_limits_op = _op(
    "The isolated-margin transfer limits of one symbol (maxAdd / maxReduce, the same "
    "terms the transfer is checked against), before the user asks",
    "user",
    {"200": ISOLATED_LIMITS},
    params=[
        ADDRESS_PARAM,
        {"name": "symbol", "in": "query", "required": True, "schema": {"type": "string"}},
    ],
)
_limits_op["responses"]["200"]["content"]["application/json"]["example"] = ISOLATED_LIMITS_EXAMPLE
PATHS["/v1/accounts/{address}/isolated-margin"]["get"] = _limits_op


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "watcher",
            "version": "1",
            "description": "On-chain deposit/withdraw watcher: user, engine and operations API. "
            "Amounts and prices are decimal strings in token units; errors are "
            "{code, message, details}.",
        },
        "paths": PATHS,
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR, "Withdrawal": WITHDRAWAL, "Account": ACCOUNT},
        },
    }
