"""Deposit log decoding and fetch_deposit_logs: ranges, failover, verification.

Runs on its own anvil (module scope) with a fixed set of deposits, so the
expected logs are exact; the fault proxy sits between the client and anvil.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from eth_utils.crypto import keccak

from tests.faultproxy import FaultProxy
from watcher.chain.artifacts import DEPOSIT_TOPIC as ARTIFACT_DEPOSIT_TOPIC
from watcher.chain.devnet import (
    AnvilNode,
    Deployment,
    deploy_devnet,
    dev_account,
    free_port,
    start_anvil,
)
from watcher.chain.errors import InconsistentLogsError, MalformedLogError, RangeTooLargeError
from watcher.chain.fetch import fetch_deposit_logs, verify_deposit_logs
from watcher.chain.logs import (
    DEPOSIT_TOPIC,
    ZERO_ADDRESS,
    DepositLog,
    _decode_checked,
    checksum,
    decode_deposit_log,
)
from watcher.chain.retry import RetryPolicy
from watcher.chain.rpc import RpcClient

CHAIN_ID = 31337
FAST = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0, jitter=0.0)
DEPOSIT_NATIVE = "0x" + keccak(text="depositNative()")[:4].hex()
DEPOSIT = keccak(text="deposit(address,uint256)")[:4].hex()
APPROVE = keccak(text="approve(address,uint256)")[:4].hex()


@dataclass(frozen=True)
class Devnet:
    node: AnvilNode
    dep: Deployment
    expected: list[tuple[int, int, str, str, int]]  # block, log index, account, token, amount
    first: int
    last: int


async def rpc(session: aiohttp.ClientSession, url: str, method: str, *params: Any) -> Any:
    async with session.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    ) as resp:
        answer = await resp.json()
    assert "error" not in answer, answer
    return answer["result"]


def word(value: int | str) -> str:
    if isinstance(value, str):
        return value[2:].lower().rjust(64, "0")
    return hex(value)[2:].rjust(64, "0")


async def send(session: aiohttp.ClientSession, url: str, tx: dict[str, Any]) -> str:
    tx_hash: str = await rpc(session, url, "eth_sendTransaction", tx)
    return tx_hash


async def receipt(session: aiohttp.ClientSession, url: str, tx_hash: str) -> dict[str, Any]:
    """The receipt once mined (automine answers a moment after eth_sendTransaction)."""
    for _ in range(200):
        result: dict[str, Any] | None = await rpc(
            session, url, "eth_getTransactionReceipt", tx_hash
        )
        if result is not None:
            assert result["status"] == "0x1", result
            return result
        await asyncio.sleep(0.01)
    raise AssertionError(f"transaction {tx_hash} not mined")


def deposits_in(rcpt: dict[str, Any], vault: str) -> list[tuple[int, int, str, str, int]]:
    out = []
    for log in rcpt["logs"]:
        if log["address"].lower() == vault.lower() and log["topics"][0] == DEPOSIT_TOPIC:
            out.append(
                (
                    int(log["blockNumber"], 16),
                    int(log["logIndex"], 16),
                    checksum("0x" + log["topics"][1][-40:]),
                    checksum("0x" + log["topics"][2][-40:]),
                    int(log["data"], 16),
                )
            )
    return out


@pytest.fixture(scope="module")
async def devnet() -> AsyncIterator[Devnet]:
    """Anvil + contracts + 13 deposits spread over ~40 blocks, two in one block."""
    async with start_anvil(chain_id=CHAIN_ID) as node:
        dep = await deploy_devnet(node.url, fund_accounts=6)
        url, vault = node.url, dep.vault
        usdt = dep.tokens["USDT"].address
        expected: list[tuple[int, int, str, str, int]] = []
        async with aiohttp.ClientSession() as s:
            first = int(await rpc(s, url, "eth_blockNumber"), 16) + 1
            for i in range(10):
                who = dev_account(2 + i % 4).address
                tx = {"from": who, "to": vault, "value": hex(10**15 * (i + 1))}
                tx["data"] = DEPOSIT_NATIVE
                expected += deposits_in(await receipt(s, url, await send(s, url, tx)), vault)
                await rpc(s, url, "anvil_mine", hex(i % 4))  # 0–3 empty blocks between
            # A token deposit (approve + deposit).
            alice = dev_account(2).address
            amount = 1_234_567_891_234_567_891
            approve = {
                "from": alice,
                "to": usdt,
                "data": "0x" + APPROVE + word(vault) + word(amount),
            }
            await receipt(s, url, await send(s, url, approve))
            deposit = {
                "from": alice,
                "to": vault,
                "data": "0x" + DEPOSIT + word(usdt) + word(amount),
            }
            expected += deposits_in(await receipt(s, url, await send(s, url, deposit)), vault)
            # Two deposits in one block.
            await rpc(s, url, "evm_setAutomine", False)
            hashes = []
            for who in (dev_account(3).address, dev_account(4).address):
                tx = {"from": who, "to": vault, "value": hex(7), "data": DEPOSIT_NATIVE}
                hashes.append(await send(s, url, tx))
            await rpc(s, url, "evm_mine")
            await rpc(s, url, "evm_setAutomine", True)
            for h in hashes:
                expected += deposits_in(await receipt(s, url, h), vault)
            await rpc(s, url, "anvil_mine", hex(3))
            last = int(await rpc(s, url, "eth_blockNumber"), 16)
        expected.sort()
        assert len(expected) == 13
        yield Devnet(node, dep, expected, first, last)


@pytest.fixture
async def proxy(devnet: Devnet) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(devnet.node.url) as p:
        yield p


def as_tuples(logs: Sequence[DepositLog]) -> list[tuple[int, int, str, str, int]]:
    return [(d.block_number, d.log_index, d.account, d.token, d.amount) for d in logs]


# ------------------------------------------------------------------ fetching


async def test_fetch_all_deposits_sorted_and_decoded(devnet: Devnet) -> None:
    async with RpcClient([devnet.node.url], chain_id=CHAIN_ID, policy=FAST) as client:
        logs = await fetch_deposit_logs(client, devnet.dep.vault, 0, devnet.last, 10_000)
    assert as_tuples(logs) == devnet.expected
    assert all(d.chain_id == CHAIN_ID for d in logs)
    assert sum(d.is_native for d in logs) == 12
    token_deposit = next(d for d in logs if not d.is_native)
    assert token_deposit.token == checksum(devnet.dep.tokens["USDT"].address)
    assert token_deposit.amount == 1_234_567_891_234_567_891
    assert token_deposit.account == dev_account(2).address
    same_block = [d for d in logs if d.amount == 7]
    assert len(same_block) == 2
    assert same_block[0].block_number == same_block[1].block_number
    assert same_block[0].log_index < same_block[1].log_index
    assert len({d.key for d in logs}) == 13


async def test_chunks_respect_max_range(devnet: Devnet, proxy: FaultProxy) -> None:
    async with RpcClient([proxy.url], chain_id=CHAIN_ID, policy=FAST) as client:
        logs = await fetch_deposit_logs(client, devnet.dep.vault, devnet.first, devnet.last, 7)
    assert as_tuples(logs) == devnet.expected
    sizes = [high - low + 1 for low, high in proxy.logs_ranges]
    assert max(sizes) == 7
    # Chunks tile the range exactly: no gap, no overlap.
    assert proxy.logs_ranges[0][0] == devnet.first
    assert proxy.logs_ranges[-1][1] == devnet.last
    for (_, high), (low, _) in zip(proxy.logs_ranges, proxy.logs_ranges[1:], strict=False):
        assert low == high + 1


async def test_range_halving(devnet: Devnet, proxy: FaultProxy) -> None:
    proxy.max_logs_range = 4
    async with RpcClient([proxy.url], chain_id=CHAIN_ID, policy=FAST) as client:
        logs = await fetch_deposit_logs(client, devnet.dep.vault, devnet.first, devnet.last, 25)
    assert as_tuples(logs) == devnet.expected
    sizes = [high - low + 1 for low, high in proxy.logs_ranges]
    # 25 refused, 12 refused, 6 refused, then 3-block chunks for the rest.
    assert sizes[:4] == [25, 12, 6, 3]
    assert set(sizes[4:]) <= {1, 2, 3}
    accepted = [r for r in proxy.logs_ranges if r[1] - r[0] + 1 <= 4]
    assert accepted[0][0] == devnet.first
    assert accepted[-1][1] == devnet.last


async def test_single_block_still_too_large_raises(devnet: Devnet, proxy: FaultProxy) -> None:
    proxy.max_logs_range = 0
    async with RpcClient([proxy.url], chain_id=CHAIN_ID, policy=FAST) as client:
        with pytest.raises(RangeTooLargeError):
            await fetch_deposit_logs(client, devnet.dep.vault, devnet.first, devnet.first + 9, 10)
    sizes = [high - low + 1 for low, high in proxy.logs_ranges]
    assert sizes == [10, 5, 2, 1]


async def test_fetch_fails_over_and_retries(devnet: Devnet, proxy: FaultProxy) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proxy.fail_next(2, method="eth_getLogs", code=-32000, message="header not found")
    async with RpcClient([dead, proxy.url], chain_id=CHAIN_ID, policy=FAST) as client:
        logs = await fetch_deposit_logs(client, devnet.dep.vault, 0, devnet.last, 10_000)
        assert client.stats.retries == 2
        assert client.health()[0].state == "cooldown"
    assert as_tuples(logs) == devnet.expected


async def test_canonical_hashes_mapping(devnet: Devnet) -> None:
    async with RpcClient([devnet.node.url], chain_id=CHAIN_ID, policy=FAST) as client:
        headers = await client.get_blocks(range(devnet.first, devnet.last + 1))
        canonical = {b.number: b.hash for b in headers}
        logs = await fetch_deposit_logs(
            client, devnet.dep.vault, devnet.first, devnet.last, 100, canonical=canonical
        )
        assert as_tuples(logs) == devnet.expected

        victim = logs[3].block_number
        forked = dict(canonical) | {victim: "0x" + "ab" * 32}
        with pytest.raises(InconsistentLogsError, match=f"in block {victim}.*another fork"):
            await fetch_deposit_logs(
                client, devnet.dep.vault, devnet.first, devnet.last, 100, canonical=forked
            )

        missing = {n: h for n, h in canonical.items() if n != victim}
        with pytest.raises(
            InconsistentLogsError, match=f"no canonical hash known for block {victim}"
        ):
            await fetch_deposit_logs(
                client, devnet.dep.vault, devnet.first, devnet.last, 100, canonical=missing
            )


async def test_canonical_hashes_resolver(devnet: Devnet) -> None:
    asked: list[list[int]] = []
    async with RpcClient([devnet.node.url], chain_id=CHAIN_ID, policy=FAST) as client:

        async def resolve(numbers: Sequence[int]) -> Mapping[int, str]:
            asked.append(list(numbers))
            return {b.number: b.hash for b in await client.get_blocks(numbers)}

        logs = await fetch_deposit_logs(
            client, devnet.dep.vault, devnet.first, devnet.last, 100, canonical=resolve
        )
    assert as_tuples(logs) == devnet.expected
    assert asked == [sorted({e[0] for e in devnet.expected})]  # once, distinct blocks only


async def test_truncated_results_need_a_cross_check(devnet: Devnet, proxy: FaultProxy) -> None:
    """Truncation is invisible to one endpoint; a second endpoint exposes it.

    The listener's defence (bloom check / second RPC / re-read) is tested with
    the listener; here we only pin down that the fault is real and silent.
    """
    proxy.truncate_logs = 1
    async with (
        RpcClient([proxy.url], chain_id=CHAIN_ID, policy=FAST) as lying,
        RpcClient([devnet.node.url], chain_id=CHAIN_ID, policy=FAST) as honest,
    ):
        short = await fetch_deposit_logs(lying, devnet.dep.vault, 0, devnet.last, 10_000)
        full = await fetch_deposit_logs(honest, devnet.dep.vault, 0, devnet.last, 10_000)
    assert len(short) == len(full) - 1
    assert set(as_tuples(short)) < set(as_tuples(full))


async def test_logs_from_a_reorged_fork_are_rejected() -> None:
    """A real fork: the listener's headers predate an anvil_reorg that moved a deposit."""
    async with start_anvil(chain_id=CHAIN_ID) as node:
        dep = await deploy_devnet(node.url, fund_accounts=3)
        async with (
            aiohttp.ClientSession() as s,
            RpcClient([node.url], chain_id=CHAIN_ID, policy=FAST) as client,
        ):
            tx = {"from": dev_account(2).address, "to": dep.vault, "value": hex(5)}
            tx["data"] = DEPOSIT_NATIVE
            rcpt = await receipt(s, node.url, await send(s, node.url, tx))
            block = int(rcpt["blockNumber"], 16)
            await rpc(s, node.url, "anvil_mine", hex(2))
            head = block + 2
            before = {b.number: b.hash for b in await client.get_blocks(range(block, head + 1))}
            logs = await fetch_deposit_logs(client, dep.vault, block, head, 10, canonical=before)
            assert [d.amount for d in logs] == [5]

            # Replace the last 3 blocks; the same deposit lands again in the first one.
            replay = {"from": dev_account(3).address, "to": dep.vault, "value": hex(5)}
            replay["data"] = DEPOSIT_NATIVE
            await rpc(s, node.url, "anvil_reorg", 3, [[replay, 0]])
            after = {b.number: b.hash for b in await client.get_blocks(range(block, head + 1))}
            assert after[block] != before[block]

            with pytest.raises(InconsistentLogsError, match="another fork"):
                await fetch_deposit_logs(client, dep.vault, block, head, 10, canonical=before)
            logs = await fetch_deposit_logs(client, dep.vault, block, head, 10, canonical=after)
            assert [(d.block_number, d.account) for d in logs] == [(block, dev_account(3).address)]


