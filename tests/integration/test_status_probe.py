"""`watcher status` probes every RPC endpoint; whatever an endpoint or a proxy answers
(an HTTP 500 with a JSON error object instead of the batch, HTML, truncated JSON, wrong
ids, an error item, a hang), the probe reports that endpoint as failing and says how,
instead of crashing the status command and `GET /v1/status`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from watcher.chain.devnet import AnvilNode
from watcher.services import status as status_mod

MODES: dict[str, tuple[int, str, str]] = {
    "error object": (
        500,
        "application/json",
        json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": "boom"}}),
    ),
    "html": (502, "text/html", "<html><body>Bad gateway</body></html>"),
    "truncated": (200, "application/json", '[{"jsonrpc":"2.0","id":1,"result":"0x7a69"},{"js'),
    "wrong ids": (
        200,
        "application/json",
        json.dumps([{"jsonrpc": "2.0", "id": 7, "result": "0x1"}, {"id": 8, "result": "0x2"}]),
    ),
    "error item": (
        200,
        "application/json",
        json.dumps(
            [
                {"jsonrpc": "2.0", "id": 1, "result": "0x7a69"},
                {"jsonrpc": "2.0", "id": 2, "error": {"code": -32000, "message": "no head"}},
            ]
        ),
    ),
    "not hex": (
        200,
        "application/json",
        json.dumps([{"id": 1, "result": "0x7a69"}, {"id": 2, "result": 12}]),
    ),
}
EXPECTED = {
    "error object": "error instead of a batch answer: boom",
    "html": "HTTP 502, not JSON",
    "truncated": "HTTP 200, not JSON",
    "wrong ids": "no answer to eth_chainId",
    "error item": "eth_blockNumber: no head",
    "not hex": "eth_blockNumber: 12",
}


@pytest.fixture
async def sick() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A local endpoint whose answer is switched by ``state["mode"]``."""
    state: dict[str, Any] = {"mode": "html"}

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        if state["mode"] == "hang":
            await asyncio.sleep(60)
        status, ctype, body = MODES[state["mode"]]
        return web.Response(status=status, body=body.encode(), content_type=ctype.split(";")[0])

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/", state
    finally:
        await runner.cleanup()


async def test_every_answer_shape_is_a_failing_endpoint_not_a_crash(
    sick: tuple[str, dict[str, Any]], anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = sick
    async with aiohttp.ClientSession() as http:
        healthy = await status_mod._probe(http, anvil.url, 31337)
        assert healthy["ok"] is True and healthy["head"] >= 0
        for mode, expected in EXPECTED.items():
            state["mode"] = mode
            result = await status_mod._probe(http, url, 31337)
            assert result["ok"] is False, (mode, result)
            assert expected in result["error"], (mode, result)
        # A hang costs the probe's own timeout, then it is a failing endpoint too.
        monkeypatch.setattr(status_mod, "PROBE_TIMEOUT_SECONDS", 0.5)
        state["mode"] = "hang"
        started = asyncio.get_running_loop().time()
        result = await status_mod._probe(http, url, 31337)
        assert result["ok"] is False and result["error"] == "TimeoutError"
        assert asyncio.get_running_loop().time() - started < 2
