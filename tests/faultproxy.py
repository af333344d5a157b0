"""A fault-injecting JSON-RPC proxy for tests (reusable by any test module).

``FaultProxy(upstream_url)`` listens on a free 127.0.0.1 port and forwards
every JSON-RPC request (single or batch) to ``upstream_url`` — normally an
anvil — until a fault is switched on. Faults are plain attributes and methods,
switchable while the proxy runs, and :meth:`reset` clears them all::

    async with FaultProxy(anvil.url) as proxy:
        client = RpcClient([proxy.url], chain_id=31337)
        proxy.fail_next(2)                 # next 2 calls: JSON-RPC -32603
        proxy.fail_method("eth_getLogs", code=-32000, message="header not found")
        proxy.http_error_next(1, 503)      # next HTTP request: 503
        proxy.delay = 2.0                  # answer every request 2 s late (timeouts)
        proxy.drop_connections = True      # close the socket without answering
        proxy.http_answer = (500, "application/json", '{"error": ...}')  # every request
        proxy.lag_blocks = 5               # a lagging node: head 5 blocks behind
        proxy.max_logs_range = 10          # eth_getLogs over > 10 blocks: "block range too large"
        proxy.truncate_logs = 1            # drop the last log of every eth_getLogs answer
        proxy.chain_id = 1                 # claim to serve another chain
        proxy.null_next("eth_getTransactionReceipt", 2)  # next 2: "not found" (a lagging index)
        proxy.requests["eth_getLogs"]      # how many calls of a method reached the proxy
        proxy.logs_ranges                  # (from, to) of every eth_getLogs seen
        proxy.blocks_asked                 # block numbers of every eth_getBlockByNumber

Truncation is a fault the client cannot detect on its own — the answer is a
well-formed subset. It exists for the listener's tests: the listener must
defend by checking block headers' ``logsBloom`` against the vault/topic,
cross-checking with a second endpoint, and re-reading ranges before crediting
(see ``watcher/chain/fetch.py``). Point one endpoint of a client at a
truncating proxy and another directly at anvil to exercise the cross-check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

__all__ = ["FaultProxy", "RpcFault"]


@dataclass
class RpcFault:
    """A JSON-RPC error to return instead of forwarding.

    ``method`` None matches every method; ``remaining`` None means "until reset".
    """

    code: int
    message: str
    method: str | None = None
    remaining: int | None = None
    data: Any = None

    def matches(self, method: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.remaining is None or self.remaining > 0
        )


class FaultProxy:
    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.reset()

    # --- faults ---------------------------------------------------------------

    def reset(self) -> None:
        """Switch every fault off (observations are kept; see :meth:`clear_stats`)."""
        self.faults: list[RpcFault] = []
        self.http_errors: list[int] = []  # statuses for the next HTTP requests, in order
        self.delay: float = 0.0
        self.drop_connections: bool = False
        # (status, content type, body) answered to every HTTP request instead of forwarding
        self.http_answer: tuple[int, str, str] | None = None
        self.lag_blocks: int | None = None
        self.max_logs_range: int | None = None
        self.truncate_logs: int = 0
        self.chain_id: int | None = None
        self.nulls: Counter[str] = Counter()  # method -> calls still answered null
        if not hasattr(self, "requests"):
            self.clear_stats()

    def clear_stats(self) -> None:
        self.requests: Counter[str] = Counter()
        self.http_requests = 0
        self.logs_ranges: list[tuple[int, int]] = []
        self.blocks_asked: list[int] = []  # eth_getBlockByNumber of a block number

    def fail_next(
        self,
        n: int,
        *,
        code: int = -32603,
        message: str = "internal error",
        method: str | None = None,
    ) -> RpcFault:
        """The next ``n`` calls (of ``method``, or any) get a JSON-RPC error."""
        fault = RpcFault(code=code, message=message, method=method, remaining=n)
        self.faults.append(fault)
        return fault

    def fail_method(
        self, method: str, *, code: int = -32603, message: str = "internal error"
    ) -> RpcFault:
        """Every call of ``method`` gets a JSON-RPC error until :meth:`reset`."""
        fault = RpcFault(code=code, message=message, method=method)
        self.faults.append(fault)
        return fault

    def null_next(self, method: str, n: int) -> None:
        """The next ``n`` calls of ``method`` answer ``null`` (a node whose index has not
        caught up with its state: a receipt or block it has "not found" yet)."""
        self.nulls[method] += n

    def http_error_next(self, n: int, status: int = 500) -> None:
        """The next ``n`` HTTP requests are answered with ``status`` and a text body."""
        self.http_errors.extend([status] * n)

    # --- lifecycle --------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("proxy not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FaultProxy:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/", self._handle)
        app.router.add_post("/{tail:.*}", self._handle)  # keys in paths are fine too
        # handler_cancellation: a client that timed out stops the delayed handler.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = ClientSession(timeout=ClientTimeout(total=30))
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- request handling -------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.http_requests += 1
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.drop_connections:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if self.http_answer is not None:
            status, ctype, text = self.http_answer
            return web.Response(status=status, body=text.encode(), content_type=ctype)
        if self.http_errors:
            status = self.http_errors.pop(0)
            return web.Response(status=status, text=f"injected HTTP {status}")
        try:
            payload = json.loads(body)
        except ValueError:
            return web.json_response(_error(None, -32700, "parse error"))
        if isinstance(payload, list):
            answers = await asyncio.gather(*(self._item(item) for item in payload))
            return web.json_response(list(answers))
        return web.json_response(await self._item(payload))

    async def _item(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            return _error(None, -32600, "invalid request")
        rid = item.get("id")
        method = str(item.get("method", ""))
        params = list(item.get("params") or [])
        self.requests[method] += 1
        if method == "eth_getBlockByNumber" and params and isinstance(params[0], str):
            with contextlib.suppress(ValueError):  # a tag ("latest", "finalized"...)
                self.blocks_asked.append(int(params[0], 16))
        for fault in self.faults:
            if fault.matches(method):
                if fault.remaining is not None:
                    fault.remaining -= 1
                return _error(rid, fault.code, fault.message, fault.data)
        if self.nulls[method] > 0:
            self.nulls[method] -= 1
            return {"jsonrpc": "2.0", "id": rid, "result": None}
        if method in ("eth_chainId", "net_version") and self.chain_id is not None:
            value = hex(self.chain_id) if method == "eth_chainId" else str(self.chain_id)
            return {"jsonrpc": "2.0", "id": rid, "result": value}
        if self.lag_blocks is not None:
            lagged = await self._lagging(rid, method, params)
            if lagged is not None:
                return lagged
            params = item["params"] = await self._clamp_logs_params(method, params)
        if method == "eth_getLogs":
            rejected = await self._check_logs_range(rid, params)
            if rejected is not None:
                return rejected
        answer = await self._forward(item)
        if (
            method == "eth_getLogs"
            and self.truncate_logs
            and isinstance(answer.get("result"), list)
        ):
            result = answer["result"]
            answer["result"] = result[: max(0, len(result) - self.truncate_logs)]
        return answer

    async def _forward(self, item: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.post(self.upstream, json=item) as resp:
            answer: dict[str, Any] = await resp.json(content_type=None)
            return answer

    async def _upstream_head(self) -> int:
        answer = await self._forward(
            {"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber", "params": []}
        )
        return int(answer["result"], 16)

    async def _stale_head(self) -> int:
        return max(0, await self._upstream_head() - (self.lag_blocks or 0))

    async def _lagging(self, rid: Any, method: str, params: list[Any]) -> dict[str, Any] | None:
        """Answer as a node ``lag_blocks`` behind would; None → forward as usual."""
        if method == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": rid, "result": hex(await self._stale_head())}
        if method == "eth_getBlockByNumber" and params:
            head = await self._stale_head()
            tag = params[0]
            if tag in ("latest", "pending"):
                number = head
            elif isinstance(tag, str) and tag.startswith("0x"):
                number = int(tag, 16)
                if number > head:
                    return {"jsonrpc": "2.0", "id": rid, "result": None}
            else:
                return None
            full = params[1] if len(params) > 1 else False
            return await self._forward(
                {"jsonrpc": "2.0", "id": rid, "method": method, "params": [hex(number), full]}
            )
        return None

    async def _clamp_logs_params(self, method: str, params: list[Any]) -> list[Any]:
        """A lagging node only has logs up to its own head."""
        if method != "eth_getLogs" or not params or not isinstance(params[0], dict):
            return params
        flt = dict(params[0])
        head = await self._stale_head()
        to_block = flt.get("toBlock", "latest")
        if to_block in ("latest", "pending") or (
            isinstance(to_block, str) and to_block.startswith("0x") and int(to_block, 16) > head
        ):
            flt["toBlock"] = hex(head)
        return [flt, *params[1:]]

    async def _check_logs_range(self, rid: Any, params: list[Any]) -> dict[str, Any] | None:
        flt = params[0] if params and isinstance(params[0], dict) else {}
        if "blockHash" in flt:
            return None
        head: int | None = None

        async def number(value: Any) -> int:
            nonlocal head
            if isinstance(value, str) and value.startswith("0x"):
                return int(value, 16)
            if head is None:
                head = await self._upstream_head()
            return head if value in (None, "latest", "pending", "safe", "finalized") else 0

        low = await number(flt.get("fromBlock", "latest"))
        high = await number(flt.get("toBlock", "latest"))
        self.logs_ranges.append((low, high))
        if self.max_logs_range is not None and high - low + 1 > self.max_logs_range:
            return _error(
                rid,
                -32602,
                f"block range too large: {high - low + 1} blocks, max {self.max_logs_range}",
            )
        return None


def _error(rid: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": error}
