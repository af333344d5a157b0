"""Deposit and chain-state repositories on SQLite and PostgreSQL: recording is
idempotent on the deposit key, crediting posts balanced journals once, reorg drops
orphan or reverse, re-inclusion re-points, and the history view."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from watcher.chain.logs import ZERO_ADDRESS, DepositLog
from watcher.domain.journal import CROSS, Leg, TxKind, vault_account
from watcher.domain.reorg import BlockRef
from watcher.settings import AssetConfig, NetworkConfig, Settings, TokenConfig
from watcher.store import chainstate, deposits, ledger
from watcher.store.db import SessionFactory
from watcher.store.ledger_batch import Posting, post_many
from watcher.store.models import Block, Deposit, JournalTransaction

ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
USDT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
OTHER = "0x000000000000000000000000000000000000dEaD"
CHAIN = 31337

NETWORK = NetworkConfig(
    name="devnet",
    chain_id=CHAIN,
    confirmations=3,
    block_time_seconds=Decimal(1),
    rpc_urls=["http://127.0.0.1:8545"],
    vault="0x5FbDB2315678afecb367f032d93F642f64180aa3",
    native_asset="ETH",
    tokens=[TokenConfig(symbol="USDT", asset="USDT", address=USDT, decimals=18)],
)
ASSETS = {
    "USDT": AssetConfig(precision=8, collateral_ratio=Decimal(1)),
    "ETH": AssetConfig(precision=8, collateral_ratio=Decimal("0.95")),
}


def h(n: int, fork: str = "a") -> str:
    return "0x" + (fork * 2 + f"{n:062x}")[-64:]


def dep(
    n: int, block: int, *, who: str = ALICE, token: str = USDT, amount: int = 10**18, fork="a"
) -> DepositLog:
    return DepositLog(
        chain_id=CHAIN,
        block_number=block,
        block_hash=h(block, fork),
        tx_hash="0x" + f"{n:064x}",
        log_index=0,
        account=who,
        token=token,
        amount=amount,
    )


@pytest.fixture(params=["by-key", "by-range"])
def lookup(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """deposits.by_keys looks a step's few logs up by key, a backfill's many by block
    range: each test below runs both ways."""
    if request.param == "by-range":
        monkeypatch.setattr(deposits, "KEY_LOOKUP_MAX", 0)
    return str(request.param)


async def cross_of(sessions: SessionFactory, key: str) -> dict[str, int]:
    async with sessions() as s:
        return await ledger.wallet_balances(s, key, CROSS)


async def test_recording_is_idempotent_and_final_logs_are_credited_at_once(
    sessions: SessionFactory, lookup: str
) -> None:
    logs = [
        dep(1, 10, amount=1_234_567_891_234_567_891),
        dep(2, 11, who=BOB, token=ZERO_ADDRESS, amount=10**17),
        dep(3, 12, token=OTHER),
        dep(4, 20),
    ]
    for _ in range(2):  # a replayed range changes nothing
        async with sessions.begin() as s:
            await deposits.record_logs(s, logs, NETWORK, ASSETS, final_upto=15)
    async with sessions() as s:
        rows = list(await s.scalars(select(Deposit).order_by(Deposit.block_number)))
    assert [r.state for r in rows] == ["credited", "credited", "unsupported", "pending"]
    assert (rows[0].ledger_amount, rows[0].dust) == (123_456_789, 1_234_567_891)
    assert rows[1].asset == "ETH" and rows[2].asset is None
    assert await cross_of(sessions, ALICE) == {"USDT": 123_456_789}
    assert await cross_of(sessions, BOB) == {"ETH": 10_000_000}
    assert await cross_of(sessions, vault_account(CHAIN)) == {
        "USDT": -123_456_789,
        "ETH": -10_000_000,
    }


async def test_by_keys_finds_what_the_logs_may_already_be(
    sessions: SessionFactory, lookup: str
) -> None:
    async with sessions.begin() as s:
        rec = await deposits.record_logs(
            s, [dep(1, 10), dep(2, 11), dep(3, 30)], NETWORK, ASSETS, final_upto=10
        )
        assert (rec.new, rec.credited) == (3, 1)
        dropped = await deposits.drop_above(s, CHAIN, 10)  # 11 and 30 orphaned
        assert len(dropped.orphaned) == 2
        await deposits.record_logs(s, [dep(4, 35)], NETWORK, ASSETS, final_upto=None)
    async with sessions.begin() as s:
        # A step above cursor 20: the orphaned row of block 11 (below the cursor, found
        # by its state), the ones at 30 and 35 (above it). The credited one at 10 only
        # by key: by range, a log of a canonical block below the cursor cannot be seen
        # again above it on a consistent chain, and is not looked for.
        logs = [dep(1, 21), dep(2, 22), dep(3, 30), dep(4, 36), dep(5, 41)]
        found = await deposits.by_keys(s, CHAIN, logs, above=20)
        expected = {"2": "orphaned", "3": "orphaned", "4": "pending"}
        if lookup == "by-key":
            expected["1"] = "credited"
        assert {k[0][-1]: r.state for k, r in found.items()} == expected
        assert await deposits.by_keys(s, CHAIN, [dep(9, 50)], above=45) == {}


async def test_a_credited_log_seen_again_elsewhere_is_left_as_is(
    sessions: SessionFactory,
) -> None:
    """An inconsistent chain shows a credited log again in another block: found by its
    key, it is logged and left as credited, never stored or credited twice."""
    async with sessions.begin() as s:
        await deposits.record_logs(s, [dep(1, 10)], NETWORK, ASSETS, final_upto=10)
    async with sessions.begin() as s:
        rec = await deposits.record_logs(s, [dep(1, 21)], NETWORK, ASSETS, final_upto=30)
    assert (rec.new, rec.repointed, rec.credited) == (0, 0, 0)
    async with sessions() as s:
        rows = list(await s.scalars(select(Deposit)))
    assert [(r.state, r.block_number) for r in rows] == [("credited", 10)]
    assert await cross_of(sessions, ALICE) == {"USDT": 100_000_000}


async def test_credit_then_reorg_reverses_and_reinclusion_credits_again(
    sessions: SessionFactory, lookup: str
) -> None:
    async with sessions.begin() as s:
        await deposits.record_logs(s, [dep(1, 10), dep(2, 12)], NETWORK, ASSETS, final_upto=None)
        await deposits.credit(s, await deposits.pending_upto(s, CHAIN, 10))
    assert await cross_of(sessions, ALICE) == {"USDT": 100_000_000}

    async with sessions.begin() as s:  # reorg above block 9
        dropped = await deposits.drop_above(s, CHAIN, 9)
    assert [d.state for d in dropped.reversed] == ["reversed"]
    assert [d.state for d in dropped.orphaned] == ["orphaned"]
    assert await cross_of(sessions, ALICE) == {"USDT": 0}

    # Both are re-included in the new fork at other heights: pending again, re-pointed.
    async with sessions.begin() as s:
        rec = await deposits.record_logs(
            s, [dep(1, 11, fork="b"), dep(2, 13, fork="b")], NETWORK, ASSETS, final_upto=None
        )
        assert rec.repointed == 2 and rec.new == 0
        await deposits.credit(s, await deposits.pending_upto(s, CHAIN, 13))
    async with sessions() as s:
        refs = sorted((await s.scalars(select(JournalTransaction.ref))).all())
        rows = list(await s.scalars(select(Deposit).order_by(Deposit.id)))
    tx1, tx2 = "0x" + f"{1:064x}", "0x" + f"{2:064x}"
    assert refs == sorted(
        [
            f"deposit:{CHAIN}:{tx1}:0",
            f"reversal:deposit:{CHAIN}:{tx1}:0",
            f"deposit:{CHAIN}:{tx1}:0#1",
            f"deposit:{CHAIN}:{tx2}:0",
        ]
    )
    assert [(r.state, r.block_number, r.block_hash) for r in rows] == [
        ("credited", 11, h(11, "b")),
        ("credited", 13, h(13, "b")),
    ]
    assert await cross_of(sessions, ALICE) == {"USDT": 200_000_000}


async def test_post_many_is_balanced_idempotent_and_matches_the_journal(
    sessions: SessionFactory,
) -> None:
    postings = [
        Posting(TxKind.DEPOSIT, f"r{i}", [Leg(ALICE, "USDT", i), Leg("system:x", "USDT", -i)])
        for i in range(1, 1201)
    ]
    async with sessions.begin() as s:
        first = await post_many(s, postings)
    async with sessions.begin() as s:
        again = await post_many(s, postings)
    assert first == again and len(first) == 1200
    total = sum(range(1, 1201))
    assert await cross_of(sessions, ALICE) == {"USDT": total}
    async with sessions() as s:
        sums = await ledger.journal_sums(s)
    assert sorted(sums.values()) == [-total, total]


async def test_chain_state_window_and_cursor(sessions: SessionFactory) -> None:
    blocks = [BlockRef(n, h(n), h(n - 1), 1000 + n) for n in range(5, 15)]
    async with sessions.begin() as s:
        row = await chainstate.ensure_cursor(s, CHAIN, "devnet", 5)
        assert row.scanned_block == 4
        await chainstate.store_blocks(s, CHAIN, blocks)
        await chainstate.store_blocks(s, CHAIN, [BlockRef(14, h(14, "b"), h(13), 1)])
        chainstate.advance(row, to=blocks[-1], head=20, head_time=None, safe=None, finalized=None)
        await chainstate.prune_blocks_below(s, CHAIN, 8)
        await chainstate.drop_blocks_above(s, CHAIN, 12)
    async with sessions() as s:
        window = await chainstate.canonical_window(s, CHAIN)
        row2 = await chainstate.cursor(s, CHAIN)
        assert sorted(window) == [8, 9, 10, 11, 12]
        assert (await s.scalar(select(Block.hash).where(Block.number == 12))) == h(12)
    assert row2 is not None and (row2.scanned_block, row2.head) == (14, 20)


async def test_deposit_history_shows_confirmations_and_eta(
    sessions: SessionFactory, tmp_path: Path
) -> None:
    settings = Settings(config_dir=tmp_path, assets=ASSETS, networks={"devnet": NETWORK})
    async with sessions.begin() as s:
        await deposits.record_logs(
            s,
            [
                dep(1, 10),
                dep(2, 12, token=ZERO_ADDRESS, amount=5 * 10**17),
                dep(3, 12, token=OTHER),
            ],
            NETWORK,
            ASSETS,
            final_upto=10,
        )
        row = await chainstate.ensure_cursor(s, CHAIN, "devnet", 0)
        row.head = 13
    async with sessions() as s:
        items = await deposits.deposit_history(s, ALICE.lower(), settings)
    by_tx = {i["txHash"][-1]: i for i in items}
    assert by_tx["1"] | {"time": None} == {
        "type": "deposit",
        "asset": "USDT",
        "amount": "1",
        "state": "credited",
        "txHash": "0x" + f"{1:064x}",
        "chainId": CHAIN,
        "time": None,
        "confirmations": 3,
        "requiredConfirmations": 3,
        "etaSeconds": 0,
    }
    assert (by_tx["2"]["amount"], by_tx["2"]["state"]) == ("0.5", "pending")
    assert (by_tx["2"]["confirmations"], by_tx["2"]["etaSeconds"]) == (2, 1)
    assert (by_tx["3"]["state"], by_tx["3"]["asset"]) == ("unsupported", OTHER)
    async with sessions() as s:
        assert await deposits.deposit_history(s, "not-an-address", settings) == []