async def test_argument_validation(devnet: Devnet) -> None:
    async with RpcClient([devnet.node.url], chain_id=CHAIN_ID) as client:
        with pytest.raises(ValueError):
            await fetch_deposit_logs(client, devnet.dep.vault, 5, 4, 10)
        with pytest.raises(ValueError):
            await fetch_deposit_logs(client, devnet.dep.vault, 0, 4, 0)


# ---------------------------------------------------------- decoding (pure)

VAULT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ACCOUNT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
TOKEN = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


def raw_log(**overrides: Any) -> dict[str, Any]:
    log: dict[str, Any] = {
        "address": VAULT.lower(),
        "topics": [DEPOSIT_TOPIC, "0x" + word(ACCOUNT), "0x" + word(TOKEN)],
        "data": "0x" + word(1_234_567_891_234_567_891),
        "blockNumber": "0x2a",
        "blockHash": "0x" + "AB" * 32,
        "transactionHash": "0x" + "cd" * 32,
        "transactionIndex": "0x0",
        "logIndex": "0x3",
        "removed": False,
    }
    log.update(overrides)
    return log


def test_deposit_topic_matches_the_artifacts() -> None:
    assert DEPOSIT_TOPIC == ARTIFACT_DEPOSIT_TOPIC


def test_decode_deposit_log() -> None:
    log = decode_deposit_log(raw_log(), CHAIN_ID)
    assert log == DepositLog(
        chain_id=CHAIN_ID,
        block_number=42,
        block_hash="0x" + "ab" * 32,
        tx_hash="0x" + "cd" * 32,
        log_index=3,
        account=ACCOUNT,
        token=TOKEN,
        amount=1_234_567_891_234_567_891,
    )
    assert log.key == (CHAIN_ID, "0x" + "cd" * 32, 3)
    native = decode_deposit_log(
        raw_log(topics=[DEPOSIT_TOPIC, "0x" + word(ACCOUNT), "0x" + "00" * 32]), CHAIN_ID
    )
    assert native.token == ZERO_ADDRESS
    assert native.is_native
    big = decode_deposit_log(raw_log(data="0x" + "ff" * 32), CHAIN_ID)
    assert big.amount == 2**256 - 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"topics": [DEPOSIT_TOPIC, "0x" + word(ACCOUNT)]}, "must have 3 topics, got 2"),
        (
            {"topics": [DEPOSIT_TOPIC, "0x" + word(ACCOUNT), "0x" + word(TOKEN), "0x" + word(1)]},
            "must have 3 topics, got 4",
        ),
        ({"topics": ["0x" + "11" * 32, "0x" + word(ACCOUNT), "0x" + word(TOKEN)]}, "not Deposit"),
        ({"topics": [DEPOSIT_TOPIC, "0x" + "ff" * 32, "0x" + word(TOKEN)]}, "account topic"),
        ({"topics": [DEPOSIT_TOPIC, "0x" + word(ACCOUNT), "0x1234"]}, "token topic"),
        ({"data": "0x"}, "got 0 bytes"),
        ({"data": "0x" + word(1) + word(2)}, "got 64 bytes"),
        ({"data": "0x" + "zz" * 32}, "one 32-byte word"),
        ({"blockNumber": None}, "blockNumber is not a hex quantity"),
        ({"blockHash": "0x1234"}, "blockHash is not a 32-byte hash"),
        ({"logIndex": "3"}, "logIndex is not a hex quantity"),
    ],
)
def test_malformed_logs_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedLogError, match=message):
        decode_deposit_log(raw_log(**overrides), CHAIN_ID)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"blockHash": "0x" + "Ab" * 32, "transactionHash": "0x" + "CD" * 32},
        {
            "topics": [
                DEPOSIT_TOPIC.upper().replace("0X", "0x"),
                "0x" + word(ACCOUNT),
                "0x" + word(TOKEN),
            ]
        },
        {"topics": [DEPOSIT_TOPIC, "0x" + word(ACCOUNT).upper(), "0x" + "00" * 32]},
        {"data": "0x" + "FF" * 32, "blockNumber": "0xABCDEF", "logIndex": "0x0"},
    ],
)
def test_fast_decoding_equals_the_field_by_field_checks(overrides: dict[str, Any]) -> None:
    raw = raw_log(**overrides)
    assert decode_deposit_log(raw, CHAIN_ID) == _decode_checked(raw, CHAIN_ID)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # Fields that only look right once joined: each must match on its own.
        (
            {"topics": [DEPOSIT_TOPIC, "0x" + "0" * 24 + "a" * 39, "a0x" + "0" * 24 + "b" * 40]},
            "account topic",
        ),
        ({"data": "0x" + "0" * 63, "blockHash": "0" + "0x" + "ab" * 32}, "one 32-byte word"),
        ({"blockNumber": 42}, "blockNumber is not a hex quantity"),
        ({"logIndex": "0x3,0x4"}, "logIndex is not a hex quantity"),
        ({"transactionHash": "0x" + "cd" * 31 + "c,"}, "transactionHash"),
        ({"topics": [DEPOSIT_TOPIC, None, "0x" + word(TOKEN)]}, "account topic"),
    ],
)
def test_fast_decoding_rejects_what_the_checks_reject(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(MalformedLogError, match=message):
        decode_deposit_log(raw_log(**overrides), CHAIN_ID)


def test_missing_field_is_malformed() -> None:
    log = raw_log()
    del log["transactionHash"]
    with pytest.raises(MalformedLogError, match="transactionHash"):
        decode_deposit_log(log, CHAIN_ID)


async def test_verify_drops_removed_dedups_and_sorts() -> None:
    logs = [
        raw_log(blockNumber="0x2b", logIndex="0x0", transactionHash="0x" + "01" * 32),
        raw_log(removed=True, transactionHash="0x" + "02" * 32),
        raw_log(),
        raw_log(),  # the same log twice
    ]
    out = await verify_deposit_logs(logs, chain_id=CHAIN_ID, vault=VAULT, from_block=0, to_block=99)
    assert [(d.block_number, d.log_index) for d in out] == [(42, 3), (43, 0)]


@pytest.mark.parametrize(
    ("log", "message"),
    [
        (raw_log(address=TOKEN), "for a filter on the vault"),
        (raw_log(blockNumber="0x64"), "outside the requested range"),
    ],
)
async def test_verify_rejects_foreign_logs(log: dict[str, Any], message: str) -> None:
    with pytest.raises(InconsistentLogsError, match=message):
        await verify_deposit_logs([log], chain_id=CHAIN_ID, vault=VAULT, from_block=0, to_block=99)
