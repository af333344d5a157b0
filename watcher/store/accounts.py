"""Account state: what the risk rules read, what the trading engine writes, and history.

Reading (:func:`load_state`): one account's cross/isolated/hold balances from the
ledger, its positions and open-order margin, the mark and asset prices, the configured
assets and brackets, turned into a pure :class:`~watcher.domain.account.AccountSnapshot`.
Ledger integers become ``Decimal`` asset units exactly (no rounding: a scale shift).

Isolated wallets live in the ledger (wallet ``iso:<SYMBOL>``, settlement asset); the
engine's positions carry no balances. An isolated wallet that still holds margin after
the engine closed (or re-moded) its position is shown to the rules as an empty
isolated position (size 0, leverage 1): its MM and IM are 0, so its whole wallet may be
transferred back out, and nothing else is affected.

Writing (the engine inputs): every write to one account first takes that account's
lock (:func:`watcher.store.ledger.lock_account`) so a risk decision always sees the
engine's state either wholly before or wholly after a write. Prices are global and are
written without an account lock; a decision reads them once, inside its transaction.

Guarantees across crash/restart: each function only adds to the caller's DB
transaction; nothing is committed here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Select, delete, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.domain.account import (
    EXACT,
    ZERO,
    AccountSnapshot,
    AssetInfo,
    MarginMode,
    OpenOrderMargin,
    Position,
)
from watcher.domain.amounts import format_amount, plain_decimal
from watcher.domain.journal import (
    CROSS,
    ENGINE_ACCOUNT,
    HOLD,
    Leg,
    TxKind,
    transfer,
)
from watcher.domain.journal import isolated_wallet as iso_wallet
from watcher.settings import Settings
from watcher.store import ledger
from watcher.store.deposits import deposit_history
from watcher.store.models import (
    Account,
    Balance,
    JournalEntry,
    JournalTransaction,
    Price,
    Withdrawal,
    table_of,
    utcnow,
)
from watcher.store.models import OpenOrderMargin as OpenOrderRow
from watcher.store.models import Position as PositionRow
from watcher.store.prepared import Prepared, ValueList, any_of, rows

ISO_PREFIX = "iso:"
MARK = "mark"
ASSET_PRICE = "asset"

ENGINE_KINDS: tuple[TxKind, ...] = (TxKind.REALIZED_PNL, TxKind.FUNDING_FEE, TxKind.COMMISSION)


# --------------------------------------------------------------------------- units


def units_to_decimal(units: int, precision: int) -> Decimal:
    """Ledger base units → asset units, exactly (a scale shift, never a rounding)."""
    return Decimal(units).scaleb(-precision, context=EXACT)


def decimal_to_units(value: Decimal, precision: int) -> int:
    """Asset units → ledger base units; raises ``ValueError`` if ``value`` is off the grid."""
    scaled = value.scaleb(precision, context=EXACT)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than {precision} decimals")
    return int(scaled)


def asset_infos(settings: Settings) -> dict[str, AssetInfo]:
    return {
        code: AssetInfo(code, cfg.precision, cfg.collateral_ratio, cfg.auto_exchange_rate)
        for code, cfg in settings.assets.items()
    }


def precision_of(settings: Settings, asset: str) -> int:
    cfg = settings.assets.get(asset)
    if cfg is None:
        raise KeyError(asset)
    return cfg.precision


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class AccountState:
    """One account as the rules see it, plus the raw ledger integers behind it."""

    key: str
    exists: bool
    multi_asset_mode: bool
    cross: Mapping[str, int]  # asset -> ledger units
    isolated: Mapping[str, int]  # symbol -> settlement-asset ledger units
    hold: Mapping[str, int]  # asset -> ledger units in flight (withdrawals)
    snapshot: AccountSnapshot
    version: int = 0


async def prices(session: AsyncSession) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """(mark price per symbol, USD price per asset) as stored by the engine."""
    marks: dict[str, Decimal] = {}
    assets: dict[str, Decimal] = {}
    for kind, key, price in await rows(session, _PRICES):
        (marks if kind == MARK else assets)[key] = price
    return marks, assets


_PRICES = Prepared(lambda _d: select(*(table_of(Price).c[n] for n in ("kind", "key", "price"))))


class PositionFields(NamedTuple):
    """The columns of a position row the rules read."""

    symbol: str
    size: Decimal
    entry_price: Decimal
    leverage: int
    margin_mode: str


class OrderFields(NamedTuple):
    """The columns of an open-order margin row the rules read."""

    symbol: str
    margin_mode: str
    initial_margin: Decimal


def _by_account_ids(dialect: str, model: type[object], columns: Sequence[str]) -> Select[Any]:
    table = table_of(model)
    return select(table.c.account_id, *(table.c[name] for name in columns)).where(
        text(any_of(dialect, f"{table.name}.account_id", "ids", "bigint[]"))
    )


_BALANCES = Prepared(lambda d: _by_account_ids(d, Balance, ("asset", "wallet", "amount")))
_POSITIONS = Prepared(
    lambda d: _by_account_ids(d, PositionRow, PositionFields._fields).order_by(
        table_of(PositionRow).c.account_id, table_of(PositionRow).c.symbol
    )
)
_ORDERS = Prepared(
    lambda d: _by_account_ids(d, OpenOrderRow, OrderFields._fields).order_by(
        table_of(OpenOrderRow).c.account_id,
        table_of(OpenOrderRow).c.symbol,
        table_of(OpenOrderRow).c.margin_mode,
    )
)


@dataclass
class RawAccount:
    """One account's ledger rows as read (mutable: a batch of decisions applies its holds
    here and rebuilds the state with :func:`build_state`)."""

    exists: bool = False
    multi_asset_mode: bool = False
    version: int = 0
    cross: dict[str, int] = field(default_factory=dict)
    isolated: dict[str, int] = field(default_factory=dict)
    hold: dict[str, int] = field(default_factory=dict)
    positions: list[PositionFields] = field(default_factory=list)
    orders: list[OrderFields] = field(default_factory=list)


@dataclass(frozen=True)
class Market:
    """What every account's snapshot shares: mark prices and USD asset prices."""

    marks: Mapping[str, Decimal]
    asset_prices: Mapping[str, Decimal]


