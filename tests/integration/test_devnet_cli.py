"""`watcher devnet` and its helpers as real processes: a devnet, a `watcher run` daemon
on its config, `watcher devnet deposit` credited by the daemon, `watcher devnet withdraw
--wait` paid out on chain, `watcher devnet demo`; `--keep` across a SIGTERM restart
with the daemon's ledger still consistent; and the helpers' refusals (one line, exit 2,
nothing sent)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from web3 import AsyncWeb3
from web3.providers.rpc import AsyncHTTPProvider

from tests.helpers import eventually, watcher_cli, write_config
from tests.integration.withdrawal_support import balance_of, operator_key
from watcher.chain.devnet import DEVNET_COSIGNER_TOKEN, Deployment, dev_account, free_port

FAST = ("--confirmations", "1", "--block-time", "0.5")
TX_RE = re.compile(r"deposit (0x[0-9a-f]{64}) \(block (\d+)\)")


def _read(path: Path) -> str:
    return path.read_text()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    env["WATCHER_STATE_DIR"] = os.environ["WATCHER_STATE_DIR"]
    env.update(extra)
    return env


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await watcher_cli(*args, env=env or _env())
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), timeout=30)


@asynccontextmanager
async def _devnet(
    out: Path, port: int, *extra: str, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`watcher devnet --out OUT --port PORT` until it printed that it is ready."""
    proc = await watcher_cli(
        "devnet", "--out", str(out), "--port", str(port), *extra, env=_env(), log_file=log
    )
    try:

        async def ready() -> bool:
            assert proc.returncode is None, _read(log)
            return "Press Ctrl-C to stop." in _read(log)

        await eventually(ready, within=60, every=0.1)
        yield proc
    finally:
        await _stop(proc)


@asynccontextmanager
async def _daemon(cfg: Path, port: int, log: Path) -> AsyncIterator[str]:
    env = _env(
        WATCHER_SIGNER_KEY=operator_key(),
        WATCHER_ADMIN_TOKEN="devnet-test-token",
        WATCHER_COSIGNER_TOKEN=DEVNET_COSIGNER_TOKEN,
    )
    proc = await watcher_cli(
        "run", "--config", str(cfg), "--port", str(port), env=env, log_file=log
    )
    api = f"http://127.0.0.1:{port}"
    try:

        async def up() -> bool:
            assert proc.returncode is None, _read(log)
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{api}/healthz") as resp:
                    return resp.status in (200, 503)
            except aiohttp.ClientError:
                return False

        await eventually(up, within=60)
        yield api
    finally:
        assert await _stop(proc) == 0, _read(log)


