"""Withdrawals, their transaction attempts and the hot wallets' nonces.

Every state change goes through :func:`move` / :func:`move_attempt`, which check the
transition against ``watcher.domain.states`` first: an illegal one raises and the
caller's DB transaction rolls back. The ledger side of a withdrawal is three journal
transactions with fixed refs, so each is posted at most once whatever retries:

* ``withdrawal:<id>:hold``    cross → hold, amount + fee (at intake)
* ``withdrawal:<id>:settle``  hold → ``system:vault:<chain>`` (amount) and the fee
                              account (fee), when the payout is final
* ``withdrawal:<id>:release`` hold → cross, amount + fee (failed, rejected, cancelled)

Each state change is logged at INFO once its transaction commits
(:func:`watcher.store.events.after_commit`): ``withdrawal broadcast id=… tx=…``
(:func:`mark_broadcast`), ``withdrawal mined id=… tx=… block=… status=…``
(:func:`record_mined`), ``withdrawal completed id=… chain=… account=… asset=… tx=…``
(:func:`complete_paid`), and ``withdrawal <state> id=… chain=… account=… asset=… tx=…
reason=…`` for every :func:`move` (queued, failed, stalled, cancelled, rejected, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Select, Table, Update, bindparam, case, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import object_session

from watcher.domain.confirmations import confirmations
from watcher.domain.journal import CROSS, HOLD, Leg, TxKind, transfer, vault_account
from watcher.domain.states import (
    AttemptState,
    WithdrawalState,
    check_attempt,
    check_withdrawal,
)
from watcher.store import ledger
from watcher.store.bulk import insert_many, reserve_ids, reserve_ids_many
from watcher.store.events import after_commit
from watcher.store.keys import KeyColumn, select_by_keys
from watcher.store.ledger_batch import Posting, post_many
from watcher.store.models import (
    JournalTransaction,
    SenderNonce,
    TxAttempt,
    Withdrawal,
    table_of,
    utcnow,
)
from watcher.store.prepared import Prepared, ValueList, any_of, rows, run

log = logging.getLogger("watcher.withdrawals")

W = WithdrawalState
A = AttemptState

_CHUNK = 5000  # IN-list size: under SQLite's and asyncpg's parameter limits


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    """The distinct ids, ascending, in IN-list sized chunks."""
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), _CHUNK):
        yield wanted[start : start + _CHUNK]


_ATTEMPTS = table_of(TxAttempt)
_WITHDRAWALS = table_of(Withdrawal)
_NONCES = table_of(SenderNonce)


def _ids_in(dialect: str, table: Table, column: str = "id", param: str = "ids") -> Any:
    """``table.column`` is one of the :class:`ValueList` parameter ``param``."""
    return text(any_of(dialect, f"{table.name}.{column}", param, "bigint[]"))


def _now(table: Table) -> Any:
    """The ``now`` parameter, typed as the table's ``updated_at``."""
    return bindparam("now", type_=table.c.updated_at.type)


# The replay key (unique): nonce is sent as text, cast to NUMERIC on PostgreSQL.
_ACCOUNT_NONCE = (KeyColumn("account", "text[]"), KeyColumn("nonce", "text[]", "numeric[]"))

# Attempts that may still be (or become) mined.
LIVE_ATTEMPTS = (A.SIGNED.value, A.BROADCAST.value, A.REPLACED.value, A.MINED.value)
# Sent, no receipt recorded yet: what the tracker asks receipts for.
MINABLE_ATTEMPTS = (A.BROADCAST.value, A.REPLACED.value)
# Not mined: dropped once another transaction takes its nonce.
DROPPABLE_ATTEMPTS = (A.SIGNED.value, *MINABLE_ATTEMPTS)


# ------------------------------------------------------------------ reads


async def get(
    session: AsyncSession, withdrawal_id: int, *, lock: bool = False
) -> Withdrawal | None:
    return await session.get(Withdrawal, withdrawal_id, with_for_update=lock)


async def find_by_account_nonce(
    session: AsyncSession, account: str, nonce: int
) -> Withdrawal | None:
    return await session.scalar(
        select(Withdrawal).where(Withdrawal.account == account, Withdrawal.nonce == nonce)
    )


async def find_by_account_nonces(
    session: AsyncSession, pairs: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], Withdrawal]:
    """:func:`find_by_account_nonce` for many (account, nonce) pairs, one query."""
    # The ids first, by key through the unique index (nearly always none: a replay is
    # rare); then the rows of those ids.
    ids = await select_by_keys(
        session,
        "withdrawals",
        _ACCOUNT_NONCE,
        [_WITHDRAWALS.c.id],
        [(account, str(nonce)) for account, nonce in pairs],
    )
    if not ids:
        return {}
    rows = await session.scalars(select(Withdrawal).where(Withdrawal.id.in_([i for (i,) in ids])))
    return {(w.account, w.nonce): w for w in rows}


