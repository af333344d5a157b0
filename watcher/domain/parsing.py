"""Strict parsers for what clients send: integers, addresses, and the nesting of JSON.

One rule each, used by every endpoint and the CLI, so that two paths never disagree
about the same input:

- **Integers** are ASCII digits only. ``str.isdigit()`` and ``int()`` accept other
  scripts' digits ("²", "٣١٣٣٧"), which would read as something the client did not
  write (or raise where nobody expects it); here they are refused. A JSON integer is
  accepted as is; a string of digits too (JavaScript cannot hold 2^53 and above).
- **Addresses**: ``0x`` (lower-case x) and 40 hex digits, either all lower case, all
  upper case, or mixed case with a valid EIP-55 checksum. A wrong checksum is the
  typo EIP-55 exists to catch, so it is refused, never "fixed".
- **JSON nesting** deeper than a limit is refused before it is parsed: the C decoder
  recurses once per level, and with the interpreter's recursion limit raised (an
  imported library does that) a body of 100,000 ``[`` overflows the C stack and kills
  the process.

Each parser raises :class:`InputError` with a reason code and the field it concerns;
the API turns that into a 400 with the ``{code, message, details}`` shape.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from eth_utils.crypto import keccak

UINT256_MAX = 2**256 - 1
MAX_JSON_DEPTH = 32

_ASCII_DIGITS = re.compile(r"[0-9]{1,78}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
# A JSON string (with escapes), or one bracket. Strings are matched whole so that a
# bracket inside one is not counted.
_DEPTH_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class InputError(ValueError):
    """Client input that breaks a parsing rule: ``code`` (e.g. ``INVALID_INTEGER``),
    a message for people, and the field it was found in."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def parse_uint(value: Any, field: str, *, maximum: int = UINT256_MAX) -> int:
    """A non-negative integer: a JSON integer, or a string of ASCII digits; at most
    ``maximum`` (uint256 unless said otherwise)."""
    if isinstance(value, bool):
        raise InputError("INVALID_INTEGER", f"{field} must be an integer, not a boolean", field)
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and _ASCII_DIGITS.fullmatch(value):
        result = int(value)
    else:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise InputError(
            "INVALID_INTEGER",
            f"{field} must be a non-negative integer written with the digits 0-9, got {shown}",
            field,
        )
    if not 0 <= result <= maximum:
        limit = "a uint256" if maximum == UINT256_MAX else f"between 0 and {maximum}"
        raise InputError("INVALID_INTEGER", f"{field} must be {limit}", field)
    return result


def checksum_address(hex40: str) -> str:
    """EIP-55 mixed-case form of 40 hex digits (no prefix)."""
    return _checksum_of_lower(hex40.lower())


# The same few addresses (vaults, tokens, active users' accounts and destinations) come
# back with every request: each keccak here is ~20 us in Python. Bounded: ~2 MB.
@lru_cache(maxsize=8192)
def _checksum_of_lower(lower: str) -> str:
    digest = keccak(lower.encode("ascii")).hex()
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(lower)
    )


def parse_address(value: Any, field: str) -> str:
    """The checksummed address, or ``INVALID_ADDRESS`` naming the field."""
    if not isinstance(value, str) or _ADDRESS.fullmatch(value) is None:
        shown = repr(value) if len(repr(value)) <= 50 else repr(value)[:50] + "…"
        raise InputError(
            "INVALID_ADDRESS", f"{field} {shown} is not 0x followed by 40 hex digits", field
        )
    digits = value[2:]
    checksummed = checksum_address(digits)
    if digits not in (digits.lower(), digits.upper()) and value != checksummed:
        raise InputError(
            "INVALID_ADDRESS",
            f"{field} {value} has a wrong EIP-55 checksum (mixed case must match "
            f"{checksummed}; or write it all in lower case)",
            field,
        )
    return checksummed


def check_json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse a JSON text nested deeper than ``limit`` arrays/objects, without parsing it.

    Cheap for ordinary bodies: a text with fewer brackets than the limit cannot be too
    deep and is not scanned; otherwise strings and brackets are matched by the regex
    engine and only those are walked."""
    opening = raw.count(b"[") + raw.count(b"{")
    if opening <= limit:
        return
    depth = 0
    for match in _DEPTH_TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise InputError(
                    "MALFORMED_JSON", f"the JSON body is nested deeper than {limit} levels"
                )
        elif token in (b"]", b"}"):
            depth -= 1
