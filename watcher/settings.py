"""The one place that reads configuration files and the environment.

Layout of a config directory (``--config DIR``, default ``config/``)::

    default.toml            database, api, listener, withdrawals, scheduler, logging
    assets.toml             ledger assets: precision, collateral ratio, auto-exchange rate
    networks/*.toml         one file per network (rule, RPC URLs, vault, tokens)
    brackets/*.json         leverage brackets per symbol (Binance ``leverageBracket`` shape)

``WATCHER_*`` environment variables override the files; secrets (the hot-wallet key,
the keystore password, the admin token) come only from the environment and are held
as ``SecretStr`` so they never print. Everything is validated once, here: an error
names the file and the key that is wrong, and nothing starts.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from eth_utils.address import is_address, to_checksum_address
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from watcher.domain.brackets import BracketTable
from watcher.domain.confirmations import ConfirmationRule

REPO_ROOT = Path(__file__).resolve().parents[1]
# The shipped defaults (default.toml, assets.toml, brackets/, networks/). In a checkout
# ``watcher/_config`` is a symlink to ``config/`` (the one source); a wheel carries the
# files themselves as package data, so an installed ``watcher`` runs from any directory.
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent / "_config"


def data_root() -> Path:
    """What a relative SQLite path is relative to: the checkout when running from one
    (so the daemon and `watcher status` agree whatever their working directory), else
    ``WATCHER_HOME`` or the working directory of an installed package."""
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "config").is_dir():
        return REPO_ROOT
    return Path(os.environ.get("WATCHER_HOME") or Path.cwd())


class ConfigError(Exception):
    """A configuration file or variable is invalid; the message names file and key."""


def _no_float(value: Any) -> Any:
    # TOML floats are binary: 0.1 is not 0.1. Money-like values must be quoted strings.
    if isinstance(value, float):
        raise ValueError(f'write this number as a quoted string (e.g. "{value}"), not a float')
    if isinstance(value, bool):
        raise ValueError("expected a decimal number, got a boolean")
    return value


def _duration(value: Any) -> Any:
    # Durations may be written as TOML floats (0.25 s); go through the literal's text.
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


def _address(value: Any) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ValueError(f"not an EVM address: {value!r}")
    return str(to_checksum_address(value))


def _optional_address(value: Any) -> str:
    if value in ("", None):
        return ""
    return _address(value)


ExactDecimal = Annotated[Decimal, BeforeValidator(_no_float)]
Seconds = Annotated[Decimal, BeforeValidator(_duration), Field(gt=0)]
Address = Annotated[str, BeforeValidator(_address)]
OptionalAddress = Annotated[str, BeforeValidator(_optional_address)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Model):
    url: str = "sqlite+aiosqlite:///var/watcher.db"


class ApiSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class LedgerSettings(_Model):
    settlement_asset: str = "USDT"


class ListenerSettings(_Model):
    poll_interval_seconds: Seconds = Decimal(1)
    max_log_range: int = Field(default=2000, ge=1)
    lag_budget_blocks: int = Field(default=50, ge=1)
    rpc_timeout_seconds: Seconds = Decimal(10)


class WithdrawalSettings(_Model):
    poll_interval_seconds: Seconds = Decimal(1)
    stuck_after_seconds: int = Field(default=60, ge=1)
    # Re-send (same bytes) the attempt holding the hot wallet's next nonce when it has
    # waited this long unmined: a node that lost it holds back every later one.
    resend_after_seconds: Seconds = Decimal(5)
    fee_bump_percent: int = Field(default=15, ge=10, le=500)
    max_fee_per_gas_gwei: ExactDecimal = Decimal(500)
    max_priority_fee_per_gas_gwei: ExactDecimal = Decimal(5)
    gas_limit: int = Field(default=200_000, ge=21_000)
    # Also "stuck" after this many new blocks since broadcast (tx_attempts.broadcast_block).
    stuck_after_blocks: int | None = Field(default=None, ge=1)
    # Withdrawals signed and broadcast per sender tick (one DB transaction per batch).
    batch_size: int = Field(default=500, ge=1)
    # Per-account limit over the last 24 h, in USD (asset prices from the engine feed or
    # assets.toml); None = no limit.
    daily_limit_usd: ExactDecimal | None = Field(default=None, gt=0)
    # Per ledger asset: a withdrawal of at least this many units waits in `review`.
    review_threshold: dict[str, ExactDecimal] = Field(default_factory=dict)
    # Per account (checksummed address): the only destinations it may withdraw to.
    # Accounts not listed may withdraw anywhere.
    allowlist: dict[str, list[Address]] = Field(default_factory=dict)
    # The system account that receives withdrawal fees when a withdrawal completes.
    fee_account: str = "system:fees"
    # Co-signing (docs/cosigner.md): each co-signer is asked at most this long; a
    # withdrawal below the validators' quorum waits queued and raises COSIGN_QUORUM
    # after cosign_alarm_after_seconds; the payout authorization the co-signers sign is
    # valid for payout_deadline_seconds (at most the co-signers' max_deadline_s).
    cosign_timeout_seconds: Seconds = Decimal(5)
    cosign_alarm_after_seconds: int = Field(default=60, ge=1)
    payout_deadline_seconds: int = Field(default=82_800, ge=60)


class SchedulerSettings(_Model):
    reconcile_interval_seconds: int = Field(default=300, ge=1)
    # A vault/ledger difference up to this many token units is not an alarm.
    reconcile_tolerance: ExactDecimal = Field(default=Decimal(0), ge=0)


class ReplicaSettings(_Model):
    # A chain role's lease: renewed every quarter of it; a holder that cannot renew
    # stops the role after five sixths of it; another replica takes it once expired.
    lease_seconds: Seconds = Field(default=Decimal(6), ge=2, le=300)
    # A role with no holder for longer than this raises a lease_unheld alarm.
    unheld_budget_seconds: Seconds = Field(default=Decimal(30), ge=1)


class AlarmSettings(_Model):
    # Optional webhook per alarm kind ("*" for every kind): an aiohttp POST, retried.
    webhooks: dict[str, str] = Field(default_factory=dict)
    webhook_timeout_seconds: Seconds = Decimal(5)


class LoggingSettings(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(default=False, alias="json")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AssetConfig(_Model):
    precision: int = Field(ge=0, le=18)
    collateral_ratio: ExactDecimal = Field(ge=0, le=1)
    auto_exchange_rate: ExactDecimal = Field(gt=0, le=1, default=Decimal("0.975"))
    price: ExactDecimal | None = Field(default=None, gt=0)


class TokenConfig(_Model):
    symbol: str
    asset: str
    address: Address
    decimals: int = Field(ge=0, le=77)
    min_withdrawal: ExactDecimal = Field(default=Decimal(0), ge=0)
    withdraw_fee: ExactDecimal = Field(default=Decimal(0), ge=0)


class NetworkConfig(_Model):
    name: str
    chain_id: int = Field(ge=1)
    enabled: bool = True
    confirmations: int | None = Field(default=None, ge=1)
    finality: Literal["finalized", "safe"] | None = None
    block_time_seconds: Seconds
    rpc_urls: list[str] = Field(default_factory=list)
    vault: OptionalAddress = ""
    start_block: int = Field(default=0, ge=0)
    native_asset: str
    native_decimals: int = Field(default=18, ge=0, le=77)
    native_min_withdrawal: ExactDecimal = Field(default=Decimal(0), ge=0)
    native_withdraw_fee: ExactDecimal = Field(default=Decimal(0), ge=0)
    max_log_range: int | None = Field(default=None, ge=1)
    tokens: list[TokenConfig] = Field(default_factory=list)
    # Base URLs of the co-signers the sender asks for payout signatures (docs/cosigner.md);
    # the vault pays only with signatures of two thirds of its validators' power.
    cosigners: list[str] = Field(default_factory=list)
    # A local development chain (written by `watcher devnet`): the only kind of network
    # the `watcher devnet deposit|withdraw` helpers act on (chain ids 31337 and 1337 are
    # devnets without it).
    devnet: bool = False

    @field_validator("rpc_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError("RPC URLs must start with http:// or https://")
        return urls

    @field_validator("cosigners")
    @classmethod
    def _cosigner_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError("co-signer URLs must start with http:// or https://")
        if len(set(urls)) != len(urls):
            raise ValueError("a co-signer URL is listed twice")
        return urls

    @model_validator(mode="after")
    def _rule_and_endpoints(self) -> NetworkConfig:
        if (self.confirmations is None) == (self.finality is None):
            raise ValueError("set exactly one of 'confirmations' (a depth >= 1) or 'finality'")
        if self.enabled:
            if not self.rpc_urls:
                raise ValueError("rpc_urls: missing RPC URL for an enabled network")
            if not self.vault:
                raise ValueError("vault: missing vault address for an enabled network")
        seen: set[str] = set()
        for token in self.tokens:
            if token.address in seen:
                raise ValueError(f"tokens: {token.address} is listed twice")
            seen.add(token.address)
        return self

    @property
    def rule(self) -> ConfirmationRule:
        """The network's confirmation rule: a depth, or a finality tag."""
        if self.confirmations is not None:
            return ConfirmationRule.of_depth(self.confirmations)
        assert self.finality is not None
        return ConfirmationRule.of_tag(self.finality)

    @property
    def rule_text(self) -> str:
        if self.confirmations is not None:
            return f"{self.confirmations} blocks"
        return f"{self.finality} tag"

    def token_by_address(self, address: str) -> TokenConfig | None:
        for token in self.tokens:
            if token.address.lower() == address.lower():
                return token
        return None

    def token_by_symbol(self, symbol: str) -> TokenConfig | None:
        for token in self.tokens:
            if token.symbol == symbol:
                return token
        return None


