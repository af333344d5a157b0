"""The OpenAPI 3.1 description served at ``GET /openapi.json`` (rendered at ``GET /docs``).

Kept as data next to the routes. Tests check that every route the server registers is
described here (and nothing more), that every example validates against its own schema,
that the request examples are accepted by a real server and that its real answers
validate against the documented response schemas.

To describe a new route: add an entry to :data:`PATHS` built with :func:`_op` — a
summary, the success response(s) as ``{status: (schema, example)}``, the request body
as ``(schema, example)``, the path/query parameters with an example each, and the
error codes it can answer (from :data:`watcher.api.errors.ERROR_CODES`; each becomes an
example of that status's error response).

The examples tell one story on the local devnet (chain 31337, the vault ``make run``
deploys): the engine credits account ``ALICE`` and sets a position; ALICE moves margin
to it and withdraws 100 USDT to ``BOB``; BOB, negative in USDT, rebalances. The
signatures are real (ALICE's key is ``0xa1a1…a1``, BOB's ``0xb2b2…b2``, 32 bytes each)
and the deadline is 2100-01-01, so each request example is accepted as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from watcher.api.errors import ERROR_CODES, ERRORS_BY_CODE

# --------------------------------------------------------------------------- schemas

DEC = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": "decimal string"}
UDEC = {
    "type": "string",
    "pattern": r"^[0-9]+(\.[0-9]+)?$",
    "description": "non-negative decimal string",
}
# In requests: at most 40 digits before and after the point (the server's parser).
DEC_IN = DEC | {"pattern": r"^-?[0-9]{1,40}(\.[0-9]{1,40})?$"}
UDEC_IN = UDEC | {"pattern": r"^[0-9]{1,40}(\.[0-9]{1,40})?$"}
ADDR = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$", "description": "EVM address"}
UINT256_MAX = 2**256 - 1
UINT = {
    "oneOf": [
        {"type": "integer", "minimum": 0, "maximum": UINT256_MAX},
        {"type": "string", "pattern": "^[0-9]+$"},
    ],
    "description": "uint256 (at most 2^256 − 1) as a JSON integer or a string of ASCII digits",
}
UINT_STR = {"type": "string", "pattern": "^[0-9]+$", "description": "uint256 as a string"}
SIG = {
    "type": "string",
    "pattern": "^0x[0-9a-fA-F]{130}$",
    "description": "65-byte EIP-712 signature (r, s, v) in hex",
}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
CHAIN_ID = {"type": "integer", "minimum": 1}
MODE = {"type": "string", "enum": ["cross", "isolated"]}
SYMBOL = {"type": "string", "minLength": 1, "maxLength": 32, "description": "e.g. BTCUSDT"}
ASSET = {"type": "string", "minLength": 1, "description": "ledger asset, e.g. USDT"}


def _obj(
    props: dict[str, Any],
    required: Sequence[str] | None = None,
    *,
    closed: bool = True,
) -> dict[str, Any]:
    """An object schema; ``closed`` forbids fields that are not listed."""
    doc: dict[str, Any] = {"type": "object", "properties": props}
    if required is None:
        required = list(props)
    if required:
        doc["required"] = list(required)
    if closed:
        doc["additionalProperties"] = False
    return doc


ERROR = _obj(
    {
        "code": {"type": "string", "enum": [e.code for e in ERROR_CODES]},
        "message": {"type": "string"},
        "details": {"type": "object"},
    }
)
WITHDRAWAL_STATES = [
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
]
WITHDRAWAL = _obj(
    {
        "id": {"type": "integer"},
        "account": ADDR,
        "chainId": {"type": "integer"},
        "token": ADDR | {"description": "token address (the zero address for the native coin)"},
        "asset": {"type": "string"},
        "amount": UDEC | {"description": "what the destination receives, in token units"},
        "fee": UDEC | {"description": "in the ledger asset's units, on top of amount"},
        "destination": ADDR,
        "nonce": UINT_STR,
        "state": {"type": "string", "enum": WITHDRAWAL_STATES},
        "txHash": NULLABLE_STR,
        "blockNumber": NULLABLE_INT,
        "confirmations": {"type": "integer", "minimum": 0},
        "createdAt": TIME,
        "updatedAt": TIME,
        "reason": NULLABLE_STR,
    }
)
WITHDRAW_REQUEST = _obj(
    {
        "account": ADDR,
        "chainId": CHAIN_ID,
        "token": {
            "type": "string",
            "minLength": 1,
            "description": "token address, its configured symbol (e.g. USDT), or the zero "
            "address for the native coin; the signed message always carries the address",
        },
        "amount": UDEC | {"description": "token units, at most the token's decimals"},
        "destination": ADDR,
        "nonce": UINT,
        "deadline": UINT | {"description": "unix seconds"},
        "signature": SIG,
    }
)
ASSET_VIEW = _obj(
    {
        "asset": {"type": "string"},
        "walletBalance": DEC,
        "crossWalletBalance": DEC,
        "crossUnPnl": DEC,
        "availableBalance": DEC,
        "maxWithdrawAmount": DEC,
        "onHold": DEC,
    }
)
POSITION_VIEW = _obj(
    {
        "symbol": {"type": "string"},
        "positionAmt": DEC,
        "entryPrice": DEC,
        "markPrice": DEC,
        "leverage": {"type": "integer"},
        "marginMode": MODE,
        "isolatedWallet": DEC,
        "notional": DEC,
        "initialMargin": DEC,
        "maintMargin": DEC,
        "unRealizedProfit": DEC,
        "bracket": {"type": "integer"},
    }
)
OPEN_ORDER = _obj({"symbol": {"type": "string"}, "marginMode": MODE, "initialMargin": DEC})
ACCOUNT = _obj(
    {
        "account": ADDR,
        "multiAssetMode": {"type": "boolean"},
        "assets": {"type": "array", "items": ASSET_VIEW},
        "positions": {"type": "array", "items": POSITION_VIEW},
        "canWithdraw": {"type": "boolean"},
        "negativeAssets": {"type": "array", "items": {"type": "string"}},
        "openOrders": {"type": "array", "items": OPEN_ORDER},
    }
)
BREAKDOWN_KEYS = (
    "A",
    "B",
    "crossWalletBalance",
    "crossUnPnl",
    "crossInitialMargin",
    "isolatedOpenOrderInitialMargin",
    "crossMaintenanceMargin",
)
MAX_WITHDRAW = _obj(
    {
        "asset": {"type": "string"},
        "maxWithdrawAmount": DEC,
        "breakdown": _obj({k: DEC for k in BREAKDOWN_KEYS}),
        "availableBalance": DEC,
        "limitedBy": {"type": ["string", "null"]},
        "multiAssetMode": {"type": "boolean"},
        "negativeAssets": {"type": "array", "items": {"type": "string"}},
    }
)
HISTORY_ITEM = _obj(
    {
        "type": {
            "type": "string",
            "description": "deposit, withdrawal, auto-conversion, realized_pnl, funding_fee, "
            "commission or isolated-transfer",
        },
        "asset": NULLABLE_STR,
        "amount": DEC | {"description": "signed from the account's side (+ credit, − debit)"},
        "state": {"type": "string"},
        "txHash": NULLABLE_STR,
        "chainId": NULLABLE_INT,
        "time": TIME,
        "refId": {"type": "string", "description": "engine entries: their refId"},
        "confirmations": {"type": "integer", "description": "deposits"},
        "requiredConfirmations": NULLABLE_INT | {"description": "deposits"},
        "etaSeconds": NULLABLE_INT | {"description": "deposits"},
    },
    ["type", "asset", "amount", "state", "txHash", "chainId", "time"],
)
HISTORY = _obj({"account": ADDR, "history": {"type": "array", "items": HISTORY_ITEM}})
SIGNED = {"chainId": CHAIN_ID, "nonce": UINT, "deadline": UINT, "signature": SIG}
REBALANCE_REQUEST = _obj(SIGNED)
REBALANCE = _obj(
    {
        "account": ADDR,
        "type": {"const": "auto-conversion"},
        "transactionId": {"type": "integer"},
        "time": TIME,
        "conversions": {"type": "array", "items": {"type": "object"}},
        "changes": {
            "type": "array",
            "items": _obj({"asset": {"type": "string"}, "amount": DEC}),
        },
        "balancesAfter": {"type": "object", "additionalProperties": DEC},
        "fullyCovered": {"type": "boolean"},
        "negativeAssets": {"type": "array", "items": {"type": "string"}},
    }
)
ISOLATED_FIELDS = {
    "symbol": SYMBOL,
    "type": {"type": "integer", "enum": [1, 2], "description": "1 add, 2 reduce"},
    "amount": UDEC | {"description": "settlement asset units, > 0"},
}
ISOLATED_REQUEST = {
    "description": "Without the bearer token: signed by the account (no refId). With the "
    "engine's token: not signed (no chainId, nonce, deadline, signature); refId makes it "
    "idempotent. The other shape for the other case is 400 INVALID_REQUEST.",
    "oneOf": [
        _obj(
            ISOLATED_FIELDS
            | {"chainId": CHAIN_ID, "nonce": UINT, "deadline": UINT, "signature": SIG}
        )
        | {"title": "signed by the account"},
        _obj(
            ISOLATED_FIELDS
            | {
                "refId": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 150,
                    "description": "makes the transfer idempotent",
                }
            },
            list(ISOLATED_FIELDS),
        )
        | {"title": "sent by the engine (bearer token)"},
    ],
}
ISOLATED = _obj(
    {
        "account": ADDR,
        "symbol": {"type": "string"},
        "type": {"type": "integer", "enum": [1, 2]},
        "asset": {"type": "string"},
        "amount": DEC,
        "transactionId": {"type": "integer"},
        "time": TIME,
        "isolatedWallet": DEC,
        "crossWalletBalance": DEC,
        "maxTransferAmount": {"oneOf": [DEC, {"type": "null"}]},
    }
)
ENTRY_REQUEST = _obj(
    {
        "account": ADDR,
        "asset": ASSET,
        "amount": DEC | {"description": "signed: + credits the account, − debits it; ≠ 0"},
        "kind": {"type": "string", "enum": ["realized_pnl", "funding_fee", "commission"]},
        "refId": {"type": "string", "minLength": 1, "maxLength": 150},
    }
)
ENTRY = _obj(
    {
        "refId": {"type": "string"},
        "account": ADDR,
        "asset": {"type": "string"},
        "amount": DEC,
        "kind": {"type": "string"},
        "transactionId": {"type": "integer"},
        "time": TIME,
    }
)
POSITION_IN = _obj(
    {
        "symbol": SYMBOL,
        "positionAmt": DEC_IN | {"description": "signed size (− short); or give `size`"},
        "size": DEC_IN,
        "entryPrice": UDEC_IN,
        "leverage": {"type": "integer", "minimum": 1, "maximum": 1000},
        "marginMode": {"type": "string", "enum": ["cross", "isolated", "crossed"]},
        "isolatedWallet": DEC_IN
        | {"description": "optional; if sent it must equal the ledger's isolated wallet"},
    },
    ["symbol", "entryPrice", "leverage", "marginMode"],
) | {"oneOf": [{"required": ["positionAmt"]}, {"required": ["size"]}]}
POSITION_OUT = _obj(
    {
        "symbol": {"type": "string"},
        "positionAmt": DEC,
        "entryPrice": DEC,
        "leverage": {"type": "integer"},
        "marginMode": MODE,
    }
)
POSITIONS = _obj({"account": ADDR, "positions": {"type": "array", "items": POSITION_OUT}})
ORDER_IN = _obj({"symbol": SYMBOL, "marginMode": MODE, "initialMargin": UDEC_IN})
ORDERS = _obj({"account": ADDR, "openOrders": {"type": "array", "items": OPEN_ORDER}})
PRICE_IN = _obj(
    {
        "symbol": SYMBOL | {"description": "a mark price of this symbol"},
        "asset": ASSET | {"maxLength": 16, "description": "a USD price of this asset"},
        "markPrice": UDEC_IN,
        "price": UDEC_IN,
    },
    [],
) | {
    "description": "exactly one of symbol / asset and exactly one of markPrice / price "
    "(either name carries the value)",
    "allOf": [
        {"oneOf": [{"required": ["symbol"]}, {"required": ["asset"]}]},
        {"oneOf": [{"required": ["markPrice"]}, {"required": ["price"]}]},
    ],
}
PRICES = _obj(
    {
        "markPrices": {"type": "object", "additionalProperties": DEC},
        "assetPrices": {"type": "object", "additionalProperties": DEC},
    }
)
MODE_IN = _obj({"multiAssetMode": {"type": "boolean"}})
MODE_OUT = _obj({"account": ADDR, "multiAssetMode": {"type": "boolean"}})
HEALTH = _obj(
    {
        "status": {"type": "string", "enum": ["ok", "degraded", "down"]},
        "reasons": {"type": "array", "items": {"type": "string"}},
    }
)
STATUS = _obj(
    {
        "status": {"type": "string", "enum": ["healthy", "degraded", "down"]},
        "exitCode": {"type": "integer", "enum": [0, 1, 2]},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "generatedAt": TIME,
        "daemon": {"type": "object"},
        "networks": {"type": "array"},
        "deposits": {"type": "object"},
        "withdrawals": {"type": "object"},
        "balances": {"type": "array"},
        "reconciliation": {"type": "array"},
        "alarms": {"type": "array"},
    },
    closed=False,
)

# --------------------------------------------------------------------------- examples

ALICE = "0x5d5c99EdF529335160FF180fA141Dd4967fc00D2"
BOB = "0x75E0De31eCa89159a26b09cc3b5eF4736A4f8969"
USDT_TOKEN = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
DEVNET_CHAIN = 31337
DEADLINE = 4102444800  # 2100-01-01T00:00:00Z
T0 = "2026-01-15T09:30:00.000000Z"
HEALTH_LAG_EXAMPLE = (
    "devnet: cursor 120 is 64 blocks behind head 184 (budget 50); not advancing for 95 s, "
    "last error: InconsistentLogsError: logs of 121..184: 1 of 2 endpoints gave usable "
    "answers, 2 needed to rule out a truncated list (...); failing endpoints: "
    "https://eth.example/v3/*** (cooldown: timed out after 10.0s (eth_blockNumber))"
)

WITHDRAW_EXAMPLE = {
    "account": ALICE,
    "chainId": DEVNET_CHAIN,
    "token": "USDT",
    "amount": "100",
    "destination": BOB,
    "nonce": 7,
    "deadline": DEADLINE,
    "signature": "0x67c9f3ec90e86cea0b53e878d92e86ace8087d1472855f6f9809b0e5e368730a"
    "29194195c03919a5e04036ad61e1ecb9aad0fdbd8a70353d908be27de0cbff421b",
}
WITHDRAWAL_EXAMPLE = {
    "id": 1,
    "account": ALICE,
    "chainId": DEVNET_CHAIN,
    "token": USDT_TOKEN,
    "asset": "USDT",
    "amount": "100",
    "fee": "0",
    "destination": BOB,
    "nonce": "7",
    "state": "requested",
    "txHash": None,
    "blockNumber": None,
    "confirmations": 0,
    "createdAt": T0,
    "updatedAt": T0,
    "reason": None,
}
WITHDRAWAL_DONE_EXAMPLE = WITHDRAWAL_EXAMPLE | {
    "state": "completed",
    "txHash": "0x3f1c9a0e5b7d2c4f6a8e0b1d3c5f7a9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a",
    "blockNumber": 1284,
    "confirmations": 3,
    "updatedAt": "2026-01-15T09:30:09.000000Z",
}
ISOLATED_EXAMPLE = {
    "symbol": "BTCUSDT",
    "type": 1,
    "amount": "50",
    "chainId": DEVNET_CHAIN,
    "nonce": 1,
    "deadline": DEADLINE,
    "signature": "0x2a5af55833f221e271f80dd997de188a95810d87ae2288baa6266aca7149b9ac"
    "23dd64f631c10ed661ddef89b2b668c5d609c5a04053ced73796fc3066e7f5a11c",
}
REBALANCE_EXAMPLE = {
    "chainId": DEVNET_CHAIN,
    "nonce": 1,
    "deadline": DEADLINE,
    "signature": "0xe9d5a392860fc4444bedab6471060190636783bed7c1b34302d51622507a7a43"
    "15b071814d7df01a47ae90f2303837b6855cf0b62ed2bc73b74be357a3ea62851b",
}
ENTRY_EXAMPLE = {
    "account": ALICE,
    "asset": "USDT",
    "amount": "1000",
    "kind": "realized_pnl",
    "refId": "pnl-0001",
}
POSITIONS_EXAMPLE = [
    {
        "symbol": "BTCUSDT",
        "positionAmt": "0.01",
        "entryPrice": "59000",
        "leverage": 10,
        "marginMode": "isolated",
    }
]
ORDERS_EXAMPLE = [{"symbol": "BTCUSDT", "marginMode": "cross", "initialMargin": "25"}]
PRICES_EXAMPLE = [
    {"symbol": "BTCUSDT", "markPrice": "60000"},
    {"asset": "ETH", "price": "3000"},
]

#: Messages and details of the error examples (the others show the catalog's text).
ERROR_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "MALFORMED_JSON": ("request body is not valid JSON: Expecting value: line 1 column 1", {}),
    "INVALID_REQUEST": (
        'amount: write the number as a decimal string (e.g. "12.5"), not a number',
        {"errors": [{"field": "amount", "message": "write the number as a decimal string"}]},
    ),
    "MISSING_FIELD": ("missing fields: signature", {"missing": ["signature"]}),
    "INVALID_ADDRESS": (
        "destination 0x12 is not 0x followed by 40 hex digits",
        {"field": "destination"},
    ),
    "UNAUTHORIZED": ("engine routes need 'Authorization: Bearer <token>'", {}),
    "WRONG_SIGNER": (
        f"signed by {BOB}, not by the account {ALICE}",
        {"signer": BOB, "account": ALICE},
    ),
    "SIGNATURE_EXPIRED": (
        "the request's deadline 1700000000 has passed (now 1768469400)",
        {"deadline": 1700000000, "now": 1768469400},
    ),
    "NONCE_REUSED": (
        f"nonce 7 of {ALICE} was already used by another request (withdrawal 1)",
        {"withdrawalId": 1},
    ),
    "WITHDRAWAL_NOT_FOUND": ("no withdrawal 42", {}),
    "NEGATIVE_BALANCE": (
        "the account has a negative balance; withdrawals are blocked",
        {"negativeAssets": ["USDT"]},
    ),
    "INSUFFICIENT_WITHDRAWABLE": (
        "the amount plus fee exceeds the max withdrawable",
        {"asset": "USDT", "requested": "5000", "maxWithdrawAmount": "825"},
    ),
    "UNSUPPORTED_TOKEN": (
        "token 'DOGE' is not configured on devnet",
        {"token": "DOGE", "chainId": DEVNET_CHAIN},
    ),
    "UNKNOWN_ASSET": (
        "asset 'DOGE' is not configured; known: ['BNB', 'BTC', 'ETH', 'POL', 'USDC', 'USDT']",
        {"asset": "DOGE"},
    ),
    "UNKNOWN_SYMBOL": (
        "symbol 'DOGEUSDT' has no leverage brackets; known: ['BTCUSDT', 'ETHUSDT']",
        {"symbol": "DOGEUSDT", "field": "symbol"},
    ),
    "REF_ID_CONFLICT": (
        "refId 'pnl-0001' was already used for a different entry",
        {"refId": "pnl-0001"},
    ),
    "LEVERAGE_TOO_HIGH": (
        "[0] BTCUSDT: leverage 150× exceeds 125× allowed for notional 600 at mark 60000",
        {
            "symbol": "BTCUSDT",
            "leverage": 150,
            "maxLeverage": 125,
            "notional": "600",
            "markPrice": "60000",
        },
    ),
    "NOTHING_TO_REBALANCE": ("the account has no negative balance", {"negativeAssets": []}),
    "NOT_FOUND": ("no route '/v1/withdrawal'; see /docs", {"path": "/v1/withdrawal"}),
    "METHOD_NOT_ALLOWED": (
        "DELETE is not allowed on /v1/withdrawals; allowed: POST",
        {"method": "DELETE", "allowed": ["POST"]},
    ),
}


def error_example(code: str) -> dict[str, Any]:
    message, details = ERROR_EXAMPLES.get(code, (ERRORS_BY_CODE[code].when, {}))
    return {"code": code, "message": message, "details": details}


# --------------------------------------------------------------------------- operations

#: Errors any JSON route may answer (the middleware's), added to every operation.
COMMON_ERRORS = ("INTERNAL_ERROR",)
BODY_ERRORS = ("MALFORMED_JSON", "INVALID_REQUEST", "PAYLOAD_TOO_LARGE")
SIGNED_ERRORS = ("UNKNOWN_CHAIN", "BAD_SIGNATURE", "WRONG_SIGNER", "SIGNATURE_EXPIRED")


def _json(schema: dict[str, Any], examples: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = examples
    return {"content": {"application/json": media}}


def _ex(value: Any, summary: str | None = None) -> dict[str, Any]:
    return {"value": value} | ({"summary": summary} if summary else {})


ErrorRef = str | tuple[str, int]


def _error_responses(codes: Sequence[ErrorRef]) -> dict[str, Any]:
    by_status: dict[int, dict[str, Any]] = {}
    for ref in (*codes, *COMMON_ERRORS):
        code, status = ref if isinstance(ref, tuple) else (ref, ERRORS_BY_CODE[ref].statuses[0])
        entry = ERRORS_BY_CODE[code]
        assert status in entry.statuses, (code, status)
        by_status.setdefault(status, {})[code] = _ex(error_example(code), entry.when)
    return {
        str(status): {"description": ", ".join(examples)} | _json(ERROR, examples)
        for status, examples in sorted(by_status.items())
    }


def _op(
    summary: str,
    tag: str,
    ok: dict[str, tuple[dict[str, Any], Any]],
    *,
    description: str | None = None,
    body: tuple[dict[str, Any], Any] | None = None,
    params: Sequence[dict[str, Any]] = (),
    errors: Sequence[ErrorRef] = (),
    admin: bool = False,
) -> dict[str, Any]:
    """One operation: success responses ``{status: (schema, example)}``, the request body
    ``(schema, example)``, parameters (each with an ``example``) and its error codes."""
    op: dict[str, Any] = {"summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = list(params)
    if body is not None:
        schema, example = body
        op["requestBody"] = {"required": True} | _json(schema, {"example": _ex(example)})
    all_errors: list[ErrorRef] = list(errors)
    if body is not None:
        all_errors += BODY_ERRORS
    if admin:
        op["security"] = [{"adminToken": []}]
        all_errors.append("UNAUTHORIZED")
    op["responses"] = {
        status: {"description": summary} | _json(schema, {"example": _ex(example)})
        for status, (schema, example) in ok.items()
    } | _error_responses(all_errors)
    return op


def _path_param(name: str, schema: dict[str, Any], example: Any, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": what,
        "schema": schema,
        "example": example,
    }


ADDRESS_PARAM = _path_param(
    "address", ADDR, ALICE, "the account (any case; answers are checksummed)"
)
ACCOUNT_PARAM = _path_param("account", ADDR, ALICE, "the account")

PATHS: dict[str, dict[str, Any]] = {
    "/v1/withdrawals": {
        "post": _op(
            "Request a user-signed (EIP-712 Withdraw) withdrawal",
            "user",
            {
                "202": (WITHDRAWAL, WITHDRAWAL_EXAMPLE),
                "200": (WITHDRAWAL, WITHDRAWAL_EXAMPLE),
            },
            description="The account signs `Withdraw(address account,address token,uint256 "
            "amount,address destination,uint256 nonce,uint256 deadline)` in the domain "
            "`{name: Watcher, version: 1, chainId, verifyingContract: vault}`; the signed "
            "`token` is the token's address and `amount` its base units. 202: accepted, the "
            "amount + fee is on hold; 200: the same signed request again (the existing "
            "withdrawal).",
            body=(WITHDRAW_REQUEST, WITHDRAW_EXAMPLE),
            errors=[
                "MALFORMED_REQUEST",
                "MISSING_FIELD",
                "INVALID_ADDRESS",
                "INVALID_INTEGER",
                "INVALID_AMOUNT",
                ("AMOUNT_PRECISION", 400),
                "INVALID_DESTINATION",
                "BAD_SIGNATURE",
                "WRONG_SIGNER",
                "SIGNATURE_EXPIRED",
                "NONCE_REUSED",
                "UNSUPPORTED_CHAIN",
                "UNSUPPORTED_TOKEN",
                "AMOUNT_NOT_POSITIVE",
                "BELOW_MIN_WITHDRAWAL",
                "DESTINATION_NOT_ALLOWED",
                "DAILY_LIMIT_EXCEEDED",
                "PRICE_UNAVAILABLE",
                "NEGATIVE_BALANCE",
                "INSUFFICIENT_WITHDRAWABLE",
                ("UNKNOWN_ASSET", 422),
                ("AMOUNT_PRECISION", 422),
                "ACCOUNT_STATE_INCOMPLETE",
                "INTAKE_FAILED",
            ],
        )
    },
    "/v1/withdrawals/{id}": {
        "get": _op(
            "A withdrawal's state",
            "user",
            {"200": (WITHDRAWAL, WITHDRAWAL_DONE_EXAMPLE)},
            params=[_path_param("id", {"type": "integer", "minimum": 0}, 1, "withdrawal id")],
            errors=["WITHDRAWAL_NOT_FOUND"],
        )
    },
    "/v1/accounts/{address}": {
        "get": _op(
            "Balances, positions, open-order margin and max withdrawable",
            "user",
            {
                "200": (
                    ACCOUNT,
                    {
                        "account": ALICE,
                        "multiAssetMode": False,
                        "assets": [
                            {
                                "asset": "USDT",
                                "walletBalance": "900",
                                "crossWalletBalance": "850",
                                "crossUnPnl": "0",
                                "availableBalance": "825",
                                "maxWithdrawAmount": "825",
                                "onHold": "100",
                            }
                        ],
                        "positions": [
                            {
                                "symbol": "BTCUSDT",
                                "positionAmt": "0.01",
                                "entryPrice": "59000",
                                "markPrice": "60000",
                                "leverage": 10,
                                "marginMode": "isolated",
                                "isolatedWallet": "50",
                                "notional": "600",
                                "initialMargin": "60",
                                "maintMargin": "2.4",
                                "unRealizedProfit": "10",
                                "bracket": 1,
                                "liquidationPrice": "54216.867469879519",
                                "marginBalance": "60",
                                "marginRatio": "0.04",
                                "problem": None,
                            }
                        ],
                        "canWithdraw": True,
                        "negativeAssets": [],
                        "openOrders": ORDERS_EXAMPLE,
                        "crossMarginBalance": "850",
                        "crossMaintMargin": "0",
                        "marginRatio": "0",
                        "evaluable": True,
                        "problems": [],
                    },
                )
            },
            description="Per asset, in asset units: `walletBalance` = cross + isolated "
            "wallets; `crossUnPnl` (settlement asset only); `availableBalance`; "
            "`maxWithdrawAmount` = what a withdrawal may take now (0 for every asset while "
            "any is negative); `onHold` = withdrawals in flight. `canWithdraw` is false "
            "while `negativeAssets` is not empty.",
            params=[ADDRESS_PARAM],
            errors=["INVALID_ADDRESS", "ACCOUNT_STATE_INCOMPLETE"],
        )
    },
    "/v1/accounts/{address}/max-withdraw": {
        "get": _op(
            "Max withdrawable amount of an asset with its breakdown",
            "user",
            {
                "200": (
                    MAX_WITHDRAW,
                    {
                        "asset": "USDT",
                        "maxWithdrawAmount": "825",
                        "breakdown": {
                            "A": "850",
                            "B": "825",
                            "crossWalletBalance": "850",
                            "crossUnPnl": "0",
                            "crossInitialMargin": "25",
                            "isolatedOpenOrderInitialMargin": "0",
                            "crossMaintenanceMargin": "0",
                        },
                        "availableBalance": "825",
                        "limitedBy": "margin",
                        "multiAssetMode": False,
                        "negativeAssets": [],
                    },
                )
            },
            description="A = crossWalletBalance − isolatedOpenOrderInitialMargin − "
            "crossMaintenanceMargin; B = crossWalletBalance + crossUnPnl − "
            "crossInitialMargin − isolatedOpenOrderInitialMargin; max = max(0, min(A, B, "
            "balance)) in single-asset mode.",
            params=[
                ADDRESS_PARAM,
                {
                    "name": "asset",
                    "in": "query",
                    "required": True,
                    "schema": ASSET,
                    "example": "USDT",
                },
            ],
            errors=[
                "INVALID_ADDRESS",
                "INVALID_REQUEST",
                "UNKNOWN_ASSET",
                "ACCOUNT_STATE_INCOMPLETE",
            ],
        )
    },
    "/v1/accounts/{address}/history": {
        "get": _op(
            "Deposits, withdrawals, auto-conversions, engine entries and isolated transfers, "
            "newest first",
            "user",
            {
                "200": (
                    HISTORY,
                    {
                        "account": ALICE,
                        "history": [
                            {
                                "type": "withdrawal",
                                "asset": "USDT",
                                "amount": "-100",
                                "state": "requested",
                                "txHash": None,
                                "chainId": DEVNET_CHAIN,
                                "time": "2026-01-15T09:31:00.000000Z",
                            },
                            {
                                "type": "isolated-transfer",
                                "asset": "USDT",
                                "amount": "-50",
                                "state": "completed",
                                "txHash": None,
                                "chainId": None,
                                "time": "2026-01-15T09:30:30.000000Z",
                            },
                            {
                                "type": "realized_pnl",
                                "asset": "USDT",
                                "amount": "1000",
                                "state": "completed",
                                "txHash": None,
                                "chainId": None,
                                "time": T0,
                                "refId": "pnl-0001",
                            },
                        ],
                    },
                )
            },
            params=[
                ADDRESS_PARAM,
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    "example": 10,
                },
            ],
            errors=["INVALID_ADDRESS", "INVALID_INTEGER"],
        )
    },
    "/v1/accounts/{address}/rebalance": {
        "post": _op(
            "Auto-convert other assets to clear negative balances (signed Rebalance)",
            "user",
            {
                "200": (
                    REBALANCE,
                    {
                        "account": BOB,
                        "type": "auto-conversion",
                        "transactionId": 6,
                        "time": T0,
                        "conversions": [
                            {
                                "asset": "USDT",
                                "balanceBefore": "-100",
                                "credit": "100",
                                "price": "1",
                                "shortfallUsd": "100",
                                "receivedUsd": "100.000017",
                                "covered": True,
                                "debits": [
                                    {
                                        "asset": "ETH",
                                        "quantity": "0.03418804",
                                        "price": "3000",
                                        "rate": "0.975",
                                        "valueUsd": "100.000017",
                                    }
                                ],
                            }
                        ],
                        "changes": [
                            {"asset": "ETH", "amount": "-0.03418804"},
                            {"asset": "USDT", "amount": "100"},
                        ],
                        "balancesAfter": {"ETH": "0.96581196", "USDT": "0"},
                        "fullyCovered": True,
                        "negativeAssets": [],
                    },
                )
            },
            description="Signed by the account: `Rebalance(address account,uint256 nonce,"
            "uint256 deadline)`. The same signed request again answers the stored result.",
            body=(REBALANCE_REQUEST, REBALANCE_EXAMPLE),
            params=[_path_param("address", ADDR, BOB, "the account (the signer)")],
            errors=[
                "INVALID_ADDRESS",
                *SIGNED_ERRORS,
                "NONCE_REUSED",
                "NOTHING_TO_REBALANCE",
                "ACCOUNT_STATE_INCOMPLETE",
            ],
        )
    },
    "/v1/accounts/{address}/isolated-margin": {
        "post": _op(
            "Move margin between the cross wallet and an isolated position",
            "user",
            {
                "200": (
                    ISOLATED,
                    {
                        "account": ALICE,
                        "symbol": "BTCUSDT",
                        "type": 1,
                        "asset": "USDT",
                        "amount": "50",
                        "transactionId": 2,
                        "time": T0,
                        "isolatedWallet": "50",
                        "crossWalletBalance": "950",
                        "maxTransferAmount": "940",
                    },
                )
            },
            description="Signed by the account: `IsolatedMargin(address account,string symbol,"
            "uint8 type,uint256 amount,uint256 nonce,uint256 deadline)` with `amount` in "
            "units of 10^-18; or sent by the engine with its bearer token (no signature; "
            "`refId` makes it idempotent). Checked against the isolated max transfer-in "
            "(add) / transfer-out (reduce).",
            body=(ISOLATED_REQUEST, ISOLATED_EXAMPLE),
            params=[ADDRESS_PARAM],
            errors=[
                "INVALID_ADDRESS",
                "INVALID_AMOUNT",
                ("AMOUNT_PRECISION", 400),
                ("UNKNOWN_SYMBOL", 400),
                "UNAUTHORIZED",
                *SIGNED_ERRORS,
                "NONCE_REUSED",
                "REF_ID_CONFLICT",
                "NEGATIVE_BALANCE",
                "INSUFFICIENT_TRANSFERABLE",
                "NO_ISOLATED_POSITION",
                ("UNKNOWN_SYMBOL", 422),
                "AMOUNT_NOT_POSITIVE",
                ("AMOUNT_PRECISION", 422),
                "ACCOUNT_STATE_INCOMPLETE",
            ],
        )
    },
    "/v1/engine/entries": {
        "post": _op(
            "Post a realized PnL / funding fee / commission entry (idempotent on refId)",
            "engine",
            {
                "201": (ENTRY, ENTRY_EXAMPLE | {"transactionId": 1, "time": T0}),
                "200": (ENTRY, ENTRY_EXAMPLE | {"transactionId": 1, "time": T0}),
            },
            description="201 the first time; 200 with the same result for the same body "
            "again; 409 REF_ID_CONFLICT for another body with that refId. May drive a "
            "balance negative.",
            body=(ENTRY_REQUEST, ENTRY_EXAMPLE),
            errors=[
                "INVALID_ADDRESS",
                "INVALID_AMOUNT",
                ("AMOUNT_PRECISION", 400),
                ("UNKNOWN_ASSET", 400),
                "REF_ID_CONFLICT",
            ],
            admin=True,
        )
    },
    "/v1/engine/positions/{account}": {
        "put": _op(
            "Replace the account's positions (the full list)",
            "engine",
            {
                "200": (
                    POSITIONS,
                    {"account": ALICE, "positions": POSITIONS_EXAMPLE},
                )
            },
            description="A mark price must be set first; leverage must not exceed the "
            "bracket maximum for the notional. Rows of size 0 are dropped. Isolated margin "
            "is not an input (it moves through the isolated-margin transfer).",
            body=({"type": "array", "items": POSITION_IN}, POSITIONS_EXAMPLE),
            params=[ACCOUNT_PARAM],
            errors=[
                "INVALID_ADDRESS",
                ("UNKNOWN_SYMBOL", 400),
                "INVALID_PRICE",
                "DUPLICATE_SYMBOL",
                "ISOLATED_WALLET_MISMATCH",
                "MISSING_MARK_PRICE",
                "LEVERAGE_TOO_HIGH",
                "NOTIONAL_ABOVE_BRACKETS",
            ],
            admin=True,
        )
    },
    "/v1/engine/open-orders/{account}": {
        "put": _op(
            "Replace the account's open-order initial margin",
            "engine",
            {"200": (ORDERS, {"account": ALICE, "openOrders": ORDERS_EXAMPLE})},
            body=({"type": "array", "items": ORDER_IN}, ORDERS_EXAMPLE),
            params=[ACCOUNT_PARAM],
            errors=[
                "INVALID_ADDRESS",
                ("UNKNOWN_SYMBOL", 400),
                "INVALID_AMOUNT",
                "DUPLICATE_SYMBOL",
            ],
            admin=True,
        )
    },
    "/v1/engine/prices": {
        "put": _op(
            "Set mark prices (per symbol) and asset prices in USD",
            "engine",
            {
                "200": (
                    PRICES,
                    {"markPrices": {"BTCUSDT": "60000"}, "assetPrices": {"ETH": "3000"}},
                )
            },
            body=({"type": "array", "items": PRICE_IN}, PRICES_EXAMPLE),
            errors=[
                ("UNKNOWN_SYMBOL", 400),
                ("UNKNOWN_ASSET", 400),
                "INVALID_PRICE",
                "DUPLICATE_SYMBOL",
            ],
            admin=True,
        )
    },
    "/v1/engine/accounts/{account}/mode": {
        "put": _op(
            "Switch multi-asset mode",
            "engine",
            {"200": (MODE_OUT, {"account": ALICE, "multiAssetMode": False})},
            body=(MODE_IN, {"multiAssetMode": False}),
            params=[ACCOUNT_PARAM],
            errors=["INVALID_ADDRESS"],
            admin=True,
        )
    },
    "/healthz": {
        "get": {
            "summary": "200 when healthy, 503 with reasons",
            "tags": ["ops"],
            "responses": {
                "200": {"description": "healthy"}
                | _json(HEALTH, {"ok": _ex({"status": "ok", "reasons": []})}),
                "503": {"description": "degraded or down"}
                | _json(
                    HEALTH,
                    {
                        "degraded": _ex(
                            {
                                "status": "degraded",
                                "reasons": [HEALTH_LAG_EXAMPLE],
                            }
                        )
                    },
                ),
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
                    "content": {
                        "text/plain": {
                            "schema": {"type": "string"},
                            "examples": {
                                "example": _ex(
                                    "# TYPE watcher_tick_seconds histogram\n"
                                    'watcher_tick_seconds_count{service="listener:devnet"} 42\n'
                                )
                            },
                        }
                    },
                }
            },
        }
    },
    "/v1/status": {
        "get": {
            "summary": "The status document (as `watcher status --json`)",
            "tags": ["ops"],
            "responses": {
                "200": {"description": "status"}
                | _json(
                    STATUS,
                    {
                        "example": _ex(
                            {
                                "status": "healthy",
                                "exitCode": 0,
                                "reasons": [],
                                "generatedAt": "2026-01-15T09:30:00+00:00",
                                "daemon": {"running": True, "pid": 4242},
                                "networks": [],
                                "deposits": {"byState": {}, "stored": 0, "waiting": []},
                                "withdrawals": {"byState": {}},
                                "balances": [],
                                "reconciliation": [],
                                "alarms": [],
                            }
                        )
                    },
                )
            },
        }
    },
    "/docs": {
        "get": {
            "summary": "This reference, rendered (Swagger UI served by the daemon itself)",
            "tags": ["ops"],
            "responses": {
                "200": {
                    "description": "HTML page",
                    "content": {
                        "text/html": {
                            "schema": {"type": "string"},
                            "examples": {"page": _ex("<!DOCTYPE html>…")},
                        }
                    },
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "tags": ["ops"],
            "responses": {
                "200": {"description": "OpenAPI 3.1"}
                | _json(
                    {"type": "object", "required": ["openapi", "info", "paths"]},
                    {"example": _ex({"openapi": "3.1.0", "info": {}, "paths": {}})},
                )
            },
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
POSITION_VIEW["required"] = [k for k in POSITION_VIEW["required"] if k != "problem"]
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
PRICES["properties"]["unevaluableAccounts"] = {
    "type": "array",
    "description": "accounts this update made unevaluable (a position's notional past its "
    "last bracket): each is refused withdrawals and transfers until it is evaluable again",
    "items": _obj(
        {
            "account": ADDR,
            "symbol": {"type": "string"},
            "code": {"type": "string"},
            "message": {"type": "string"},
        }
    ),
}
POSITIONS["properties"]["returnedIsolatedMargin"] = {
    "type": "array",
    "description": "isolated wallets of positions this update closed, returned to cross "
    "(journaled isolated-transfer; the same update again returns nothing)",
    "items": _obj(
        {
            "symbol": {"type": "string"},
            "asset": {"type": "string"},
            "amount": DEC,
            "transactionId": {"type": "integer"},
        }
    ),
}
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
# No isolated position of that symbol (or no mark price): the cross terms only.
ISOLATED_LIMITS["properties"]["breakdown"]["required"] = ["cross"]
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
    {"200": (ISOLATED_LIMITS, ISOLATED_LIMITS_EXAMPLE)},
    params=[
        ADDRESS_PARAM,
        {
            "name": "symbol",
            "in": "query",
            "required": True,
            "schema": SYMBOL,
            "example": "BTCUSDT",
        },
    ],
    errors=[
        "INVALID_ADDRESS",
        "INVALID_REQUEST",
        ("UNKNOWN_SYMBOL", 422),
        "ACCOUNT_STATE_INCOMPLETE",
    ],
)
PATHS["/v1/accounts/{address}/isolated-margin"]["get"] = _limits_op
# Signed by the account, or sent by the engine with its token (then unsigned).
PATHS["/v1/accounts/{address}/isolated-margin"]["post"]["security"] = [{}, {"adminToken": []}]


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "watcher",
            "version": "1",
            "description": "On-chain deposit/withdraw watcher: user, engine and operations API. "
            "Amounts and prices are decimal strings in token units; errors are "
            "`{code, message, details}` (an unknown path is 404 NOT_FOUND, a wrong method "
            "405 METHOD_NOT_ALLOWED). Engine routes need `Authorization: Bearer "
            "$WATCHER_ADMIN_TOKEN`; user writes are authorized by an EIP-712 signature of "
            "the account.",
        },
        "tags": [
            {"name": "user", "description": "Called by users (signed writes)"},
            {"name": "engine", "description": "Called by the trading engine (bearer token)"},
            {"name": "ops", "description": "Operations"},
        ],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            # Answered for any path: no route, or a route without that method.
            "responses": {
                "NotFound": {"description": "no route has this path"}
                | _json(ERROR, {"NOT_FOUND": _ex(error_example("NOT_FOUND"))}),
                "MethodNotAllowed": {"description": "the Allow header lists the methods"}
                | _json(ERROR, {"METHOD_NOT_ALLOWED": _ex(error_example("METHOD_NOT_ALLOWED"))}),
            },
            "schemas": {
                "Error": ERROR,
                "Withdrawal": WITHDRAWAL,
                "WithdrawRequest": WITHDRAW_REQUEST,
                "Account": ACCOUNT,
                "MaxWithdraw": MAX_WITHDRAW,
                "History": HISTORY,
            },
        },
    }
