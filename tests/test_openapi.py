"""The OpenAPI document describes exactly the routes the server registers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_config
from watcher.api.openapi import document
from watcher.api.server import make_web_app
from watcher.app import build
from watcher.chain.devnet import Deployment
from watcher.settings import load_settings


async def test_openapi_matches_registered_routes(tmp_path: Path, deployment: Deployment) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    settings = load_settings(cfg, env={}, database_url=f"sqlite+aiosqlite:///{tmp_path}/o.db")
    app = await build(settings)
    try:
        web_app = make_web_app(app)
        served = {
            (r.method.lower(), r.resource.canonical)
            for r in web_app.router.routes()
            if r.method != "HEAD"
            and r.resource is not None
            # the reference page's own files are not part of the API
            and not r.resource.canonical.startswith("/docs/")
        }
    finally:
        await app.close()
    described = {(m, p) for p, ops in document()["paths"].items() for m in ops}
    assert served - described == set(), "routes missing from openapi.json"
    assert described - served == set(), "openapi.json describes routes the server lacks"


@pytest.mark.parametrize("path", ["/v1/withdrawals", "/v1/accounts/{address}", "/healthz"])
def test_contract_names_are_present(path: str) -> None:
    assert path in document()["paths"]
