"""The co-signer's HTTP server (``watcher cosign run``): one authenticated endpoint for
the sender, a health check and the metrics.

* ``POST /v1/cosign`` with ``Authorization: Bearer <WATCHER_COSIGNER_TOKEN>``: 200
  ``{signer, signature}`` or 4xx ``{code, message, details}`` (services/cosigner.py
  lists the codes and what they mean); a wrong or missing token is 401 ``UNAUTHORIZED``
  and nothing is looked at.
* ``POST /v1/cosign/batch`` (same token): ``{"items": [body, ...]}`` (1 to
  :data:`MAX_BATCH_ITEMS`) → 200 ``{"answers": [{"status": s, ...}, ...]}``, one per item
  in order, each what ``/v1/cosign`` would have answered it (``status`` its HTTP status),
  decided one after the other and committed in one store transaction; a store failure
  is 503 for the whole batch (nothing signed).
* ``GET /healthz``: 200 ``{status: "ok", signer, chains}`` once the store answers, else
  503.
* ``GET /metrics``: Prometheus text (``watcher_cosigner_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from sqlalchemy import text

from watcher.domain.parsing import InputError, check_json_depth
from watcher.services.cosigner import (
    MALFORMED_PAYLOAD,
    UNAUTHORIZED,
    Cosigner,
    Refusal,
)

log = logging.getLogger("watcher.cosigner")
COSIGNER_KEY: web.AppKey[Cosigner] = web.AppKey("cosigner", Cosigner)
TOKEN_KEY: web.AppKey[str] = web.AppKey("token", str)
MAX_BODY_BYTES = 16 * 1024  # one payload
MAX_BATCH_ITEMS = 128
MAX_BATCH_BYTES = MAX_BATCH_ITEMS * MAX_BODY_BYTES
#: py_ecc (imported with eth_account) raises the recursion limit for its own use; the
#: JSON decoder recurses per level of its input (see watcher/app.py).
RECURSION_LIMIT = 5_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, default=str), status=status, content_type="application/json"
    )


def _refusal(exc: Refusal) -> web.Response:
    return _json({"code": exc.code, "message": exc.message, "details": exc.details}, exc.status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Refusal as exc:
        return _refusal(exc)
    except web.HTTPException as exc:
        if exc.status >= 400:
            code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}.get(
                exc.status, "HTTP_ERROR"
            )
            return _json(
                {"code": code, "message": exc.reason, "details": {"path": request.path}},
                exc.status,
            )
        raise
    except Exception:
        ref = uuid.uuid4().hex[:16]
        log.exception("unhandled error ref=%s on %s %s", ref, request.method, request.path)
        return _json(
            {"code": "INTERNAL_ERROR", "message": f"internal error ref={ref}", "details": {}}, 500
        )


def _authorized(request: web.Request) -> Cosigner:
    cosigner = request.app[COSIGNER_KEY]
    expected = request.app[TOKEN_KEY]
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        cosigner.metrics.unauthorized.inc()
        log.warning("unauthorized request from %s", request.remote)
        raise Refusal(UNAUTHORIZED, "a valid bearer token is required")
    return cosigner


async def _json_body(request: web.Request, limit: int) -> Any:
    raw = await request.read()
    if len(raw) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(raw))
    try:
        check_json_depth(raw)
        return json.loads(raw)
    except (InputError, ValueError, RecursionError):
        raise Refusal(MALFORMED_PAYLOAD, "the body is not JSON (or nested too deep)") from None


async def cosign(request: web.Request) -> web.Response:
    cosigner = _authorized(request)
    body = await _json_body(request, MAX_BODY_BYTES)
    answer = await cosigner.cosign(body)
    return _json(answer.body(), answer.status)


async def cosign_batch(request: web.Request) -> web.Response:
    cosigner = _authorized(request)
    body = await _json_body(request, MAX_BATCH_BYTES)
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise Refusal(
            MALFORMED_PAYLOAD,
            f'the body must be {{"items": [...]}} with 1 to {MAX_BATCH_ITEMS} payloads',
        )
    answers = await cosigner.cosign_many(items)
    out: list[dict[str, Any]] = []
    for answer in answers:
        if isinstance(answer, Refusal):
            out.append(
                {
                    "status": answer.status,
                    "code": answer.code,
                    "message": answer.message,
                    "details": answer.details,
                }
            )
        else:
            out.append({"status": answer.status, **answer.body()})
    return _json({"answers": out})


async def healthz(request: web.Request) -> web.Response:
    cosigner = request.app[COSIGNER_KEY]
    doc: dict[str, Any] = {
        "signer": cosigner.signer.address,
        "chains": [
            {"chainId": c.chain_id, "vault": c.vault, "tokens": [t.symbol for t in c.tokens]}
            for c in cosigner.config.chains
        ],
    }
    try:
        async with asyncio.timeout(2):
            async with cosigner.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return _json({"status": "down", "reason": type(exc).__name__, **doc}, 503)
    return _json({"status": "ok", **doc})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[COSIGNER_KEY].metrics.registry)
    return web.Response(
        body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


def make_app(cosigner: Cosigner, token: str) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BATCH_BYTES)
    app[COSIGNER_KEY] = cosigner
    app[TOKEN_KEY] = token
    app.router.add_post("/v1/cosign", cosign)
    app.router.add_post("/v1/cosign/batch", cosign_batch)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(
    cosigner: Cosigner, token: str, host: str, port: int, stop: asyncio.Event | None = None
) -> None:
    """Create the store's tables, listen, and run until SIGTERM/SIGINT (or ``stop``)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await cosigner.start()
    sys.setrecursionlimit(RECURSION_LIMIT)
    runner = web.AppRunner(make_app(cosigner, token), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    chains = ", ".join(f"{c.chain_id}:{c.vault}" for c in cosigner.config.chains) or "none"
    log.info(
        "co-signer running: http://%s:%d, signer %s, chains %s",
        host,
        port,
        cosigner.signer.address,
        chains,
    )
    try:
        await stop.wait()
    finally:
        log.info("co-signer stopping")
        await runner.cleanup()
        await cosigner.engine.dispose()