async def _get(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return await resp.json()


async def _deposit_state(api: str, account: str, tx_hash: str) -> str | None:
    doc = await _get(f"{api}/v1/accounts/{account}/history")
    for item in doc["history"]:
        if item["type"] == "deposit" and item["txHash"] == tx_hash:
            return str(item["state"])
    return None


async def _credited(api: str, account: str, tx_hash: str) -> None:
    async def check() -> bool:
        return await _deposit_state(api, account, tx_hash) == "credited"

    await eventually(check, within=30, every=0.2)


def _network(out: Path) -> dict[str, Any]:
    return tomllib.loads((out / "networks" / "devnet.toml").read_text())


async def test_deposit_withdraw_wait_and_demo_against_a_running_stack(tmp_path: Path) -> None:
    out = tmp_path / "devnet"
    rpc_port, api_port = free_port(), free_port()
    async with _devnet(
        out, rpc_port, "--confirmations", "1", "--block-time", "0.5", log=tmp_path / "devnet.log"
    ) as _dev:
        listing = (tmp_path / "devnet.log").read_text()
        assert f"anvil on http://127.0.0.1:{rpc_port}, chain id 31337" in listing
        assert f"(3) {dev_account(3).address} (10000 ETH, 1000000 USDT, 1000000 USDC)" in listing
        assert f"(3) 0x{bytes(dev_account(3).key).hex()}" in listing
        assert "never use them on a real network" in listing
        assert "(1) 0x70997970C51812dc3A010C7d01b50e0d17dc79C8" in listing
        assert "<- hot wallet" in listing.split("(1) ", 1)[1].splitlines()[0]
        net = _network(out)
        assert net["devnet"] is True and net["confirmations"] == 1

        async with _daemon(out, api_port, tmp_path / "daemon.log") as api:
            user, dest = dev_account(3), dev_account(4)
            code, stdout, err = await _cli(
                "devnet", "deposit", "--from", "3", "--token", "USDC", "--amount", "25.5",
                "--config", str(out),
            )  # fmt: skip
            assert code == 0, err
            match = TX_RE.search(stdout)
            assert match, stdout
            await _credited(api, user.address, match.group(1))
            view = await _get(f"{api}/v1/accounts/{user.address}")
            usdc = next(a for a in view["assets"] if a["asset"] == "USDC")
            assert Decimal(usdc["walletBalance"]) == Decimal("25.5")

            # An API refusal: one line with the API's code, exit 1.
            err = await asyncio.to_thread(
                _refused, "devnet", "withdraw", "--from", "3", "--token", "USDC", "--amount",
                "30", "-c", str(out), "--api", api, code=1,
            )  # fmt: skip
            assert err.startswith("error: the API refused (422 "), err

            w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(f"http://127.0.0.1:{rpc_port}"))
            try:
                token = str(net["tokens"][1]["address"])
                before = await balance_of(w3, token, dest.address)
                code, stdout, err = await _cli(
                    "devnet", "withdraw", "--from", "3", "--token", "USDC", "--amount", "10.25",
                    "--to", dest.address, "--config", str(out), "--api", api, "--wait",
                    "--timeout", "60",
                )  # fmt: skip
                assert code == 0, stdout + err
                lines = stdout.strip().splitlines()
                first = re.fullmatch(r"withdrawal (\d+) requested", lines[0])
                assert first, stdout
                assert re.fullmatch(
                    rf"withdrawal {first.group(1)} completed tx 0x[0-9a-f]{{64}}", lines[-1]
                ), stdout
                assert await balance_of(w3, token, dest.address) - before == 10_250_000
            finally:
                await w3.provider.disconnect()
            doc = await _get(f"{api}/v1/withdrawals/{first.group(1)}")
            assert doc["state"] == "completed" and doc["destination"] == dest.address
            paid_tx = lines[-1].rsplit(" ", 1)[1]

            # The operator in a second shell: plain `watcher status`, no flags, finds
            # this daemon and shows the deposit and the payout.
            async def healthy() -> bool:
                code, _out, _err = await _cli("status", "--json")
                return code == 0

            await eventually(healthy, within=30, every=0.5)
            code, stdout, err = await _cli("status", "--wide")
            assert code == 0, stdout + err
            assert "HEALTHY" in stdout and "devnet" in stdout
            assert "Withdrawals in progress: none" in stdout, stdout
            assert "all deposits: 1 stored" in stdout, stdout

            # The daemon's log follows both by their hashes, one line per event.
            daemon_log = _read(tmp_path / "daemon.log")
            for event in ("deposit seen", "deposit credited"):
                assert any(
                    event in line and match.group(1) in line for line in daemon_log.splitlines()
                ), (event, daemon_log)
            wid = first.group(1)
            for event in ("accepted", "signed", "broadcast", "mined", "completed"):
                assert any(
                    f"withdrawal {event}" in line and f"id={wid}" in line
                    for line in daemon_log.splitlines()
                ), (event, daemon_log)
            assert any(
                "withdrawal completed" in line and paid_tx in line
                for line in daemon_log.splitlines()
            ), daemon_log

            # `make demo`: deposit → credited → withdraw → completed, each step printed.
            code, stdout, err = await _cli(
                "devnet", "demo", "--from", "5", "--config", str(out), "--api", api
            )
            assert code == 0, stdout + err
            for step in ("1. deposit 100 USDT", "   credited: walletBalance 100 USDT",
                         "3. withdraw 40 USDT", f"{dev_account(5).address} received 40 USDT",
                         "demo done"):  # fmt: skip
                assert step in stdout, stdout

        # The daemon is gone: withdraw says so in one line.
        err = await asyncio.to_thread(
            _refused, "devnet", "withdraw", "--from", "3", "--token", "USDC", "--amount", "1",
            "-c", str(out), "--api", f"http://127.0.0.1:{api_port}", code=1,
        )  # fmt: skip
        assert "cannot reach the API" in err, err