async def listing(
    session: AsyncSession, *, state: str | None = None, limit: int = 50
) -> list[Withdrawal]:
    stmt = select(Withdrawal).order_by(Withdrawal.id.desc()).limit(limit)
    if state:
        stmt = stmt.where(Withdrawal.state == state)
    return list(await session.scalars(stmt))


class Ready(NamedTuple):
    """What the sender needs of a withdrawal waiting for a transaction."""

    id: int
    token: str
    destination: str
    amount: int
    state: str
    reason: str | None
    # The user's signed request, shown to the co-signers.
    account: str
    nonce: int
    deadline: int
    signature: str
    created_at: datetime


async def ready_to_send(session: AsyncSession, chain_id: int, limit: int) -> list[Ready]:
    """Approved withdrawals waiting for a transaction, oldest first (locked on PG);
    columns only, as the sender reads them every tick."""
    found = await rows(session, _READY, {"chain_id": chain_id, "limit": limit})
    return [Ready._make(r) for r in found]


def _build_ready(dialect: str) -> Select[Any]:
    c = _WITHDRAWALS.c
    stmt = (
        select(*(c[name] for name in Ready._fields))
        .where(
            c.chain_id == bindparam("chain_id"),
            or_(c.state == W.REQUESTED.value, c.state == W.QUEUED.value),
            # Refused for good by the co-signers: waits for an operator, not re-asked.
            or_(c.reason.is_(None), ~c.reason.startswith(REFUSED_PREFIX, autoescape=True)),
        )
        .order_by(c.id)
        .limit(bindparam("limit"))
    )
    if dialect == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return stmt


_READY = Prepared(_build_ready)


async def states_of(
    session: AsyncSession, ids: Sequence[int], *, lock: bool = False
) -> dict[int, str]:
    """{id: state} of these withdrawals (rows locked on PostgreSQL with ``lock``)."""
    out: dict[int, str] = {}
    for chunk in _chunks(ids):
        found = await rows(session, _STATES_LOCKED if lock else _STATES, {"ids": ValueList(chunk)})
        out.update({int(i): str(st) for i, st in found})
    return out


def _build_states(dialect: str, lock: bool) -> Select[Any]:
    c = _WITHDRAWALS.c
    stmt = select(c.id, c.state).where(_ids_in(dialect, _WITHDRAWALS))
    if lock and dialect == "postgresql":
        stmt = stmt.order_by(c.id).with_for_update()
    return stmt


_STATES = Prepared(lambda d: _build_states(d, lock=False))
_STATES_LOCKED = Prepared(lambda d: _build_states(d, lock=True))


#: The reason prefix of a withdrawal the co-signers refused for good
#: (``services.cosigning.REFUSED_PREFIX``; the store keeps its own copy of the text).
REFUSED_PREFIX = "cosign_refused"


async def set_cosignatures(session: AsyncSession, signed: dict[int, tuple[int, str]]) -> None:
    """Store each withdrawal's payout deadline and co-signatures ({id: (deadline, json)}),
    in the transaction that stores the signed transaction carrying them."""
    if not signed:
        return
    c = _WITHDRAWALS.c
    await session.execute(
        update(_WITHDRAWALS)
        .where(c.id == bindparam("wid"))
        .values(payout_deadline=bindparam("pd"), cosignatures=bindparam("cs")),
        [{"wid": i, "pd": d, "cs": j} for i, (d, j) in signed.items()],
        execution_options={"synchronize_session": False},
    )


async def mark_signed(session: AsyncSession, ids: Sequence[int]) -> None:
    """``requested``/``queued`` → ``signed`` with the hash of the attempt just stored
    for each (set-based; the caller checked the states under its locks). Raises if any
    row was not moved, so the caller's transaction rolls back whole."""
    for old in (W.REQUESTED, W.QUEUED):
        check_withdrawal(old, W.SIGNED)
    now = utcnow()
    moved = 0
    for chunk in _chunks(ids):
        done = await rows(session, _MARK_SIGNED, {"ids": ValueList(chunk), "now": now})
        moved += len(done)
    if moved != len(set(ids)):
        raise RuntimeError(f"signing {len(set(ids))} withdrawals moved {moved}: state changed")


