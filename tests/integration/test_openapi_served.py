"""The OpenAPI document against a real server: its request examples are sent as written
(in the order of the story they tell) and every answer, success or error, must validate
against the schema documented for that operation and status, with an error code that
the operation documents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from tests.integration.api_support import ALICE, BOB, ENGINE, Api, running_api
from watcher.api.openapi import document

DOC = document()


def _op(method: str, template: str) -> dict[str, Any]:
    op: dict[str, Any] = DOC["paths"][template][method.lower()]
    return op


def _request_example(method: str, template: str) -> Any:
    media = _op(method, template)["requestBody"]["content"]["application/json"]
    return media["examples"]["example"]["value"]


def _param_example(method: str, template: str, name: str) -> Any:
    for param in _op(method, template).get("parameters", []):
        if param["name"] == name:
            return param["example"]
    raise KeyError(name)


def _validate(schema: dict[str, Any], value: Any, where: str) -> None:
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]
    assert not problems, f"{where}: the served answer breaks the documented schema: {problems}"


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(db_url, tmp_path) as running:
        yield running


async def served(
    api: Api,
    method: str,
    template: str,
    *,
    body: Any = None,
    path: str | None = None,
    query: str = "",
    headers: dict[str, str] | None = None,
    expect: int,
) -> Any:
    """Call the route; check the status and the answer against the documented response."""
    if path is None:
        path = template
        for param in _op(method, template).get("parameters", []):
            if param["in"] == "path":
                path = path.replace("{" + param["name"] + "}", str(param["example"]))
    status, doc = await api.call(method, path + query, body, headers=headers)
    assert status == expect, (method, path, status, doc)
    response = _op(method, template)["responses"].get(str(status))
    assert response is not None, f"{method} {template} answered {status}, not documented"
    media = response["content"]["application/json"]
    _validate(media["schema"], doc, f"{method} {template} {status}")
    if "code" in doc and status >= 400:
        assert doc["code"] in media["examples"], (
            f"{method} {template} answered {status} {doc['code']}, "
            f"documented: {sorted(media['examples'])}"
        )
    return doc


async def test_request_examples_are_accepted_and_answers_match(api: Api) -> None:
    engine = dict(ENGINE)
    prices = _request_example("PUT", "/v1/engine/prices")
    await served(api, "PUT", "/v1/engine/prices", body=prices, headers=engine, expect=200)
    entry = _request_example("POST", "/v1/engine/entries")
    first = await served(api, "POST", "/v1/engine/entries", body=entry, headers=engine, expect=201)
    again = await served(api, "POST", "/v1/engine/entries", body=entry, headers=engine, expect=200)
    assert first == again
    for template in (
        "/v1/engine/positions/{account}",
        "/v1/engine/open-orders/{account}",
        "/v1/engine/accounts/{account}/mode",
    ):
        body = _request_example("PUT", template)
        await served(api, "PUT", template, body=body, headers=engine, expect=200)

    # ALICE (the example signer) moves margin to her isolated position, then withdraws
    # with the token given by its symbol.
    iso = _request_example("POST", "/v1/accounts/{address}/isolated-margin")
    moved = await served(
        api, "POST", "/v1/accounts/{address}/isolated-margin", body=iso, expect=200
    )
    assert moved["isolatedWallet"] == "50"
    wd = _request_example("POST", "/v1/withdrawals")
    assert wd["token"] == "USDT"
    created = await served(api, "POST", "/v1/withdrawals", body=wd, expect=202)
    assert created["state"] == "requested" and created["token"].startswith("0x")
    replay = await served(api, "POST", "/v1/withdrawals", body=wd, expect=200)
    assert replay["id"] == created["id"] == _param_example("GET", "/v1/withdrawals/{id}", "id")
    await served(api, "GET", "/v1/withdrawals/{id}", expect=200)

    account = await served(api, "GET", "/v1/accounts/{address}", expect=200)
    assert account["account"] == ALICE and account["positions"] and account["openOrders"]
    await served(api, "GET", "/v1/accounts/{address}/max-withdraw", query="?asset=USDT", expect=200)
    history = await served(
        api, "GET", "/v1/accounts/{address}/history", query="?limit=10", expect=200
    )
    assert isinstance(history, dict) and len(history["history"]) == 3

    # BOB is negative in USDT with some ETH: his signed example rebalance converts.
    await api.entry(BOB, "ETH", "1", "bob-eth")
    await api.entry(BOB, "USDT", "-100", "bob-fee", kind="commission")
    rebalance = _request_example("POST", "/v1/accounts/{address}/rebalance")
    done = await served(api, "POST", "/v1/accounts/{address}/rebalance", body=rebalance, expect=200)
    assert done["account"] == BOB and done["fullyCovered"] is True

    health_status, _ = await api.get("/healthz")
    await served(api, "GET", "/healthz", expect=health_status)
    await served(api, "GET", "/v1/status", expect=200)
    served_doc = await served(api, "GET", "/openapi.json", expect=200)
    assert served_doc == DOC


async def test_error_answers_match_the_documented_errors(api: Api) -> None:
    engine = dict(ENGINE)
    prices = _request_example("PUT", "/v1/engine/prices")
    await served(api, "PUT", "/v1/engine/prices", body=prices, headers=engine, expect=200)
    entry = _request_example("POST", "/v1/engine/entries")
    await served(api, "POST", "/v1/engine/entries", body=entry, headers=engine, expect=201)
    positions = _request_example("PUT", "/v1/engine/positions/{account}")
    await served(
        api, "PUT", "/v1/engine/positions/{account}", body=positions, headers=engine, expect=200
    )

    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("PUT", "/v1/engine/prices", {"body": prices}, 401, "UNAUTHORIZED"),
        (
            "POST",
            "/v1/engine/entries",
            {"body": entry | {"amount": "5"}, "headers": engine},
            409,
            "REF_ID_CONFLICT",
        ),
        (
            "POST",
            "/v1/engine/entries",
            {"body": entry | {"amount": 5}, "headers": engine},
            400,
            "INVALID_REQUEST",
        ),
        (
            "PUT",
            "/v1/engine/positions/{account}",
            {"body": [positions[0] | {"leverage": 150}], "headers": engine},
            422,
            "LEVERAGE_TOO_HIGH",
        ),
        (
            "PUT",
            "/v1/engine/prices",
            {"body": [{"symbol": "DOGEUSDT", "markPrice": "1"}], "headers": engine},
            400,
            "UNKNOWN_SYMBOL",
        ),
        ("POST", "/v1/withdrawals", {"body": {}}, 400, "MISSING_FIELD"),
        (
            "POST",
            "/v1/withdrawals",
            {"body": _request_example("POST", "/v1/withdrawals") | {"amount": "99"}},
            401,
            "WRONG_SIGNER",
        ),
        (
            "POST",
            "/v1/withdrawals",
            {"body": _request_example("POST", "/v1/withdrawals") | {"token": "DOGE"}},
            422,
            "UNSUPPORTED_TOKEN",
        ),
        (
            "GET",
            "/v1/withdrawals/{id}",
            {"path": "/v1/withdrawals/42"},
            404,
            "WITHDRAWAL_NOT_FOUND",
        ),
        (
            "GET",
            "/v1/accounts/{address}/max-withdraw",
            {"query": "?asset=DOGE"},
            400,
            "UNKNOWN_ASSET",
        ),
        ("GET", "/v1/accounts/{address}/history", {"query": "?limit=0"}, 400, "INVALID_INTEGER"),
        ("GET", "/v1/accounts/{address}", {"path": "/v1/accounts/0x12"}, 400, "INVALID_ADDRESS"),
        (
            "POST",
            "/v1/accounts/{address}/rebalance",
            {
                "path": f"/v1/accounts/{ALICE}/rebalance",
                "body": _request_example("POST", "/v1/accounts/{address}/rebalance"),
            },
            401,
            "WRONG_SIGNER",
        ),
        (
            "POST",
            "/v1/accounts/{address}/isolated-margin",
            {"body": {"symbol": "BTCUSDT", "type": 2, "amount": "1000"}, "headers": engine},
            422,
            "INSUFFICIENT_TRANSFERABLE",
        ),
        (  # an optional field is left out, not null (found by the conformance test)
            "POST",
            "/v1/accounts/{address}/isolated-margin",
            {
                "body": {"symbol": "BTCUSDT", "type": 2, "amount": "1", "refId": None},
                "headers": engine,
            },
            400,
            "INVALID_REQUEST",
        ),
    ]
    for method, template, kw, status, code in cases:
        doc = await served(api, method, template, expect=status, **kw)
        assert doc["code"] == code, (method, template, doc)

    # What no route answers: the shared responses of the components.
    for path, method, name, status in (
        ("/v1/withdrawal", "GET", "NotFound", 404),
        ("/v1/withdrawals", "DELETE", "MethodNotAllowed", 405),
    ):
        got, doc = await api.call(method, path)
        assert got == status
        media = DOC["components"]["responses"][name]["content"]["application/json"]
        _validate(media["schema"], doc, path)
        assert doc["code"] in media["examples"]