async def test_keep_reloads_the_chain_and_the_ledger_stays_consistent(tmp_path: Path) -> None:
    out = tmp_path / "devnet"
    rpc_port, api_port = free_port(), free_port()
    user = dev_account(6)
    state = out / "anvil" / "devnet.json"
    running = out / "anvil" / "devnet.running"
    async with _devnet(out, rpc_port, *FAST, "--keep", log=tmp_path / "a.log"):
        assert running.exists()
        assert "chain       fresh, saved to" in (tmp_path / "a.log").read_text()
        first = _network(out)
        async with _daemon(out, api_port, tmp_path / "daemon1.log") as api:
            code, stdout, err = await _cli(
                "devnet", "deposit", "--from", "6", "--token", "ETH", "--amount", "1.5",
                "--config", str(out),
            )  # fmt: skip
            assert code == 0, err
            match = TX_RE.search(stdout)
            assert match, stdout
            tx_hash, block = match.group(1), int(match.group(2))
            await _credited(api, user.address, tx_hash)
    # Stopped by SIGTERM: the chain is saved and the run marker is gone.
    assert state.is_file() and not running.exists()

    async with _devnet(out, rpc_port, *FAST, "--keep", log=tmp_path / "b.log"):
        log = (tmp_path / "b.log").read_text()
        assert f"chain       reloaded from {state}" in log
        assert _network(out)["vault"] == first["vault"]
        assert _network(out)["start_block"] == first["start_block"]
        height = int(re.search(r"chain id 31337, block (\d+)", log).group(1))  # type: ignore[union-attr]
        assert height >= block
        w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(f"http://127.0.0.1:{rpc_port}"))
        try:
            receipt = await w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            assert receipt["blockNumber"] == block and receipt["status"] == 1
        finally:
            await w3.provider.disconnect()
        # The same ledger on the reloaded chain: the old credit stands, a new deposit is
        # credited, and no reorg was seen (healthz 200: no alarm latched).
        async with _daemon(out, api_port, tmp_path / "daemon2.log") as api:
            code, stdout, err = await _cli(
                "devnet", "deposit", "--from", "6", "--token", "ETH", "--amount", "0.5",
                "--config", str(out),
            )  # fmt: skip
            assert code == 0, err
            second = TX_RE.search(stdout)
            assert second, stdout
            await _credited(api, user.address, second.group(1))
            assert await _deposit_state(api, user.address, tx_hash) == "credited"
            view = await _get(f"{api}/v1/accounts/{user.address}")
            eth = next(a for a in view["assets"] if a["asset"] == "ETH")
            assert Decimal(eth["walletBalance"]) == 2
            async with aiohttp.ClientSession() as http, http.get(f"{api}/healthz") as resp:
                assert resp.status == 200, await resp.text()

    # A start without --keep replaces the chain: the saved one is removed.
    async with _devnet(out, rpc_port, log=tmp_path / "c.log"):
        assert not state.exists()
    # ... and a --keep start now refuses: the written config's chain is gone.
    err = await asyncio.to_thread(
        _refused, "devnet", "--out", str(out), "--port", str(rpc_port), "--keep"
    )
    assert "was written by a devnet run without --keep" in err, err


def test_keep_refuses_after_an_unclean_stop(tmp_path: Path) -> None:
    out = tmp_path / "devnet"
    (out / "anvil").mkdir(parents=True)
    (out / "anvil" / "devnet.json").write_text("{}")
    (out / "anvil" / "devnet.running").write_text("999999999\n")
    err = _refused("devnet", "--out", str(out), "--port", str(free_port()), "--keep")
    assert "did not stop cleanly (pid 999999999)" in err, err


def test_keep_refuses_another_chain_id_or_a_state_without_config(tmp_path: Path) -> None:
    out = tmp_path / "devnet"
    (out / "anvil").mkdir(parents=True)
    (out / "anvil" / "devnet.json").write_text("{}")
    port = str(free_port())
    err = _refused("devnet", "--out", str(out), "--port", port, "--keep")
    assert "has a saved chain but" in err and "devnet.toml is missing" in err, err
    (out / "networks").mkdir()
    (out / "networks" / "devnet.toml").write_text('name = "devnet"\nchain_id = 31337\n')
    err = _refused("devnet", "--out", str(out), "--port", port, "--keep", "--chain-id", "1337")
    assert "has chain id 31337, not 1337: pass --chain-id 31337" in err, err