def _newest_attempt_hash(*where: Any) -> Any:
    """The hash of the withdrawal's newest attempt matching ``where`` (correlated to the
    row an ``UPDATE withdrawals`` is setting)."""
    a = _ATTEMPTS.c
    return (
        select(a.tx_hash)
        .where(a.withdrawal_id == _WITHDRAWALS.c.id, *where)
        .order_by(a.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _build_mark_signed(dialect: str) -> Update:
    a, w = _ATTEMPTS.c, _WITHDRAWALS.c
    signed_hash = _newest_attempt_hash(a.state == A.SIGNED.value)
    return (
        update(_WITHDRAWALS)
        .where(_ids_in(dialect, _WITHDRAWALS))
        .where(or_(w.state == W.REQUESTED.value, w.state == W.QUEUED.value))
        .values(
            state=W.SIGNED.value, tx_hash=signed_hash, reason=None, updated_at=_now(_WITHDRAWALS)
        )
        .returning(w.id)
    )


_MARK_SIGNED = Prepared(_build_mark_signed)


async def in_flight_outflow(session: AsyncSession, chain_id: int) -> dict[str, int]:
    """Token base units signed or broadcast but not yet mined, per token address: the
    vault still holds them, but they are spoken for."""
    out: dict[str, int] = {}
    for token, count, amount in await rows(session, _OUTFLOW, {"chain_id": chain_id}):
        out[token] = out.get(token, 0) + int(count) * int(amount)
    return out


def _unmined_where() -> Any:
    c = _WITHDRAWALS.c
    return (
        c.chain_id == bindparam("chain_id"),
        or_(c.state == W.SIGNED.value, c.state == W.BROADCAST.value),
    )


_OUTFLOW = Prepared(
    lambda _d: (
        select(_WITHDRAWALS.c.token, func.count(), _WITHDRAWALS.c.amount)
        .where(*_unmined_where())
        .group_by(_WITHDRAWALS.c.token, _WITHDRAWALS.c.amount)
    )
)
_UNMINED = Prepared(
    lambda _d: select(func.count()).select_from(_WITHDRAWALS).where(*_unmined_where())
)


async def count_unmined(session: AsyncSession, chain_id: int) -> int:
    value = (await run(session, _UNMINED, {"chain_id": chain_id})).scalar()
    return int(value or 0)


async def attempts_in(
    session: AsyncSession, chain_id: int, states: Sequence[str], *, sender: str | None = None
) -> list[TxAttempt]:
    stmt = (
        select(TxAttempt)
        .where(TxAttempt.chain_id == chain_id, TxAttempt.state.in_(list(states)))
        .order_by(TxAttempt.nonce, TxAttempt.id)
    )
    if sender is not None:
        stmt = stmt.where(TxAttempt.sender == sender)
    return list(await session.scalars(stmt))


class AttemptRef(NamedTuple):
    """The columns of an attempt the tracker polls with (no raw bytes, no timestamps):
    cheap to read every tick for thousands of attempts in flight."""

    id: int
    withdrawal_id: int
    nonce: int
    tx_hash: str
    block_number: int | None
    block_hash: str | None
    status: int | None


async def attempt_refs(
    session: AsyncSession, chain_id: int, states: Sequence[str], *, sender: str
) -> list[AttemptRef]:
    found = await _by_state(session, _ATTEMPT_REFS, chain_id, states, sender)
    return [AttemptRef._make(row) for row in found]


class SignedRaw(NamedTuple):
    """An attempt to broadcast: its ids and signed bytes."""

    id: int
    withdrawal_id: int
    raw_tx: str


async def raw_in(
    session: AsyncSession, chain_id: int, states: Sequence[str], *, sender: str
) -> list[SignedRaw]:
    """The attempts of ``sender`` in ``states``, nonce order: ids and signed bytes only
    (what a broadcast needs, without loading ORM objects)."""
    found = await _by_state(session, _SIGNED_RAW, chain_id, states, sender)
    return [SignedRaw._make(row) for row in found]


def _attempts_by_state(columns: Sequence[str]) -> Prepared:
    """``columns`` of one sender's attempts in some states on a chain, nonce order."""

    def build(dialect: str) -> Select[Any]:
        c = _ATTEMPTS.c
        return (
            select(*(c[name] for name in columns))
            .where(
                c.chain_id == bindparam("chain_id"),
                text(any_of(dialect, "tx_attempts.state", "states", "text[]")),
                c.sender == bindparam("sender"),
            )
            .order_by(c.nonce, c.id)
        )

    return Prepared(build)


_ATTEMPT_REFS = _attempts_by_state(AttemptRef._fields)
_SIGNED_RAW = _attempts_by_state(SignedRaw._fields)


async def _by_state(
    session: AsyncSession, prepared: Prepared, chain_id: int, states: Sequence[str], sender: str
) -> Sequence[Any]:
    params = {"chain_id": chain_id, "states": ValueList(states), "sender": sender}
    return await rows(session, prepared, params)


async def attempts_of(session: AsyncSession, withdrawal_id: int) -> list[TxAttempt]:
    return list(
        await session.scalars(
            select(TxAttempt).where(TxAttempt.withdrawal_id == withdrawal_id).order_by(TxAttempt.id)
        )
    )


_Row = TypeVar("_Row", TxAttempt, Withdrawal)


async def _by_id(session: AsyncSession, model: type[_Row], ids: Sequence[int]) -> dict[int, _Row]:
    out: dict[int, _Row] = {}
    for chunk in _chunks(ids):
        rows = await session.scalars(select(model).where(model.id.in_(chunk)))
        out.update({r.id: r for r in rows})
    return out


async def attempts_by_id(session: AsyncSession, ids: Sequence[int]) -> dict[int, TxAttempt]:
    return await _by_id(session, TxAttempt, ids)


async def attempts_of_many(
    session: AsyncSession, withdrawal_ids: Sequence[int]
) -> dict[int, list[TxAttempt]]:
    """Every attempt of each withdrawal, oldest first."""
    out: dict[int, list[TxAttempt]] = {i: [] for i in withdrawal_ids}
    for chunk in _chunks(withdrawal_ids):
        rows = await session.scalars(
            select(TxAttempt).where(TxAttempt.withdrawal_id.in_(chunk)).order_by(TxAttempt.id)
        )
        for a in rows:
            out[a.withdrawal_id].append(a)
    return out


async def withdrawals_by_id(session: AsyncSession, ids: Sequence[int]) -> dict[int, Withdrawal]:
    return await _by_id(session, Withdrawal, ids)


async def held_since_many(
    session: AsyncSession, accounts: Sequence[str], since: datetime
) -> dict[str, list[tuple[str, int]]]:
    """(asset, ledger amount incl. fee) of each account's withdrawals since ``since`` that
    are paid or may still be paid (everything but failed, rejected, cancelled), one
    query; every account gets a list."""
    gone = (W.FAILED.value, W.REJECTED.value, W.CANCELLED.value)
    out: dict[str, list[tuple[str, int]]] = {a: [] for a in accounts}
    if not accounts:
        return out
    rows = await session.execute(
        select(Withdrawal.account, Withdrawal.asset, Withdrawal.ledger_amount).where(
            Withdrawal.account.in_(sorted(set(accounts))),
            Withdrawal.created_at >= since,
            Withdrawal.state.not_in(gone),
        )
    )
    for account, asset, amount in rows:
        out[account].append((asset, int(amount)))
    return out


async def counts_by_state(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Withdrawal.state, func.count()).group_by(Withdrawal.state))
    return {state: int(n) for state, n in rows}


async def new_ids(session: AsyncSession, count: int) -> list[int]:
    """``count`` new withdrawal ids, ascending, for :func:`insert_new` in the same DB
    transaction. PostgreSQL takes them from the id sequence; SQLite continues after
    the highest id (the transaction holds the single writer lock since ``BEGIN
    IMMEDIATE``, so no other writer can take them before the commit). An id is also
    the vault's on-chain withdrawal id, so it is never reused."""
    return await reserve_ids(session, _WITHDRAWALS, count)


async def new_ids_with_holds(session: AsyncSession, count: int) -> tuple[list[int], list[int]]:
    """:func:`new_ids` and as many journal transaction ids (for the withdrawals' holds,
    :meth:`~watcher.store.ledger_batch.post_many` ``tx_ids``) in one statement."""
    ids, hold_ids = await reserve_ids_many(
        session, [(_WITHDRAWALS, count), (table_of(JournalTransaction), count)]
    )
    return ids, hold_ids


_NEW_COLUMNS = (
    "id",
    "account",
    "account_id",
    "chain_id",
    "token",
    "asset",
    "amount",
    "ledger_amount",
    "fee",
    "destination",
    "nonce",
    "deadline",
    "signature",
    "request_digest",
    "state",
    "reason",
    "tx_hash",
    "block_number",
    "confirmations",
    "hold_tx_id",
    "created_at",
    "updated_at",
    "payout_deadline",
    "cosignatures",
)


async def insert_new(session: AsyncSession, rows: Sequence[Withdrawal]) -> None:
    """Write new withdrawals (ids from :func:`new_ids`, every column set) with one
    driver-level multi-row insert; the objects stay transient (they are the answers)."""
    if not rows:
        return
    now = utcnow()
    for w in rows:
        if w.id is None:
            raise ValueError("insert_new: a withdrawal without an id (use new_ids)")
        w.confirmations = w.confirmations or 0
        w.created_at = w.created_at or now
        w.updated_at = w.updated_at or now
    table = _WITHDRAWALS
    await insert_many(session, table, {c: [getattr(w, c) for w in rows] for c in _NEW_COLUMNS})


# ------------------------------------------------------------------ state changes


def move(w: Withdrawal, new: WithdrawalState, reason: str | None = None) -> None:
    """Change a withdrawal's state after checking the transition is allowed."""
    old = WithdrawalState(w.state)
    check_withdrawal(old, new)
    w.state = new.value
    w.reason = reason
    w.updated_at = utcnow()
    session = object_session(w)
    if session is not None:
        # Read at commit: the caller may set the tx hash after the move.
        after_commit(
            session,
            log,
            "withdrawal %s id=%d chain=%d account=%s asset=%s tx=%s reason=%s",
            lambda: (w.state, w.id, w.chain_id, w.account, w.asset, w.tx_hash, w.reason),
            extra={"withdrawal_id": w.id, "chain_id": w.chain_id},
        )


def move_attempt(a: TxAttempt, new: AttemptState) -> None:
    check_attempt(AttemptState(a.state), new)
    a.state = new.value
    a.updated_at = utcnow()


async def mark_broadcast(
    session: AsyncSession, attempt_ids: Sequence[int], *, head: int
) -> list[int]:
    """Attempts that are still ``signed`` → ``broadcast`` (stamped with the time and the
    head block), and their withdrawals that are still ``signed`` → ``broadcast``, with
    two set-based UPDATEs guarded by the from-state (an attempt the tracker already
    moved is left alone). Returns the ids of the attempts moved."""
    check_attempt(A.SIGNED, A.BROADCAST)
    check_withdrawal(W.SIGNED, W.BROADCAST)
    now = utcnow()
    moved: list[int] = []
    owners: list[int] = []
    for chunk in _chunks(attempt_ids):
        params = {"ids": ValueList(chunk), "now": now, "head": head}
        for attempt_id, withdrawal_id, tx_hash in await rows(session, _ATTEMPTS_BROADCAST, params):
            moved.append(int(attempt_id))
            owners.append(int(withdrawal_id))
            after_commit(
                session,
                log,
                "withdrawal broadcast id=%d tx=%s",
                (withdrawal_id, tx_hash),
                extra={"withdrawal_id": withdrawal_id},
            )
    for chunk in _chunks(owners):
        await run(session, _WITHDRAWALS_BROADCAST, {"ids": ValueList(chunk), "now": now})
    return moved


_ATTEMPTS_BROADCAST = Prepared(
    lambda d: (
        update(_ATTEMPTS)
        .where(_ids_in(d, _ATTEMPTS))
        .where(_ATTEMPTS.c.state == A.SIGNED.value)
        .values(
            state=A.BROADCAST.value,
            broadcast_at=bindparam("now", type_=_ATTEMPTS.c.broadcast_at.type),
            broadcast_block=bindparam("head", type_=_ATTEMPTS.c.broadcast_block.type),
            updated_at=_now(_ATTEMPTS),
        )
        .returning(_ATTEMPTS.c.id, _ATTEMPTS.c.withdrawal_id, _ATTEMPTS.c.tx_hash)
    )
)
_WITHDRAWALS_BROADCAST = Prepared(
    lambda d: (
        update(_WITHDRAWALS)
        .where(_ids_in(d, _WITHDRAWALS))
        .where(_WITHDRAWALS.c.state == W.SIGNED.value)
        .values(state=W.BROADCAST.value, reason=None, updated_at=_now(_WITHDRAWALS))
    )
)


class Receipt(NamedTuple):
    """What the tracker records of an attempt's receipt."""

    attempt_id: int
    withdrawal_id: int  # the attempt's (as the caller read it; an attempt not of it is skipped)
    block_number: int
    block_hash: str
    status: int


async def record_mined(session: AsyncSession, receipts: Sequence[Receipt], head: int) -> int:
    """Attempts with a receipt → ``mined`` (block, hash, status), their withdrawals →
    ``confirming`` (from ``signed``/``broadcast``; tx hash, block, confirmations set in
    any state), and every other not-mined attempt of those withdrawals → ``dropped``
    (its nonce is taken). Receipts are taken in order: an attempt already dropped as
    the sibling of an earlier one is not recorded. Reads the attempts of the receipts'
    withdrawals in one query per chunk and writes with executemany / set-based UPDATEs
    guarded by the from-state. Returns how many were recorded."""
    for old in MINABLE_ATTEMPTS:
        check_attempt(AttemptState(old), A.MINED)
    for old in DROPPABLE_ATTEMPTS:  # a signed one by way of replaced, as the state machine has it
        check_attempt(AttemptState(old), A.DROPPED if old != A.SIGNED.value else A.REPLACED)
    check_withdrawal(W.SIGNED, W.CONFIRMING)
    check_withdrawal(W.BROADCAST, W.CONFIRMING)
    if not receipts:
        return 0
    # Every attempt of the withdrawals concerned: its withdrawal, state and hash.
    owner: dict[int, tuple[int, str]] = {}  # attempt id -> (withdrawal id, tx hash)
    state: dict[int, str] = {}
    siblings: dict[int, list[int]] = {}
    for chunk in _chunks({r.withdrawal_id for r in receipts}):
        for i, w, st, h in await rows(session, _FAMILY, {"ids": ValueList(chunk)}):
            owner[int(i)] = (int(w), str(h))
            state[int(i)] = str(st)
            siblings.setdefault(int(w), []).append(int(i))
    now = utcnow()
    mined: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    dropped: list[int] = []
    for r in receipts:
        found = owner.get(r.attempt_id)
        if found is None or found[0] != r.withdrawal_id:
            continue  # not an attempt of the withdrawal the receipt names
        if state[r.attempt_id] not in MINABLE_ATTEMPTS:
            continue
        withdrawal_id, tx_hash = found
        state[r.attempt_id] = A.MINED.value
        mined.append(
            {
                "a_id": r.attempt_id,
                "a_block": r.block_number,
                "a_hash": r.block_hash,
                "a_status": r.status,
                "now": now,
            }
        )
        moved.append(
            {
                "w_id": withdrawal_id,
                "w_hash": tx_hash,
                "w_block": r.block_number,
                "w_conf": confirmations(head, r.block_number),
                "now": now,
            }
        )
        after_commit(
            session,
            log,
            "withdrawal mined id=%d tx=%s block=%d status=%d",
            (withdrawal_id, tx_hash, r.block_number, r.status),
            extra={"withdrawal_id": withdrawal_id},
        )
        for sibling in siblings[withdrawal_id]:
            if sibling != r.attempt_id and state[sibling] in DROPPABLE_ATTEMPTS:
                state[sibling] = A.DROPPED.value
                dropped.append(sibling)
    if mined:
        await run(session, _MINED, mined)
        await run(session, _CONFIRMING, moved)
    for chunk in _chunks(dropped):
        await run(session, _DROPPED, {"ids": ValueList(chunk), "now": now})
    return len(mined)


_FAMILY = Prepared(
    lambda d: select(
        *(_ATTEMPTS.c[name] for name in ("id", "withdrawal_id", "state", "tx_hash"))
    ).where(_ids_in(d, _ATTEMPTS, "withdrawal_id"))
)
_MINED = Prepared(
    lambda _d: (
        update(_ATTEMPTS)
        .where(_ATTEMPTS.c.id == bindparam("a_id"))
        # Equalities, not IN: an expanding IN list cannot go into an executemany.
        .where(or_(*(_ATTEMPTS.c.state == st for st in MINABLE_ATTEMPTS)))
        .values(
            state=A.MINED.value,
            block_number=bindparam("a_block"),
            block_hash=bindparam("a_hash"),
            status=bindparam("a_status"),
            updated_at=_now(_ATTEMPTS),
        )
    )
)


def _build_confirming(_dialect: str) -> Update:
    w = _WITHDRAWALS.c
    into_confirming = or_(w.state == W.SIGNED.value, w.state == W.BROADCAST.value)
    return (
        update(_WITHDRAWALS)
        .where(w.id == bindparam("w_id"))
        .values(
            state=case((into_confirming, W.CONFIRMING.value), else_=w.state),
            reason=case((into_confirming, None), else_=w.reason),
            tx_hash=bindparam("w_hash"),
            block_number=bindparam("w_block"),
            confirmations=bindparam("w_conf"),
            updated_at=_now(_WITHDRAWALS),
        )
    )


_CONFIRMING = Prepared(_build_confirming)
_DROPPED = Prepared(
    lambda d: (
        update(_ATTEMPTS)
        .where(_ids_in(d, _ATTEMPTS))
        .where(or_(*(_ATTEMPTS.c.state == st for st in DROPPABLE_ATTEMPTS)))
        .values(state=A.DROPPED.value, updated_at=_now(_ATTEMPTS))
    )
)


async def insert_attempts(session: AsyncSession, attempts: Sequence[TxAttempt]) -> None:
    """Write new attempts with one driver-level multi-row insert (every column set)."""
    if not attempts:
        return
    now = utcnow()
    table = _ATTEMPTS
    columns = [c.name for c in table.c if c.name != "id"]
    for a in attempts:
        a.created_at = a.created_at or now
        a.updated_at = a.updated_at or now
    await insert_many(session, table, {c: [getattr(a, c) for a in attempts] for c in columns})


async def set_confirmations(
    session: AsyncSession, withdrawal_ids: Sequence[int], head: int
) -> None:
    """``confirmations = head - block_number + 1`` (0 above the head) for these
    withdrawals, in one statement per chunk, touching only rows whose count changed."""
    for chunk in _chunks(withdrawal_ids):
        await run(session, _CONFIRMATIONS, {"ids": ValueList(chunk), "head": head})


def _build_confirmations(dialect: str) -> Update:
    w = _WITHDRAWALS.c
    head = bindparam("head", type_=w.block_number.type)
    count = case(
        (w.block_number.is_(None), 0),
        (w.block_number > head, 0),
        else_=head - w.block_number + 1,
    )
    return (
        update(_WITHDRAWALS)
        .where(_ids_in(dialect, _WITHDRAWALS))
        .where(w.confirmations != count)
        .values(confirmations=count)
    )


_CONFIRMATIONS = Prepared(_build_confirmations)


class Settled(NamedTuple):
    """What a settlement posting needs of a completed withdrawal."""

    id: int
    account: str
    asset: str
    ledger_amount: int
    fee: int
    chain_id: int
    tx_hash: str | None


async def complete_paid(session: AsyncSession, attempt_ids: Sequence[int]) -> list[Settled]:
    """Final successful attempts: attempt ``mined`` → ``confirmed`` and its withdrawal
    ``confirming`` → ``completed`` with the attempt's tx hash, set-based, each guarded by
    its from-state (an attempt whose withdrawal is not ``confirming`` is left for the
    caller's row-by-row path). Returns the completed withdrawals, for their settlements."""
    check_attempt(A.MINED, A.CONFIRMED)
    check_withdrawal(W.CONFIRMING, W.COMPLETED)
    now = utcnow()
    paid: dict[int, str] = {}
    for chunk in _chunks(attempt_ids):
        confirmed = await rows(session, _CONFIRMED, {"ids": ValueList(chunk), "now": now})
        paid.update({int(w): str(h) for w, h in confirmed})
    if not paid:
        return []
    out: list[Settled] = []
    for chunk in _chunks(paid):
        completed = await rows(session, _COMPLETED, {"ids": ValueList(chunk), "now": now})
        out.extend(Settled._make(r) for r in completed)
    if len(out) != len(paid) or any(w.tx_hash != paid[w.id] for w in out):
        raise RuntimeError(
            f"completing {len(paid)} paid withdrawals moved {len(out)}: a withdrawal "
            "changed state meanwhile; the tick is rolled back and retried"
        )
    for w in out:
        after_commit(
            session,
            log,
            "withdrawal completed id=%d chain=%d account=%s asset=%s tx=%s",
            (w.id, w.chain_id, w.account, w.asset, w.tx_hash),
            extra={"withdrawal_id": w.id, "chain_id": w.chain_id},
        )
    return sorted(out)


def _build_confirmed(dialect: str) -> Update:
    a, w = _ATTEMPTS.c, _WITHDRAWALS.c
    confirming = select(w.id).where(w.state == W.CONFIRMING.value)
    return (
        update(_ATTEMPTS)
        .where(_ids_in(dialect, _ATTEMPTS))
        .where(a.state == A.MINED.value, a.status == 1)
        .where(a.withdrawal_id.in_(confirming.scalar_subquery()))
        .values(state=A.CONFIRMED.value, updated_at=_now(_ATTEMPTS))
        .returning(a.withdrawal_id, a.tx_hash)
    )


def _build_completed(dialect: str) -> Update:
    a, w = _ATTEMPTS.c, _WITHDRAWALS.c
    # The paying attempt's hash, per withdrawal, from the rows just confirmed.
    paid_hash = _newest_attempt_hash(a.state == A.CONFIRMED.value, a.status == 1)
    return (
        update(_WITHDRAWALS)
        .where(_ids_in(dialect, _WITHDRAWALS))
        .where(w.state == W.CONFIRMING.value)
        .values(
            state=W.COMPLETED.value, tx_hash=paid_hash, reason=None, updated_at=_now(_WITHDRAWALS)
        )
        .returning(*(w[name] for name in Settled._fields))
    )


_CONFIRMED = Prepared(_build_confirmed)
_COMPLETED = Prepared(_build_completed)


async def stuck_attempts(
    session: AsyncSession,
    chain_id: int,
    sender: str,
    *,
    head: int,
    after_blocks: int | None,
    sent_before: datetime,
) -> list[TxAttempt]:
    """Broadcast attempts not mined for ``after_blocks`` blocks since the head at
    broadcast, or sent before ``sent_before``; the test runs in SQL, so a tick loads
    only the stuck ones. Attempts broadcast before ``broadcast_block`` existed are
    stamped with ``head`` first, so their block count starts now and survives restarts."""
    live = (
        TxAttempt.chain_id == chain_id,
        TxAttempt.sender == sender,
        TxAttempt.state == A.BROADCAST.value,
    )
    await session.execute(
        update(TxAttempt)
        .where(*live, TxAttempt.broadcast_block.is_(None))
        .values(broadcast_block=head)
        .execution_options(synchronize_session=False)
    )
    old = func.coalesce(TxAttempt.broadcast_at, TxAttempt.created_at) <= sent_before
    late = (
        old if after_blocks is None else or_(old, TxAttempt.broadcast_block <= head - after_blocks)
    )
    return list(
        await session.scalars(
            select(TxAttempt).where(*live, late).order_by(TxAttempt.nonce, TxAttempt.id)
        )
    )


# ------------------------------------------------------------------ ledger


def hold_legs(account: str, asset: str, held: int) -> list[Leg]:
    return transfer(asset, held, debit=(account, CROSS), credit=(account, HOLD))


def hold_posting(w: Withdrawal) -> Posting:
    """The request is accepted: amount + fee move from the cross wallet to the hold."""
    return Posting(
        kind=TxKind.WITHDRAWAL_HOLD,
        ref=f"withdrawal:{w.id}:hold",
        legs=hold_legs(w.account, w.asset, w.ledger_amount),
        account_key=w.account,
        memo=f"withdrawal {w.id} on chain {w.chain_id}",
    )


def settle_posting(w: Withdrawal | Settled, fee_account: str) -> Posting:
    """The payout is final: the hold leaves the account for the vault and the fee account."""
    paid = w.ledger_amount - w.fee
    legs = [Leg(w.account, w.asset, -w.ledger_amount, HOLD)]
    if paid:
        legs.append(Leg(vault_account(w.chain_id), w.asset, paid, CROSS))
    if w.fee:
        legs.append(Leg(fee_account, w.asset, w.fee, CROSS))
    return Posting(
        kind=TxKind.WITHDRAWAL_SETTLE,
        ref=f"withdrawal:{w.id}:settle",
        legs=legs,
        account_key=w.account,
        memo=f"withdrawal {w.id} paid by {w.tx_hash}",
    )


def release_posting(w: Withdrawal, why: str) -> Posting:
    """Nothing was (or will be) paid: the hold goes back to the cross wallet."""
    return Posting(
        kind=TxKind.WITHDRAWAL_RELEASE,
        ref=f"withdrawal:{w.id}:release",
        legs=transfer(w.asset, w.ledger_amount, debit=(w.account, HOLD), credit=(w.account, CROSS)),
        account_key=w.account,
        memo=f"withdrawal {w.id} {why}",
    )


async def release(session: AsyncSession, w: Withdrawal, why: str) -> None:
    """Post one withdrawal's release (an operator's cancel or reject)."""
    p = release_posting(w, why)
    await ledger.post(
        session, kind=p.kind, ref=p.ref, legs=p.legs, account_key=p.account_key, memo=p.memo
    )


async def post_all(session: AsyncSession, postings: Sequence[Posting]) -> None:
    """Holds, settlements and releases of many withdrawals with a few multi-row
    statements, each posted at most once (idempotent on its ref)."""
    if postings:
        await post_many(session, postings)


# ------------------------------------------------------------------ nonces


async def nonce_row(
    session: AsyncSession, chain_id: int, address: str, *, lock: bool = False
) -> SenderNonce | None:
    return await session.get(SenderNonce, (chain_id, address), with_for_update=lock)


async def next_nonce(
    session: AsyncSession, chain_id: int, address: str, *, lock: bool = False
) -> int | None:
    """The stored next nonce (the row locked on PostgreSQL with ``lock``), or None."""
    value = (
        await run(
            session,
            _NEXT_NONCE_LOCKED if lock else _NEXT_NONCE,
            {"chain_id": chain_id, "address": address},
        )
    ).scalar()
    return None if value is None else int(value)


def _build_next_nonce(dialect: str, lock: bool) -> Select[Any]:
    c = _NONCES.c
    stmt = select(c.next_nonce).where(
        c.chain_id == bindparam("chain_id"), c.address == bindparam("address")
    )
    return stmt.with_for_update() if lock and dialect == "postgresql" else stmt


_NEXT_NONCE = Prepared(lambda d: _build_next_nonce(d, lock=False))
_NEXT_NONCE_LOCKED = Prepared(lambda d: _build_next_nonce(d, lock=True))
_TAKE_NONCES = Prepared(
    lambda _d: (
        update(_NONCES)
        .where(
            _NONCES.c.chain_id == bindparam("w_chain_id"),
            _NONCES.c.address == bindparam("w_address"),
        )
        .values(
            next_nonce=_NONCES.c.next_nonce + bindparam("count", type_=_NONCES.c.next_nonce.type),
            updated_at=_now(_NONCES),
        )
        .returning(_NONCES.c.next_nonce)
    )
)


async def take_nonces(session: AsyncSession, chain_id: int, address: str, count: int) -> int:
    """Take ``count`` consecutive nonces in the caller's transaction, in one statement;
    returns the first. The row must exist (the nonce manager creates it when it syncs
    on start); a caller that checks the stored value first reads (and on PostgreSQL
    locks) it with :func:`next_nonce` in the same transaction. Nothing is loaded into
    the session (an ORM ``SenderNonce`` it holds keeps its loaded value)."""
    params = {"w_chain_id": chain_id, "w_address": address, "count": count, "now": utcnow()}
    value = (await run(session, _TAKE_NONCES, params)).scalar()
    if value is None:
        raise LookupError(f"no nonce row for {address} on chain {chain_id}: sync first")
    return int(value) - count


async def set_next_nonce(session: AsyncSession, chain_id: int, address: str, value: int) -> None:
    row = await nonce_row(session, chain_id, address, lock=True)
    if row is None:
        session.add(SenderNonce(chain_id=chain_id, address=address, next_nonce=value))
    else:
        row.next_nonce = value
        row.updated_at = utcnow()
    await session.flush()
