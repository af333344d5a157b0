"""The co-signer's checks (services/cosigner.py), in process on its own store (SQLite,
and PostgreSQL when WATCHER_TEST_DATABASE_URL is set), with a fixed clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.cosigner_support import (
    CHAIN_ID,
    COSIGNER_KEY,
    DENIED,
    NATIVE,
    NOW,
    USDT,
    User,
    body,
    config_toml,
)
from tests.fixtures_db import BACKENDS, drop_database_url, make_database_url
from watcher.chain import payout as P
from watcher.services import cosigner as C
from watcher.store.db import create_engine

ALICE = User.make("alice")
BOB = User.make("bob")
DEST = "0x1111111111111111111111111111111111111111"


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    url = await make_database_url(request.param, tmp_path)
    if url.startswith("sqlite"):
        url = url.replace("watcher.db", "cosigner.sqlite")
    yield url
    await drop_database_url(url)


def make(store_url: str, tmp_path: Path, clock: Clock, extra: str = "") -> C.Cosigner:
    path = tmp_path / "cosigner.toml"
    path.write_text(config_toml(store_url, extra=extra))
    cfg = C.load_config(path)
    return C.Cosigner(cfg, P.PayoutSigner(COSIGNER_KEY), create_engine(store_url), clock=clock)


@pytest.fixture
async def cosigner(store_url: str, tmp_path: Path) -> AsyncIterator[C.Cosigner]:
    c = make(store_url, tmp_path, Clock())
    await c.start()
    yield c
    await c.engine.dispose()


def payout_of(doc: dict[str, Any]) -> P.Payout:
    p = doc["payout"]
    return P.Payout(
        p["chainId"], p["vault"], int(p["id"]), p["token"], p["to"], int(p["amount"]),
        int(p["deadline"]),
    )  # fmt: skip


async def refused(c: C.Cosigner, doc: dict[str, Any]) -> str:
    answer = await c.cosign(doc)
    assert answer.outcome == "refused", answer
    assert answer.code is not None
    return answer.code


async def test_signs_a_valid_payout_and_repeats_the_same_signature(cosigner: C.Cosigner) -> None:
    doc = body(1, ALICE.request("12.5", DEST, 1))
    answer = await cosigner.cosign(doc)
    assert answer.outcome == "signed" and answer.status == 200
    assert answer.body()["signer"] == P.PayoutSigner(COSIGNER_KEY).address
    assert P.recover(payout_of(doc), answer.signature or "") == answer.signer
    again = await cosigner.cosign(doc)
    assert again == answer
    assert cosigner.metrics.repeated.labels("signed")._value.get() == 1


async def test_a_request_given_by_symbol_or_address_both_sign(cosigner: C.Cosigner) -> None:
    req = ALICE.request("1", DEST, 2, token=USDT)
    assert (await cosigner.cosign(body(2, req))).outcome == "signed"
    eth = ALICE.request("0.01", DEST, 3, token="ETH", token_address=NATIVE, decimals=18)
    answer = await cosigner.cosign(body(3, eth, token=NATIVE, decimals=18))
    assert answer.outcome == "signed", answer


@pytest.mark.parametrize(
    ("signature", "reason"),
    [(None, "missing"), ("", "missing"), ("0x1234", "malformed"), ("0x" + "00" * 65, None)],
)
async def test_no_or_a_broken_user_signature_is_refused(
    cosigner: C.Cosigner, signature: str | None, reason: str | None
) -> None:
    req = ALICE.request("5", DEST, 4)
    req["signature"] = signature
    answer = await cosigner.cosign(body(4, req))
    assert answer.code == C.USER_SIGNATURE_INVALID and answer.status == 403
    if reason:
        assert answer.details["reason"] == reason


async def test_a_request_signed_by_someone_else_is_refused(cosigner: C.Cosigner) -> None:
    req = ALICE.request("5", DEST, 5)
    req["account"] = BOB.address  # Alice's signature over Bob's account
    answer = await cosigner.cosign(body(5, req))
    assert answer.code == C.USER_SIGNATURE_INVALID
    assert answer.details["reason"] in ("wrong_signer", "unrecoverable")


async def test_the_payout_must_be_what_the_user_signed(cosigner: C.Cosigner) -> None:
    req = ALICE.request("5", DEST, 6)
    assert await refused(cosigner, body(6, req, amount=5_000_001)) == C.REQUEST_MISMATCH
    other = "0x2222222222222222222222222222222222222222"
    assert await refused(cosigner, body(7, req, to=other)) == C.REQUEST_MISMATCH
    assert await refused(cosigner, body(8, req, token=NATIVE)) == C.REQUEST_MISMATCH
    precise = dict(req, amount="5.0000001")  # more decimals than USDT has
    answer = await cosigner.cosign(body(13, precise, amount=5_000_000))
    assert answer.code == C.REQUEST_MISMATCH and answer.details["field"] == "amount"
    # a tampered request amount breaks the user's signature instead
    tampered = dict(req, amount="50")
    assert await refused(cosigner, body(9, tampered)) == C.USER_SIGNATURE_INVALID


async def test_an_id_is_never_signed_for_other_contents(cosigner: C.Cosigner) -> None:
    first = body(10, ALICE.request("5", DEST, 10))
    assert (await cosigner.cosign(first)).outcome == "signed"
    # the same id for another (correctly signed) request of another amount
    other = body(10, ALICE.request("6", DEST, 11))
    answer = await cosigner.cosign(other)
    assert answer.code == C.PAYOUT_ID_REUSED and answer.status == 409
    # the same request (account, nonce) under another id
    assert await refused(cosigner, body(12, first["request"])) == C.NONCE_REUSED
    # the same id and contents with a later deadline: signed again, counted once
    later = body(10, first["request"], deadline=NOW + 3000)
    again = await cosigner.cosign(later)
    assert again.outcome == "signed" and again.signature != (await cosigner.cosign(first)).signature


async def test_a_refusal_is_final_for_its_payload(store_url: str, tmp_path: Path) -> None:
    clock = Clock()
    c = make(store_url, tmp_path, clock)
    await c.start()
    doc = body(20, ALICE.request("5", DEST, 20), deadline=NOW - 1)
    assert await refused(c, doc) == C.DEADLINE_PASSED
    await c.engine.dispose()
    # a new process with a clock where the deadline would be fine: the same answer
    clock.now = NOW - 100
    c2 = make(store_url, tmp_path, clock)
    await c2.start()
    assert await refused(c2, doc) == C.DEADLINE_PASSED
    assert c2.metrics.repeated.labels("refused")._value.get() == 1
    await c2.engine.dispose()


async def test_deadlines(cosigner: C.Cosigner) -> None:
    req = ALICE.request("1", DEST, 30)
    assert await refused(cosigner, body(30, req, deadline=NOW)) == C.DEADLINE_PASSED
    assert await refused(cosigner, body(31, req, deadline=NOW + 3601)) == C.DEADLINE_TOO_FAR
    old = ALICE.request("1", DEST, 32, deadline=NOW - 31 * 86_400)
    assert await refused(cosigner, body(32, old)) == C.REQUEST_TOO_OLD
    recent = ALICE.request("1", DEST, 33, deadline=NOW - 86_400)  # accepted then, paid now
    assert (await cosigner.cosign(body(33, recent))).outcome == "signed"


async def test_destination_rules(store_url: str, tmp_path: Path) -> None:
    c = make(store_url, tmp_path, Clock())
    await c.start()
    assert await refused(c, body(40, ALICE.request("1", DENIED, 40))) == C.DESTINATION_DENIED
    await c.engine.dispose()
    allowed = "0x3333333333333333333333333333333333333333"
    extra = f'\n[destinations]\nallow = ["{allowed}"]\n'
    cfg_text = config_toml(store_url).replace(f'[destinations]\ndeny = ["{DENIED}"]\n', "")
    path = tmp_path / "allow.toml"
    path.write_text(cfg_text + extra)
    c2 = C.Cosigner(
        C.load_config(path), P.PayoutSigner(COSIGNER_KEY), create_engine(store_url), clock=Clock()
    )
    await c2.start()
    assert await refused(c2, body(41, ALICE.request("1", DEST, 41))) == C.DESTINATION_NOT_ALLOWED
    assert (await c2.cosign(body(42, ALICE.request("1", allowed, 42)))).outcome == "signed"
    await c2.engine.dispose()


async def test_hourly_limits_per_account_and_global(store_url: str, tmp_path: Path) -> None:
    clock = Clock()
    c = make(store_url, tmp_path, clock)
    await c.start()
    # account limit 1000 USD, global 1500 USD
    assert (await c.cosign(body(50, ALICE.request("600", DEST, 50)))).outcome == "signed"
    answer = await c.cosign(body(51, ALICE.request("400.000001", DEST, 51)))
    assert answer.code == C.ACCOUNT_LIMIT_EXCEEDED
    assert answer.details["used"] == "600" and answer.details["unit"] == "USD"
    assert (await c.cosign(body(52, ALICE.request("400", DEST, 52)))).outcome == "signed"
    # Bob: his own account is fine, everyone's total is not (1000 + 600 > 1500)
    assert await refused(c, body(53, BOB.request("600", DEST, 53))) == C.GLOBAL_LIMIT_EXCEEDED
    # native coin counts at its fixed price: 0.3 ETH = 600 USD
    eth = BOB.request("0.3", DEST, 54, token="ETH", token_address=NATIVE, decimals=18)
    assert await refused(c, body(54, eth, token=NATIVE, decimals=18)) == C.GLOBAL_LIMIT_EXCEEDED
    # an hour later the window is empty again (a new payload: new nonce, new deadline)
    clock.now = NOW + 3601
    later = BOB.request("600", DEST, 55, deadline=NOW + 4000)
    assert (await c.cosign(body(55, later, deadline=NOW + 5000))).outcome == "signed"
    refusals = c.metrics.refused
    assert refusals.labels(C.GLOBAL_LIMIT_EXCEEDED)._value.get() == 2
    assert c.metrics.signed.labels(str(CHAIN_ID))._value.get() == 3
    await c.engine.dispose()


async def test_token_unit_limits(store_url: str, tmp_path: Path) -> None:
    text = config_toml(store_url).replace(
        'price_usd = "1"\n', 'price_usd = "1"\naccount_limit = "10"\nglobal_limit = "15"\n', 1
    )
    path = tmp_path / "units.toml"
    path.write_text(text)
    c = C.Cosigner(
        C.load_config(path), P.PayoutSigner(COSIGNER_KEY), create_engine(store_url), clock=Clock()
    )
    await c.start()
    assert (await c.cosign(body(60, ALICE.request("10", DEST, 60)))).outcome == "signed"
    answer = await c.cosign(body(61, ALICE.request("0.000001", DEST, 61)))
    assert answer.code == C.ACCOUNT_LIMIT_EXCEEDED and answer.details["unit"] == "USDT"
    assert await refused(c, body(62, BOB.request("5.000001", DEST, 62))) == C.GLOBAL_LIMIT_EXCEEDED
    await c.engine.dispose()


async def test_unknown_vault_token_and_chain(cosigner: C.Cosigner) -> None:
    req = ALICE.request("1", DEST, 70)
    doc = body(70, req)
    doc["payout"]["vault"] = USDT
    assert await refused(cosigner, doc) == C.UNKNOWN_VAULT
    doc = body(71, req)
    doc["payout"]["chainId"] = 1
    assert await refused(cosigner, doc) == C.UNKNOWN_VAULT
    doc = body(72, req, token="0x4444444444444444444444444444444444444444")
    assert await refused(cosigner, doc) == C.UNKNOWN_TOKEN
    doc = body(73, dict(req, chainId=1))
    assert await refused(cosigner, doc) == C.CHAIN_MISMATCH


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"payout": {}},
        {"payout": {"id": 1}, "request": {}},
        body(1, dict(User.make("x").request("1", DEST, 1), account="0x12")),
        body(1, dict(User.make("x").request("1", DEST, 1), nonce=-1)),
    ],
)
async def test_malformed_bodies_are_400_and_not_stored(cosigner: C.Cosigner, doc: Any) -> None:
    with pytest.raises(C.Refusal) as info:
        await cosigner.cosign(doc)
    assert info.value.code == C.MALFORMED_PAYLOAD and info.value.status == 400


def test_withdraw_type_is_the_intakes() -> None:
    # One definition (chain/eip712.py) serves both: the type the co-signer verifies is
    # the one registered for the intake's digest.
    from watcher.chain import eip712

    assert eip712.type_string("Withdraw") == C.WITHDRAW_TYPE


def test_config_refuses_usd_limits_without_prices(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config_toml("sqlite+aiosqlite:///x").replace('price_usd = "2000"\n', ""))
    with pytest.raises(C.CosignerConfigError, match="price_usd"):
        C.load_config(path)
    path.write_text(config_toml("sqlite+aiosqlite:///x").replace('"1000"', "1000.5"))
    with pytest.raises(C.CosignerConfigError, match="floats"):
        C.load_config(path)


def test_every_code_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cosigner.md").read_text()
    missing = [code for code in C.CODES if f"`{code}`" not in doc]
    assert missing == []


def test_payload_hash_ignores_address_case_of_the_signature() -> None:
    req = ALICE.request("1", DEST, 1)
    a = C.parse_payload(body(1, req))
    b = C.parse_payload(body(1, dict(req, signature=req["signature"].upper().replace("0X", "0x"))))
    assert a.hash() == b.hash()
    assert a.hash() != C.parse_payload(body(2, req)).hash()


def test_cosign_help_imports_nothing_heavy() -> None:
    import json
    import subprocess
    import sys

    probe = (
        "import sys, json\n"
        "from watcher.cli.root import app\n"
        "try:\n    app(['cosign', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ['sqlalchemy', 'eth_account', 'web3', 'aiohttp', 'watcher.services.cosigner']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "run" in out and "address" in out
    assert json.loads(out.strip().splitlines()[-1]) == []


async def test_concurrent_requests_keep_the_limits_and_uniqueness(
    store_url: str, tmp_path: Path
) -> None:
    import asyncio

    clock = Clock()
    c = make(store_url, tmp_path, clock)
    await c.start()
    users = [User.make(f"user{i}") for i in range(8)]
    # 8 users x 250 USD at once against a global limit of 1500: exactly 6 signed
    docs = [body(100 + i, u.request("250", DEST, 1)) for i, u in enumerate(users)]
    answers = await asyncio.gather(*(c.cosign(d) for d in docs))
    assert sum(a.outcome == "signed" for a in answers) == 6
    assert {a.code for a in answers if a.outcome == "refused"} == {C.GLOBAL_LIMIT_EXCEEDED}
    # an hour later, 4 racing payouts of one (account, nonce) under different ids: one
    clock.now += 3601
    twin = User.make("twin").request("1", DEST, 9, deadline=NOW + 4000)
    docs = [body(200 + i, twin, deadline=NOW + 5000) for i in range(4)]
    answers = await asyncio.gather(*(c.cosign(d) for d in docs))
    assert sum(a.outcome == "signed" for a in answers) == 1
    assert {a.code for a in answers if a.outcome == "refused"} == {C.NONCE_REUSED}
    await c.engine.dispose()


async def test_a_store_failure_is_503_and_gives_no_signature(cosigner: C.Cosigner) -> None:
    from sqlalchemy import text

    async with cosigner.engine.begin() as conn:
        await conn.execute(text("DROP TABLE cosign_payouts"))
    with pytest.raises(C.Refusal) as info:
        await cosigner.cosign(body(90, ALICE.request("1", DEST, 90)))
    assert info.value.code == C.STORE_UNAVAILABLE and info.value.status == 503
    assert cosigner.metrics.signed.labels(str(CHAIN_ID))._value.get() == 0


async def test_a_batch_is_decided_in_order_as_if_each_came_alone(
    store_url: str, tmp_path: Path
) -> None:
    """cosign_many: each payload sees what the ones before it in the batch signed (the
    limits, the id, the (account, nonce)); a malformed one gets its refusal in place
    and is not stored; asked again, the batch gets the same answers."""
    c = make(store_url, tmp_path, Clock())
    await c.start()
    first = body(60, ALICE.request("600", DEST, 60))
    docs: list[Any] = [
        first,
        {"payout": "not an object"},
        body(61, ALICE.request("400.000001", DEST, 61)),  # Alice's 1000 USD an hour
        body(60, ALICE.request("6", DEST, 62)),  # id 60 again, other contents
        body(63, first["request"]),  # Alice's nonce 60 again, another id
        body(64, BOB.request("600", DEST, 64)),  # everyone's 1500: 1200 so far
        body(65, BOB.request("300.000001", DEST, 65)),  # 1500.000001
        first,  # the same payload twice in one batch: the same answer
    ]
    answers = await c.cosign_many(docs)
    outcomes = [
        a.code if isinstance(a, C.Refusal) else (a.outcome if a.code is None else a.code)
        for a in answers
    ]
    assert outcomes == [
        "signed",
        C.MALFORMED_PAYLOAD,
        C.ACCOUNT_LIMIT_EXCEEDED,
        C.PAYOUT_ID_REUSED,
        C.NONCE_REUSED,
        "signed",
        C.GLOBAL_LIMIT_EXCEEDED,
        "signed",
    ]
    signed = [a for a in answers if not isinstance(a, C.Refusal) and a.outcome == "signed"]
    assert signed[0].signature == signed[2].signature
    assert P.recover(payout_of(first), str(signed[0].signature)) == c.signer.address
    assert c.metrics.signed.labels(str(CHAIN_ID))._value.get() == 2
    assert c.metrics.repeated.labels("signed")._value.get() == 1
    # The limit window is the store's: a fresh process on the same store refuses alike.
    again = make(store_url, tmp_path, Clock())
    await again.start()
    repeat = await again.cosign_many([docs[6], body(66, BOB.request("300", DEST, 66))])
    assert [a.code for a in repeat] == [
        C.GLOBAL_LIMIT_EXCEEDED,
        None,
    ]
    await again.engine.dispose()
    await c.engine.dispose()


async def test_a_batch_that_does_not_commit_signs_nothing_and_counts_nothing(
    store_url: str, tmp_path: Path
) -> None:
    """A store failure part-way (writing the answer, after the payout was recorded and
    added to the limit window) refuses the whole batch with STORE_UNAVAILABLE; what it
    added to the window is dropped, so a payout that fits without it still fits."""
    from sqlalchemy import text

    c = make(store_url, tmp_path, Clock())
    await c.start()
    assert (await c.cosign(body(70, ALICE.request("100", DEST, 70)))).outcome == "signed"
    sqlite = c.engine.dialect.name == "sqlite"
    async with c.engine.begin() as conn:
        if sqlite:
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON cosign_answers "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON cosign_answers "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
    with pytest.raises(C.Refusal) as info:
        await c.cosign_many([body(71, ALICE.request("800", DEST, 71))])
    assert info.value.code == C.STORE_UNAVAILABLE
    async with c.engine.begin() as conn:
        await conn.execute(
            text("DROP TRIGGER refuse" if sqlite else "DROP TRIGGER refuse ON cosign_answers")
        )
    # 100 signed + 900 = Alice's 1000 USD: fits only if the failed 800 was not counted.
    answer = await c.cosign(body(72, ALICE.request("900", DEST, 72)))
    assert answer.outcome == "signed", answer
    assert c.metrics.signed.labels(str(CHAIN_ID))._value.get() == 2
    await c.engine.dispose()
