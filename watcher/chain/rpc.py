"""Raw JSON-RPC client for one network, over several endpoints with failover.

This is the bulk path of the deposit listener (STACK.md: plain JSON-RPC over
aiohttp is 5–10× faster than web3's formatting). Everything else may use web3.

Guarantees:

* **Chain id first.** Before its first real request each endpoint answers
  ``eth_chainId``; one that serves another chain is excluded for the life of
  the client (:class:`ChainIdMismatchError` in its health) and never used.
* **Failover, then retry.** One *attempt* tries the available endpoints in
  priority order (configuration order; lagging ones last) until one answers.
  A retryable failure (timeout, connection error, HTTP 5xx/429, JSON-RPC
  internal error / rate limit) moves to the next endpoint immediately and puts
  the failed one in a cooldown that doubles with each consecutive failure. When
  every endpoint failed, the :class:`~watcher.chain.retry.RetryPolicy` sleeps
  and makes another attempt. Permanent errors (bad params, revert, range too
  large) are raised at once: another node would say the same.
* **Health is observable.** Per endpoint: consecutive failures, last error,
  last latency, last seen head, cooldown. Per (endpoint, method): call and
  error counts as plain ints in :attr:`RpcClient.stats`. Endpoint labels are
  redacted URLs, safe for logs, status output and metric labels.
* ``asyncio.CancelledError`` is never caught.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from watcher.chain.errors import (
    ChainIdMismatchError,
    NoUsableEndpointError,
    PermanentRpcError,
    RangeTooLargeError,
    RetryableRpcError,
    RpcError,
    classify_http_status,
    classify_rpc_error,
)
from watcher.chain.retry import DEFAULT_POLICY, RetryPolicy, retrying
from watcher.domain.reorg import BlockRef

__all__ = [
    "BlockRef",
    "BlockTag",
    "EndpointStatus",
    "RpcClient",
    "RpcStats",
    "redact_url",
]

BlockTag = Literal["latest", "safe", "finalized", "earliest", "pending"]
_TAGS = frozenset({"latest", "safe", "finalized", "earliest", "pending"})
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# A path segment that looks like an API key (Infura /v3/<32 hex>, Alchemy /v2/<key>).
_SECRET_SEGMENT = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_\-]{20,}$")


def redact_url(url: str) -> str:
    """The URL without credentials, for logs, status and metric labels.

    Userinfo becomes ``***@``, the query string ``?***``, and path segments
    that look like API keys (20+ characters mixing letters and digits) ``***``:
    ``https://user:pass@host/path?key=abc`` → ``https://***@host/path?***``,
    ``https://mainnet.infura.io/v3/0123…cdef`` → ``https://mainnet.infura.io/v3/***``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port is not None else "")
    if "@" in parts.netloc:
        netloc = "***@" + netloc
    segments = ["***" if _SECRET_SEGMENT.match(s) else s for s in parts.path.split("/")]
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, "/".join(segments), query, ""))


def _secrets_of(url: str) -> list[str]:
    """Substrings of ``url`` that must never appear in an error message."""
    parts = urlsplit(url)
    found = [url]
    if "@" in parts.netloc:
        found.append(parts.netloc.rsplit("@", 1)[0])
    if parts.query:
        found.append(parts.query)
    found.extend(s for s in parts.path.split("/") if _SECRET_SEGMENT.match(s))
    return sorted((s for s in found if s), key=len, reverse=True)


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """A snapshot of one endpoint's health; contains no credentials."""

    url: str  # redacted
    state: Literal["ok", "cooldown", "excluded", "unverified"]
    chain_id: int | None
    consecutive_failures: int
    total_failures: int
    last_error: str | None
    last_latency_ms: float | None
    last_seen_head: int | None
    cooldown_remaining_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "chain_id": self.chain_id,
            "consecutive_failures": self.consecutive_failures,
            "total_failures": self.total_failures,
            "last_error": self.last_error,
            "last_latency_ms": self.last_latency_ms,
            "last_seen_head": self.last_seen_head,
            "cooldown_remaining_s": self.cooldown_remaining_s,
        }


