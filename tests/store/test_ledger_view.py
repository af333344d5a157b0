"""The reconciler's ledger side of a vault asset (store/reconciliation.py) on SQLite and
PostgreSQL: dust, pending, settled-after and mined-unsettled equal what the rows say,
whatever the number of id ranges the dust sum reads, other tokens and chains left out."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.store.test_deposits_store import ASSETS, CHAIN, NETWORK, USDT, dep
from tests.store.test_query_plans import withdrawal as plan_withdrawal
from watcher.chain.logs import ZERO_ADDRESS
from watcher.store import deposits, ledger
from watcher.store import reconciliation as rec
from watcher.store.db import SessionFactory
from watcher.store.models import Deposit, Withdrawal

USER = "0x" + "11" * 20


def withdrawal(
    wid: int, state: str, block: int | None, amount: int, *, account_id: int, chain: int = CHAIN
) -> Withdrawal:
    """The plan test's withdrawal row, of USDT, mined in ``block`` on ``chain``."""
    row = plan_withdrawal(wid, USER, account_id, wid, state)
    row.chain_id, row.token, row.block_number = chain, USDT, block
    row.amount, row.ledger_amount = amount, amount // 10**10
    return row


@pytest.mark.asyncio
async def test_ledger_view_matches_the_rows(
    sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rec, "_CHUNK", 7)  # the dust sum over many id ranges
    # USDT (18 decimals, precision 8): the last 10 digits are dust. Some exact, some not.
    amounts = [10**18 + (n * 7919 if n % 3 else 0) for n in range(1, 41)]
    async with sessions.begin() as s:
        final = [dep(n, 10 + n, amount=a) for n, a in enumerate(amounts[:30], start=1)]
        await deposits.record_logs(s, final, NETWORK, ASSETS, final_upto=100)
        # Pending: 6 at or below the compared block (110: blocks 105-110), 4 above it.
        window = [dep(100 + n, 105 + n, amount=a) for n, a in enumerate(amounts[30:])]
        await deposits.record_logs(s, window, NETWORK, ASSETS, final_upto=None)
        # Native deposits with dust of their own: another token, left out.
        native = [dep(200 + n, 20, token=ZERO_ADDRESS, amount=10**18 + 3) for n in range(5)]
        await deposits.record_logs(s, native, NETWORK, ASSETS, final_upto=100)
        a = (await ledger.ensure_account(s, USER)).id
        s.add_all(
            [
                withdrawal(1, "completed", 108, 5 * 10**18, account_id=a),  # mined below
                withdrawal(2, "completed", 112, 7 * 10**18, account_id=a),  # mined above
                withdrawal(3, "confirming", 109, 11 * 10**18, account_id=a),  # unsettled
                withdrawal(4, "confirming", 111, 13 * 10**18, account_id=a),  # mined above
                withdrawal(5, "broadcast", None, 17 * 10**18, account_id=a),
                withdrawal(6, "completed", 115, 19 * 10**18, account_id=a, chain=1),
            ]
        )

    async with sessions() as s:
        view = await rec.ledger_view(
            s,
            chain_id=CHAIN,
            asset="USDT",
            token=USDT,
            token_decimals=18,
            ledger_precision=8,
            block=110,
        )
        rows = list(await s.scalars(select(Deposit).where(Deposit.token == USDT)))
    credited = [d for d in rows if d.state == "credited"]
    assert len(credited) == 30
    expected_dust = sum(d.dust for d in credited)
    assert expected_dust == sum(a % 10**10 for a in amounts[:30]) > 0
    assert view.dust == expected_dust
    assert view.pending == sum(amounts[30:36])
    assert view.settled_after == 7 * 10**18
    assert view.mined_unsettled == 11 * 10**18
