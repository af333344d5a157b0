"""The served OpenAPI document against the real server, by generated requests.

schemathesis reads ``GET /openapi.json`` from a real app (a real SQLite file, and a real
PostgreSQL database when ``WATCHER_TEST_DATABASE_URL`` is set; real anvil for the status
probe) served on a real port, generates requests for every operation from
the document (its examples, boundary values of every documented rule, random valid and
invalid inputs) and fails on any 5xx or any answer whose status, content type or body the
document does not describe. Bounded and reproducible: a fixed seed, deterministic
generation and ``MAX_EXAMPLES`` generated examples (valid and invalid data) per operation,
run once with the admin token and once without it: with the documented examples, the
boundary values of each rule and the undocumented methods, 170-410 requests per operation
(about 3,600 in all per database; 2-4 minutes per database on a busy 2-core machine,
about 60 s of CPU each).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import schemathesis
from aiohttp import web

from tests.fixtures_db import BACKENDS, drop_database_url, make_database_url
from tests.helpers import write_config
from watcher.api.openapi import ALICE, document
from watcher.api.server import make_web_app
from watcher.app import App, build
from watcher.chain.devnet import Deployment
from watcher.settings import load_settings
from watcher.store.db import create_engine
from watcher.store.migrate import upgrade

ADMIN_TOKEN = "conformance-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DOC = document()
#: Generated examples per operation and token setting (valid and invalid data mixed); the
#: documented examples and the boundary values of each rule come on top.
MAX_EXAMPLES = 75
SEED = 23

CONFIG = {
    "seed": SEED,
    "generation": {
        "mode": "all",
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",
    },
    "checks": {
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
        "negative_data_rejection": {"enabled": True},
        # Replaced by rules_are_documented below: a schema-valid request may still be
        # refused for what only the configuration knows (an asset, a chain).
        "positive_data_acceptance": {"enabled": False},
    },
}


@dataclass
class Served:
    base_url: str
    stop: Any


def _serve(settings: Any, ready: Any, box: dict[str, Any]) -> None:
    """The app on its own event loop in this thread (the test calls it synchronously)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def start() -> tuple[App, web.AppRunner]:
        app = await build(settings)
        runner = web.AppRunner(make_web_app(app))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        box["base_url"] = f"http://127.0.0.1:{port}"
        return app, runner

    try:
        app, runner = loop.run_until_complete(start())
    except BaseException as exc:
        box["error"] = exc
        ready.set()
        return
    stopped = asyncio.Event()
    box["stop"] = lambda: loop.call_soon_threadsafe(stopped.set)
    ready.set()
    loop.run_until_complete(stopped.wait())
    loop.run_until_complete(runner.cleanup())
    loop.run_until_complete(app.close())
    loop.close()


SEED_REQUESTS = (
    ("PUT", "/v1/engine/prices"),
    ("POST", "/v1/engine/entries"),
    ("PUT", "/v1/engine/positions/{account}"),
    ("PUT", "/v1/engine/open-orders/{account}"),
)


@pytest.fixture(scope="module", params=BACKENDS)
async def served(
    request: pytest.FixtureRequest,
    deployment: Deployment,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Served]:
    root = tmp_path_factory.mktemp("conformance")
    db_url = await make_database_url(request.param, root)
    engine = create_engine(db_url)
    await upgrade(engine)
    await engine.dispose()
    cfg = write_config(root, [("devnet", deployment, 3)])
    settings = load_settings(
        cfg, env={"WATCHER_DATABASE_URL": db_url, "WATCHER_ADMIN_TOKEN": ADMIN_TOKEN}
    )
    ready = threading.Event()
    box: dict[str, Any] = {}
    thread = threading.Thread(target=_serve, args=(settings, ready, box), daemon=True)
    thread.start()
    await asyncio.to_thread(ready.wait, 60)
    if "error" in box:
        raise box["error"]
    try:
        base_url = box["base_url"]
        async with aiohttp.ClientSession(base_url) as http:
            async with http.get("/openapi.json") as resp:
                assert await resp.json() == json.loads(json.dumps(DOC)), "served ≠ tested"
            # The examples' story first (prices, ALICE's credit, position and orders), so
            # that the account views answer with positions, margins and liquidation prices.
            for method, path in SEED_REQUESTS:
                body = DOC["paths"][path][method.lower()]["requestBody"]
                example = body["content"]["application/json"]["examples"]["example"]["value"]
                path = path.replace("{account}", ALICE)
                async with http.request(method, path, json=example, headers=ADMIN) as resp:
                    assert resp.status in (200, 201), (path, await resp.text())
        yield Served(base_url, box["stop"])
    finally:
        box["stop"]()
        await asyncio.to_thread(thread.join, 30)
        await drop_database_url(db_url)


#: 400s a schema-valid request may get: names the configuration does not know, and an
#: address whose mixed case is not its EIP-55 checksum (no JSON Schema can say that).
CONFIGURED_NAMES = {"UNKNOWN_ASSET", "UNKNOWN_SYMBOL", "UNKNOWN_CHAIN"}


@schemathesis.check
def rules_are_documented(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request the document calls valid gets no 400 but for the reasons above: every
    other rule the server enforces on the shape of a request is in the document."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    error = response.json()
    code = error.get("code")
    if code in CONFIGURED_NAMES:
        return None
    if code == "INVALID_ADDRESS" and "checksum" in error.get("message", ""):
        return None
    if (
        code == "INVALID_REQUEST"
        and case.operation.label == "POST /v1/accounts/{address}/isolated-margin"
        and {"missing", "unexpected"} & set(error.get("details", {}))
    ):
        return None  # its body's shape depends on the token (the schema's description)
    raise AssertionError(
        f"a request valid by the document was refused: 400 {code} {error.get('message')!r}"
    )


schema = schemathesis.openapi.from_dict(DOC, config=schemathesis.Config.from_dict(CONFIG))


@schema.parametrize()
def test_with_the_admin_token(case: Any, served: Served) -> None:
    case.call_and_validate(
        base_url=served.base_url, headers=ADMIN, additional_checks=[rules_are_documented]
    )


@schema.parametrize()
def test_without_a_token(case: Any, served: Served) -> None:
    case.call_and_validate(base_url=served.base_url, additional_checks=[rules_are_documented])
