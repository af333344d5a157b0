"""The aiohttp application: routes, the error middleware and shared context."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from watcher.api import docs, ops
from watcher.api.errors import ApiError, error_response
from watcher.domain.errors import DomainError

if TYPE_CHECKING:
    from watcher.app import App

log = logging.getLogger("watcher.api")
APP_KEY: web.AppKey[App] = web.AppKey("watcher", object)  # type: ignore[arg-type]

MAX_BODY_BYTES = 256 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as exc:  # a service's refusal or the API's own 4xx
        return error_response(exc)
    except json.JSONDecodeError as exc:
        return error_response(
            ApiError("MALFORMED_JSON", f"request body is not valid JSON: {exc.msg}")
        )
    except web.HTTPNotFound:
        return error_response(
            ApiError(
                "NOT_FOUND",
                f"no route {request.path!r}; see /docs",
                {"path": request.path},
                status=404,
            )
        )
    except web.HTTPMethodNotAllowed as exc:
        allowed = sorted(exc.allowed_methods)
        response = error_response(
            ApiError(
                "METHOD_NOT_ALLOWED",
                f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}",
                {"method": request.method, "allowed": allowed},
                status=405,
            )
        )
        response.headers["Allow"] = ",".join(allowed)
        return response
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            ApiError(
                "PAYLOAD_TOO_LARGE",
                f"the request body is larger than {MAX_BODY_BYTES} bytes",
                {"maxBytes": MAX_BODY_BYTES},
                status=413,
            )
        )
    except web.HTTPException:
        raise
    except Exception:
        # Logged with its traceback under a reference the client also gets, so that a
        # report can be matched to the log line; the answer has no internals.
        ref = uuid.uuid4().hex[:16]
        log.exception("unhandled error ref=%s on %s %s", ref, request.method, request.path)
        return error_response(
            ApiError(
                "INTERNAL_ERROR",
                f"internal error; the daemon's log has the details under ref={ref}",
                {"ref": ref},
                status=500,
            )
        )


def make_web_app(app: App) -> web.Application:
    web_app = web.Application(middlewares=[errors], client_max_size=MAX_BODY_BYTES)
    web_app[APP_KEY] = app
    ops.add_routes(web_app)
    docs.add_routes(web_app)
    from watcher.api import routes

    routes.add_routes(web_app)
    return web_app


def app_of(request: web.Request) -> App:
    return request.app[APP_KEY]
