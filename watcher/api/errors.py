"""API errors: one JSON shape ``{code, message, details}`` and the status it maps to."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from watcher.domain.errors import DomainError, ErrorKind


@dataclass(frozen=True)
class ErrorCode:
    """One error code the API answers with, its HTTP status(es) and when it happens."""

    code: str
    statuses: tuple[int, ...]
    when: str


#: Every error code of the API. ``docs/api.md`` and the OpenAPI document list these; a
#: test scans the code base so that a new code cannot be raised without an entry here.
ERROR_CODES: tuple[ErrorCode, ...] = (
    # 400: the request is malformed
    ErrorCode("MALFORMED_JSON", (400,), "the body is not JSON, or is nested deeper than 32 levels"),
    ErrorCode(
        "INVALID_REQUEST",
        (400,),
        "the body has the wrong shape: a missing, unknown or null "
        "field, a JSON number where a decimal string is needed (details.errors lists all)",
    ),
    ErrorCode(
        "MALFORMED_REQUEST",
        (400,),
        "a withdrawal body is not an object, or a field that must be a string is not",
    ),
    ErrorCode("MISSING_FIELD", (400,), "a withdrawal body lacks fields (details.missing)"),
    ErrorCode(
        "INVALID_ADDRESS",
        (400,),
        "an address is not 0x + 40 hex digits, or its mixed "
        "case is not a valid EIP-55 checksum (details.field names it)",
    ),
    ErrorCode(
        "INVALID_INTEGER",
        (400,),
        "an integer (nonce, deadline, chainId, limit) is not ASCII digits or is out of range",
    ),
    ErrorCode(
        "INVALID_AMOUNT",
        (400,),
        "an amount is not a plain decimal string, is zero where it must not be, or exceeds uint256",
    ),
    ErrorCode(
        "AMOUNT_PRECISION",
        (400, 422),
        "an amount has more decimals than the token "
        "(400) or the ledger asset keeps (400; 422 from the risk gate)",
    ),
    ErrorCode("INVALID_PRICE", (400,), "a price is ≤ 0, or an open position has no entry price"),
    ErrorCode("INVALID_DESTINATION", (400,), "the withdrawal destination is the zero address"),
    ErrorCode("DUPLICATE_SYMBOL", (400,), "a list names the same symbol (or asset) twice"),
    ErrorCode("UNKNOWN_ASSET", (400, 422), "the asset is not configured in assets.toml"),
    ErrorCode(
        "UNKNOWN_SYMBOL",
        (400, 422),
        "the symbol has no leverage brackets (400), or no "
        "mark price for an isolated transfer (422)",
    ),
    ErrorCode(
        "UNKNOWN_CHAIN",
        (400,),
        "a signed account request names a chainId that is not an enabled network",
    ),
    # 401: not authorized
    ErrorCode(
        "UNAUTHORIZED",
        (401,),
        "an engine route without the right bearer token (or the daemon has no WATCHER_ADMIN_TOKEN)",
    ),
    ErrorCode(
        "BAD_SIGNATURE", (401,), "the signature is not 0x + 130 hex digits or does not recover"
    ),
    ErrorCode(
        "WRONG_SIGNER",
        (401,),
        "the signature recovers to another address than the "
        "account (a wrong field, chainId or vault gives this too)",
    ),
    ErrorCode("SIGNATURE_EXPIRED", (401,), "the signed deadline has passed"),
    # 404, 405, 413
    ErrorCode("WITHDRAWAL_NOT_FOUND", (404,), "no withdrawal has this id"),
    ErrorCode("NOT_FOUND", (404,), "no route has this path"),
    ErrorCode(
        "METHOD_NOT_ALLOWED",
        (405,),
        "the path exists but not with this method (the Allow header lists the methods)",
    ),
    ErrorCode("PAYLOAD_TOO_LARGE", (413,), "the body is larger than 256 KiB"),
    # 409: replay or conflicting state
    ErrorCode(
        "NONCE_REUSED",
        (409,),
        "the nonce was already used by a different signed request of this account",
    ),
    ErrorCode("REF_ID_CONFLICT", (409,), "the refId was already used with a different body"),
    ErrorCode(
        "ISOLATED_WALLET_MISMATCH",
        (409,),
        "a position's isolatedWallet differs from the ledger's isolated wallet",
    ),
    # 422: a rule said no
    ErrorCode("UNSUPPORTED_CHAIN", (422,), "the withdrawal's chainId is not an enabled network"),
    ErrorCode(
        "UNSUPPORTED_TOKEN",
        (422,),
        "the token (address or symbol) is not configured on "
        "that network, or its asset is not a ledger asset",
    ),
    ErrorCode("AMOUNT_NOT_POSITIVE", (422,), "the amount is zero"),
    ErrorCode("BELOW_MIN_WITHDRAWAL", (422,), "the amount is below the token's min_withdrawal"),
    ErrorCode(
        "DESTINATION_NOT_ALLOWED",
        (422,),
        "the account has an allow-list and the destination is not on it",
    ),
    ErrorCode(
        "DAILY_LIMIT_EXCEEDED",
        (422,),
        "the account's withdrawals of the last 24 h would pass the USD limit",
    ),
    ErrorCode("PRICE_UNAVAILABLE", (422,), "no USD price to check the daily limit"),
    ErrorCode(
        "NEGATIVE_BALANCE",
        (422,),
        "an asset of the account is negative: withdrawals "
        "and adding isolated margin are blocked until a rebalance or deposit",
    ),
    ErrorCode("INSUFFICIENT_WITHDRAWABLE", (422,), "amount + fee is above maxWithdrawAmount"),
    ErrorCode(
        "INSUFFICIENT_TRANSFERABLE",
        (422,),
        "the amount is above the isolated max transfer-in (add) or transfer-out (reduce)",
    ),
    ErrorCode(
        "NO_ISOLATED_POSITION",
        (422,),
        "an isolated transfer for a symbol without an isolated position",
    ),
    ErrorCode(
        "NOTHING_TO_REBALANCE", (422,), "a rebalance with no negative asset, or nothing to convert"
    ),
    ErrorCode(
        "ACCOUNT_STATE_INCOMPLETE",
        (422,),
        "the account cannot be evaluated (a price or mark price it needs is missing)",
    ),
    ErrorCode("LEVERAGE_TOO_HIGH", (422,), "a position's leverage is above its bracket's maximum"),
    ErrorCode("NOTIONAL_ABOVE_BRACKETS", (422,), "a position's notional is above the last bracket"),
    ErrorCode("MISSING_MARK_PRICE", (422,), "a position's symbol has no mark price yet"),
    # 5xx
    ErrorCode(
        "INTERNAL_ERROR",
        (500,),
        "a bug; details.ref names the daemon's log line with the traceback",
    ),
    ErrorCode(
        "INTAKE_FAILED",
        (503,),
        "the withdrawal could not be stored (database "
        "trouble); retrying the same signed request is safe",
    ),
    ErrorCode(
        "DOCS_UNAVAILABLE", (503,), "GET /docs files are missing (swagger-ui-py is not installed)"
    ),
)
ERRORS_BY_CODE: dict[str, ErrorCode] = {e.code: e for e in ERROR_CODES}


def error_table() -> str:
    """The error codes as a Markdown table (the one in ``docs/api.md``)."""
    lines = ["| code | HTTP status | when |", "| --- | --- | --- |"]
    for e in ERROR_CODES:
        lines.append(f"| `{e.code}` | {', '.join(map(str, e.statuses))} | {e.when} |")
    return "\n".join(lines) + "\n"


#: HTTP status of each kind of domain error: the one place a service's refusal becomes
#: a status code.
HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.RULE: 422,
    ErrorKind.UNAVAILABLE: 503,
}


class ApiError(DomainError):
    """An error of the HTTP layer itself (a route, a method, a body size, a bug), with a
    status that has no domain kind (405, 413, 500); the API's own handlers also raise
    it with a kind as services do."""

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        status: int | None = None,
        kind: ErrorKind = ErrorKind.INVALID,
    ) -> None:
        super().__init__(code, message, details, kind=kind)
        self._status = status

    @property
    def status(self) -> int:
        return self._status if self._status is not None else HTTP_STATUS[self.kind]


def http_status(exc: DomainError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    return HTTP_STATUS[exc.kind]


def error_response(exc: DomainError) -> web.Response:
    """The ``{code, message, details}`` answer of a domain (or API) error."""
    return json_response(
        {"code": exc.code, "message": exc.message, "details": exc.details},
        status=http_status(exc),
    )


class _Maker(Protocol):
    def __call__(self, code: str, message: str, /, **details: Any) -> ApiError: ...


def _maker(kind: ErrorKind) -> _Maker:
    def make(code: str, message: str, /, **details: Any) -> ApiError:
        return ApiError(code, message, details, kind=kind)

    return make


# The API's own refusals, by kind (services use watcher.domain.errors' counterparts).
bad_request = _maker(ErrorKind.INVALID)
unauthorized = _maker(ErrorKind.UNAUTHORIZED)
not_found = _maker(ErrorKind.NOT_FOUND)
conflict = _maker(ErrorKind.CONFLICT)
rule = _maker(ErrorKind.RULE)


def _default(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, default=_default), status=status, content_type="application/json"
    )


if __name__ == "__main__":  # pragma: no cover - prints the table for docs/api.md
    print(error_table(), end="")
