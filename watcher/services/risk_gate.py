"""The locked decision: the one place where a rule says yes and money moves.

Every movement that a risk rule must approve — a withdrawal hold (cross → hold), an
isolated-margin transfer (cross ↔ ``iso:<SYMBOL>``), an auto-conversion — goes through
:func:`locked_decision` (one request) or :class:`LockedBatch` (the withdrawal intake's
group commit: the same steps for many requests, decided one after the other on the
state that includes the batch's earlier holds), inside the caller's DB transaction:

1. if a journal transaction with ``ref`` already exists, it is returned as a replay
   (nothing is decided again, nothing moves);
2. the account is locked (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the
   transaction holds the database's writer lock since ``BEGIN IMMEDIATE``), and the
   ``ref`` is checked again (a concurrent twin may have committed while we waited);
3. the snapshot is loaded *after* the lock, so it includes every decision committed
   before ours and none can commit until ours ends;
4. the pure rule decides; if it says no, nothing is written and the reasons return;
5. if it says yes, the legs are built from the same snapshot and posted as one
   balanced journal transaction.

Guarantees: concurrent requests on one account are serialized, so together they can
never exceed a limit that each checked alone (tests/store/test_concurrency.py fires 50
at once on SQLite and PostgreSQL). The decision and the posting commit or roll back
with the caller's transaction: a crash in between leaves nothing. Replays of the same
``ref`` are idempotent.

A snapshot the rules cannot evaluate (a missing mark or asset price, a notional past
the last bracket, ...) raises :class:`AccountStateError`: it is fail-closed, never an
approval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.domain.account import SnapshotError
from watcher.domain.brackets import BracketError
from watcher.domain.errors import DomainError, ErrorKind
from watcher.domain.journal import CROSS, HOLD, Leg, TxKind, isolated_wallet, transfer
from watcher.domain.margin import PositionError
from watcher.domain.risk import decide_isolated_transfer, decide_withdrawal, evaluation_problems
from watcher.settings import Settings
from watcher.store import ledger
from watcher.store import withdrawals as withdrawal_repo
from watcher.store.accounts import (
    AccountState,
    Market,
    RawAccount,
    build_state,
    load_raw,
    load_state,
    market,
    units_to_decimal,
)
from watcher.store.ledger_batch import post_many
from watcher.store.models import JournalTransaction, Withdrawal

#: Errors of a snapshot the rules cannot evaluate (data defects, not user answers).
STATE_ERRORS: tuple[type[Exception], ...] = (SnapshotError, PositionError, BracketError)


class AccountStateError(DomainError):
    """The account's state cannot be evaluated (missing price, bad position data...):
    refused as ``ACCOUNT_STATE_INCOMPLETE`` rather than guessed."""

    def __init__(self, message: str) -> None:
        super().__init__(
            "ACCOUNT_STATE_INCOMPLETE",
            f"the account cannot be evaluated: {message}",
            kind=ErrorKind.RULE,
        )


class Verdict(Protocol):
    """What a pure rule returns (``WithdrawalDecision``, ``IsolatedTransferDecision``...)."""

    @property
    def allowed(self) -> bool: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def details(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class Rule:
    """A verdict built by a caller (for rules that are not a domain function)."""

    allowed: bool
    reason: str | None = None
    details: dict[str, object] = field(default_factory=dict)


Decide = Callable[[AccountState], Verdict]
LegsBuilder = Callable[[AccountState], Sequence[Leg]]


@dataclass(frozen=True)
class GateResult:
    """The outcome of one locked decision."""

    allowed: bool
    reason: str | None
    details: Mapping[str, object]
    #: The state the decision saw (None for a replay: nothing was decided).
    state: AccountState | None
    #: The posted (or, for a replay, the existing) journal transaction when allowed.
    transaction: JournalTransaction | None
    replayed: bool = False


async def _by_ref(session: AsyncSession, ref: str) -> JournalTransaction | None:
    return await session.scalar(select(JournalTransaction).where(JournalTransaction.ref == ref))


async def locked_decision(
    session: AsyncSession,
    settings: Settings,
    *,
    account: str,
    decide: Decide,
    kind: TxKind,
    ref: str,
    legs: LegsBuilder,
    memo: str = "",
) -> GateResult:
    """Lock ``account``, load its snapshot, ``decide``, and if allowed post ``legs``.

    Runs inside the caller's transaction (``async with sessions.begin() as s``): the
    caller may write its own rows (a withdrawal, a replay record) in the same
    transaction, and everything commits or rolls back together. ``ref`` is the
    idempotency key of the journal transaction.
    """
    existing = await _by_ref(session, ref)
    if existing is None:
        await ledger.lock_account(session, account)
        existing = await _by_ref(session, ref)
    if existing is not None:
        return GateResult(True, None, {"ref": ref}, None, existing, replayed=True)
    state = await load_state(session, settings, account)
    try:
        verdict = decide(state)
        built = list(legs(state)) if verdict.allowed else []
    except STATE_ERRORS as exc:
        raise AccountStateError(str(exc)) from exc
    if not verdict.allowed:
        return GateResult(False, verdict.reason, dict(verdict.details), state, None)
    posted = await ledger.post(
        session, kind=kind, ref=ref, legs=built, account_key=account, memo=memo
    )
    return GateResult(True, None, dict(verdict.details), state, posted.transaction)


# --------------------------------------------------------------------------- withdrawals


def hold_legs(account: str, asset: str, units: int) -> LegsBuilder:
    """The default withdrawal hold: ``units`` of ``asset`` from cross to hold."""

    def build(_state: AccountState) -> Sequence[Leg]:
        return withdrawal_repo.hold_legs(account, asset, units)

    return build


def withdrawal_verdict(settings: Settings, state: AccountState, asset: str, units: int) -> Verdict:
    """:func:`~watcher.domain.risk.decide_withdrawal` of ``units`` (ledger units of
    ``asset``, fee included) on ``state``; a state the rules cannot evaluate raises
    :class:`AccountStateError`."""
    cfg = settings.assets.get(asset)
    amount = units_to_decimal(units, cfg.precision if cfg else 0)
    try:
        return decide_withdrawal(state.snapshot, asset, amount)
    except STATE_ERRORS as exc:
        raise AccountStateError(str(exc)) from exc


async def withdrawal_hold(
    session: AsyncSession,
    settings: Settings,
    *,
    account: str,
    asset: str,
    units: int,
    ref: str,
    legs: LegsBuilder | None = None,
    memo: str = "",
) -> GateResult:
    """Decide a withdrawal of ``units`` (ledger units of ``asset``, fee included) out of
    the cross wallet with :func:`~watcher.domain.risk.decide_withdrawal`, and if allowed
    post a ``withdrawal_hold`` (by default cross → hold; pass ``legs`` to build another
    balanced set from the locked snapshot). Reasons: ``UNKNOWN_ASSET``,
    ``AMOUNT_NOT_POSITIVE``, ``NEGATIVE_BALANCE`` (details list the assets),
    ``INSUFFICIENT_WITHDRAWABLE`` (details carry the max and the breakdown)."""

    def decide(state: AccountState) -> Verdict:
        return withdrawal_verdict(settings, state, asset, units)

    return await locked_decision(
        session,
        settings,
        account=account,
        decide=decide,
        kind=TxKind.WITHDRAWAL_HOLD,
        ref=ref,
        legs=legs or hold_legs(account, asset, units),
        memo=memo,
    )


# --------------------------------------------------------------------------- batches


class LockedBatch:
    """Many withdrawal decisions under one lock set: the group-commit form of
    :func:`withdrawal_hold`, for the intake's batches.

    :meth:`lock` locks every account of the batch (key order; on SQLite the
    transaction already holds the writer lock) and loads their rows with a fixed number
    of queries. :meth:`withdrawal` then decides one request at a time, in arrival
    order, on the state *including the holds approved before it in the batch*: two
    requests of one account in one batch can never together pass a limit that each
    passes alone. :meth:`post_holds` posts the approved holds as journal transactions
    in the caller's DB transaction; if it fails, the caller's rollback undoes them all.
    The same pure rule decides as in :func:`withdrawal_hold`.
    """

    def __init__(
        self,
        settings: Settings,
        accounts: Mapping[str, ledger.LockedAccount],
        raw: dict[str, RawAccount],
        mkt: Market,
    ) -> None:
        self.settings = settings
        #: The locked account rows by key (their ids for the caller's own rows).
        self.accounts = accounts
        self.market = mkt
        self._raw = raw
        self._states: dict[str, AccountState] = {}
        # The cross and hold balances as read under the lock, before any decision of
        # the batch changes ``raw``: the holds' posting adds to these (0: no row yet).
        self._read: dict[str, tuple[dict[str, int], dict[str, int]]] = {
            key: (dict(r.cross), dict(r.hold)) for key, r in raw.items()
        }

    @classmethod
    async def lock(
        cls, session: AsyncSession, settings: Settings, accounts: Sequence[str]
    ) -> LockedBatch:
        locked = await ledger.lock_accounts(session, accounts)
        mkt = await market(session, settings)
        raw = await load_raw(session, settings, sorted(locked), locked)
        return cls(settings, locked, raw, mkt)

    def state(self, account: str) -> AccountState:
        """The account's state with the batch's approved holds applied."""
        state = self._states.get(account)
        if state is None:
            state = build_state(self.settings, account, self._raw[account], self.market)
            self._states[account] = state
        return state

    def withdrawal(self, account: str, asset: str, units: int) -> GateResult:
        """Decide ``units`` (ledger units, fee included) of ``asset`` out of the cross
        wallet; if allowed, the hold counts for the next decisions of the batch.
        Raises :class:`AccountStateError` for a state the rules cannot evaluate."""
        state = self.state(account)
        verdict = withdrawal_verdict(self.settings, state, asset, units)
        if not verdict.allowed:
            return GateResult(False, verdict.reason, dict(verdict.details), state, None)
        raw = self._raw[account]
        raw.cross[asset] = raw.cross.get(asset, 0) - units
        raw.hold[asset] = raw.hold.get(asset, 0) + units
        self._states.pop(account, None)
        return GateResult(True, None, dict(verdict.details), state, None)

    async def post_holds(
        self,
        session: AsyncSession,
        holds: Sequence[Withdrawal],
        tx_ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Post the approved withdrawals' holds (cross → hold,
        :func:`~watcher.store.withdrawals.hold_posting`); their journal transaction ids,
        in the same order (``tx_ids``, when the caller reserved them with its own)."""
        postings = [withdrawal_repo.hold_posting(w) for w in holds]
        if not postings:
            return []
        # The refs name withdrawal ids reserved in this transaction: they cannot be
        # posted yet. The accounts are the ones locked here, and their cross and hold
        # balances the ones read with the lock (nothing else writes them meanwhile).
        known = {key: row.id for key, row in self.accounts.items()}
        balances: dict[tuple[int, str, str], int] = {}
        for w in holds:
            cross, hold = self._read[w.account]
            account_id = known[w.account]
            balances[(account_id, w.asset, CROSS)] = cross.get(w.asset, 0)
            balances[(account_id, w.asset, HOLD)] = hold.get(w.asset, 0)
        ids = await post_many(
            session,
            postings,
            known_accounts=known,
            fresh_refs=True,
            tx_ids=tx_ids,
            balances=balances,
        )
        return [ids[p.ref] for p in postings]