# ---------------------------------------------------------------------------- refusals
# In process (typer's runner: the same command code, a fraction of a subprocess's start).


def _config(tmp_path: Path, dep: Deployment, *, chain_id: int, marked: bool) -> Path:
    cfg = write_config(tmp_path, [("devnet", dep, 3)])
    path = cfg / "networks" / "devnet.toml"
    text = path.read_text().replace(f"chain_id = {dep.chain_id}", f"chain_id = {chain_id}")
    if not marked:
        text = text.replace("devnet = true\n", "")
    path.write_text(text)
    return cfg


def _invoke(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from watcher.cli import app

    env = {k: None for k in os.environ if k.startswith("WATCHER_") and k != "WATCHER_STATE_DIR"}
    result = CliRunner().invoke(app, list(args), env=env)
    assert not isinstance(result.exception, AssertionError | TypeError), result.exception
    return result.exit_code, result.stdout, result.stderr


def _refused(*args: str, code: int = 2) -> str:
    got, stdout, err = _invoke(*args)
    assert got == code, stdout + err
    assert stdout == "" and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_helpers_refuse_a_network_that_is_not_a_devnet(
    tmp_path: Path, deployment: Deployment
) -> None:
    cfg = str(_config(tmp_path, deployment, chain_id=56, marked=False))
    for cmd in ("deposit", "withdraw"):
        err = _refused("devnet", cmd, "--from", "2", "--token", "USDT", "--amount", "1", "-c", cfg)
        assert "no devnet among the enabled networks" in err and "devnet (chain id 56)" in err
    err = _refused(
        "devnet", "deposit", "--from", "2", "--token", "USDT", "--amount", "1", "-c", cfg,
        "--network", "devnet",
    )  # fmt: skip
    assert "has chain id 56 and is not a devnet" in err


def test_helpers_refuse_bad_input_and_send_nothing(tmp_path: Path, deployment: Deployment) -> None:
    cfg = write_config(tmp_path, [("devnet", deployment, 3)])
    sent = [dev_account(i).address for i in (1, 2)]

    def nonces() -> list[int]:
        async def read() -> list[int]:
            w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(deployment.rpc_url))
            try:
                return [await w3.eth.get_transaction_count(a) for a in sent]  # type: ignore[arg-type]
            finally:
                await w3.provider.disconnect()

        return asyncio.run(read())

    before = nonces()
    base = ("--from", "2", "--config", str(cfg))
    cases = [
        (("--token", "DOGE", "--amount", "1"), "unknown token 'DOGE' on devnet: use one of ETH"),
        (("--token", "USDC", "--amount", "1.0000001"), "has 7 decimal places; at most 6"),
        (("--token", "USDT", "--amount", "1e3"), "--amount"),
        (("--token", "USDT", "--amount", "0"), "--amount must be more than 0"),
        (("--token", "USDT", "--amount", "1", "--from", "10"), "unknown account index 10"),
    ]
    for cmd in ("deposit", "withdraw"):
        for args, expected in cases:
            err = _refused("devnet", cmd, *base, *args)
            assert expected in err, (args, err)
    err = _refused("devnet", "withdraw", *base, "--token", "USDT", "--amount", "1", "--to", "0x12")
    assert "--to" in err
    # The hot wallet never sends (its nonces are the daemon's sender's).
    err = _refused(
        "devnet", "deposit", "--from", "1", "--token", "USDT", "--amount", "1", "-c", str(cfg)
    )
    assert "account 1 (0x70997970C51812dc3A010C7d01b50e0d17dc79C8) is the hot wallet" in err
    assert nonces() == before


def test_deposit_refuses_a_node_serving_another_chain(
    tmp_path: Path, deployment: Deployment
) -> None:
    cfg = str(_config(tmp_path, deployment, chain_id=1337, marked=True))
    err = _refused(
        "devnet", "deposit", "--from", "2", "--token", "USDT", "--amount", "1", "-c", cfg, code=1
    )
    assert "serves chain id 31337, not the devnet's 1337: refusing to send" in err


def test_helpers_name_a_missing_config_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    err = _refused(
        "devnet", "deposit", "--from", "2", "--token", "USDT", "--amount", "1", "-c", str(missing)
    )
    assert f"{missing}: no devnet config here" in err
