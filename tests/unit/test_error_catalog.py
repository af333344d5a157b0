"""Every error code the API can answer is in ``watcher.api.errors.ERROR_CODES`` with the
status it is answered with, nothing stale is listed there, and ``docs/api.md`` carries
the catalog's table as generated (``python -m watcher.api.errors`` prints it)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from watcher.api.errors import ERROR_CODES, HTTP_STATUS, error_table
from watcher.domain.errors import ErrorKind
from watcher.domain.risk import TransferReason, WithdrawalReason
from watcher.services.rebalance import NOTHING_TO_REBALANCE

ROOT = Path(__file__).resolve().parents[2]
HELPERS = {
    "bad_request": 400,
    "invalid": 400,
    "unauthorized": 401,
    "not_found": 404,
    "conflict": 409,
    "rule": 422,
    "unavailable": 503,
}


def _status(call: ast.Call, default: int | None) -> int | None:
    for kw in call.keywords:
        if kw.arg == "status" and isinstance(kw.value, ast.Constant):
            return int(kw.value.value)
        if kw.arg == "kind" and isinstance(kw.value, ast.Attribute):
            return HTTP_STATUS[ErrorKind[kw.value.attr]]
    if len(call.args) >= 4 and isinstance(call.args[3], ast.Constant):
        return int(call.args[3].value)
    return default


def raised_codes() -> set[tuple[str, int]]:
    """(code, status) of every call with a literal code in watcher/: the status helpers,
    ApiError(...), DomainError(...) and super().__init__(...) in subclasses (status from
    kind=), and InputError (400)."""
    found: set[tuple[str, int]] = set()
    for path in (ROOT / "watcher").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            status: int | None = None
            if name in HELPERS:
                status = HELPERS[name]
            elif name in ("ApiError", "DomainError") or (
                name == "__init__" and first.value.isupper()
            ):
                status = _status(node, 400)
            elif name == "InputError":
                status = 400
            if status is not None and first.value.isupper():
                found.add((first.value, status))
    # Codes passed on from the domain: the risk gate's reasons (422), a rebalance's.
    found |= {(code, 422) for code in get_args(WithdrawalReason) + get_args(TransferReason)}
    found.add((NOTHING_TO_REBALANCE, 422))
    return found


def test_scan_sees_known_codes() -> None:
    # The scan itself works: codes raised in four different ways are found.
    codes = raised_codes()
    for pair in [
        ("WITHDRAWAL_NOT_FOUND", 404),  # not_found(...)
        ("INTAKE_FAILED", 503),  # super().__init__ in an ApiError subclass
        ("INVALID_ADDRESS", 400),  # InputError in domain/parsing.py
        ("METHOD_NOT_ALLOWED", 405),  # ApiError(..., status=405) in the middleware
        ("INSUFFICIENT_TRANSFERABLE", 422),  # the risk gate's reason
    ]:
        assert pair in codes


def test_every_raised_code_is_in_the_catalog_and_nothing_else() -> None:
    catalog = {(e.code, s) for e in ERROR_CODES for s in e.statuses}
    raised = raised_codes()
    assert raised - catalog == set(), "add these to ERROR_CODES in watcher/api/errors.py"
    assert catalog - raised == set(), "ERROR_CODES lists codes (or statuses) never raised"
    assert len({e.code for e in ERROR_CODES}) == len(ERROR_CODES), "a code is listed twice"


def test_docs_carry_the_generated_error_table() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    assert error_table() in text, (
        "docs/api.md's error table is out of date: replace it with the output of "
        "`.venv/bin/python -m watcher.api.errors`"
    )
