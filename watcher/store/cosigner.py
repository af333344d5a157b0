"""The co-signer's own store: what it answered and what it signed. Not the watcher's
database and not its migrations: two tables created on start (``create_all``), on a
SQLite file by default or any SQLAlchemy URL.

* ``cosign_answers``: one row per distinct payload (the sha-256 of its canonical form):
  the signature given, or the refusal (code, message, details). Asking again with the
  same payload gets this row back, so a refusal is final for its payload and a
  signature is given again byte for byte.
* ``cosign_payouts``: one row per payout id the co-signer ever signed (per chain and
  vault), with the user request it was signed for. Unique on (chain, vault, id) and on
  (account, nonce): a second payout for either with other contents is refused. The
  hourly limits sum the rows signed in the window.

Integers that can be uint256 (id, nonce, amount) are stored as decimal strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

metadata = MetaData()

answers = Table(
    "cosign_answers",
    metadata,
    Column("payload_hash", String(64), primary_key=True),
    Column("chain_id", BigInteger, nullable=False),
    Column("vault", String(42), nullable=False),
    Column("payout_id", String(78), nullable=False),
    Column("outcome", String(8), nullable=False),  # "signed" | "refused"
    Column("status", Integer, nullable=False),
    Column("code", String(64)),
    Column("message", Text),
    Column("details", Text),  # JSON
    Column("signer", String(42)),
    Column("signature", String(132)),
    Column("at", Float, nullable=False),
)

payouts = Table(
    "cosign_payouts",
    metadata,
    Column("chain_id", BigInteger, primary_key=True),
    Column("vault", String(42), primary_key=True),
    Column("payout_id", String(78), primary_key=True),
    Column("token", String(42), nullable=False),
    Column("to", String(42), nullable=False),
    Column("amount", String(78), nullable=False),
    Column("account", String(42), nullable=False),
    Column("nonce", String(78), nullable=False),
    Column("request_digest", String(66), nullable=False),
    Column("signed_at", Float, nullable=False, index=True),
    UniqueConstraint("account", "nonce", name="uq_cosign_payouts_account_nonce"),
)


@dataclass(frozen=True)
class Answer:
    outcome: str
    status: int
    code: str | None
    message: str | None
    details: dict[str, Any]
    signer: str | None
    signature: str | None

    def body(self) -> dict[str, Any]:
        if self.outcome == "signed":
            return {"signer": self.signer, "signature": self.signature}
        return {"code": self.code, "message": self.message, "details": self.details}


@dataclass(frozen=True)
class SignedPayout:
    chain_id: int
    vault: str
    payout_id: int
    token: str
    to: str
    amount: int
    account: str
    nonce: int
    request_digest: str
    signed_at: float


# Built once: a statement object is compiled and its cache key computed once, then
# only executed with new parameters (building one per call was a third of the
# co-signer's CPU per payout; issue 22).
_FIND_ANSWER = select(answers).where(answers.c.payload_hash == bindparam("payload_hash"))
_PUT_ANSWER = insert(answers)
_FIND_PAYOUT = select(payouts).where(
    payouts.c.chain_id == bindparam("chain_id"),
    payouts.c.vault == bindparam("vault"),
    payouts.c.payout_id == bindparam("payout_id"),
)
_FIND_BY_NONCE = select(payouts).where(
    payouts.c.account == bindparam("account"), payouts.c.nonce == bindparam("nonce")
)
_PUT_PAYOUT = insert(payouts)


async def create(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def find_answer(conn: AsyncConnection, payload_hash: str) -> Answer | None:
    row = (await conn.execute(_FIND_ANSWER, {"payload_hash": payload_hash})).first()
    if row is None:
        return None
    return Answer(
        outcome=row.outcome,
        status=row.status,
        code=row.code,
        message=row.message,
        details=json.loads(row.details) if row.details else {},
        signer=row.signer,
        signature=row.signature,
    )


async def put_answer(
    conn: AsyncConnection,
    payload_hash: str,
    *,
    chain_id: int,
    vault: str,
    payout_id: int,
    answer: Answer,
    at: float,
) -> None:
    await conn.execute(
        _PUT_ANSWER,
        {
            "payload_hash": payload_hash,
            "chain_id": chain_id,
            "vault": vault,
            "payout_id": str(payout_id),
            "outcome": answer.outcome,
            "status": answer.status,
            "code": answer.code,
            "message": answer.message,
            "details": json.dumps(answer.details, default=str) if answer.details else None,
            "signer": answer.signer,
            "signature": answer.signature,
            "at": at,
        },
    )


def _signed(row: Any) -> SignedPayout:
    return SignedPayout(
        chain_id=row.chain_id,
        vault=row.vault,
        payout_id=int(row.payout_id),
        token=row.token,
        to=row.to,
        amount=int(row.amount),
        account=row.account,
        nonce=int(row.nonce),
        request_digest=row.request_digest,
        signed_at=row.signed_at,
    )


async def find_payout(
    conn: AsyncConnection, chain_id: int, vault: str, payout_id: int
) -> SignedPayout | None:
    params = {"chain_id": chain_id, "vault": vault, "payout_id": str(payout_id)}
    row = (await conn.execute(_FIND_PAYOUT, params)).first()
    return None if row is None else _signed(row)


async def find_by_nonce(conn: AsyncConnection, account: str, nonce: int) -> SignedPayout | None:
    row = (await conn.execute(_FIND_BY_NONCE, {"account": account, "nonce": str(nonce)})).first()
    return None if row is None else _signed(row)


async def signed_since(conn: AsyncConnection, since: float) -> list[SignedPayout]:
    rows = await conn.execute(select(payouts).where(payouts.c.signed_at > since))
    return [_signed(row) for row in rows]


async def put_payout(conn: AsyncConnection, p: SignedPayout) -> None:
    await conn.execute(
        _PUT_PAYOUT,
        {
            "chain_id": p.chain_id,
            "vault": p.vault,
            "payout_id": str(p.payout_id),
            "token": p.token,
            "to": p.to,
            "amount": str(p.amount),
            "account": p.account,
            "nonce": str(p.nonce),
            "request_digest": p.request_digest,
            "signed_at": p.signed_at,
        },
    )