async def market(session: AsyncSession, settings: Settings) -> Market:
    marks, stored_asset_prices = await prices(session)
    asset_prices = {
        code: cfg.price for code, cfg in settings.assets.items() if cfg.price is not None
    }
    asset_prices.update(stored_asset_prices)
    return Market(marks, asset_prices)


async def load_raw(
    session: AsyncSession,
    settings: Settings,
    keys: Sequence[str],
    accounts: Mapping[str, Account] | Mapping[str, ledger.LockedAccount] | None = None,
) -> dict[str, RawAccount]:
    """The ledger rows of several accounts with a fixed number of queries whatever their
    number (balances, positions, open orders, and the accounts unless the caller already
    holds them, e.g. just locked); an unknown key gets an empty one."""
    settle = settings.ledger.settlement_asset
    out = {key: RawAccount() for key in keys}
    if not keys:
        return out
    if accounts is None:
        found = await session.scalars(select(Account).where(Account.key.in_(list(out))))
        accounts = {a.key: a for a in found}
    by_id: dict[int, RawAccount] = {}
    for key, raw in out.items():
        account = accounts.get(key)
        if account is None:
            continue
        raw.exists = True
        raw.multi_asset_mode = bool(account.multi_asset_mode)
        raw.version = account.version
        by_id[account.id] = raw
    if not by_id:
        return out
    ids = {"ids": ValueList(by_id)}
    for account_id, asset, wallet, amount in await rows(session, _BALANCES, ids):
        raw = by_id[account_id]
        if wallet == CROSS:
            raw.cross[asset] = amount
        elif wallet == HOLD:
            raw.hold[asset] = amount
        elif wallet.startswith(ISO_PREFIX) and asset == settle:
            raw.isolated[wallet[len(ISO_PREFIX) :]] = amount
    for account_id, *position in await rows(session, _POSITIONS, ids):
        by_id[account_id].positions.append(PositionFields(*position))
    for account_id, *order in await rows(session, _ORDERS, ids):
        by_id[account_id].orders.append(OrderFields(*order))
    return out


