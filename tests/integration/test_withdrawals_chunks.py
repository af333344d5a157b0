"""The sender and the tracker work through a large tick in chunks, one DB transaction
each (short holds of the writer connection). Chunk sizes are shrunk to 3 so that ten
withdrawals cross several chunk boundaries; on a real anvil with the real vault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account
from web3 import AsyncWeb3

from tests.integration.withdrawal_support import (
    credit,
    deposit_token,
    mine,
    run_pipeline,
    sender,
    signed_body,
    tracker,
    withdrawal_app,
    withdrawn_events,
)
from watcher.api.server import make_web_app
from watcher.app import App
from watcher.chain.devnet import Deployment, dev_account
from watcher.domain.journal import CROSS, HOLD
from watcher.services import sender as sender_mod
from watcher.services import tracker as tracker_mod
from watcher.services import withdrawal_ops
from watcher.services.foreground import Foreground
from watcher.store import ledger
from watcher.store import withdrawals as repo

pytestmark = pytest.mark.usefixtures("chain_snapshot")

N = 10
CHUNK = 3


@pytest.fixture
async def app(
    tmp_path: Path, deployment: Deployment, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[App]:
    monkeypatch.setattr(sender_mod, "SIGN_CHUNK", CHUNK)
    monkeypatch.setattr(tracker_mod, "TX_CHUNK", CHUNK)
    async with withdrawal_app(tmp_path, deployment, db_url, confirmations=2) as a:
        yield a


async def request_withdrawals(
    app: App, deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> tuple[list[int], list[str]]:
    """N funded accounts (the vault holds their tokens), one 1-USDT withdrawal each."""
    usdt = deployment.tokens["USDT"].address
    await deposit_token(chain_w3, dev_account(5), deployment, "USDT", 50 * 10**18)
    users = [Account.create() for _ in range(N)]
    ids: list[int] = []
    async with TestClient(TestServer(make_web_app(app))) as client:
        for i, user in enumerate(users):
            await credit(app, user.address, "USDT", 5 * 10**8, f"test:chunks:{i}")
            body = signed_body(
                user,
                deployment,
                token=usdt,
                amount="1",
                amount_units=10**18,
                destination=user.address,
                nonce=i,
            )
            resp = await client.post("/v1/withdrawals", json=body)
            assert resp.status == 202, await resp.text()
            ids.append((await resp.json())["id"])
    return ids, [u.address for u in users]


async def test_many_withdrawals_in_chunks_each_paid_and_settled_once(
    app: App, deployment: Deployment, chain_w3: AsyncWeb3[Any]
) -> None:
    ids, users = await request_withdrawals(app, deployment, chain_w3)
    events_before = len(await withdrawn_events(chain_w3, deployment))

    signed = await sender(app).sign_ready()
    assert signed == N  # one tick, four chunks (3 + 3 + 3 + 1)
    async with app.sessions() as s:
        attempts = {i: await repo.attempts_of(s, i) for i in ids}
    nonces = sorted(a.nonce for rows in attempts.values() for a in rows)
    assert nonces == list(range(nonces[0], nonces[0] + N))  # contiguous, none twice

    await run_pipeline(app, chain_w3, rounds=4)
    await mine(chain_w3, 2)
    await tracker(app).tick()

    async with app.sessions() as s:
        for wid, user in zip(ids, users, strict=True):
            w = await repo.get(s, wid)
            assert w is not None and w.state == "completed", (wid, w and w.state)
            rows = await repo.attempts_of(s, wid)
            assert [a.state for a in rows] == ["confirmed"]
            balances = await ledger.balances(s, user)
            assert balances[("USDT", HOLD)] == 0
            assert balances[("USDT", CROSS)] == 4 * 10**8
    assert len(await withdrawn_events(chain_w3, deployment)) - events_before == N


async def test_a_chunk_whose_rows_changed_is_not_persisted_and_the_rest_follow_next_tick(
    app: App,
    deployment: Deployment,
    chain_w3: AsyncWeb3[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids, users = await request_withdrawals(app, deployment, chain_w3)
    s_ = sender(app)
    real_persist = s_._persist
    calls: list[int] = []

    async def cancel_before_chunk_two(*args: Any, **kwargs: Any) -> bool:
        # Before chunk 2 is persisted, an operator cancels one of its withdrawals (read
        # as requested when the tick began) — a race the real parts cannot be made to
        # lose on cue.
        calls.append(1)
        if len(calls) == 2:
            await withdrawal_ops.cancel(app.sessions, ids[CHUNK + 1], "test")
        return await real_persist(*args, **kwargs)

    monkeypatch.setattr(s_, "_persist", cancel_before_chunk_two)
    assert await s_.sign_ready() == CHUNK  # chunk 2 dropped unsent, nothing after it
    async with app.sessions() as s:
        states = {i: (await repo.get(s, i)).state for i in ids}  # type: ignore[union-attr]
    assert [states[i] for i in ids[:CHUNK]] == ["broadcast"] * CHUNK  # sent before chunk 2
    assert states[ids[CHUNK + 1]] == "cancelled"
    assert all(states[i] == "requested" for i in ids[CHUNK:] if i != ids[CHUNK + 1])

    monkeypatch.setattr(s_, "_persist", real_persist)
    await run_pipeline(app, chain_w3, rounds=4)
    await mine(chain_w3, 2)
    await tracker(app).tick()
    async with app.sessions() as s:
        rows = [a for i in ids for a in await repo.attempts_of(s, i)]
        final = {i: (await repo.get(s, i)).state for i in ids}  # type: ignore[union-attr]
        held = await ledger.balances(s, users[CHUNK + 1])
    assert final[ids[CHUNK + 1]] == "cancelled"
    assert held[("USDT", CROSS)] == 5 * 10**8 and held[("USDT", HOLD)] == 0
    assert all(state == "completed" for i, state in final.items() if i != ids[CHUNK + 1])
    nonces = sorted(a.nonce for a in rows)
    assert nonces == list(range(nonces[0], nonces[0] + N - 1))  # no gap, none twice


async def test_a_tick_that_found_work_looks_again_within_its_time_budget(
    app: App, deployment: Deployment, chain_w3: AsyncWeb3[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 4: one tick signs and sends all ten (4 + 4 + 2) instead of leaving six
    for the next poll interval; with no time budget it stops after the first batch."""
    ids, _ = await request_withdrawals(app, deployment, chain_w3)
    s_ = sender(app)
    monkeypatch.setattr(s_, "settings", s_.settings.model_copy(update={"batch_size": 4}))

    monkeypatch.setattr(sender_mod, "BUSY_TICK_INTERVALS", 0)
    await s_.tick()
    assert s_.last.signed == 4

    monkeypatch.setattr(sender_mod, "BUSY_TICK_INTERVALS", 5)
    await s_.tick()
    assert s_.last.signed == N - 4
    async with app.sessions() as s:
        states = [(await repo.get(s, i)).state for i in ids]  # type: ignore[union-attr]
    assert states == ["broadcast"] * N


