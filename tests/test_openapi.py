"""The OpenAPI document describes exactly the routes the server registers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from tests.helpers import write_config
from watcher.api.errors import ERROR_CODES, ERRORS_BY_CODE
from watcher.api.openapi import ERROR, document
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


# --------------------------------------------------------------------------- examples


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, op) for p, ops in document()["paths"].items() for m, op in ops.items()]


def _examples(media: dict[str, Any]) -> list[Any]:
    out = [e["value"] for e in media.get("examples", {}).values()]
    if "example" in media:
        out.append(media["example"])
    return out


def _check(schema: dict[str, Any], value: Any, where: str) -> None:
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]
    assert not problems, f"{where}: {problems}"


@pytest.mark.parametrize(("path", "method", "op"), _operations(), ids=lambda v: str(v)[:40])
def test_every_operation_has_examples_that_fit_its_schemas(
    path: str, method: str, op: dict[str, Any]
) -> None:
    for param in op.get("parameters", []):
        assert "example" in param, f"{method} {path}: parameter {param['name']} has no example"
        _check(param["schema"], param["example"], f"{method} {path} {param['name']}")
    body = op.get("requestBody")
    if body is not None:
        for media_type, media in body["content"].items():
            Draft202012Validator.check_schema(media["schema"])
            examples = _examples(media)
            assert examples, f"{method} {path}: request {media_type} has no example"
            for value in examples:
                _check(media["schema"], value, f"{method} {path} request")
    assert any(code.startswith("2") for code in op["responses"])
    for status, response in op["responses"].items():
        for media_type, media in response.get("content", {}).items():
            Draft202012Validator.check_schema(media["schema"])
            examples = _examples(media)
            assert examples, f"{method} {path} {status} {media_type} has no example"
            for value in examples:
                _check(media["schema"], value, f"{method} {path} {status}")
            if media["schema"] is ERROR:
                for name, example in media["examples"].items():
                    assert example["value"]["code"] == name
                    assert int(status) in ERRORS_BY_CODE[name].statuses, (name, status)


def test_examples_are_checked_for_real() -> None:
    # The validator used above refuses what breaks the documented schemas.
    op = document()["paths"]["/v1/withdrawals"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    good = op["requestBody"]["content"]["application/json"]["examples"]["example"]["value"]
    with pytest.raises(AssertionError):
        _check(schema, good | {"amount": 100}, "number amount")
    with pytest.raises(AssertionError):
        _check(schema, good | {"extra": 1}, "unknown field")
    with pytest.raises(AssertionError):
        _check(ERROR, {"code": "NO_SUCH_CODE", "message": "m", "details": {}}, "unknown code")


def test_every_error_code_is_documented_on_an_operation() -> None:
    doc = document()
    used: set[str] = set()
    for _, _, op in _operations():
        for response in op["responses"].values():
            media = response.get("content", {}).get("application/json", {})
            if media.get("schema") is ERROR:
                used |= set(media["examples"])
    for response in doc["components"]["responses"].values():
        used |= set(response["content"]["application/json"]["examples"])
    missing = {e.code for e in ERROR_CODES} - used - {"DOCS_UNAVAILABLE"}
    assert not missing, f"error codes no operation documents: {sorted(missing)}"


def test_withdrawal_token_may_be_a_symbol() -> None:
    schema = document()["components"]["schemas"]["WithdrawRequest"]
    example = document()["paths"]["/v1/withdrawals"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]["example"]["value"]
    assert example["token"] == "USDT"
    _check(schema, example | {"token": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"}, "address")


def test_docs_api_md_covers_every_operation() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^### `([A-Z]+) (/\S*)`$", text, flags=re.M))
    described = {(m.upper(), p) for p, ops in document()["paths"].items() for m in ops}
    assert described - documented == set(), "operations missing from docs/api.md"
    assert documented - described == set(), "docs/api.md documents operations the API lacks"
    # Each operation's section shows a curl call and an example answer.
    for method, path in described:
        section = text.split(f"### `{method} {path}`", 1)[1].split("\n### ", 1)[0]
        assert "curl -s" in section and "→ `" in section, (method, path)


def test_docs_signing_snippet_yields_the_documented_signature() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(compile(snippet, "docs/api.md", "exec"), scope)
    from watcher.api.openapi import WITHDRAW_EXAMPLE

    assert scope["signature"] == WITHDRAW_EXAMPLE["signature"]