def build_state(settings: Settings, key: str, raw: RawAccount, mkt: Market) -> AccountState:
    """The rules' view of one account from its rows (pure: no I/O)."""
    settle = settings.ledger.settlement_asset
    infos = asset_infos(settings)
    settle_precision = infos[settle].precision if settle in infos else 0
    balances = {
        asset: units_to_decimal(units, infos[asset].precision if asset in infos else 0)
        for asset, units in raw.cross.items()
    }
    positions: list[Position] = []
    with_position: set[str] = set()
    for row in raw.positions:
        mode: MarginMode = "isolated" if row.margin_mode == "isolated" else "cross"
        iso = ZERO
        if mode == "isolated":
            iso = units_to_decimal(raw.isolated.get(row.symbol, 0), settle_precision)
            with_position.add(row.symbol)
        positions.append(Position(row.symbol, row.size, row.entry_price, row.leverage, mode, iso))
    for symbol, units in sorted(raw.isolated.items()):
        if symbol not in with_position and units != 0:
            positions.append(
                Position(
                    symbol, ZERO, ZERO, 1, "isolated", units_to_decimal(units, settle_precision)
                )
            )
    orders = [
        OpenOrderMargin(
            row.symbol, "isolated" if row.margin_mode == "isolated" else "cross", row.initial_margin
        )
        for row in raw.orders
    ]
    snapshot = AccountSnapshot(
        balances=balances,
        positions=positions,
        open_orders=orders,
        mark_prices=mkt.marks,
        asset_prices=mkt.asset_prices,
        brackets=settings.brackets,
        assets=infos,
        multi_asset_mode=raw.multi_asset_mode,
        settlement_asset=settle,
    )
    return AccountState(
        key=key,
        exists=raw.exists,
        multi_asset_mode=snapshot.multi_asset_mode,
        cross=dict(raw.cross),
        isolated=dict(raw.isolated),
        hold=dict(raw.hold),
        snapshot=snapshot,
        version=raw.version,
    )


async def load_state(session: AsyncSession, settings: Settings, key: str) -> AccountState:
    """The account's snapshot, read in the caller's transaction (lock it first to decide)."""
    mkt = await market(session, settings)
    raw = (await load_raw(session, settings, [key]))[key]
    return build_state(settings, key, raw, mkt)


# --------------------------------------------------------------------------- engine inputs


@dataclass(frozen=True)
class PositionInput:
    symbol: str
    size: Decimal
    entry_price: Decimal
    leverage: int
    margin_mode: MarginMode


@dataclass(frozen=True)
class OrderInput:
    symbol: str
    margin_mode: MarginMode
    initial_margin: Decimal


async def replace_positions(
    session: AsyncSession, key: str, positions: Sequence[PositionInput]
) -> None:
    """Replace the account's whole position list (the engine sends all of it each time)."""
    account = await ledger.lock_account(session, key)
    await session.execute(delete(PositionRow).where(PositionRow.account_id == account.id))
    now = utcnow()
    for p in positions:
        session.add(
            PositionRow(
                account_id=account.id,
                symbol=p.symbol,
                size=p.size,
                entry_price=p.entry_price,
                leverage=p.leverage,
                margin_mode=p.margin_mode,
                updated_at=now,
            )
        )
    await session.flush()


async def replace_open_orders(
    session: AsyncSession, key: str, orders: Sequence[OrderInput]
) -> None:
    """Replace the account's open-order initial margin, per (symbol, margin mode)."""
    account = await ledger.lock_account(session, key)
    await session.execute(delete(OpenOrderRow).where(OpenOrderRow.account_id == account.id))
    now = utcnow()
    for o in orders:
        session.add(
            OpenOrderRow(
                account_id=account.id,
                symbol=o.symbol,
                margin_mode=o.margin_mode,
                initial_margin=o.initial_margin,
                updated_at=now,
            )
        )
    await session.flush()