class Secrets(_Model):
    signer_key: SecretStr | None = None
    signer_keystore: Path | None = None
    signer_keystore_password: SecretStr | None = None
    admin_token: SecretStr | None = None
    # The bearer token the sender presents to the co-signers (WATCHER_COSIGNER_TOKEN).
    cosigner_token: SecretStr | None = None


class Settings(_Model):
    config_dir: Path
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    ledger: LedgerSettings = LedgerSettings()
    listener: ListenerSettings = ListenerSettings()
    withdrawals: WithdrawalSettings = WithdrawalSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    alarms: AlarmSettings = AlarmSettings()
    replicas: ReplicaSettings = ReplicaSettings()
    logging: LoggingSettings = LoggingSettings()
    assets: dict[str, AssetConfig] = Field(default_factory=dict)
    networks: dict[str, NetworkConfig] = Field(default_factory=dict)
    brackets: dict[str, BracketTable] = Field(default_factory=dict)
    secrets: Secrets = Secrets()

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @property
    def enabled_networks(self) -> list[NetworkConfig]:
        return [n for n in self.networks.values() if n.enabled]

    def network_by_chain(self, chain_id: int) -> NetworkConfig | None:
        for network in self.networks.values():
            if network.chain_id == chain_id:
                return network
        return None


# --------------------------------------------------------------------------- loading


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _explain(path: Path, exc: ValidationError, prefix: str = "") -> ConfigError:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        # Model-level checks name their key at the start of the message themselves.
        lines.append(f"{path}: {key}: {msg}" if key else f"{path}: {msg}")
    return ConfigError("\n".join(lines))


