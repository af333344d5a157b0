"""RpcClient: classification, retry policy, and failover against real anvil via FaultProxy."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from tests.faultproxy import FaultProxy
from watcher.chain.devnet import AnvilNode, Deployment, free_port
from watcher.chain.errors import (
    ChainIdMismatchError,
    NoUsableEndpointError,
    PermanentRpcError,
    RangeTooLargeError,
    RetryableRpcError,
    classify_http_status,
    classify_rpc_error,
)
from watcher.chain.retry import RetryPolicy, retrying
from watcher.chain.rpc import RpcClient, redact_url

CHAIN_ID = 31337
FAST = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0, jitter=0.0)

# --------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://user:pass@host/path?key=abc", "https://***@host/path?***"),
        ("https://host/path?apikey=abc&x=1", "https://host/path?***"),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("http://127.0.0.1:8545/", "http://127.0.0.1:8545/"),
        ("https://token@rpc.example.org:8443/", "https://***@rpc.example.org:8443/"),
        (
            "https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef",
            "https://mainnet.infura.io/v3/***",
        ),
        (
            "https://eth-mainnet.g.alchemy.com/v2/Ab_cD3fGhIjKlMnOpQrStUv",
            "https://eth-mainnet.g.alchemy.com/v2/***",
        ),
        ("https://bsc-dataseed.bnbchain.org", "https://bsc-dataseed.bnbchain.org"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    ("code", "message", "method", "kind"),
    [
        (-32005, "query returned more than 10000 results", "eth_getLogs", RangeTooLargeError),
        (-32602, "block range too large", "eth_getLogs", RangeTooLargeError),
        (-32000, "exceed maximum block range: 5000", "eth_getLogs", RangeTooLargeError),
        (-32600, "eth_getLogs is limited to a 10,000 range", "eth_getLogs", RangeTooLargeError),
        (
            -32602,
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K "
            "block range",
            "eth_getLogs",
            RangeTooLargeError,
        ),
        (-32000, "block range is too wide", "eth_getLogs", RangeTooLargeError),
        # The same wording on another method is not a range problem.
        (-32602, "block range too large", "eth_call", PermanentRpcError),
        (-32603, "internal error", "eth_call", RetryableRpcError),
        (-32005, "project ID request rate exceeded", "eth_call", RetryableRpcError),
        (-32000, "header not found", "eth_getBlockByNumber", RetryableRpcError),
        (-32000, "request timed out", "eth_call", RetryableRpcError),
        (429, "Too Many Requests", "eth_call", RetryableRpcError),
        (-32601, "the method eth_foo does not exist", "eth_foo", PermanentRpcError),
        (-32602, "invalid argument 0: hex string without 0x prefix", "eth_call", PermanentRpcError),
        (3, "execution reverted", "eth_call", PermanentRpcError),
        (-32000, "nonce too low", "eth_sendRawTransaction", PermanentRpcError),
        (None, "", "eth_call", PermanentRpcError),
    ],
)
def test_classify_rpc_error(code: int | None, message: str, method: str, kind: type) -> None:
    err = classify_rpc_error(code, message, method=method)
    assert type(err) is kind
    assert err.code == code


@pytest.mark.parametrize(
    ("status", "body", "method", "kind"),
    [
        (500, "", "eth_call", RetryableRpcError),
        (502, "bad gateway", "eth_call", RetryableRpcError),
        (429, "slow down", "eth_call", RetryableRpcError),
        (401, "unauthorized", "eth_call", RetryableRpcError),
        (413, "block range too large", "eth_getLogs", RangeTooLargeError),
    ],
)
def test_classify_http_status(status: int, body: str, method: str, kind: type) -> None:
    assert type(classify_http_status(status, method=method, body=body)) is kind


def test_retry_policy_backoff_and_validation() -> None:
    policy = RetryPolicy(attempts=5, base_delay=0.2, max_delay=1.0, multiplier=2.0, jitter=0)
    assert [policy.backoff(k) for k in range(0, 6)] == [0.0, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert RetryPolicy.from_mapping({"attempts": 2}).attempts == 2
    with pytest.raises(ValueError):
        RetryPolicy.from_mapping({"tries": 2})
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


async def test_retry_only_retryable_errors() -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    policy = RetryPolicy(attempts=4, base_delay=0.1, max_delay=0.3, multiplier=2.0, jitter=0)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise RetryableRpcError("try again")
        return "ok"

    assert await retrying(policy, sleep=fake_sleep)(flaky) == "ok"
    assert calls == 4
    assert sleeps == pytest.approx([0.1, 0.2, 0.3])

    calls = 0

    async def permanent() -> str:
        nonlocal calls
        calls += 1
        raise PermanentRpcError("bad params")

    with pytest.raises(PermanentRpcError):
        await retrying(policy, sleep=fake_sleep)(permanent)
    assert calls == 1

    calls = 0

    async def always() -> str:
        nonlocal calls
        calls += 1
        raise RetryableRpcError(f"failure {calls}")

    with pytest.raises(RetryableRpcError, match="failure 4"):  # the last error itself
        await retrying(policy, sleep=fake_sleep)(always)

    async def cancelled() -> str:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retrying(policy, sleep=fake_sleep)(cancelled)

    async def bug() -> str:
        raise KeyError("programming error")

    with pytest.raises(KeyError):
        await retrying(policy, sleep=fake_sleep)(bug)


# --------------------------------------------------------------- against anvil


@pytest.fixture
async def proxy(anvil: AnvilNode, deployment: Deployment) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(anvil.url) as p:
        yield p


@pytest.fixture
async def proxy2(anvil: AnvilNode) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(anvil.url) as p:
        yield p


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


async def test_basic_calls_match_the_node(proxy: FaultProxy, deployment: Deployment) -> None:
    async with RpcClient([proxy.url], chain_id=CHAIN_ID, policy=FAST) as client:
        assert await client.chain_id() == CHAIN_ID
        head = await client.block_number()
        assert head >= deployment.deploy_block
        latest = await client.get_block("latest")
        assert latest is not None
        assert latest.number >= head
        block = await client.get_block(deployment.deploy_block)
        assert block is not None
        assert block.number == deployment.deploy_block
        assert block.hash.startswith("0x") and len(block.hash) == 66
        parent = await client.get_block(deployment.deploy_block - 1)
        assert parent is not None
        assert block.parent_hash == parent.hash
        assert await client.get_block(head + 1_000) is None
        assert await client.get_block("finalized") is not None
        assert await client.get_block("safe") is not None

        numbers = list(range(0, head + 1))
        blocks = await client.get_blocks(numbers)
        assert [b.number for b in blocks] == numbers
        for lower, upper in itertools.pairwise(blocks):
            assert upper.parent_hash == lower.hash
        assert blocks[deployment.deploy_block] == block

        # Chain id was verified once, before the first call.
        assert proxy.requests["eth_chainId"] == 2  # verification + chain_id()
        status = client.health()[0]
        assert status.state == "ok"
        assert status.chain_id == CHAIN_ID
        assert status.last_seen_head is not None
        assert status.last_latency_ms is not None
        label = client.endpoint_labels[0]
        assert client.stats.calls[(label, "eth_getBlockByNumber")] >= len(numbers)


async def test_batch_matches_ids_and_splits(proxy: FaultProxy) -> None:
    async with RpcClient([proxy.url], chain_id=CHAIN_ID, policy=FAST, max_batch_size=3) as client:
        before = proxy.http_requests
        results = await client.batch(
            [("eth_chainId", []), ("eth_blockNumber", []), ("net_version", [])] * 3
            + [("eth_chainId", [])]
        )
        assert results[0] == hex(CHAIN_ID)
        assert results[2] == str(CHAIN_ID)
        assert len(results) == 10
        # 1 verification + ceil(10 / 3) = 4 batch POSTs.
        assert proxy.http_requests - before == 5

        with pytest.raises(PermanentRpcError):
            await client.batch([("eth_chainId", []), ("eth_noSuchMethod", [])])


async def test_failover_from_dead_url(proxy: FaultProxy) -> None:
    dead = dead_url()
    async with RpcClient([dead, proxy.url], chain_id=CHAIN_ID, policy=FAST) as client:
        assert await client.block_number() > 0
        assert client.stats.failovers == 1
        dead_status, good_status = client.health()
        assert dead_status.state == "cooldown"
        assert dead_status.consecutive_failures == 1
        assert dead_status.last_error is not None
        assert good_status.state == "ok"
        # While the dead endpoint cools down, calls go straight to the good one.
        dead_errors = sum(v for k, v in client.stats.errors.items() if k[0] == dead_status.url)
        await client.block_number()
        await client.get_block("latest")
        assert client.stats.failovers == 1
        assert dead_errors == sum(
            v for k, v in client.stats.errors.items() if k[0] == dead_status.url
        )


async def test_cooldown_expires_and_backs_off(proxy: FaultProxy) -> None:
    now = [1000.0]
    dead = dead_url()
    client = RpcClient(
        [dead, proxy.url],
        chain_id=CHAIN_ID,
        policy=FAST,
        cooldown_base=1.0,
        cooldown_max=4.0,
        clock=lambda: now[0],
    )
    async with client:
        await client.block_number()
        assert client.health()[0].cooldown_remaining_s == 1.0
        now[0] += 1.0  # cooled down: tried again first (priority order), fails again
        await client.block_number()
        assert client.health()[0].consecutive_failures == 2
        assert client.health()[0].cooldown_remaining_s == 2.0
        now[0] += 2.0
        await client.block_number()
        now[0] += 4.0
        await client.block_number()
        assert client.health()[0].cooldown_remaining_s == 4.0  # capped
        assert client.health()[0].total_failures == 4


async def test_retry_after_transient_errors(proxy: FaultProxy) -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    policy = RetryPolicy(attempts=4, base_delay=0.5, max_delay=2.0, jitter=0)
    async with RpcClient([proxy.url], chain_id=CHAIN_ID, policy=policy, sleep=fake_sleep) as c:
        await c.chain_id()
        proxy.fail_next(2, method="eth_blockNumber")
        assert await c.block_number() > 0
        assert proxy.requests["eth_blockNumber"] == 3
        assert sleeps == [0.5, 1.0]
        assert c.stats.retries == 2
        label = c.endpoint_labels[0]
        assert c.stats.errors[(label, "eth_blockNumber", "RetryableRpcError")] == 2
        assert c.health()[0].consecutive_failures == 0  # success resets

        proxy.http_error_next(1, 503)
        proxy.http_error_next(1, 429)
        assert await c.chain_id() == CHAIN_ID
        assert c.stats.retries == 4

        # Exhausted: the last retryable error comes out.
        proxy.fail_method("eth_blockNumber", message="internal error")
        with pytest.raises(RetryableRpcError, match="internal error"):
            await c.block_number()
        proxy.reset()


async def test_permanent_errors_are_not_retried(proxy: FaultProxy, proxy2: FaultProxy) -> None:
    async with RpcClient([proxy.url, proxy2.url], chain_id=CHAIN_ID, policy=FAST) as client:
        await client.chain_id()
        proxy.fail_next(1, code=-32602, message="invalid argument 0", method="eth_call")
        with pytest.raises(PermanentRpcError, match="invalid argument"):
            await client.call("eth_call", [{"to": "0x" + "00" * 20}, "latest"])
        assert proxy.requests["eth_call"] == 1
        assert proxy2.requests["eth_call"] == 0  # no failover for a bad request
        assert client.stats.retries == 0
        assert client.health()[0].consecutive_failures == 0


async def test_timeout_fails_over(proxy: FaultProxy, proxy2: FaultProxy) -> None:
    proxy.delay = 2.0
    async with RpcClient(
        [proxy.url, proxy2.url], chain_id=CHAIN_ID, policy=FAST, timeout=0.2
    ) as client:
        assert await client.block_number() > 0
        slow, fast = client.health()
        assert slow.last_error is not None
        assert "timed out" in slow.last_error
        assert fast.state == "ok"
    proxy.delay = 0


async def test_dropped_connection_fails_over(proxy: FaultProxy, proxy2: FaultProxy) -> None:
    proxy.drop_connections = True
    async with RpcClient([proxy.url, proxy2.url], chain_id=CHAIN_ID, policy=FAST) as client:
        assert await client.chain_id() == CHAIN_ID
        assert client.health()[0].consecutive_failures == 1


async def test_chain_id_mismatch_endpoint_is_excluded(
    proxy: FaultProxy, proxy2: FaultProxy
) -> None:
    proxy.chain_id = 1  # claims to be Ethereum mainnet
    async with RpcClient([proxy.url, proxy2.url], chain_id=CHAIN_ID, policy=FAST) as client:
        for _ in range(3):
            assert await client.block_number() > 0
        wrong, right = client.health()
        assert wrong.state == "excluded"
        assert wrong.last_error is not None
        assert "chain id 1, expected 31337" in wrong.last_error
        assert right.state == "ok"
        # Asked once for its chain id, never used for anything else.
        assert dict(proxy.requests) == {"eth_chainId": 1}
        # Even pinned calls refuse an excluded endpoint.
        with pytest.raises(ChainIdMismatchError):
            await client.call("eth_blockNumber", endpoint=0)

    async with RpcClient([proxy.url], chain_id=CHAIN_ID, policy=FAST) as client:
        with pytest.raises(NoUsableEndpointError):
            await client.block_number()
        with pytest.raises(NoUsableEndpointError):
            await client.block_number()


async def test_lagging_node(proxy: FaultProxy, proxy2: FaultProxy) -> None:
    proxy.lag_blocks = 3
    async with RpcClient(
        [proxy.url, proxy2.url], chain_id=CHAIN_ID, policy=FAST, lag_tolerance=1
    ) as client:
        heads = await client.heads()
        lagging, current = (heads[label] for label in client.endpoint_labels)
        assert isinstance(lagging, int) and isinstance(current, int)
        assert current - lagging == 3
        # The lagging node is ordered last now, though it is first in the list.
        assert await client.block_number() == current
        # A block the lagging node lacks fails the batch over (no null sneaks in).
        client.lag_tolerance = None
        blocks = await client.get_blocks([current - 1, current])
        assert [b.number for b in blocks] == [current - 1, current]
        assert client.stats.failovers >= 1


async def test_range_too_large_is_raised_not_retried(proxy: FaultProxy) -> None:
    proxy.max_logs_range = 5
    async with RpcClient([proxy.url], chain_id=CHAIN_ID, policy=FAST) as client:
        await client.get_logs(None, None, 0, 4)
        with pytest.raises(RangeTooLargeError, match="block range too large"):
            await client.get_logs(None, None, 0, 5)
        assert proxy.logs_ranges[-1] == (0, 5)
        assert len(proxy.logs_ranges) == 2
        assert client.health()[0].consecutive_failures == 0


async def test_credentials_never_leak(proxy: FaultProxy) -> None:
    port = free_port()
    secret_url = (
        f"http://alice:hunter2@127.0.0.1:{port}/v3/0123456789abcdef0123456789abcdef?key=S3CRET"
    )
    async with RpcClient([secret_url, proxy.url], chain_id=CHAIN_ID, policy=FAST) as client:
        await client.block_number()
        status = client.health()[0]
        text = repr(client.health()) + repr(dict(client.stats.errors)) + repr(client.stats.calls)
        for secret in ("alice", "hunter2", "S3CRET", "0123456789abcdef0123456789abcdef"):
            assert secret not in text
        assert status.url == f"http://***@127.0.0.1:{port}/v3/***?***"
        assert status.as_dict()["url"] == status.url

    async with RpcClient([secret_url], chain_id=CHAIN_ID, policy=FAST) as client:
        with pytest.raises(RetryableRpcError) as info:
            await client.block_number()
        message = str(info.value)
        for secret in ("alice", "hunter2", "S3CRET", "0123456789abcdef"):
            assert secret not in message


async def test_cancellation_propagates(proxy: FaultProxy) -> None:
    async with RpcClient([proxy.url], chain_id=CHAIN_ID, policy=FAST, timeout=30) as client:
        await client.chain_id()
        proxy.delay = 5.0
        task = asyncio.create_task(client.block_number())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        proxy.delay = 0
        assert client.health()[0].consecutive_failures == 0
        assert not client.stats.errors


async def test_shared_session_is_not_closed(proxy: FaultProxy) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with RpcClient([proxy.url], chain_id=CHAIN_ID, session=session) as client:
                assert await client.chain_id() == CHAIN_ID
        assert not session.closed