# --------------------------------------------------------------------------- isolated margin

IsolatedKind = Literal["add", "reduce"]


def isolated_legs(
    account: str, asset: str, symbol: str, kind: IsolatedKind, units: int
) -> LegsBuilder:
    def build(_state: AccountState) -> Sequence[Leg]:
        cross, iso = (account, CROSS), (account, isolated_wallet(symbol))
        if kind == "add":
            return transfer(asset, units, debit=cross, credit=iso)
        return transfer(asset, units, debit=iso, credit=cross)

    return build


async def isolated_transfer(
    session: AsyncSession,
    settings: Settings,
    *,
    account: str,
    symbol: str,
    kind: IsolatedKind,
    units: int,
    ref: str,
    memo: str = "",
) -> GateResult:
    """Move ``units`` of the settlement asset between the cross wallet and
    ``iso:<symbol>``, checked against the isolated max transfer-in (add) / -out (reduce)."""
    asset = settings.ledger.settlement_asset
    precision = settings.assets[asset].precision

    def decide(state: AccountState) -> Verdict:
        # Either direction waits until the whole account can be evaluated again (a
        # reduce alone would read only its own position): one answer for the account.
        problems = evaluation_problems(state.snapshot)
        if problems:
            raise AccountStateError("; ".join(p.message for p in problems))
        amount = units_to_decimal(units, precision)
        return decide_isolated_transfer(state.snapshot, symbol, kind, amount)

    return await locked_decision(
        session,
        settings,
        account=account,
        decide=decide,
        kind=TxKind.ISOLATED_TRANSFER,
        ref=ref,
        legs=isolated_legs(account, asset, symbol, kind, units),
        memo=memo,
    )