def _database_url(raw: str, root: Path) -> str:
    # Relative SQLite paths are relative to the repository (where var/ lives), so the
    # daemon and `watcher status` agree whatever their working directory.
    marker = "sqlite+aiosqlite:///"
    if raw.startswith(marker) and not raw.startswith(marker + "/") and ":memory:" not in raw:
        return marker + str((root / raw[len(marker) :]).resolve())
    return raw


def load_settings(
    config_dir: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    database_url: str | None = None,
    api_host: str | None = None,
    api_port: int | None = None,
) -> Settings:
    """Load and validate the whole configuration once. Explicit arguments (CLI flags)
    win over ``WATCHER_*`` variables, which win over the files."""
    env = os.environ if env is None else env
    cdir = Path(config_dir or env.get("WATCHER_CONFIG_DIR") or DEFAULT_CONFIG_DIR).resolve()
    if not cdir.is_dir():
        raise ConfigError(
            f"{cdir}: config directory not found "
            "(pass --config DIR or set WATCHER_CONFIG_DIR to a copy of config/)"
        )

    default_path = cdir / "default.toml"
    base = _read_toml(default_path) if default_path.exists() else {}
    base = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}

    def put(section: str, key: str, value: Any) -> None:
        base.setdefault(section, {})[key] = value

    if url := (database_url or env.get("WATCHER_DATABASE_URL")):
        put("database", "url", url)
    if host := (api_host or env.get("WATCHER_API_HOST")):
        put("api", "host", host)
    if api_port is not None:
        put("api", "port", api_port)
    elif port := env.get("WATCHER_API_PORT"):
        put("api", "port", port)
    if level := env.get("WATCHER_LOG_LEVEL"):
        put("logging", "level", level.upper())
    if (js := env.get("WATCHER_LOG_JSON")) is not None:
        put("logging", "json", js.lower() in ("1", "true", "yes"))

    sections: dict[str, Any] = {}
    for name in (
        "database",
        "api",
        "ledger",
        "listener",
        "withdrawals",
        "scheduler",
        "alarms",
        "replicas",
        "logging",
    ):
        if name in base:
            sections[name] = base.pop(name)
    if base:
        raise ConfigError(f"{default_path}: {next(iter(base))}: unknown key")
    if "database" in sections:
        raw_url = sections["database"].get("url", "")
        sections["database"]["url"] = _database_url(raw_url, data_root())

    # assets.toml
    assets_path = cdir / "assets.toml"
    assets: dict[str, AssetConfig] = {}
    if assets_path.exists():
        raw_assets = _read_toml(assets_path)
        extra = set(raw_assets) - {"assets"}
        if extra:
            raise ConfigError(f"{assets_path}: {sorted(extra)[0]}: unknown key")
        for asset, body in raw_assets.get("assets", {}).items():
            try:
                assets[asset] = AssetConfig.model_validate(body)
            except ValidationError as exc:
                raise _explain(assets_path, exc, f"assets.{asset}") from None

    # networks/*.toml
    networks: dict[str, NetworkConfig] = {}
    chain_ids: dict[int, Path] = {}
    for path in sorted((cdir / "networks").glob("*.toml")):
        body = _read_toml(path)
        upper = str(body.get("name", path.stem)).upper()
        if urls := env.get(f"WATCHER_RPC_URLS_{upper}"):
            body["rpc_urls"] = [u.strip() for u in urls.split(",") if u.strip()]
        if vault := env.get(f"WATCHER_VAULT_{upper}"):
            body["vault"] = vault
        if (enabled := env.get(f"WATCHER_ENABLE_{upper}")) is not None:
            body["enabled"] = enabled.lower() in ("1", "true", "yes")
        try:
            network = NetworkConfig.model_validate(body)
        except ValidationError as exc:
            raise _explain(path, exc) from None
        if network.name in networks:
            raise ConfigError(f"{path}: name: network {network.name!r} is defined twice")
        if network.chain_id in chain_ids:
            raise ConfigError(
                f"{path}: chain_id: {network.chain_id} is already used by "
                f"{chain_ids[network.chain_id]}"
            )
        chain_ids[network.chain_id] = path
        for i, token in enumerate(network.tokens):
            if assets and token.asset not in assets:
                raise ConfigError(
                    f"{path}: tokens.{i}.asset: {token.asset!r} "
                    f"is not a ledger asset in {assets_path}"
                )
        if assets and network.native_asset not in assets:
            raise ConfigError(
                f"{path}: native_asset: {network.native_asset!r} "
                f"is not a ledger asset in {assets_path}"
            )
        networks[network.name] = network

    # brackets/*.json
    brackets: dict[str, BracketTable] = {}
    for path in sorted((cdir / "brackets").glob("*.json")):
        try:
            obj = json.loads(path.read_text(), parse_float=Decimal)
            table = BracketTable.from_json_obj(obj)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        symbol = str(obj.get("symbol", path.stem)) if isinstance(obj, dict) else path.stem
        brackets[symbol] = table

    keystore = env.get("WATCHER_SIGNER_KEYSTORE")
    secrets = Secrets(
        signer_key=SecretStr(env["WATCHER_SIGNER_KEY"]) if env.get("WATCHER_SIGNER_KEY") else None,
        signer_keystore=Path(keystore) if keystore else None,
        signer_keystore_password=SecretStr(env["WATCHER_SIGNER_KEYSTORE_PASSWORD"])
        if env.get("WATCHER_SIGNER_KEYSTORE_PASSWORD")
        else None,
        admin_token=SecretStr(env["WATCHER_ADMIN_TOKEN"])
        if env.get("WATCHER_ADMIN_TOKEN")
        else None,
        cosigner_token=SecretStr(env["WATCHER_COSIGNER_TOKEN"].strip())
        if env.get("WATCHER_COSIGNER_TOKEN", "").strip()
        else None,
    )

    try:
        settings = Settings(
            config_dir=cdir,
            assets=assets,
            networks=networks,
            brackets=brackets,
            secrets=secrets,
            **sections,
        )
    except ValidationError as exc:
        raise _explain(default_path, exc) from None
    settle = settings.ledger.settlement_asset
    if assets and settle not in assets:
        raise ConfigError(
            f"{default_path}: ledger.settlement_asset: {settle!r} is not in {assets_path}"
        )
    return settings