async def upsert_prices(
    session: AsyncSession, marks: Mapping[str, Decimal], assets: Mapping[str, Decimal]
) -> None:
    """Set mark prices per symbol and USD prices per asset (others keep their value)."""
    now = utcnow()
    for kind, values in ((MARK, marks), (ASSET_PRICE, assets)):
        for key, price in values.items():
            row = await session.get(Price, (kind, key), with_for_update=True)
            if row is None:
                session.add(Price(kind=kind, key=key, price=price, updated_at=now))
            else:
                row.price = price
                row.updated_at = now
    await session.flush()


async def set_multi_asset_mode(session: AsyncSession, key: str, on: bool) -> None:
    account = await ledger.lock_account(session, key)
    account.multi_asset_mode = on
    await session.flush()


class EntryConflict(Exception):
    """The refId was already used for a different entry."""

    def __init__(self, ref_id: str, stored: dict[str, str]) -> None:
        super().__init__(f"refId {ref_id!r} was already used for another entry")
        self.ref_id = ref_id
        self.stored = stored


@dataclass(frozen=True)
class EngineEntry:
    ref_id: str
    account: str
    asset: str
    amount: str
    kind: str
    transaction_id: int
    time: datetime
    created: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "account": self.account,
            "asset": self.asset,
            "amount": self.amount,
            "kind": self.kind,
            "transactionId": self.transaction_id,
            "time": iso_time(self.time),
        }


def engine_ref(ref_id: str) -> str:
    return f"engine:{ref_id}"


async def post_engine_entry(
    session: AsyncSession,
    settings: Settings,
    *,
    key: str,
    asset: str,
    units: int,
    kind: TxKind,
    ref_id: str,
) -> EngineEntry:
    """Post a realized PnL / funding fee / commission against ``system:engine``.

    Idempotent on ``ref_id``: the same entry again returns the stored one
    (``created=False``); the same ``ref_id`` with any field different raises
    :class:`EntryConflict`. The balance may go negative (DOMAIN.md §3).
    """
    if kind not in ENGINE_KINDS:
        raise ValueError(f"not an engine entry kind: {kind}")
    precision = precision_of(settings, asset)
    body = {
        "account": key,
        "asset": asset,
        "amount": format_amount(units, precision),
        "kind": str(kind),
    }
    memo = json.dumps(body, sort_keys=True)
    ref = engine_ref(ref_id)

    async def existing() -> JournalTransaction | None:
        return await session.scalar(select(JournalTransaction).where(JournalTransaction.ref == ref))

    found = await existing()
    if found is None:
        await ledger.lock_account(session, key)
        found = await existing()  # a concurrent twin may have posted while we waited
    if found is not None:
        if found.memo != memo:
            stored = json.loads(found.memo) if found.memo.startswith("{") else {}
            raise EntryConflict(ref_id, stored)
        return EngineEntry(
            ref_id, key, asset, body["amount"], str(kind), found.id, found.created_at, False
        )
    posted = await ledger.post(
        session,
        kind=kind,
        ref=ref,
        legs=[Leg(key, asset, units, CROSS), Leg(ENGINE_ACCOUNT, asset, -units, CROSS)],
        account_key=key,
        memo=memo,
    )
    tx = posted.transaction
    return EngineEntry(ref_id, key, asset, body["amount"], str(kind), tx.id, tx.created_at, True)


# --------------------------------------------------------------------------- history


def iso_time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class HistoryItem:
    """One line of an account's history. ``amount`` is signed from the account's side:
    + credits it (deposit, profit), − debits it (withdrawal, fee, converted away)."""

    type: str
    asset: str | None
    amount: str
    state: str
    tx_hash: str | None
    chain_id: int | None
    time: datetime
    ref: str | None = None
    order: int = 0  # tie-break among items of the same time (higher is newer)
    extra: Mapping[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "type": self.type,
            "asset": self.asset,
            "amount": self.amount,
            "state": self.state,
            "txHash": self.tx_hash,
            "chainId": self.chain_id,
            "time": iso_time(self.time),
        }
        if self.ref is not None:
            out["refId"] = self.ref
        out.update(self.extra)
        return out


