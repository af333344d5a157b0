"""``GET /docs``: the rendered API reference (Swagger UI over ``/openapi.json``).

Swagger UI's files come from the ``swagger-ui-py`` package (a runtime dependency, so a
wheel install has them) and are served from here under ``/docs/static/``: the page loads
nothing from another host. Only the few files the page needs are served, by name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web

from watcher.api.errors import ApiError

#: The files of the package's ``static/`` folder the page uses, and their content type.
STATIC_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "application/javascript",
    "favicon-32x32.png": "image/png",
}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>watcher API reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png">
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
<noscript>The interactive reference needs JavaScript; the raw description is at
<a href="/openapi.json">/openapi.json</a>.</noscript>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

# validatorUrl: null, or Swagger UI would load a badge from its public validator.
INIT_JS = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: false,
    displayRequestDuration: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""


def static_dir() -> Path | None:
    """The ``static/`` folder of the installed ``swagger_ui`` package (not imported)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if folder.is_dir() else None


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8")


async def init_js(request: web.Request) -> web.Response:
    return web.Response(text=INIT_JS, content_type="application/javascript", charset="utf-8")


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    folder = static_dir()
    if folder is None or not (folder / name).is_file():
        raise ApiError(
            "DOCS_UNAVAILABLE",
            "the API reference's files are missing: install the swagger-ui-py package",
            status=503,
        )
    return web.FileResponse(
        folder / name,
        headers={"Content-Type": STATIC_FILES[name], "Cache-Control": "public, max-age=3600"},
    )


def add_routes(web_app: web.Application) -> None:
    web_app.router.add_get("/docs", page)
    web_app.router.add_get("/docs/init.js", init_js)
    web_app.router.add_get("/docs/static/{name}", static)