@dataclass
class _Endpoint:
    index: int
    url: str  # raw, may hold credentials: never log it
    label: str  # redacted
    secrets: list[str]
    verified_chain_id: int | None = None
    excluded: RpcError | None = None
    consecutive_failures: int = 0
    total_failures: int = 0
    last_error: str | None = None
    last_latency: float | None = None
    last_seen_head: int | None = None
    cooldown_until: float = 0.0
    verify_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, self.label if secret == self.url else "***")
        return text


@dataclass
class RpcStats:
    """Plain counters for the metrics exporter.

    ``calls[(endpoint, method)]`` counts JSON-RPC requests sent (each item of a
    batch counts); ``errors[(endpoint, method, kind)]`` counts failures by
    exception class name; ``failovers`` counts moves to a next endpoint;
    ``retries`` counts attempts after the first.
    """

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    failovers: int = 0
    retries: int = 0


Check = Callable[[Any], None]


class RpcClient:
    """JSON-RPC to one network (``chain_id``) through ``urls``, in priority order."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        chain_id: int,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        policy: RetryPolicy = DEFAULT_POLICY,
        cooldown_base: float = 1.0,
        cooldown_max: float = 60.0,
        max_batch_size: int = 100,
        lag_tolerance: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not urls:
            raise ValueError("at least one RPC URL is required")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.expected_chain_id = chain_id
        self._endpoints = [
            _Endpoint(index=i, url=u, label=redact_url(u), secrets=_secrets_of(u))
            for i, u in enumerate(urls)
        ]
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self.policy = policy
        self._cooldown = RetryPolicy(
            attempts=1, base_delay=cooldown_base, max_delay=cooldown_max, jitter=0
        )
        self.max_batch_size = max_batch_size
        self.lag_tolerance = lag_tolerance
        self._clock = clock
        self._sleep = sleep
        self._ids = itertools.count(1)
        self.stats = RpcStats()

    # --- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # --- health -------------------------------------------------------------

    @property
    def endpoint_labels(self) -> list[str]:
        return [e.label for e in self._endpoints]

    def health(self) -> list[EndpointStatus]:
        """Snapshot for ``watcher status``; never includes credentials."""
        now = self._clock()
        out = []
        for e in self._endpoints:
            remaining = max(0.0, e.cooldown_until - now)
            state: Literal["ok", "cooldown", "excluded", "unverified"]
            if e.excluded is not None:
                state = "excluded"
            elif remaining > 0:
                state = "cooldown"
            elif e.verified_chain_id is None:
                state = "unverified"
            else:
                state = "ok"
            out.append(
                EndpointStatus(
                    url=e.label,
                    state=state,
                    chain_id=e.verified_chain_id,
                    consecutive_failures=e.consecutive_failures,
                    total_failures=e.total_failures,
                    last_error=e.last_error,
                    last_latency_ms=None if e.last_latency is None else e.last_latency * 1000,
                    last_seen_head=e.last_seen_head,
                    cooldown_remaining_s=round(remaining, 3),
                )
            )
        return out

    def _best_head(self) -> int | None:
        heads = [e.last_seen_head for e in self._endpoints if e.last_seen_head is not None]
        return max(heads) if heads else None

    def _is_lagging(self, e: _Endpoint, best: int | None) -> bool:
        if self.lag_tolerance is None or best is None or e.last_seen_head is None:
            return False
        return best - e.last_seen_head > self.lag_tolerance

    def _candidates(self) -> list[_Endpoint]:
        usable = [e for e in self._endpoints if e.excluded is None]
        if not usable:
            reasons = "; ".join(f"{e.label}: {e.excluded}" for e in self._endpoints)
            raise NoUsableEndpointError(f"no usable RPC endpoint ({reasons})")
        now = self._clock()
        ready = [e for e in usable if e.cooldown_until <= now]
        if not ready:
            # Everything is cooling down (this is a retry after a failed
            # attempt): try them all, the one that recovers first first,
            # rather than failing without asking anybody.
            return sorted(usable, key=lambda e: (e.cooldown_until, e.index))
        best = self._best_head()
        return sorted(ready, key=lambda e: (self._is_lagging(e, best), e.index))

    def _record_success(self, e: _Endpoint, latency: float) -> None:
        e.consecutive_failures = 0
        e.cooldown_until = 0.0
        e.last_latency = latency

    def _record_failure(self, e: _Endpoint, exc: RpcError) -> None:
        e.consecutive_failures += 1
        e.total_failures += 1
        e.last_error = e.scrub(str(exc))
        e.cooldown_until = self._clock() + self._cooldown.backoff(e.consecutive_failures)

    def _count_error(self, e: _Endpoint, methods: Sequence[str], exc: BaseException) -> None:
        kind = type(exc).__name__
        for m in methods:
            self.stats.errors[(e.label, m, kind)] += 1

    # --- transport ----------------------------------------------------------

    async def _post(self, e: _Endpoint, body: Any, methods: Sequence[str]) -> Any:
        """POST one JSON-RPC request or batch to ``e``; return the decoded JSON."""
        for m in methods:
            self.stats.calls[(e.label, m)] += 1
        method = methods[0] if len(set(methods)) == 1 else None
        data = json.dumps(body, separators=(",", ":")).encode()
        started = self._clock()
        try:
            async with self._http().post(
                e.url, data=data, headers=_JSON_HEADERS, timeout=self._timeout
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except TimeoutError:
            raise RetryableRpcError(
                f"timed out after {self._timeout.total}s", endpoint=e.label, method=method
            ) from None
        except aiohttp.ClientError as exc:
            raise RetryableRpcError(
                e.scrub(f"{type(exc).__name__}: {exc}"), endpoint=e.label, method=method
            ) from None
        latency = self._clock() - started
        e.last_latency = latency
        if status == 429 or status >= 500:
            raise classify_http_status(
                status, method=method, endpoint=e.label, body=raw.decode("utf-8", "replace")
            )
        try:
            decoded = json.loads(raw)
        except ValueError:
            if status != 200:
                raise classify_http_status(
                    status, method=method, endpoint=e.label, body=raw.decode("utf-8", "replace")
                ) from None
            raise RetryableRpcError(
                "response is not JSON", endpoint=e.label, method=method
            ) from None
        if status != 200 and not _is_rpc_shaped(decoded):
            raise classify_http_status(status, method=method, endpoint=e.label)
        return decoded

    def _unwrap(self, e: _Endpoint, response: Any, method: str) -> Any:
        if not isinstance(response, dict):
            raise RetryableRpcError("malformed JSON-RPC response", endpoint=e.label, method=method)
        error = response.get("error")
        if error is not None:
            raise _error_from(error, method, e.label)
        if "result" not in response:
            raise RetryableRpcError(
                "JSON-RPC response without result", endpoint=e.label, method=method
            )
        return response["result"]

    async def _verify(self, e: _Endpoint) -> None:
        """Check ``eth_chainId`` once per endpoint before its first use."""
        if e.verified_chain_id is not None:
            return
        if e.excluded is not None:
            raise e.excluded
        async with e.verify_lock:
            if e.verified_chain_id is not None:
                return
            if e.excluded is not None:
                raise e.excluded
            request = _request(next(self._ids), "eth_chainId", [])
            started = self._clock()
            response = await self._post(e, request, ["eth_chainId"])
            actual = _to_int(self._unwrap(e, response, "eth_chainId"), e.label, "eth_chainId")
            self._record_success(e, self._clock() - started)
            if actual != self.expected_chain_id:
                exc = ChainIdMismatchError(
                    f"endpoint serves chain id {actual}, expected {self.expected_chain_id}",
                    expected=self.expected_chain_id,
                    actual=actual,
                    endpoint=e.label,
                )
                e.excluded = exc
                e.last_error = str(exc)
                raise exc
            e.verified_chain_id = actual

    async def _attempt(
        self,
        send: Callable[[_Endpoint], Awaitable[Any]],
        methods: Sequence[str],
        only: _Endpoint | None = None,
    ) -> tuple[Any, _Endpoint]:
        """One attempt: each candidate endpoint in turn until one answers."""
        candidates = [only] if only is not None else self._candidates()
        retryable: RetryableRpcError | None = None
        mismatch: ChainIdMismatchError | None = None
        for i, e in enumerate(candidates):
            if i > 0:
                self.stats.failovers += 1
            try:
                await self._verify(e)
            except ChainIdMismatchError as exc:
                self._count_error(e, ["eth_chainId"], exc)
                mismatch = exc
                continue
            except RetryableRpcError as exc:
                exc.endpoint = exc.endpoint or e.label
                self._count_error(e, ["eth_chainId"], exc)
                self._record_failure(e, exc)
                retryable = exc
                continue
            started = self._clock()
            try:
                result = await send(e)
            except RetryableRpcError as exc:
                exc.endpoint = exc.endpoint or e.label
                self._count_error(e, methods, exc)
                self._record_failure(e, exc)
                retryable = exc
                continue
            except RpcError as exc:
                # Permanent for the request; the endpoint itself answered fine.
                exc.endpoint = exc.endpoint or e.label
                self._count_error(e, methods, exc)
                self._record_success(e, self._clock() - started)
                raise
            self._record_success(e, self._clock() - started)
            return result, e
        if retryable is not None:
            raise retryable
        if only is not None and mismatch is not None:
            raise mismatch
        # Every endpoint tried serves another chain and is now excluded: pick
        # from the rest (or raise NoUsableEndpointError when none is left).
        return await self._attempt(send, methods)

    async def _run(
        self,
        send: Callable[[_Endpoint], Awaitable[Any]],
        methods: Sequence[str],
        only: _Endpoint | None = None,
    ) -> tuple[Any, _Endpoint]:
        first = True
        async for attempt in retrying(self.policy, sleep=self._sleep):
            with attempt:
                if not first:
                    self.stats.retries += 1
                first = False
                return await self._attempt(send, methods, only)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _endpoint(self, index: int) -> _Endpoint:
        try:
            return self._endpoints[index]
        except IndexError:
            raise ValueError(f"no endpoint #{index}") from None

    # --- public JSON-RPC ------------------------------------------------------

    async def call(
        self,
        method: str,
        params: Sequence[Any] = (),
        *,
        endpoint: int | None = None,
        check: Check | None = None,
        retry: bool = True,
    ) -> Any:
        """One JSON-RPC call with failover and retry; returns ``result``.

        ``endpoint`` pins the call to one endpoint (by position in ``urls``),
        e.g. to cross-check an answer with a second node: one attempt, refused
        without a request while that endpoint is in cooldown. Otherwise the call is
        retried unless ``retry`` is False (then one attempt: ask every endpoint once).
        ``check(result)`` may raise :class:`RetryableRpcError` to reject an
        answer (a lagging node's null block) and fail over to the next endpoint.
        """
        result, _ = await self._call_with_endpoint(
            method, params, endpoint=endpoint, check=check, retry=retry
        )
        return result

    async def _call_with_endpoint(
        self,
        method: str,
        params: Sequence[Any] = (),
        *,
        endpoint: int | None = None,
        check: Check | None = None,
        retry: bool = True,
    ) -> tuple[Any, _Endpoint]:
        async def send(e: _Endpoint) -> Any:
            request = _request(next(self._ids), method, params)
            result = self._unwrap(e, await self._post(e, request, [method]), method)
            if check is not None:
                check(result)
            return result

        if endpoint is not None:
            # Pinned (a cross-check asks every endpoint): one attempt, and none at all
            # while the endpoint cools down from its last failure (circuit breaker). A
            # hanging endpoint among healthy ones then costs one timeout, not one per
            # retry per step; the caller decides with the other endpoints' answers.
            only = self._endpoint(endpoint)
            self._refuse_if_cooling(only, method)
            return await self._attempt(send, [method], only)
        if not retry:
            return await self._attempt(send, [method])
        result, e = await self._run(send, [method])
        return result, e

    def _refuse_if_cooling(self, e: _Endpoint, method: str) -> None:
        remaining = e.cooldown_until - self._clock()
        if e.excluded is None and remaining > 0:
            self._count_error(e, [method], RetryableRpcError("cooldown"))
            raise RetryableRpcError(
                f"not asked: in cooldown for {remaining:.1f}s more after "
                f"{e.consecutive_failures} failure(s) (last: {e.last_error})",
                endpoint=e.label,
                method=method,
            )

    async def batch(
        self,
        requests: Sequence[tuple[str, Sequence[Any]]],
        *,
        check: Check | None = None,
    ) -> list[Any]:
        """Several calls in JSON-RPC batches (``max_batch_size`` per POST).

        Results come back in request order, matched by id. Any error item
        raises: retryable ones fail the whole batch over to the next endpoint.
        ``check`` receives each chunk's result list.
        """
        results: list[Any] = []
        for start in range(0, len(requests), self.max_batch_size):
            chunk = requests[start : start + self.max_batch_size]
            chunk_results, _ = await self._batch_chunk(chunk, check)
            results.extend(chunk_results)
        return results

    async def _batch_chunk(
        self, chunk: Sequence[tuple[str, Sequence[Any]]], check: Check | None
    ) -> tuple[list[Any], _Endpoint]:
        methods = [m for m, _ in chunk]

        async def send(e: _Endpoint) -> list[Any]:
            ids = [next(self._ids) for _ in chunk]
            body = [_request(i, m, p) for i, (m, p) in zip(ids, chunk, strict=True)]
            response = await self._post(e, body, methods)
            if isinstance(response, dict):
                # Some servers answer a rejected batch with one error object.
                self._unwrap(e, response, "batch")
                raise RetryableRpcError("batch answered with a single object", endpoint=e.label)
            if not isinstance(response, list):
                raise RetryableRpcError("malformed batch response", endpoint=e.label)
            by_id: dict[Any, Any] = {}
            for item in response:
                if isinstance(item, dict) and "id" in item:
                    by_id[item["id"]] = item
            out: list[Any] = []
            for i, m in zip(ids, methods, strict=True):
                item = by_id.get(i)
                if item is None:
                    raise RetryableRpcError(
                        f"batch response lacks the answer to request id {i}",
                        endpoint=e.label,
                        method=m,
                    )
                out.append(self._unwrap(e, item, m))
            if check is not None:
                check(out)
            return out

        result, e = await self._run(send, methods)
        return result, e

    async def heads(self) -> dict[str, int | RpcError]:
        """``eth_blockNumber`` from every usable endpoint, one try each.

        For status output and cross-checks; updates each endpoint's last seen
        head (which orders lagging endpoints last when ``lag_tolerance`` is set).
        """

        async def one(e: _Endpoint) -> tuple[str, int | RpcError]:
            try:
                number = await self._block_number_on(e)
            except RpcError as exc:
                return e.label, exc
            return e.label, number

        usable = [e for e in self._endpoints if e.excluded is None]
        pairs = await asyncio.gather(*(one(e) for e in usable))
        return dict(pairs)

    async def head_votes(self) -> dict[int, int | RpcError]:
        """``eth_blockNumber`` from every usable endpoint at once, by position in ``urls``.

        Pinned semantics (circuit breaker): one attempt each, and an endpoint in
        cooldown is not asked (its entry is the refusal), so a hanging endpoint costs one
        timeout per cooldown, not one per call. Each answer updates that endpoint's last
        seen head (lagging ones are then asked last by the unpinned calls)."""

        async def one(e: _Endpoint) -> int | RpcError:
            try:
                self._refuse_if_cooling(e, "eth_blockNumber")
                return await self._block_number_on(e)
            except RpcError as exc:
                return exc

        usable = [e for e in self._endpoints if e.excluded is None]
        answers = await asyncio.gather(*(one(e) for e in usable))
        return {e.index: a for e, a in zip(usable, answers, strict=True)}

    def seen_head(self, index: int) -> int | None:
        """The head endpoint ``index`` reported last (None before it answered once)."""
        return self._endpoint(index).last_seen_head

    def in_cooldown(self, index: int) -> bool:
        """Whether endpoint ``index`` cools down after a failure (pinned calls refused)."""
        return self._endpoint(index).cooldown_until > self._clock()

    def scrub(self, text: str) -> str:
        """``text`` with every endpoint's credentials replaced (for logs and status)."""
        for e in self._endpoints:
            text = e.scrub(text)
        return text

    @property
    def usable_endpoints(self) -> list[int]:
        """Positions (in ``urls``) of the endpoints not excluded for a wrong chain id."""
        return [e.index for e in self._endpoints if e.excluded is None]

    async def get_block_on_each(self, number: int) -> dict[str, BlockRef | RpcError | None]:
        """Header of block ``number`` from every usable endpoint, one attempt each.

        For cross-checks before acting on a reorg: ``None`` is a node that does
        not have the block (lagging), an :class:`RpcError` a node that failed.
        """

        async def one(e: _Endpoint) -> tuple[str, BlockRef | RpcError | None]:
            try:
                raw = await self.call(
                    "eth_getBlockByNumber", [hex(number), False], endpoint=e.index, retry=False
                )
                if raw is None:
                    return e.label, None
                ref = _block_ref(raw, e.label)
            except RpcError as exc:
                return e.label, exc
            if ref.number != number:
                return e.label, RetryableRpcError(
                    f"asked for block {number}, node returned {ref.number}", endpoint=e.label
                )
            return e.label, ref

        usable = [e for e in self._endpoints if e.excluded is None]
        return dict(await asyncio.gather(*(one(e) for e in usable)))

    async def _block_number_on(self, e: _Endpoint) -> int:
        async def send(ep: _Endpoint) -> Any:
            request = _request(next(self._ids), "eth_blockNumber", [])
            response = await self._post(ep, request, ["eth_blockNumber"])
            return self._unwrap(ep, response, "eth_blockNumber")

        result, _ = await self._attempt(send, ["eth_blockNumber"], only=e)
        number = _to_int(result, e.label, "eth_blockNumber")
        e.last_seen_head = number
        return number

    # --- convenience ----------------------------------------------------------

    async def chain_id(self) -> int:
        result = await self.call("eth_chainId")
        return _to_int(result, None, "eth_chainId")

    async def block_number(self) -> int:
        result, e = await self._call_with_endpoint("eth_blockNumber")
        number = _to_int(result, e.label, "eth_blockNumber")
        e.last_seen_head = number
        return number

    async def get_block(self, block: int | str) -> BlockRef | None:
        """Header of a block by number or tag; ``None`` if the node has no such block."""
        tag = _block_param(block)
        raw, e = await self._call_with_endpoint("eth_getBlockByNumber", [tag, False])
        if raw is None:
            return None
        ref = _block_ref(raw, e.label)
        if isinstance(block, int) and ref.number != block:
            raise RetryableRpcError(
                f"asked for block {block}, node returned {ref.number}",
                endpoint=e.label,
                method="eth_getBlockByNumber",
            )
        if block == "latest":
            e.last_seen_head = ref.number
        return ref

    async def get_blocks(self, numbers: Sequence[int]) -> list[BlockRef]:
        """Headers of ``numbers`` (batched), in the order given.

        A block the node does not have yet (``null``, a lagging node) fails
        the chunk over to the next endpoint; if none has it, the last
        :class:`RetryableRpcError` is raised after the retry policy.
        """

        out: list[BlockRef] = []
        for start in range(0, len(numbers), self.max_batch_size):
            chunk = list(numbers[start : start + self.max_batch_size])
            requests = [("eth_getBlockByNumber", [hex(n), False]) for n in chunk]
            raws, e = await self._batch_chunk(requests, _blocks_check(chunk))
            out.extend(_block_ref(raw, e.label) for raw in raws)
        return out

    async def get_logs(
        self,
        address: str | Sequence[str] | None,
        topics: Sequence[str | Sequence[str] | None] | None,
        from_block: int | str | None = None,
        to_block: int | str | None = None,
        block_hash: str | None = None,
        *,
        endpoint: int | None = None,
        retry: bool = True,
    ) -> list[dict[str, Any]]:
        """Raw ``eth_getLogs``; with ``block_hash`` the range is ignored (EIP-234).

        ``endpoint``/``retry`` as in :meth:`call` (pin to one node, one attempt)."""
        flt: dict[str, Any] = {}
        if address is not None:
            flt["address"] = address if isinstance(address, str) else list(address)
        if topics is not None:
            flt["topics"] = [t if t is None or isinstance(t, str) else list(t) for t in topics]
        if block_hash is not None:
            flt["blockHash"] = block_hash
        else:
            if from_block is None or to_block is None:
                raise ValueError("from_block and to_block are required without block_hash")
            flt["fromBlock"] = _block_param(from_block)
            flt["toBlock"] = _block_param(to_block)

        def check(result: Any) -> None:
            if not isinstance(result, list):
                raise RetryableRpcError("eth_getLogs did not return a list", method="eth_getLogs")

        result = await self.call("eth_getLogs", [flt], check=check, endpoint=endpoint, retry=retry)
        logs: list[dict[str, Any]] = result
        return logs


def _request(rid: int, method: str, params: Sequence[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": list(params)}


def _blocks_check(numbers: Sequence[int]) -> Check:
    """Reject a batch of blocks with a null (lagging node) or a wrong number."""

    def check(results: Any) -> None:
        for n, raw in zip(numbers, results, strict=True):
            if raw is None:
                raise RetryableRpcError(f"block {n} not available", method="eth_getBlockByNumber")
            got = raw.get("number") if isinstance(raw, dict) else raw
            if not isinstance(got, str) or _hex_or_none(got) != n:
                raise RetryableRpcError(
                    f"asked for block {n}, node returned {got!r}", method="eth_getBlockByNumber"
                )

    return check


def _is_rpc_shaped(decoded: Any) -> bool:
    if isinstance(decoded, list):
        return True
    return isinstance(decoded, dict) and ("error" in decoded or "result" in decoded)


def _error_from(error: Any, method: str | None, label: str) -> RpcError:
    if isinstance(error, dict):
        code = error.get("code")
        message = str(error.get("message", ""))
        data = error.get("data")
    else:
        code, message, data = None, str(error), None
    return classify_rpc_error(
        code if isinstance(code, int) else None,
        message,
        method=method or None,
        data=data,
        endpoint=label,
    )


def _hex_or_none(value: str) -> int | None:
    try:
        return int(value, 16)
    except ValueError:
        return None


def _to_int(value: Any, label: str | None, method: str) -> int:
    if isinstance(value, str) and value.startswith(("0x", "0X")):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise RetryableRpcError(
        f"expected a hex quantity, got {value!r}", endpoint=label, method=method
    )


def _block_param(block: int | str) -> str:
    if isinstance(block, bool):
        raise TypeError("block must be a number or a tag")
    if isinstance(block, int):
        if block < 0:
            raise ValueError(f"block number cannot be negative: {block}")
        return hex(block)
    if block in _TAGS:
        return block
    if block.startswith("0x"):
        return block
    raise ValueError(f"not a block number or tag: {block!r}")


def _block_ref(raw: Any, label: str) -> BlockRef:
    if not isinstance(raw, dict):
        raise RetryableRpcError("malformed block", endpoint=label, method="eth_getBlockByNumber")
    try:
        return BlockRef(
            number=_to_int(raw["number"], label, "eth_getBlockByNumber"),
            hash=str(raw["hash"]).lower(),
            parent_hash=str(raw["parentHash"]).lower(),
            timestamp=_to_int(raw["timestamp"], label, "eth_getBlockByNumber"),
        )
    except KeyError as exc:
        raise RetryableRpcError(
            f"block lacks {exc}", endpoint=label, method="eth_getBlockByNumber"
        ) from None


# Re-exported for callers that catch by kind.
__all__ += ["PermanentRpcError", "RangeTooLargeError", "RetryableRpcError", "RpcError"]
