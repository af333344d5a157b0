"""Configuration: the shipped files load; every kind of mistake fails fast naming
file and key; environment overrides and secrets behave."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from watcher.settings import DEFAULT_CONFIG_DIR, ConfigError, load_settings

EXPECTED = {
    "ethereum": (1, 12),
    "bsc": (56, 15),
    "arbitrum": (42161, 20),
    "base": (8453, 20),
    "polygon": (137, 128),
    "devnet": (31337, 3),
}


def test_shipped_config_loads() -> None:
    s = load_settings(DEFAULT_CONFIG_DIR, env={})
    assert {n: (c.chain_id, c.confirmations) for n, c in s.networks.items()} == EXPECTED
    assert s.assets["USDT"].precision == 8
    assert s.assets["BTC"].collateral_ratio == Decimal("0.95")
    assert {"BTCUSDT", "ETHUSDT"} <= set(s.brackets)
    assert [n.name for n in s.enabled_networks] == ["devnet"]
    bsc = s.networks["bsc"].token_by_symbol("USDT")
    assert bsc is not None and bsc.decimals == 18
    eth = s.networks["ethereum"].token_by_symbol("USDT")
    assert eth is not None and eth.decimals == 6


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("file", "old", "new", "expect"),
    [
        (
            "networks/devnet.toml",
            "confirmations = 3",
            "confirmations = 0",
            "devnet.toml: confirmations",
        ),
        (
            "networks/devnet.toml",
            "confirmations = 3",
            'confirmations = 3\nfinality = "finalized"',
            "exactly one",
        ),
        (
            "networks/devnet.toml",
            'rpc_urls = ["http://127.0.0.1:8545"]',
            "rpc_urls = []",
            "devnet.toml: rpc_urls",
        ),
        (
            "networks/devnet.toml",
            "enabled = true",
            "enabled = true\ncolour = 1",
            "devnet.toml: colour: unknown key",
        ),
        (
            "networks/devnet.toml",
            "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "0x5FbDB23",
            "devnet.toml: vault",
        ),
        (
            "networks/devnet.toml",
            'min_withdrawal = "1"',
            "min_withdrawal = 0.1",
            "tokens.0.min_withdrawal",
        ),
        ("networks/devnet.toml", 'asset = "USDT"', 'asset = "DOGE"', "tokens.0.asset"),
        (
            "networks/devnet.toml",
            "chain_id = 31337",
            "chain_id = 56",
            "chain_id: 56 is already used",
        ),
        (
            "networks/devnet.toml",
            'rpc_urls = ["http://127.0.0.1:8545"]',
            'rpc_urls = ["ws://x"]',
            "rpc_urls",
        ),
        ("default.toml", "port = 8080", "port = 99999", "default.toml: api.port"),
        ("default.toml", "[logging]", "[logs]\nx=1\n[logging]", "default.toml: logs: unknown key"),
        (
            "assets.toml",
            'collateral_ratio = "0.95"',
            'collateral_ratio = "1.5"',
            "assets.BTC.collateral_ratio",
        ),
        (
            "assets.toml",
            "precision = 8",
            "precision = 8\nextra = 1",
            "assets.USDT.extra: unknown key",
        ),
        ("brackets/BTCUSDT.json", "{", "[", "BTCUSDT.json"),
        ("networks/devnet.toml", "name =", "name = = ", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(
    cfg: Path, file: str, old: str, new: str, expect: str
) -> None:
    _edit(cfg / file, old, new)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    assert expect in str(info.value)
    assert str(cfg) in str(info.value)


def test_environment_overrides_and_secrets(cfg: Path) -> None:
    env = {
        "WATCHER_DATABASE_URL": "postgresql+asyncpg://u:p@h/db",
        "WATCHER_API_PORT": "9999",
        "WATCHER_RPC_URLS_BSC": "https://a.example/rpc, https://b.example/rpc",
        "WATCHER_VAULT_BSC": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
        "WATCHER_ENABLE_BSC": "true",
        "WATCHER_ADMIN_TOKEN": "super-secret-admin-token",
        "WATCHER_SIGNER_KEY": "0x" + "11" * 32,
    }
    s = load_settings(cfg, env=env)
    assert s.database.url == "postgresql+asyncpg://u:p@h/db"
    assert s.api.port == 9999
    bsc = s.networks["bsc"]
    assert bsc.enabled and bsc.rpc_urls == ["https://a.example/rpc", "https://b.example/rpc"]
    assert bsc.vault == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    dumped = repr(s) + str(s.model_dump())
    assert "super-secret-admin-token" not in dumped and "11" * 32 not in dumped
    assert s.secrets.admin_token is not None
    assert s.secrets.admin_token.get_secret_value() == "super-secret-admin-token"


def test_enabling_a_network_without_rpc_fails(cfg: Path) -> None:
    with pytest.raises(ConfigError, match=r"ethereum.toml: rpc_urls: missing RPC URL"):
        load_settings(cfg, env={"WATCHER_ENABLE_ETHEREUM": "1"})


def test_relative_sqlite_path_is_anchored_to_the_repo(cfg: Path) -> None:
    s = load_settings(cfg, env={})
    assert s.database.url.endswith("/var/watcher.db")
    assert s.database.url.startswith("sqlite+aiosqlite:////")