#: Journal kinds shown in the history, and the type name they are shown as. Deposits
#: and withdrawals come from their own tables (they carry chain, hash and state).
JOURNAL_HISTORY_TYPES: dict[str, str] = {
    TxKind.AUTO_CONVERSION: "auto-conversion",
    TxKind.REALIZED_PNL: "realized_pnl",
    TxKind.FUNDING_FEE: "funding_fee",
    TxKind.COMMISSION: "commission",
    TxKind.ISOLATED_TRANSFER: "isolated-transfer",
}


def _fmt(settings: Settings, asset: str | None, units: int | None) -> str:
    if units is None:
        return "0"
    if asset is not None and asset in settings.assets:
        return format_amount(units, settings.assets[asset].precision)
    return str(units)


async def _deposit_items(
    session: AsyncSession, settings: Settings, key: str, limit: int
) -> list[HistoryItem]:
    """Deposits as the deposit pipeline describes them (``deposit_history``), with its
    extra fields (confirmations, requiredConfirmations, etaSeconds) kept."""
    items = []
    newest = await deposit_history(session, key, settings, limit=limit)
    for order, doc in enumerate(reversed(newest)):
        extra = {
            k: v
            for k, v in doc.items()
            if k not in ("type", "asset", "amount", "state", "txHash", "chainId", "time")
        }
        items.append(
            HistoryItem(
                type=str(doc["type"]),
                asset=doc.get("asset"),
                amount=str(doc["amount"]),
                state=str(doc["state"]),
                tx_hash=doc.get("txHash"),
                chain_id=doc.get("chainId"),
                time=datetime.fromisoformat(str(doc["time"])),
                order=order,
                extra=extra,
            )
        )
    return items[-limit:]


async def _withdrawal_items(
    session: AsyncSession, settings: Settings, key: str, limit: int
) -> list[HistoryItem]:
    rows = await session.scalars(
        select(Withdrawal)
        .where(Withdrawal.account == key)
        .order_by(Withdrawal.created_at.desc(), Withdrawal.id.desc())
        .limit(limit)
    )
    return [
        HistoryItem(
            type="withdrawal",
            asset=w.asset,
            amount=_fmt(settings, w.asset, -w.ledger_amount),
            state=w.state,
            tx_hash=w.tx_hash,
            chain_id=w.chain_id,
            time=w.created_at,
            order=w.id,
        )
        for w in rows
    ]


async def _journal_items(
    session: AsyncSession, settings: Settings, account: Account, limit: int
) -> list[HistoryItem]:
    # The newest ``limit`` of each kind (one seek each of the index on (account_id,
    # kind, created_at, id); ``kind IN (...)`` would read and sort all of the account's
    # entries of those kinds), merged here.
    jt = JournalTransaction
    newest = union_all(
        *(
            select(
                select(jt.id)
                .where(jt.account_id == account.id, jt.kind == kind)
                .order_by(jt.created_at.desc(), jt.id.desc())
                .limit(limit)
                .subquery()
            )
            for kind in JOURNAL_HISTORY_TYPES
        )
    )
    txs = sorted(
        await session.scalars(select(jt).where(jt.id.in_(newest))),
        key=lambda t: (t.created_at, t.id),
        reverse=True,
    )[:limit]
    if not txs:
        return []
    entries = await session.scalars(
        select(JournalEntry).where(
            JournalEntry.transaction_id.in_([t.id for t in txs]),
            JournalEntry.account_id == account.id,
        )
    )
    # Net per (transaction, asset) of the account's cross wallet: an isolated transfer
    # shows how much left (−, add) or came back to (+, reduce) the cross wallet.
    net: dict[tuple[int, str], int] = {}
    for e in entries:
        if e.wallet == CROSS:
            net[(e.transaction_id, e.asset)] = net.get((e.transaction_id, e.asset), 0) + e.amount
    items = []
    for tx in txs:
        ref = tx.ref.removeprefix("engine:") if tx.ref.startswith("engine:") else None
        for (tx_id, asset), units in sorted(net.items()):
            if tx_id != tx.id or units == 0:
                continue
            items.append(
                HistoryItem(
                    type=JOURNAL_HISTORY_TYPES[tx.kind],
                    asset=asset,
                    amount=_fmt(settings, asset, units),
                    state="completed",
                    tx_hash=None,
                    chain_id=None,
                    time=tx.created_at,
                    ref=ref,
                    order=tx.id,
                )
            )
    return items


