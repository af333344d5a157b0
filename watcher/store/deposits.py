"""Deposit repository: record seen logs, credit, orphan and reverse, and the history view.

Every function runs in the caller's DB transaction and changes states only through
:func:`watcher.domain.states.check_deposit`. A deposit is keyed on
``(chain_id, tx_hash, log_index)``; its credit is the journal transaction with ref
``deposit:<chain_id>:<tx_hash>:<log_index>`` (``#<n>`` appended for the n-th credit
of a deposit that was reversed and then re-included), so replaying a range or a
crashed tick can never credit the same deposit twice.

New deposits and their credits are written in bulk (:mod:`watcher.store.bulk`,
:func:`watcher.store.ledger_batch.post_pairs`): a backfill step of 20,000 final
deposits is a few multi-row statements per table, not 80,000 ORM rows. The queries a
listener step makes (:func:`by_keys`, :func:`pending_upto`,
:func:`lowest_pending_block`) read index ranges of the rows above its cursor or still
pending, so their cost does not grow with the number of credited deposits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eth_utils.address import is_address, to_checksum_address
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from watcher.chain.logs import ZERO_ADDRESS, DepositLog
from watcher.domain.amounts import chain_to_ledger, chain_to_ledger_of, format_amount
from watcher.domain.confirmations import confirmations, eta_seconds
from watcher.domain.journal import Leg, TxKind, vault_account
from watcher.domain.states import DepositState, check_deposit
from watcher.settings import AssetConfig, NetworkConfig, Settings
from watcher.store.bulk import insert_many
from watcher.store.keys import KeyColumn, keys_params, rows_by_keys
from watcher.store.ledger import dialect_name, post
from watcher.store.ledger_batch import Pair, post_pairs
from watcher.store.models import Deposit, JournalTransaction, NetworkCursor, table_of, utcnow

log = logging.getLogger("watcher.store.deposits")

_CHUNK = 5000
# Logs looked up by key in by_keys; more (a backfill range) are matched by block range.
KEY_LOOKUP_MAX = 256
_DEPOSITS = table_of(Deposit)
_DEPOSIT_KEY = (
    KeyColumn("chain_id", "bigint[]"),
    KeyColumn("tx_hash", "text[]"),
    KeyColumn("log_index", "bigint[]"),
)


S = DepositState


# --------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class Valuation:
    """What a deposit is worth in the ledger; ``asset`` None = token not configured."""

    asset: str | None
    ledger_amount: int | None
    dust: int
    precision: int | None


def asset_of(
    token: str, network: NetworkConfig, assets: Mapping[str, AssetConfig]
) -> tuple[str, int, int] | None:
    """(ledger asset, token decimals, ledger precision) of a log's token; None when the
    token (or its asset) is not configured. The zero address is the native asset."""
    if token.lower() == ZERO_ADDRESS:
        asset, decimals = network.native_asset, network.native_decimals
    else:
        configured = network.token_by_address(token)
        if configured is None:
            return None
        asset, decimals = configured.asset, configured.decimals
    cfg = assets.get(asset)
    if cfg is None:
        return None
    return asset, decimals, cfg.precision


def valuate(
    token: str, amount: int, network: NetworkConfig, assets: Mapping[str, AssetConfig]
) -> Valuation:
    """Map the log's token to a ledger asset and convert, flooring to its precision.

    Native deposits carry the zero address and map to the network's native asset.
    Example: 1.234567891234567891 USDT (18 decimals) with precision 8 →
    ledger 123_456_789, dust 1_234_567_891 base units.
    """
    mapped = asset_of(token, network, assets)
    if mapped is None:
        return Valuation(None, None, 0, None)
    asset, decimals, precision = mapped
    units, dust = chain_to_ledger(amount, decimals, precision)
    return Valuation(asset, units, dust, precision)


def credit_ref(chain_id: int, tx_hash: str, log_index: int, generation: int = 0) -> str:
    base = f"deposit:{chain_id}:{tx_hash}:{log_index}"
    return base if generation == 0 else f"{base}#{generation}"


def _credit_pair(
    chain_id: int, tx_hash: str, log_index: int, account: str, asset: str, units: int, gen: int
) -> Pair:
    """User cross +units, ``system:vault:<chain_id>`` -units, about the user."""
    ref = credit_ref(chain_id, tx_hash, log_index, gen)
    return Pair(ref, account, vault_account(chain_id), asset, units, account)


# --------------------------------------------------------------------------- recording


@dataclass
class Recorded:
    new: int = 0
    credited: int = 0
    unsupported: int = 0
    repointed: int = 0
    # For the listener's lifecycle lines: the new logs with, per log, its state, ledger
    # asset (None: unsupported) and ledger amount (the columns that were written), and
    # the known deposits that moved back to pending in a new block.
    fresh: Sequence[DepositLog] = ()
    states: Sequence[str] = ()
    assets: Sequence[str | None] = ()
    ledger_amounts: Sequence[int | None] = ()
    repointed_rows: list[Deposit] = field(default_factory=list)


async def by_keys(
    session: AsyncSession, chain_id: int, logs: Sequence[DepositLog], above: int | None = None
) -> dict[tuple[str, int], Deposit]:
    """Stored deposits that these logs (all in blocks above the cursor) may already have.

    Up to :data:`KEY_LOOKUP_MAX` logs (a steady-state step: a block or a few) are looked
    up by their key, one statement, each log a search of the unique index on (chain,
    tx hash, log index): the cost follows the logs, whatever is stored.

    More logs (a backfill range) are found by what they can match instead: a log in a
    block above the cursor ``above`` can only be known already if it was stored in a
    block above the cursor too (a replayed range, or a block dropped by a reorg: its
    rows keep their old numbers, which are above the rewound cursor), or if it was
    orphaned/reversed. Anything stored at or below the cursor is canonical, and a
    transaction is included only once in a chain. Two indexed queries of keys only
    (``ix_deposits_chain_block``, ``ix_deposits_state_chain_block``), then the matching
    rows: the cost follows the rows above the cursor and the orphaned/reversed ones,
    not the size of the table or the number of logs. (Every step used to take this
    path: with the 3,000 orphaned rows of a 1M-deposit ledger it read them all in each
    step, ~1.1 ms of a ~9 ms step; issue 22.)
    """
    if not logs:
        return {}
    if len(logs) <= KEY_LOOKUP_MAX:
        dialect = dialect_name(session)
        keys = [(chain_id, d.tx_hash, d.log_index) for d in logs]
        found = await session.scalars(
            select(Deposit).from_statement(rows_by_keys(dialect, _DEPOSITS, _DEPOSIT_KEY)),
            keys_params(dialect, len(_DEPOSIT_KEY), keys),
        )
        return {(r.tx_hash, r.log_index): r for r in found}
    lowest = min(d.block_number for d in logs) if above is None else above + 1
    candidates: list[tuple[int, str, int]] = []
    for where in (
        Deposit.block_number >= lowest,
        Deposit.state.in_([str(S.ORPHANED), str(S.REVERSED)]),
    ):
        rows = await session.execute(
            select(Deposit.id, Deposit.tx_hash, Deposit.log_index).where(
                Deposit.chain_id == chain_id, where
            )
        )
        candidates.extend((i, tx_hash, log_index) for i, tx_hash, log_index in rows.all())
    if not candidates:
        return {}
    wanted = {(d.tx_hash, d.log_index) for d in logs}
    ids = [i for i, tx_hash, log_index in candidates if (tx_hash, log_index) in wanted]
    out: dict[tuple[str, int], Deposit] = {}
    ids = sorted(set(ids))
    for start in range(0, len(ids), _CHUNK):
        found = await session.scalars(
            select(Deposit).where(Deposit.id.in_(ids[start : start + _CHUNK]))
        )
        out.update({(r.tx_hash, r.log_index): r for r in found})
    return out


async def record_logs(
    session: AsyncSession,
    logs: Sequence[DepositLog],
    network: NetworkConfig,
    assets: Mapping[str, AssetConfig],
    *,
    final_upto: int | None,
    above: int | None = None,
) -> Recorded:
    """Store verified logs: new ones ``pending`` (or ``unsupported``), and credited at
    once when their block is already final (``block_number <= final_upto``: the backfill
    path). A log seen again after a reorg moves its orphaned/reversed deposit back to
    ``pending`` in its new block; a log seen again in the same block changes nothing.

    New rows go in column by column through :func:`watcher.store.bulk.insert_many` and
    their credits through :func:`watcher.store.ledger_batch.post_pairs` (a backfill
    step may hold tens of thousands); valuation is computed once per token.
    """
    out = Recorded()
    if not logs:
        return out
    chain_id = network.chain_id
    known = await by_keys(session, chain_id, logs, above)
    fresh: list[DepositLog] = []
    for d in logs:
        row = known.get((d.tx_hash, d.log_index)) if known else None
        if row is None:
            fresh.append(d)
        elif _repoint(row, d):
            out.repointed += 1
            out.repointed_rows.append(row)
    if not fresh:
        return out

    check_deposit(S.PENDING, S.CREDITED)  # the transition every final new deposit takes
    pending, credited, unsupported = str(S.PENDING), str(S.CREDITED), str(S.UNSUPPORTED)
    now = utcnow()
    # Per token: its ledger asset and amount converter, or None (unsupported).
    tokens: dict[str, tuple[str, Callable[[int], tuple[int, int]]] | None] = {}
    asset_col: list[str | None] = []
    ledger_col: list[int | None] = []
    dust_col: list[int] = []
    state_col: list[str] = []
    credited_at: list[datetime | None] = []
    pairs: list[Pair] = []
    pair_rows: list[int] = []
    vault = vault_account(chain_id)
    for i, d in enumerate(fresh):
        if d.token in tokens:
            mapped = tokens[d.token]
        else:
            found = asset_of(d.token, network, assets)
            mapped = None if found is None else (found[0], chain_to_ledger_of(*found[1:]))
            tokens[d.token] = mapped
        if mapped is None:
            asset_col.append(None)
            ledger_col.append(None)
            dust_col.append(0)
            state_col.append(unsupported)
            credited_at.append(None)
            out.unsupported += 1
            continue
        asset, convert = mapped
        units, dust = convert(d.amount)
        asset_col.append(asset)
        ledger_col.append(units)
        dust_col.append(dust)
        if final_upto is not None and d.block_number <= final_upto:
            state_col.append(credited)
            credited_at.append(now)
            out.credited += 1
            if units > 0:
                ref = credit_ref(chain_id, d.tx_hash, d.log_index)
                pairs.append(Pair(ref, d.account, vault, asset, units, d.account))
                pair_rows.append(i)
        else:
            state_col.append(pending)
            credited_at.append(None)

    credit_tx: list[int | None] = [None] * len(fresh)
    if pairs:
        ids = await post_pairs(session, TxKind.DEPOSIT, pairs)
        for i, pair in zip(pair_rows, pairs, strict=True):
            credit_tx[i] = ids[pair.ref]
    out.new = await insert_many(
        session,
        table_of(Deposit),
        {
            "tx_hash": [d.tx_hash for d in fresh],
            "log_index": [d.log_index for d in fresh],
            "block_number": [d.block_number for d in fresh],
            "block_hash": [d.block_hash for d in fresh],
            "account": [d.account for d in fresh],
            "token": [d.token for d in fresh],
            "amount": [d.amount for d in fresh],
            "asset": asset_col,
            "ledger_amount": ledger_col,
            "dust": dust_col,
            "state": state_col,
            "credit_tx_id": credit_tx,
            "credited_at": credited_at,
        },
        same={"chain_id": chain_id, "seen_at": now, "updated_at": now},
    )
    out.fresh, out.states, out.assets, out.ledger_amounts = fresh, state_col, asset_col, ledger_col
    return out


def _repoint(row: Deposit, d: DepositLog) -> bool:
    """The same log found again; True when it moved to another block."""
    state = S(row.state)
    if row.block_hash == d.block_hash and state not in (S.ORPHANED, S.REVERSED):
        return False
    if state in (S.ORPHANED, S.REVERSED, S.PENDING):
        check_deposit(state, S.PENDING)
        row.state = str(S.PENDING)
    elif state is S.CREDITED:
        # Credited in a block we no longer hold: reorg handling reverses credits before
        # any re-scan, so this means the reorg was below our stored window.
        log.error(
            "credited deposit %s:%d found again in block %d (%s), credited in %s; left as is",
            d.tx_hash,
            d.log_index,
            d.block_number,
            d.block_hash,
            row.block_hash,
        )
        return False
    row.block_number = d.block_number
    row.block_hash = d.block_hash
    row.updated_at = utcnow()
    return True


# --------------------------------------------------------------------------- crediting


async def pending_upto(session: AsyncSession, chain_id: int, block: int) -> list[Deposit]:
    rows = await session.scalars(
        select(Deposit)
        .where(
            Deposit.chain_id == chain_id,
            Deposit.state == str(S.PENDING),
            Deposit.block_number <= block,
        )
        .order_by(Deposit.block_number, Deposit.log_index)
    )
    return list(rows)


async def lowest_pending_block(session: AsyncSession, chain_id: int) -> int | None:
    row = await session.scalar(
        select(Deposit.block_number)
        .where(Deposit.chain_id == chain_id, Deposit.state == str(S.PENDING))
        .order_by(Deposit.block_number)
        .limit(1)
    )
    return int(row) if row is not None else None


async def _generation(session: AsyncSession, row: Deposit) -> int:
    """0 for a first credit; n+1 after the n-th credit was reversed."""
    if row.credit_tx_id is None:
        return 0
    old = await session.get(JournalTransaction, row.credit_tx_id)
    if old is None or "#" not in old.ref:
        return 1
    return int(old.ref.rsplit("#", 1)[1]) + 1


async def credit(session: AsyncSession, rows: Sequence[Deposit]) -> list[Deposit]:
    """Credit pending deposits (the caller checked finality and hashes): deposit row,
    balanced journal (user cross +L, ``system:vault:<chain>`` −L) and balances, in the
    caller's transaction. A deposit worth 0 ledger units (all dust) is credited
    without a journal entry."""
    pairs: list[tuple[Deposit, Pair]] = []
    for row in rows:
        check_deposit(S(row.state), S.CREDITED)
        units = row.ledger_amount or 0
        if units > 0 and row.asset is not None:
            gen = await _generation(session, row)
            pair = _credit_pair(
                row.chain_id, row.tx_hash, row.log_index, row.account, row.asset, units, gen
            )
            pairs.append((row, pair))
    ids = await post_pairs(session, TxKind.DEPOSIT, [p for _, p in pairs]) if pairs else {}
    now = utcnow()
    for row in rows:
        row.state = str(S.CREDITED)
        row.credited_at = now
        row.updated_at = now
    for row, pair in pairs:
        row.credit_tx_id = ids[pair.ref]
    await session.flush()
    return list(rows)


# --------------------------------------------------------------------------- reorgs


@dataclass
class Dropped:
    orphaned: list[Deposit] = field(default_factory=list)
    reversed: list[Deposit] = field(default_factory=list)


async def drop_above(session: AsyncSession, chain_id: int, ancestor: int) -> Dropped:
    """Deposits in blocks above the common ancestor of a reorg: pending ones become
    ``orphaned``; credited ones are ``reversed`` with a compensating journal entry
    (the user's cross wallet is debited and may go negative)."""
    out = Dropped()
    rows = await session.scalars(
        select(Deposit)
        .where(
            Deposit.chain_id == chain_id,
            Deposit.block_number > ancestor,
            Deposit.state.in_([str(S.PENDING), str(S.CREDITED)]),
        )
        .order_by(Deposit.block_number, Deposit.log_index)
    )
    now = utcnow()
    for row in rows:
        if row.state == S.PENDING:
            check_deposit(S.PENDING, S.ORPHANED)
            row.state = str(S.ORPHANED)
            out.orphaned.append(row)
        else:
            check_deposit(S.CREDITED, S.REVERSED)
            units = row.ledger_amount or 0
            if units > 0 and row.asset is not None and row.credit_tx_id is not None:
                credited = await session.get(JournalTransaction, row.credit_tx_id)
                ref = (
                    credited.ref
                    if credited is not None
                    else credit_ref(chain_id, row.tx_hash, row.log_index)
                )
                await post(
                    session,
                    kind=TxKind.DEPOSIT_REVERSAL,
                    ref=f"reversal:{ref}",
                    legs=[
                        Leg(row.account, row.asset, -units),
                        Leg(vault_account(chain_id), row.asset, units),
                    ],
                    account_key=row.account,
                    memo=f"block {row.block_number} {row.block_hash} reorged out after credit",
                )
            row.state = str(S.REVERSED)
            out.reversed.append(row)
        row.updated_at = now
    await session.flush()
    return out


# --------------------------------------------------------------------------- visibility


async def deposit_history(
    session: AsyncSession, account: str, settings: Settings, *, limit: int | None = None
) -> list[dict[str, Any]]:
    """The account's deposits, newest first, for ``GET /v1/accounts/{address}/history``.

    Per item: type "deposit", asset, amount (decimal string in asset units: the ledger
    amount, or the raw base units of an unsupported token), state, txHash, chainId,
    time (ISO, when first seen), confirmations n, requiredConfirmations N and
    etaSeconds (pending only; counted against the head the listener last stored).
    Under a tag rule N is the tag's current distance to the head plus one. ``limit``:
    the newest ``limit`` only (an account with thousands of deposits is read a page at
    a time, not whole).
    """
    if not is_address(account):
        return []
    address = str(to_checksum_address(account))
    stmt = (
        select(Deposit)
        .where(Deposit.account == address)
        .order_by(Deposit.seen_at.desc(), Deposit.id.desc())
    )
    rows = list(await session.scalars(stmt if limit is None else stmt.limit(limit)))
    cursors = {c.chain_id: c for c in await session.scalars(select(NetworkCursor))}
    out: list[dict[str, Any]] = []
    for row in rows:
        network = settings.network_by_chain(row.chain_id)
        cur = cursors.get(row.chain_id)
        state = S(row.state)
        precision = settings.assets[row.asset].precision if row.asset in settings.assets else None
        if row.ledger_amount is not None and precision is not None:
            amount = format_amount(row.ledger_amount, precision)
        else:
            amount = str(row.amount)
        n: int | None = None
        required: int | None = None
        eta: int | None = None
        if network is not None:
            rule = network.rule
            head = cur.head if cur is not None and cur.head is not None else None
            tagged = None
            if cur is not None and rule.tag is not None:
                tagged = cur.finalized if rule.tag == "finalized" else cur.safe
            if rule.depth is not None:
                required = rule.depth
            elif head is not None and tagged is not None:
                required = head - tagged + 1
            if state is S.PENDING and head is not None:
                n = confirmations(head, row.block_number)
                if rule.depth is not None or tagged is not None:
                    eta = eta_seconds(
                        rule, row.block_number, head, network.block_time_seconds, tagged
                    )
            elif state is S.CREDITED:
                n = required
                eta = 0
            else:
                n = 0
        out.append(
            {
                "type": "deposit",
                "asset": row.asset or row.token,
                "amount": amount,
                "state": str(state),
                "txHash": row.tx_hash,
                "chainId": row.chain_id,
                "time": row.seen_at.isoformat(),
                "confirmations": n,
                "requiredConfirmations": required,
                "etaSeconds": eta,
            }
        )
    return out
