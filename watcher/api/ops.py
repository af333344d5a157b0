"""Operations endpoints: /healthz, /metrics, /openapi.json."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from watcher.api.errors import json_response
from watcher.services.health import health

log = logging.getLogger("watcher.api")
GAUGE_REFRESH_SECONDS = 2.0


async def healthz(request: web.Request) -> web.Response:
    from watcher.api.server import app_of

    doc = await health(app_of(request))
    return json_response(doc, status=200 if doc["status"] == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    from watcher.api.server import app_of
    from watcher.services.gauges import refresh_gauges

    app = app_of(request)
    # The gauges read from the database are refreshed when it answers in time; without
    # it (connection cut, database down) the rest is served as it is: that is when an
    # operator needs the metrics most, and a failing scrape would read as "daemon down".
    try:
        await asyncio.wait_for(refresh_gauges(app), timeout=GAUGE_REFRESH_SECONDS)
    except Exception as exc:
        log.warning("metrics: database gauges not refreshed (%s)", type(exc).__name__)
    body = app.metrics.render()
    return web.Response(
        body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


async def status(request: web.Request) -> web.Response:
    from watcher.api.server import app_of
    from watcher.services.status import collect_status

    return json_response(await collect_status(app_of(request)))


async def openapi(request: web.Request) -> web.Response:
    from watcher.api.openapi import document

    return json_response(document())


def add_routes(web_app: web.Application) -> None:
    web_app.router.add_get("/openapi.json", openapi)
    web_app.router.add_get("/v1/status", status)
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/metrics", metrics)
