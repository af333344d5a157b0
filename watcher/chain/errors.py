"""RPC error hierarchy and the one place that classifies node errors.

Principle 8: every error out of ``chain/`` is Retryable or Permanent.

* :class:`RetryableRpcError` — the node or the network failed (timeout,
  connection refused, HTTP 5xx/429, JSON-RPC internal error, rate limit,
  "header not found" on a lagging node). Another endpoint, or the same one a
  moment later, may answer. Only these are retried.
* :class:`PermanentRpcError` — the request itself is wrong for this chain
  (invalid params, method not found, execution reverted). Retrying will not help.
* :class:`RangeTooLargeError` — permanent *for this request*: the provider
  rejected an ``eth_getLogs`` range or result size. The caller splits the range.
* :class:`ChainIdMismatchError` — an endpoint serves another chain; it is never used.

Messages never contain endpoint credentials: the ``endpoint`` attribute and
every message built by the client carry the redacted URL only.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ChainIdMismatchError",
    "InconsistentLogsError",
    "MalformedLogError",
    "NoUsableEndpointError",
    "PermanentRpcError",
    "RangeTooLargeError",
    "RetryableRpcError",
    "RpcError",
    "classify_http_status",
    "classify_rpc_error",
    "is_range_too_large",
]


class RpcError(Exception):
    """Base of every error raised by the chain-access layer."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        method: str | None = None,
        code: int | None = None,
        data: Any = None,
    ) -> None:
        self.message = message
        self.endpoint = endpoint  # redacted
        self.method = method
        self.code = code
        self.data = data
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        context = []
        if self.method:
            context.append(self.method)
        if self.code is not None:
            context.append(f"code {self.code}")
        if self.endpoint:
            context.append(f"at {self.endpoint}")
        if context:
            parts.append(f"({', '.join(context)})")
        return " ".join(parts)


class RetryableRpcError(RpcError):
    """Transient: retry later or on another endpoint."""


class PermanentRpcError(RpcError):
    """The request will fail the same way again."""


class RangeTooLargeError(PermanentRpcError):
    """The provider refused an eth_getLogs block range or result size; split it."""


class ChainIdMismatchError(PermanentRpcError):
    """The endpoint serves another chain id than the network's configured one."""

    def __init__(self, message: str, *, expected: int, actual: int, endpoint: str | None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message, endpoint=endpoint, method="eth_chainId")


class NoUsableEndpointError(PermanentRpcError):
    """Every configured endpoint is excluded (e.g. all serve a wrong chain id)."""


class InconsistentLogsError(RetryableRpcError):
    """Logs disagree with the canonical chain we hold (another fork, a lying node).

    Retryable: the listener re-reads the range on its next tick (or from
    another endpoint) and never moves its cursor past it meanwhile.
    """


class MalformedLogError(PermanentRpcError):
    """A log does not have the shape of the event it claims to be."""


# --- classification ---------------------------------------------------------

# Provider wordings for "your eth_getLogs asked for too much" (Infura, Alchemy,
# QuickNode, Ankr, BSC/geth forks, Erigon, Nethermind, drpc, publicnode …).
_RANGE_PATTERNS = re.compile(
    r"query returned more than \d+ results"
    r"|more than \d+ (?:results|logs)"
    r"|too many (?:results|logs|blocks)"
    r"|block range"  # "block range too large", "exceeds max block range", "block range is too wide"
    r"|range (?:is )?too (?:large|wide|big)"
    r"|exceed(?:s|ed)? (?:the )?max(?:imum)? (?:block )?range"
    r"|max(?:imum)? block range"
    r"|is limited to (?:a )?[\d,]+(?: block)? range"
    r"|response size (?:exceeded|should not|is larger|too large)"
    r"|log response size exceeded"
    r"|result set too large"
    r"|limit exceeded.*(?:range|results|logs)",
    re.IGNORECASE,
)

_RETRYABLE_MESSAGES = re.compile(
    r"header not found|unknown block|block not found|missing trie node"
    r"|timeout|timed out|deadline exceeded"
    r"|rate limit|too many requests|request rate|capacity|throttl"
    r"|try again|temporarily|unavailable|busy|overloaded|internal error"
    r"|not synced|syncing|upstream|bad gateway",
    re.IGNORECASE,
)

# JSON-RPC 2.0 and EIP-1474 codes.
_INTERNAL_ERROR = -32603
_LIMIT_EXCEEDED = -32005  # EIP-1474; Infura also uses it for rate limits
_RESOURCE_UNAVAILABLE = -32002
_PERMANENT_CODES = frozenset({-32700, -32600, -32601, -32602, 3})


def is_range_too_large(message: str) -> bool:
    """Whether a provider error message means "ask for a smaller eth_getLogs range"."""
    return bool(_RANGE_PATTERNS.search(message))


def classify_rpc_error(
    code: int | None,
    message: str,
    *,
    method: str | None = None,
    data: Any = None,
    endpoint: str | None = None,
) -> RpcError:
    """Turn a JSON-RPC error object into the right exception (not raised here).

    Order matters: the range wording is checked first because providers use
    -32005 and -32602 for both ranges and other problems; then the retryable
    wordings; then the code.
    """
    kwargs: dict[str, Any] = {"endpoint": endpoint, "method": method, "code": code, "data": data}
    text = message or "JSON-RPC error without a message"
    if method in (None, "eth_getLogs") and is_range_too_large(text):
        return RangeTooLargeError(text, **kwargs)
    if code in _PERMANENT_CODES:
        return PermanentRpcError(text, **kwargs)
    if code in (_INTERNAL_ERROR, _LIMIT_EXCEEDED, _RESOURCE_UNAVAILABLE):
        return RetryableRpcError(text, **kwargs)
    if _RETRYABLE_MESSAGES.search(text):
        return RetryableRpcError(text, **kwargs)
    return PermanentRpcError(text, **kwargs)


def classify_http_status(
    status: int, *, method: str | None = None, endpoint: str | None = None, body: str = ""
) -> RpcError:
    """An HTTP answer without a usable JSON-RPC body.

    5xx, 429 and 408 are the node's problem → retryable (fail over). Other 4xx
    mean this endpoint refuses us (bad key, wrong path): also an endpoint fault
    that failover can route around, so retryable too; the endpoint's cooldown
    grows with each failure so a broken one is rarely tried.
    """
    snippet = body[:200].strip()
    message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    if method == "eth_getLogs" and is_range_too_large(snippet):
        return RangeTooLargeError(message, endpoint=endpoint, method=method)
    return RetryableRpcError(message, endpoint=endpoint, method=method)