async def test_while_requests_come_in_the_chunks_are_smaller(
    app: App, deployment: Deployment, chain_w3: AsyncWeb3[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intake had a batch a moment ago: the sender and the tracker take at most the
    foreground's small chunk, and carry on with everything as usual."""
    ids, _ = await request_withdrawals(app, deployment, chain_w3)
    busy = Foreground(small_chunk=2, recent_s=60.0)
    busy.enter()
    busy.leave()
    s_, t_ = sender(app), tracker(app)
    s_.foreground = t_.foreground = busy
    signed: list[int] = []
    mined: list[int] = []
    real_persist, real_mined = s_._persist, t_._record_mined

    async def persist(chunk: Any, *args: Any) -> bool:
        signed.append(len(chunk))
        return await real_persist(chunk, *args)

    async def record_mined(found: Any, head: int) -> None:
        mined.append(len(found))
        await real_mined(found, head)

    monkeypatch.setattr(s_, "_persist", persist)
    monkeypatch.setattr(t_, "_record_mined", record_mined)
    assert await s_.sign_ready() == N
    assert signed == [2] * 5  # not the fixture's chunk of 3
    await s_.broadcast_signed()
    await mine(chain_w3, 1)
    await t_.tick()
    assert sum(mined) == N and max(mined) == 2
    await mine(chain_w3, 2)
    await t_.tick()
    async with app.sessions() as s:
        states = {(await repo.get(s, i)).state for i in ids}  # type: ignore[union-attr]
    assert states == {"completed"}


async def test_a_chunk_is_broadcast_while_the_next_one_is_signed_one_broadcast_at_a_time(
    app: App, deployment: Deployment, chain_w3: AsyncWeb3[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's answer to a chunk's broadcast is awaited while the next chunk is
    signed and persisted (the node is made slow to answer, so the overlap shows): the
    next persist starts before the broadcast ends; broadcasts never overlap each other,
    and all ten are paid once with contiguous nonces."""
    ids, _ = await request_withdrawals(app, deployment, chain_w3)
    s_ = sender(app)
    real_persist, real_broadcast = s_._persist, s_.broadcast_signed
    events: list[tuple[str, str]] = []
    running = 0
    most = 0

    async def persist(*args: Any, **kwargs: Any) -> bool:
        events.append(("persist", "start"))
        return await real_persist(*args, **kwargs)

    async def broadcast() -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        events.append(("broadcast", "start"))
        try:
            await asyncio.sleep(0.05)  # a node slow to answer
            return await real_broadcast()
        finally:
            events.append(("broadcast", "end"))
            running -= 1

    monkeypatch.setattr(s_, "_persist", persist)
    monkeypatch.setattr(s_, "broadcast_signed", broadcast)
    assert await s_.sign_ready() == N
    assert most == 1
    # The second chunk's persist started before the first chunk's broadcast ended (one
    # after the other, the broadcast would end before the next persist starts).
    second_persist = [i for i, e in enumerate(events) if e == ("persist", "start")][1]
    assert second_persist < events.index(("broadcast", "end")), events

    monkeypatch.setattr(s_, "broadcast_signed", real_broadcast)
    await all_paid_once_with_contiguous_nonces(app, chain_w3, ids)


async def test_a_failing_chunk_stops_the_broadcast_in_flight_and_the_next_tick_sends_it(
    app: App, deployment: Deployment, chain_w3: AsyncWeb3[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third chunk's transaction fails (a database fault injected): the error comes
    out of the tick, no broadcast task is left running, and what was persisted is sent
    by the next tick; all ten are paid once."""
    ids, _ = await request_withdrawals(app, deployment, chain_w3)
    s_ = sender(app)
    real_persist = s_._persist
    calls = 0

    async def persist(*args: Any, **kwargs: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("injected: the database went away")
        return await real_persist(*args, **kwargs)

    monkeypatch.setattr(s_, "_persist", persist)
    with pytest.raises(RuntimeError, match="injected"):
        await s_.sign_ready()
    assert not [t for t in asyncio.all_tasks() if t.get_name().endswith(":broadcast")]

    monkeypatch.setattr(s_, "_persist", real_persist)
    await all_paid_once_with_contiguous_nonces(app, chain_w3, ids)


async def all_paid_once_with_contiguous_nonces(
    app: App, chain_w3: AsyncWeb3[Any], ids: list[int]
) -> None:
    """Run the pipeline to the end: every withdrawal completed, one attempt each, their
    nonces contiguous."""
    await run_pipeline(app, chain_w3, rounds=4)
    await mine(chain_w3, 2)
    await tracker(app).tick()
    async with app.sessions() as s:
        states = [(await repo.get(s, i)).state for i in ids]  # type: ignore[union-attr]
        nonces = sorted([a.nonce for i in ids for a in await repo.attempts_of(s, i)])
    assert states == ["completed"] * len(ids)
    assert nonces == list(range(nonces[0], nonces[0] + len(ids)))