async def account_history(
    session: AsyncSession, settings: Settings, key: str, *, limit: int = 100
) -> list[HistoryItem]:
    """Deposits, withdrawals, auto-conversions, engine entries, isolated transfers; newest first."""
    items = await _deposit_items(session, settings, key, limit)
    items += await _withdrawal_items(session, settings, key, limit)
    account = await ledger.find_account(session, key)
    if account is not None:
        items += await _journal_items(session, settings, account, limit)
    items.sort(key=lambda i: (i.time, i.order), reverse=True)
    return items[:limit]


# --------------------------------------------------------------------------- leftover margin


@dataclass(frozen=True)
class ReturnedMargin:
    """Isolated margin returned to the cross wallet when its position closed."""

    symbol: str
    asset: str
    units: int
    transaction_id: int
    ref: str


def leftover_ref(key: str, symbol: str, version: int) -> str:
    return f"isolated:{key}:return:{symbol}:v{version}"


async def return_leftover_isolated(
    session: AsyncSession,
    settings: Settings,
    *,
    key: str,
    isolated: Mapping[str, int],
    open_isolated: set[str],
    version: int,
) -> list[ReturnedMargin]:
    """Move every isolated wallet that still holds margin but has no open isolated
    position any more (``open_isolated``: the symbols of the new position list) back to
    the cross wallet, one journaled ``isolated_transfer`` per symbol.

    Call with the account locked and ``isolated`` read after the lock; ``version`` is
    the locked account's version (bumped by the lock, unique per locked transaction),
    which makes the ref unique per closing. Idempotent by state: once returned, the
    wallet is 0 and the same update again moves nothing. A negative isolated wallet (the
    ledger never makes one) is left alone."""
    settle = settings.ledger.settlement_asset
    precision = precision_of(settings, settle)
    out: list[ReturnedMargin] = []
    for symbol, units in sorted(isolated.items()):
        if symbol in open_isolated or units <= 0:
            continue
        ref = leftover_ref(key, symbol, version)
        amount = format_amount(units, precision)
        memo = json.dumps(
            {
                "request": {"symbol": symbol, "type": "return", "amount": amount},
                "result": None,
                "reason": "the isolated position closed: its margin returns to cross",
            },
            sort_keys=True,
        )
        posted = await ledger.post(
            session,
            kind=TxKind.ISOLATED_TRANSFER,
            ref=ref,
            legs=transfer(settle, units, debit=(key, iso_wallet(symbol)), credit=(key, CROSS)),
            account_key=key,
            memo=memo,
        )
        out.append(ReturnedMargin(symbol, settle, units, posted.transaction.id, ref))
    return out


# --------------------------------------------------------------------------- price moves


@dataclass(frozen=True)
class PastBrackets:
    """A position whose notional at a new mark is above its symbol's last bracket cap."""

    account: str
    symbol: str
    size: Decimal
    mark: Decimal
    notional: Decimal
    max_notional: Decimal

    def message(self) -> str:
        return (
            f"{self.symbol}: notional {plain_decimal(self.notional)} at mark "
            f"{plain_decimal(self.mark)} is above the last bracket cap "
            f"{plain_decimal(self.max_notional)}"
        )


async def positions_past_brackets(
    session: AsyncSession, settings: Settings, marks: Mapping[str, Decimal]
) -> list[PastBrackets]:
    """The open positions that the marks ``marks`` put past their last bracket (the
    price is the market's truth and is kept; these accounts become unevaluable)."""
    if not marks:
        return []
    found = await session.execute(
        select(Account.key, PositionRow.symbol, PositionRow.size)
        .join(Account, Account.id == PositionRow.account_id)
        .where(PositionRow.symbol.in_(sorted(marks)))
        .order_by(Account.key, PositionRow.symbol)
    )
    out: list[PastBrackets] = []
    for key, symbol, size in found.all():
        table = settings.brackets.get(symbol)
        if table is None:
            continue
        value = EXACT.multiply(abs(size), marks[symbol])
        if value > table.max_notional:
            out.append(PastBrackets(key, symbol, size, marks[symbol], value, table.max_notional))
    return out
