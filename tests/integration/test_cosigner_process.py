"""A real ``watcher cosign run`` process: it signs a valid payout (the signature
recovers to its address through chain/payout.py), refuses what it must, answers 401 to
a wrong bearer token, logs and counts what it did without its secrets, and after a
restart on the same store gives the same answers again."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.cosigner_support import COSIGNER_KEY, DENIED, USDT, VAULT, User, body, config_toml
from tests.helpers import eventually, watcher_cli
from watcher.chain import payout as P
from watcher.services.cosign_client import (
    CoSignature,
    CoSignRefused,
    CoSignUnavailable,
    ask,
    ask_many,
    cosign_body,
)
from watcher.services.cosigning import Cosigning, CosignRequest, Quorum

TOKEN = "sender-token-0123456789abcdef"
DEST = "0x1111111111111111111111111111111111111111"
ALICE = User.make("alice")
BOB = User.make("bob")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "WATCHER_COSIGNER_KEY": COSIGNER_KEY, "WATCHER_COSIGNER_TOKEN": TOKEN}


async def _start(cfg: Path, log: Path, port: int) -> asyncio.subprocess.Process:
    proc = await watcher_cli("cosign", "run", "--config", str(cfg), env=_env(), log_file=log)

    async def up() -> bool:
        assert proc.returncode is None, f"the co-signer exited; see {log}"
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"http://127.0.0.1:{port}/healthz") as r,
            ):
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(up, within=30)
    return proc


async def _stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0


async def _post(port: int, doc: Any, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"http://127.0.0.1:{port}/v1/cosign", json=doc, headers=headers) as r,
    ):
        return r.status, await r.json()


def _payout(doc: dict[str, Any]) -> P.Payout:
    p = doc["payout"]
    return P.Payout(
        p["chainId"], p["vault"], int(p["id"]), p["token"], p["to"], int(p["amount"]),
        int(p["deadline"]),
    )  # fmt: skip


async def test_cosigner_process_signs_refuses_and_remembers(tmp_path: Path) -> None:
    port = _free_port()
    store = f"sqlite+aiosqlite:///{tmp_path / 'cosigner.sqlite'}"
    cfg = tmp_path / "cosigner.toml"
    cfg.write_text(config_toml(store, port=port))
    log = tmp_path / "cosigner.log"
    now = int(time.time())
    deadline = now + 1800
    address = P.PayoutSigner(COSIGNER_KEY).address

    proc = await watcher_cli("cosign", "address", env=_env())
    out, _ = await proc.communicate()
    assert out.decode().strip() == address

    proc = await _start(cfg, log, port)
    try:
        valid = body(1, ALICE.request("100", DEST, 1, deadline=now + 600), deadline=deadline)
        status, answer = await _post(port, valid)
        assert status == 200, answer
        assert answer["signer"] == address
        assert P.recover(_payout(valid), answer["signature"]) == address
        signature = answer["signature"]

        # the sender's seam: the body rebuilt from what the watcher stores (token address,
        # amount in base units) verifies the same; the answer is checked and classified
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}"
            req = ALICE.request("7.25", DEST, 10, deadline=now + 600)
            rebuilt = P.Payout(31337, VAULT, 10, USDT, DEST, 7_250_000, deadline)
            doc = cosign_body(
                rebuilt, account=ALICE.address, decimals=6, nonce=10,
                request_deadline=now + 600, signature=req["signature"],
            )  # fmt: skip
            vote = await ask(http, url, TOKEN, rebuilt, doc, expected_signer=address)
            assert isinstance(vote, CoSignature) and vote.signer == address
            unsigned = dict(doc, request=dict(doc["request"], signature=None))
            unsigned["payout"] = dict(doc["payout"], id="11")
            no = await ask(http, url, TOKEN, rebuilt, unsigned)
            assert isinstance(no, CoSignRefused) and no.code == "USER_SIGNATURE_INVALID"
            assert isinstance(await ask(http, url, "bad-token", rebuilt, doc), CoSignUnavailable)
            dead = await ask(http, "http://127.0.0.1:1", TOKEN, rebuilt, doc, timeout_s=1)
            assert isinstance(dead, CoSignUnavailable)

        # a row written straight into the watcher's database: no user signature
        forged = body(2, dict(BOB.request("50", DEST, 2, deadline=now + 600), signature=None))
        forged["payout"]["deadline"] = deadline
        status, refusal = await _post(port, forged)
        assert (status, refusal["code"]) == (403, "USER_SIGNATURE_INVALID")
        assert set(refusal) == {"code", "message", "details"}
        # ... or a signature that is not the account's
        stolen = dict(valid["request"], account=BOB.address)
        status, refusal = await _post(port, body(3, stolen, deadline=deadline))
        assert (status, refusal["code"]) == (403, "USER_SIGNATURE_INVALID")

        # the same id for another amount (a correctly signed request of it)
        more = body(1, ALICE.request("200", DEST, 4, deadline=now + 600), deadline=deadline)
        status, refusal = await _post(port, more)
        assert (status, refusal["code"]) == (409, "PAYOUT_ID_REUSED")
        # the same (account, nonce) under another id
        twice = body(5, valid["request"], deadline=deadline)
        status, refusal = await _post(port, twice)
        assert (status, refusal["code"]) == (409, "NONCE_REUSED")

        # over the hourly limit (Alice: 100 signed, limit 1000 USD)
        big = body(6, ALICE.request("950", DEST, 6, deadline=now + 600), deadline=deadline)
        status, refusal = await _post(port, big)
        assert (status, refusal["code"]) == (422, "ACCOUNT_LIMIT_EXCEEDED"), refusal

        denied = body(7, ALICE.request("1", DENIED, 7, deadline=now + 600), deadline=deadline)
        status, refusal = await _post(port, denied)
        assert (status, refusal["code"]) == (422, "DESTINATION_DENIED")

        for token in ("wrong-token-0123456789abcdef", None, ""):
            status, refusal = await _post(port, valid, token=token)
            assert (status, refusal["code"]) == (401, "UNAUTHORIZED")

        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{port}/metrics") as r,
        ):
            metrics = await r.text()
        assert 'watcher_cosigner_signed_total{chain_id="31337"} 2.0' in metrics
        assert 'watcher_cosigner_refused_total{reason="USER_SIGNATURE_INVALID"} 3.0' in metrics
        assert 'watcher_cosigner_refused_total{reason="PAYOUT_ID_REUSED"} 1.0' in metrics
        assert "watcher_cosigner_unauthorized_total 4.0" in metrics
    finally:
        await _stop(proc)

    # a new process on the same store: the same answers
    log2 = tmp_path / "cosigner-2.log"
    proc = await _start(cfg, log2, port)
    try:
        assert await _post(port, valid) == (200, {"signer": address, "signature": signature})
        assert (await _post(port, forged))[1]["code"] == "USER_SIGNATURE_INVALID"
        assert (await _post(port, more))[1]["code"] == "PAYOUT_ID_REUSED"
        assert (await _post(port, twice))[1]["code"] == "NONCE_REUSED"
        assert (await _post(port, big))[1]["code"] == "ACCOUNT_LIMIT_EXCEEDED"
        # what was signed still counts against the limit: 107.25 + 892.76 > 1000
        over = body(8, ALICE.request("892.76", DEST, 8, deadline=now + 600), deadline=deadline)
        assert (await _post(port, over))[1]["code"] == "ACCOUNT_LIMIT_EXCEEDED"
        ok = body(9, ALICE.request("892.75", DEST, 9, deadline=now + 600), deadline=deadline)
        assert (await _post(port, ok))[0] == 200
        await _batches(port, address, now, deadline, [valid, forged, more])
    finally:
        await _stop(proc)

    text = log.read_text()
    again = log2.read_text()
    assert "co-signer running" in text and "co-signer running" in again
    assert f"cosigned chain=31337 vault={valid['payout']['vault']} id=1 " in text
    assert "reason=USER_SIGNATURE_INVALID" in text and "reason=PAYOUT_ID_REUSED" in text
    assert "answered again chain=31337" in again and "outcome=refused reason=NONCE_REUSED" in again
    for lines in (text, again):
        assert COSIGNER_KEY[2:].lower() not in lines.lower() and TOKEN not in lines


async def _batches(
    port: int, address: str, now: int, deadline: int, known: list[dict[str, Any]]
) -> None:
    """``/v1/cosign/batch`` on the running process: the answers of ``known`` (signed,
    refused, refused) again plus a new payout, in order, one request; a wrong token, an
    empty or oversized batch; and the sender's side falling back to one request per
    payout for a co-signer without the endpoint."""
    url = f"http://127.0.0.1:{port}"
    fresh = body(20, BOB.request("3", DEST, 20, deadline=now + 600), deadline=deadline)
    docs = [*known, fresh]
    items = [(_payout(d), d) for d in docs]
    async with aiohttp.ClientSession() as http:
        votes = await ask_many(http, url, TOKEN, items)
        assert isinstance(votes[0], CoSignature) and votes[0].signer == address
        assert isinstance(votes[1], CoSignRefused) and votes[1].code == "USER_SIGNATURE_INVALID"
        assert isinstance(votes[2], CoSignRefused) and votes[2].code == "PAYOUT_ID_REUSED"
        assert isinstance(votes[3], CoSignature)
        assert P.recover(_payout(fresh), votes[3].signature) == address
        wrong = await ask_many(http, url, "wrong-token-0123456789abcdef", items)
        assert all(isinstance(v, CoSignUnavailable) for v in wrong)
        for doc in ({"items": []}, {"items": [fresh] * 129}, [fresh], {"items": "x"}):
            async with http.post(
                url + "/v1/cosign/batch", json=doc, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as r:
                assert r.status == 400, doc
                assert (await r.json())["code"] == "MALFORMED_PAYLOAD"

        # An older co-signer (no batch endpoint): one request per payout instead.
        async def forward(request: web.Request) -> web.Response:
            async with http.post(
                url + "/v1/cosign", data=await request.read(), headers=request.headers
            ) as r:
                return web.Response(body=await r.read(), status=r.status)

        old = web.Application()
        old.router.add_post("/v1/cosign", forward)
        server = TestServer(old)
        await server.start_server()
        try:
            old_url = str(server.make_url(""))
            cosigning = Cosigning(http, [old_url], TOKEN, timeout_s=5)
            requests = [
                CosignRequest(
                    _payout(d),
                    account=d["request"]["account"],
                    decimals=6,
                    nonce=int(d["request"]["nonce"]),
                    request_deadline=int(d["request"]["deadline"]),
                    signature=d["request"]["signature"],
                )
                for d in (known[0], fresh)
            ]
            outcomes = await cosigning.collect(requests, {address: 1})
        finally:
            await server.close()
        assert all(isinstance(o, Quorum) for o in outcomes), outcomes
        assert old_url in cosigning._single


async def test_cosigner_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "cosigner.toml"
    cfg.write_text(config_toml(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite'}"))
    bad_key = "0x" + "zq" * 32
    cases = [
        ({"WATCHER_COSIGNER_KEY": ""}, "WATCHER_COSIGNER_KEY is not set"),
        ({"WATCHER_COSIGNER_KEY": bad_key}, "WATCHER_COSIGNER_KEY: the co-signer key is not hex"),
        ({"WATCHER_COSIGNER_TOKEN": "short"}, "WATCHER_COSIGNER_TOKEN must be set"),
    ]
    for override, message in cases:
        env = {**_env(), **override}
        proc = await watcher_cli("cosign", "run", "--config", str(cfg), env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2
        text = " ".join((out + err).decode().split())
        assert message in text, text
        assert "zqzq" not in text and "Traceback" not in text
