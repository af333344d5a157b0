"""The withdrawal repository on SQLite and PostgreSQL: state machine enforcement, the
three ledger postings (hold / settle / release) and their idempotency, nonce reservation,
and the (account, nonce) uniqueness that backs replay protection."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from watcher.domain.journal import CROSS, HOLD, Leg, TxKind, vault_account
from watcher.domain.states import IllegalTransition, WithdrawalState
from watcher.store import ledger
from watcher.store import withdrawals as repo
from watcher.store.db import SessionFactory
from watcher.store.models import TxAttempt, Withdrawal

USER = "0x00000000000000000000000000000000000000A1"


def row(account_id: int, nonce: int = 1, fee: int = 10) -> Withdrawal:
    return Withdrawal(
        account=USER,
        account_id=account_id,
        chain_id=31337,
        token="0x" + "22" * 20,
        asset="USDT",
        amount=1_000 * 10**10,
        ledger_amount=1_000 + fee,
        fee=fee,
        destination="0x" + "33" * 20,
        nonce=nonce,
        deadline=2**40,
        signature="0x" + "00" * 65,
        request_digest="0x" + "44" * 32,
        state="requested",
    )


def attempt(withdrawal_id: int, nonce: int, state: str, status: int | None = None) -> TxAttempt:
    return TxAttempt(
        withdrawal_id=withdrawal_id,
        chain_id=31337,
        sender="0x" + "55" * 20,
        nonce=nonce,
        tx_hash=f"0x{nonce:064x}",
        raw_tx="0x02",
        max_fee_per_gas=1,
        max_priority_fee_per_gas=1,
        state=state,
        status=status,
    )


async def funded(sessions: SessionFactory) -> int:
    async with sessions.begin() as s:
        await ledger.post(
            s,
            kind=TxKind.DEPOSIT,
            ref="dep",
            legs=[Leg(vault_account(31337), "USDT", -5_000), Leg(USER, "USDT", 5_000)],
            account_key=USER,
        )
        account = await ledger.find_account(s, USER)
        assert account is not None
        return account.id


async def test_hold_settle_moves_amount_to_vault_and_fee_to_fee_account(
    sessions: SessionFactory,
) -> None:
    account_id = await funded(sessions)
    async with sessions.begin() as s:
        w = row(account_id)
        s.add(w)
        await s.flush()
        await repo.post_all(s, [repo.hold_posting(w)])
        await repo.post_all(s, [repo.hold_posting(w)])  # idempotent on its ref
    async with sessions() as s:
        bal = await ledger.balances(s, USER)
    assert bal[("USDT", CROSS)] == 3_990 and bal[("USDT", HOLD)] == 1_010
    async with sessions.begin() as s:
        w2 = await repo.get(s, w.id)
        assert w2 is not None
        for state in (
            WithdrawalState.SIGNED,
            WithdrawalState.BROADCAST,
            WithdrawalState.CONFIRMING,
        ):
            repo.move(w2, state)
        repo.move(w2, WithdrawalState.COMPLETED)
        await repo.post_all(s, [repo.settle_posting(w2, "system:fees")])
        await repo.post_all(s, [repo.settle_posting(w2, "system:fees")])
    async with sessions() as s:
        bal = await ledger.balances(s, USER)
        vault = await ledger.balances(s, vault_account(31337))
        fees = await ledger.balances(s, "system:fees")
        sums = await ledger.journal_sums(s)
    assert bal[("USDT", HOLD)] == 0 and bal[("USDT", CROSS)] == 3_990
    assert vault[("USDT", CROSS)] == -5_000 + 1_000
    assert fees[("USDT", CROSS)] == 10
    assert sum(sums.values()) == 0


async def test_release_returns_the_hold_and_terminal_states_are_final(
    sessions: SessionFactory,
) -> None:
    account_id = await funded(sessions)
    async with sessions.begin() as s:
        w = row(account_id)
        s.add(w)
        await s.flush()
        await repo.post_all(s, [repo.hold_posting(w)])
        repo.move(w, WithdrawalState.CANCELLED, "by test")
        await repo.release(s, w, "cancelled")
        with pytest.raises(IllegalTransition):
            repo.move(w, WithdrawalState.SIGNED)
    async with sessions() as s:
        bal = await ledger.balances(s, USER)
    assert bal[("USDT", CROSS)] == 5_000 and bal[("USDT", HOLD)] == 0


async def test_account_nonce_is_unique(sessions: SessionFactory) -> None:
    account_id = await funded(sessions)
    async with sessions.begin() as s:
        s.add(row(account_id, nonce=7))
    with pytest.raises(IntegrityError):
        async with sessions.begin() as s:
            s.add(row(account_id, nonce=7))
    async with sessions() as s:
        found = await repo.find_by_account_nonce(s, USER, 7)
    assert found is not None


async def test_nonce_reservation_is_consecutive_and_persisted(sessions: SessionFactory) -> None:
    address = "0x" + "55" * 20
    async with sessions.begin() as s:
        with pytest.raises(LookupError):
            await repo.take_nonces(s, 31337, address, 1)
    async with sessions.begin() as s:
        await repo.set_next_nonce(s, 31337, address, 5)
    async with sessions.begin() as s:
        assert await repo.take_nonces(s, 31337, address, 3) == 5
    async with sessions.begin() as s:
        assert await repo.take_nonces(s, 31337, address, 1) == 8
    async with sessions() as s:
        stored = await repo.nonce_row(s, 31337, address)
    assert stored is not None and stored.next_nonce == 9


async def test_set_based_confirmations_and_completion(sessions: SessionFactory) -> None:
    """set_confirmations counts from each row's block; complete_paid moves only mined,
    successful attempts whose withdrawal is confirming, and returns what to settle."""

    account_id = await funded(sessions)
    async with sessions.begin() as s:
        ws = [row(account_id, nonce=n) for n in (1, 2, 3)]
        for w, state, block in zip(
            ws, ("confirming", "confirming", "broadcast"), (100, 104, None), strict=True
        ):
            w.state, w.block_number = state, block
        s.add_all(ws)
        await s.flush()
        attempts = [
            attempt(w.id, i, state, status)
            for i, (w, state, status) in enumerate(
                zip(ws, ("mined", "mined", "broadcast"), (1, 0, None), strict=True)
            )
        ]
        s.add_all(attempts)
        await s.flush()
        ids = [w.id for w in ws]
        attempt_ids = [a.id for a in attempts]

    async with sessions.begin() as s:
        await repo.set_confirmations(s, ids, head=105)
        done = await repo.complete_paid(s, attempt_ids)
    assert [(d.id, d.tx_hash, d.ledger_amount) for d in done] == [(ids[0], "0x" + "0" * 64, 1_010)]
    async with sessions() as s:
        got = {
            w.id: (w.state, w.confirmations, w.tx_hash) for w in await s.scalars(select(Withdrawal))
        }
        states = {a.id: a.state for a in await s.scalars(select(TxAttempt))}
    assert got[ids[0]] == ("completed", 6, "0x" + "0" * 64)
    assert got[ids[1]] == ("confirming", 2, None)  # reverted: left for the row-by-row path
    assert got[ids[2]] == ("broadcast", 0, None)  # no block yet
    assert [states[i] for i in attempt_ids] == ["confirmed", "mined", "broadcast"]


async def test_record_mined_takes_receipts_in_order_and_drops_siblings(
    sessions: SessionFactory,
) -> None:
    """The first receipt of a withdrawal is recorded (attempt mined, withdrawal
    confirming with its hash, block and confirmations); its not-mined siblings are
    dropped, so a later receipt of one of them is not recorded; an attempt already mined
    is left alone; a stalled withdrawal gets the hash and block but keeps its state."""
    account_id = await funded(sessions)
    async with sessions.begin() as s:
        ws = [row(account_id, nonce=n) for n in (1, 2, 3)]
        for w, state in zip(ws, ("broadcast", "signed", "stalled"), strict=True):
            w.state = state
        s.add_all(ws)
        await s.flush()
        a = [
            attempt(ws[0].id, 10, "broadcast"),  # receipt first: recorded
            attempt(ws[0].id, 11, "replaced"),  # receipt second: dropped as a sibling
            attempt(ws[0].id, 12, "signed"),  # sibling never sent: dropped
            attempt(ws[1].id, 13, "mined"),  # already mined: receipt not recorded again
            attempt(ws[2].id, 14, "broadcast"),
        ]
        s.add_all(a)
        await s.flush()
        a_ids, w_ids = [x.id for x in a], [w.id for w in ws]
    receipts = [
        repo.Receipt(a_ids[0], w_ids[0], 100, "0x" + "b1" * 32, 1),
        repo.Receipt(a_ids[1], w_ids[0], 101, "0x" + "b2" * 32, 0),
        repo.Receipt(a_ids[3], w_ids[1], 102, "0x" + "b3" * 32, 1),
        repo.Receipt(a_ids[4], w_ids[0], 105, "0x" + "b6" * 32, 1),  # not w0's attempt
        repo.Receipt(a_ids[4], w_ids[2], 103, "0x" + "b4" * 32, 1),
        repo.Receipt(10**9, w_ids[2], 104, "0x" + "b5" * 32, 1),  # no such attempt
    ]
    async with sessions.begin() as s:
        assert await repo.record_mined(s, receipts, head=104) == 2
    async with sessions() as s:
        got_a = {
            x.id: (x.state, x.block_number, x.block_hash)
            for x in await s.scalars(select(TxAttempt))
        }
        got_w = {
            w.id: (w.state, w.tx_hash, w.block_number, w.confirmations)
            for w in await s.scalars(select(Withdrawal))
        }
    assert got_a[a_ids[0]] == ("mined", 100, "0x" + "b1" * 32)
    assert got_a[a_ids[1]] == ("dropped", None, None)
    assert got_a[a_ids[2]] == ("dropped", None, None)
    assert got_a[a_ids[3]] == ("mined", None, None)
    assert got_a[a_ids[4]] == ("mined", 103, "0x" + "b4" * 32)
    assert got_w[w_ids[0]] == ("confirming", f"0x{10:064x}", 100, 5)
    assert got_w[w_ids[1]] == ("signed", None, None, 0)
    assert got_w[w_ids[2]] == ("stalled", f"0x{14:064x}", 103, 2)
    async with sessions.begin() as s:  # the same receipts again: nothing left to record
        assert await repo.record_mined(s, receipts, head=104) == 0
