"""The intake's group commit and its per-account rules, on SQLite and PostgreSQL.

Requests that arrive while a batch is being written share the next DB transaction;
these tests pin what that must never change: decisions in arrival order on the state
including earlier holds of the batch, replays and twins inside one batch, rejections
that write nothing, a failed batch that retries each request alone, and the rules
that only the intake applies (24-hour USD limit, allow-list).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.helpers import write_config
from tests.integration.withdrawal_support import credit, usdt_body
from watcher.app import App, build
from watcher.chain.devnet import Deployment, dev_account
from watcher.domain.errors import DomainError
from watcher.domain.journal import CROSS, HOLD
from watcher.services import risk_gate
from watcher.services.intake import LINGER_BELOW, Accepted, Intake, WithdrawalRequest
from watcher.settings import load_settings
from watcher.store import ledger
from watcher.store.models import JournalTransaction, Withdrawal

A = dev_account(5)
B = dev_account(6)
C = dev_account(7)
DEST = "0x000000000000000000000000000000000000dEaD"
ALLOWED = "0x000000000000000000000000000000000000bEEF"

WITHDRAWALS_EXTRA = 'daily_limit_usd = "1000"\n'
TABLES_EXTRA = f"""
[withdrawals.allowlist]
"{C.address}" = ["{ALLOWED}"]
"""


async def make_app(tmp_path: Path, deployment: Deployment, db_url: str, *, limits: bool) -> App:
    cfg = write_config(
        tmp_path, [("devnet", deployment, 1)], default_toml_extra=TABLES_EXTRA if limits else ""
    )
    if limits:
        default = cfg / "default.toml"
        text = default.read_text()
        assert "[withdrawals]\n" in text
        default.write_text(text.replace("[withdrawals]\n", "[withdrawals]\n" + WITHDRAWALS_EXTRA))
    return await build(load_settings(cfg, env={"WATCHER_DATABASE_URL": db_url}), services=False)


@pytest.fixture
async def app(tmp_path: Path, deployment: Deployment, db_url: str) -> AsyncIterator[App]:
    a = await make_app(tmp_path, deployment, db_url, limits=False)
    try:
        await credit(a, A.address, "USDT", 1_000 * 10**8, "test:a")
        await credit(a, B.address, "USDT", 100 * 10**8, "test:b")
        yield a
    finally:
        await a.close()


@pytest.fixture
async def limited(tmp_path: Path, deployment: Deployment, db_url: str) -> AsyncIterator[App]:
    a = await make_app(tmp_path, deployment, db_url, limits=True)
    try:
        for user in (A, B, C):
            await credit(a, user.address, "USDT", 20_000 * 10**8, f"test:{user.address}")
        yield a
    finally:
        await a.close()


def request(
    deployment: Deployment, user: Any, whole: int, nonce: int, dest: str = DEST
) -> WithdrawalRequest:
    return WithdrawalRequest.from_json(usdt_body(deployment, user, whole, nonce, dest))


async def submit_all(intake: Intake, reqs: Sequence[WithdrawalRequest]) -> list[Any]:
    return await asyncio.gather(*(intake.submit(r) for r in reqs), return_exceptions=True)


def code(outcome: Any) -> str:
    if isinstance(outcome, DomainError):
        return outcome.code
    assert isinstance(outcome, Accepted), outcome
    return "created" if outcome.created else "replayed"


async def holds(app: App, user: Any) -> tuple[int, int]:
    async with app.sessions() as s:
        b = await ledger.balances(s, user.address)
    return b.get(("USDT", CROSS), 0), b.get(("USDT", HOLD), 0)


async def counts(app: App) -> tuple[int, int]:
    async with app.sessions() as s:
        w = await s.scalar(select(func.count()).select_from(Withdrawal))
        j = await s.scalar(select(func.count()).select_from(JournalTransaction))
    return int(w or 0), int(j or 0)


async def test_one_batch_decides_in_arrival_order(app: App, deployment: Deployment) -> None:
    intake = Intake(app.settings, app.sessions)
    before = await counts(app)
    reqs = [
        request(deployment, A, 400, 1),  # A 1000 → 600 left
        request(deployment, B, 100, 1),  # B 100 → 0 left
        request(deployment, A, 400, 2),  # → 200 left
        request(deployment, A, 400, 3),  # 400 > 200: refused
        request(deployment, A, 400, 1),  # the same signed request again: its twin
        request(deployment, A, 300, 2),  # nonce 2 again, another request
        request(deployment, C, 1, 1),  # never funded
        request(deployment, A, 200, 4),  # exactly what is left
    ]
    outcomes = await submit_all(intake, reqs)
    assert [code(o) for o in outcomes] == [
        "created",
        "created",
        "created",
        "INSUFFICIENT_WITHDRAWABLE",
        "replayed",
        "NONCE_REUSED",
        "INSUFFICIENT_WITHDRAWABLE",
        "created",
    ]
    # All eight were queued before the first transaction started: one batch.
    assert intake.batches == 1
    assert outcomes[4].withdrawal.id == outcomes[0].withdrawal.id
    assert await holds(app, A) == (0, 1_000 * 10**8)
    assert await holds(app, B) == (0, 100 * 10**8)
    # Four withdrawals and four holds were written, nothing else.
    assert await counts(app) == (before[0] + 4, before[1] + 4)
    async with app.sessions() as s:
        rows = list(await s.scalars(select(Withdrawal).order_by(Withdrawal.id)))
        hold_refs = {
            t.ref: t.id
            for t in await s.scalars(
                select(JournalTransaction).where(JournalTransaction.kind == "withdrawal_hold")
            )
        }
    assert [(r.account, int(r.nonce)) for r in rows] == [
        (A.address, 1),
        (B.address, 1),
        (A.address, 2),
        (A.address, 4),
    ]
    assert {r.hold_tx_id for r in rows} == {hold_refs[f"withdrawal:{r.id}:hold"] for r in rows}

    # A second round replays from the database, across batches.
    again = await submit_all(intake, [reqs[0], reqs[5], request(deployment, A, 1, 9)])
    assert [code(o) for o in again] == ["replayed", "NONCE_REUSED", "INSUFFICIENT_WITHDRAWABLE"]
    assert intake.batches == 2


async def test_requests_queued_during_a_batch_share_the_next(
    app: App, deployment: Deployment
) -> None:
    intake = Intake(app.settings, app.sessions, linger_s=0)  # the linger: tested below
    first = asyncio.ensure_future(intake.submit(request(deployment, A, 10, 1)))
    await asyncio.sleep(0)  # the first batch (one request) is now in flight
    assert intake.foreground.busy  # background chunks let it go first
    rest = [request(deployment, A, 10, n) for n in range(2, 12)]
    outcomes = [await first, *await submit_all(intake, rest)]
    assert {code(o) for o in outcomes} == {"created"}
    assert intake.batches == 2
    assert not intake.foreground.busy  # and are free again once the queue is empty
    assert await holds(app, A) == (890 * 10**8, 110 * 10**8)


async def test_a_lone_request_waits_the_linger_for_company(
    app: App, deployment: Deployment
) -> None:
    intake = Intake(app.settings, app.sessions, linger_s=0.5)
    first = asyncio.ensure_future(intake.submit(request(deployment, A, 10, 1)))
    await asyncio.sleep(0.05)
    assert not first.done()  # waiting for others to join its batch
    second = await intake.submit(request(deployment, A, 10, 2))
    assert [code(await first), code(second)] == ["created", "created"]
    assert intake.batches == 1
    # Without the linger the same two requests take a transaction each.
    # (Awaited, not timed: a loaded machine may take longer than any fixed sleep to
    # commit, but the request must commit alone, before the next one is even sent.)
    eager = Intake(app.settings, app.sessions, linger_s=0)
    third = asyncio.ensure_future(eager.submit(request(deployment, A, 10, 3)))
    assert code(await asyncio.wait_for(third, 10)) == "created"
    assert eager.batches == 1
    await eager.submit(request(deployment, A, 10, 4))
    assert eager.batches == 2
    assert await holds(app, A) == (960 * 10**8, 40 * 10**8)


async def test_a_queue_of_enough_requests_does_not_linger(app: App, deployment: Deployment) -> None:
    intake = Intake(app.settings, app.sessions, linger_s=30.0)
    reqs = [request(deployment, A, 1, n) for n in range(1, LINGER_BELOW + 1)]
    outcomes = await asyncio.wait_for(submit_all(intake, reqs), 10.0)
    assert {code(o) for o in outcomes} == {"created"}
    assert intake.batches == 1


async def test_a_failed_batch_retries_each_request_alone(
    app: App, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = risk_gate.LockedBatch.post_holds
    failures = []

    async def flaky(self: Any, session: Any, hs: Any, *rest: Any) -> list[int]:
        if len(hs) > 1:  # a database error in the middle of a batch's transaction
            failures.append(len(hs))
            raise RuntimeError("injected: connection lost")
        return await real(self, session, hs, *rest)

    monkeypatch.setattr(risk_gate.LockedBatch, "post_holds", flaky)
    intake = Intake(app.settings, app.sessions)
    reqs = [request(deployment, A, 300, n) for n in range(1, 5)] + [request(deployment, B, 50, 1)]
    outcomes = await submit_all(intake, reqs)
    assert failures == [4]  # four approved holds; the refused request posts none
    # Retried alone, in order: the same decisions as one batch would have made.
    assert [code(o) for o in outcomes] == [
        "created",
        "created",
        "created",
        "INSUFFICIENT_WITHDRAWABLE",
        "created",
    ]
    assert await holds(app, A) == (100 * 10**8, 900 * 10**8)
    assert await holds(app, B) == (50 * 10**8, 50 * 10**8)


async def test_a_request_whose_own_transaction_fails_gets_the_error(
    app: App, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Any, session: Any, hs: Any, *rest: Any) -> list[int]:
        raise RuntimeError("injected: disk full")

    monkeypatch.setattr(risk_gate.LockedBatch, "post_holds", broken)
    intake = Intake(app.settings, app.sessions)
    before = await counts(app)
    outcomes = await submit_all(
        intake, [request(deployment, A, 1, 1), request(deployment, A, 2, 2)]
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert not intake.foreground.busy  # a failing batch does not leave it busy
    assert await counts(app) == before
    assert await holds(app, A) == (1_000 * 10**8, 0)


async def test_daily_limit_counts_earlier_requests_of_the_same_batch(
    limited: App, deployment: Deployment
) -> None:
    intake = Intake(limited.settings, limited.sessions)
    outcomes = await submit_all(
        intake,
        [
            request(deployment, A, 600, 1),
            request(deployment, A, 300, 2),
            request(deployment, A, 200, 3),  # 1,100 USD in 24 h > 1,000
            request(deployment, A, 100, 4),  # exactly 1,000
            request(deployment, B, 1_000, 1),  # every account has its own limit
        ],
    )
    assert [code(o) for o in outcomes] == [
        "created",
        "created",
        "DAILY_LIMIT_EXCEEDED",
        "created",
        "created",
    ]
    refused = outcomes[2]
    assert refused.details["totalUsd"] == 1100 and refused.details["limitUsd"] == 1000
    # A later batch sees the stored withdrawals of the day.
    later = await submit_all(intake, [request(deployment, A, 1, 5)])
    assert [code(o) for o in later] == ["DAILY_LIMIT_EXCEEDED"]
    assert await holds(limited, A) == (19_000 * 10**8, 1_000 * 10**8)


async def test_allowlist(limited: App, deployment: Deployment) -> None:
    intake = Intake(limited.settings, limited.sessions)
    before = await counts(limited)
    with pytest.raises(DomainError) as refused:
        await intake.submit(request(deployment, C, 10, 1, DEST))
    assert refused.value.code == "DESTINATION_NOT_ALLOWED"
    assert await counts(limited) == before
    ok = await intake.submit(request(deployment, C, 10, 2, ALLOWED))
    assert ok.created and ok.withdrawal.state == "requested"
    # Another account without an allow-list may send anywhere.
    anywhere = await intake.submit(request(deployment, A, 10, 1, ALLOWED))
    assert anywhere.created
