"""API errors: one JSON shape ``{code, message, details}`` and the status it maps to."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class ApiError(Exception):
    status = 400

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        if status is not None:
            self.status = status

    def response(self) -> web.Response:
        return json_response(
            {"code": self.code, "message": self.message, "details": self.details},
            status=self.status,
        )


def bad_request(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(code, message, details, status=400)


def unauthorized(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(code, message, details, status=401)


def not_found(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(code, message, details, status=404)


def conflict(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(code, message, details, status=409)


def rule(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(code, message, details, status=422)


def _default(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, default=_default), status=status, content_type="application/json"
    )
