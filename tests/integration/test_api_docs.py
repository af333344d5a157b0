"""``GET /docs`` (Swagger UI from the installed package, nothing from another host) and
the error shape of what no handler answers: unknown path, wrong method, oversized body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.api_support import ADMIN_TOKEN, Api, running_api


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(db_url, tmp_path) as running:
        yield running


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)


async def test_docs_page_uses_only_local_assets(api: Api) -> None:
    async with api.client.get("/docs") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        html = await resp.text()
    parser = _Links()
    parser.feed(html)
    assert len(parser.urls) >= 4, parser.urls  # icon, css, bundle, init (+ the noscript link)
    for url in parser.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{url} is not a local asset"
        assert url.startswith("/"), url
        async with api.client.get(url) as asset:
            assert asset.status == 200, url
            assert len(await asset.read()) > 0, url
    assert "//" not in html.replace("<!DOCTYPE", "")  # no protocol-relative or absolute URL
    async with api.client.get("/docs/init.js") as resp:
        script = await resp.text()
    assert '"/openapi.json"' in script and "validatorUrl: null" in script
    assert "http" not in script
    async with api.client.get("/docs/static/swagger-ui-bundle.js") as resp:
        assert resp.headers["Content-Type"].startswith("application/javascript")
        assert b"SwaggerUIBundle" in await resp.read()


async def test_docs_static_serves_only_its_files(api: Api) -> None:
    for name in ("swagger-editor-bundle.js", "..%2F__init__.py", "LICENSE"):
        status, doc = await api.get(f"/docs/static/{name}")
        assert status == 404, name
        assert doc["code"] == "NOT_FOUND"


async def test_unknown_path_is_json_404(api: Api) -> None:
    for path in ("/nope", "/v1/withdrawals/1/extra", "/v1/accounts"):
        status, doc = await api.get(path)
        assert status == 404, path
        assert set(doc) == {"code", "message", "details"}
        assert doc["code"] == "NOT_FOUND" and doc["details"] == {"path": path}


async def test_wrong_method_is_json_405_with_allow(api: Api) -> None:
    async with api.client.delete("/v1/withdrawals") as resp:
        assert resp.status == 405
        doc = await resp.json()
        allow = resp.headers["Allow"]
    assert set(doc) == {"code", "message", "details"}
    assert doc["code"] == "METHOD_NOT_ALLOWED"
    assert doc["details"] == {"method": "DELETE", "allowed": ["POST"]}
    assert allow == "POST"
    async with api.client.post(
        "/v1/engine/prices", json=[], headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as resp:
        assert resp.status == 405
        assert (await resp.json())["details"]["allowed"] == ["PUT"]


async def test_oversized_body_is_json_413(api: Api) -> None:
    body = b'{"pad": "' + b"x" * (300 * 1024) + b'"}'
    async with api.client.post(
        "/v1/withdrawals", data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        doc = await resp.json()
    assert doc["code"] == "PAYLOAD_TOO_LARGE" and doc["details"] == {"maxBytes": 256 * 1024}


def test_reference_assets_come_with_the_package() -> None:
    # A wheel install pulls the files in: the package requires swagger-ui-py, and the
    # files the page names exist in the installed copy.
    import importlib.metadata

    from watcher.api.docs import STATIC_FILES, static_dir

    requires = importlib.metadata.requires("watcher") or []
    assert any(r.replace("_", "-").startswith("swagger-ui-py") for r in requires), requires
    folder = static_dir()
    assert folder is not None
    for name in STATIC_FILES:
        assert (folder / name).stat().st_size > 0, name


async def test_unhandled_exception_is_json_500_without_internals(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A route that fails the way a bug would: the only way to reach the last resort.
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from tests.integration.api_support import make_settings
    from watcher.api.server import make_web_app
    from watcher.app import build

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals 0xdeadbeef")

    app = await build(make_settings(tmp_path, db_url), services=False)
    web_app = make_web_app(app)
    web_app.router.add_get("/broken", broken)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(web_app))
    await client.start_server()
    try:
        async with client.get("/broken") as resp:
            assert resp.status == 500
            text = await resp.text()
            doc = await resp.json()
    finally:
        await client.close()
        await app.close()
    assert doc["code"] == "INTERNAL_ERROR" and set(doc) == {"code", "message", "details"}
    assert "secret internals" not in text and "Traceback" not in text
    logged = [r for r in caplog.records if "secret internals" in (r.exc_text or "")]
    assert logged, "not logged"
    # The answer's ref is the log line's: a client's report finds the traceback.
    ref = doc["details"]["ref"]
    assert len(ref) == 16 and f"ref={ref}" in logged[0].getMessage()
