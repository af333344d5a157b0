"""The aiohttp application: routes, the error middleware and shared context."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from watcher.api import ops
from watcher.api.errors import ApiError

if TYPE_CHECKING:
    from watcher.app import App

log = logging.getLogger("watcher.api")
APP_KEY: web.AppKey[App] = web.AppKey("watcher", object)  # type: ignore[arg-type]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except json.JSONDecodeError as exc:
        return ApiError("MALFORMED_JSON", f"request body is not valid JSON: {exc.msg}").response()
    except web.HTTPException:
        raise


def make_web_app(app: App) -> web.Application:
    web_app = web.Application(middlewares=[errors], client_max_size=256 * 1024)
    web_app[APP_KEY] = app
    ops.add_routes(web_app)
    from watcher.api import routes

    routes.add_routes(web_app)
    return web_app


def app_of(request: web.Request) -> App:
    return request.app[APP_KEY]
