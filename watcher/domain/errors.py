"""Errors the services raise: a reason code, a message for people, details for programs,
and a kind that says what sort of "no" it is.

The kind is not an HTTP status or an exit code: the API maps kinds to statuses
(``watcher/api/errors.py``) and the CLI maps them to exit codes
(``watcher/cli/common.py``). A service never imports either.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorKind(Enum):
    INVALID = "invalid"  # the input is malformed; nothing was looked up
    UNAUTHORIZED = "unauthorized"  # a signature or a credential does not hold
    NOT_FOUND = "not_found"  # what the request names does not exist
    CONFLICT = "conflict"  # a replay with other contents, or a conflicting state
    RULE = "rule"  # well-formed and authorized, but a money rule says no
    UNAVAILABLE = "unavailable"  # could not be done now (database trouble); retry is safe


class DomainError(Exception):
    """A refusal with a reason code (``NONCE_REUSED``, ``INSUFFICIENT_WITHDRAWABLE`` ...).

    The code is part of the contract with clients; the message is for people and may
    change; ``details`` are JSON-able values that name what was wrong (a field, a limit).
    """

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        kind: ErrorKind = ErrorKind.INVALID,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.kind = kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind.value}, {self.code!r}, {self.message!r})"


def invalid(code: str, message: str, **details: Any) -> DomainError:
    return DomainError(code, message, details, kind=ErrorKind.INVALID)


def unauthorized(code: str, message: str, **details: Any) -> DomainError:
    return DomainError(code, message, details, kind=ErrorKind.UNAUTHORIZED)


def not_found(code: str, message: str, **details: Any) -> DomainError:
    return DomainError(code, message, details, kind=ErrorKind.NOT_FOUND)


def conflict(code: str, message: str, **details: Any) -> DomainError:
    return DomainError(code, message, details, kind=ErrorKind.CONFLICT)


def rule(code: str, message: str, **details: Any) -> DomainError:
    return DomainError(code, message, details, kind=ErrorKind.RULE)


def unavailable(code: str, message: str, **details: Any) -> DomainError:
    return DomainError(code, message, details, kind=ErrorKind.UNAVAILABLE)
