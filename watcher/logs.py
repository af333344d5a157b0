"""Logging setup: human lines or JSON lines, with context fields and secret redaction.

Services log with ``extra={"chain_id": ..., "block": ..., "tx_hash": ...,
"deposit_id": ..., "withdrawal_id": ...}``; those fields appear in both formats.
Anything that looks like a private key, a bearer token or URL credentials is masked
before it is written, whatever logged it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = (
    "chain_id",
    "network",
    "block",
    "tx_hash",
    "deposit_id",
    "withdrawal_id",
    "account",
)

_SECRET_PATTERNS = [
    # 32-byte hex private keys (but not 32-byte tx hashes, which we log on purpose:
    # keys are only masked when labelled as such).
    (
        re.compile(
            r"(?i)((?:private[_ ]?key|signer[_ ]?key|secret|password)\W{0,3})(0x)?[0-9a-f]{64}"
        ),
        r"\1***",
    ),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"(https?://)[^/@\s]+@"), r"\1***@"),
    (re.compile(r"(?i)([?&](?:api[_-]?key|key|token|apikey)=)[^&\s]+"), r"\1***"),
]
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it would be logged (the admin token, the key)."""
    if value and len(value) >= 6:
        _registered.add(value)


def redact(text: str) -> str:
    for secret in _registered:
        text = text.replace(secret, "***")
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class _Redacting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for field in CONTEXT_FIELDS:
            if (value := getattr(record, field, None)) is not None:
                doc[field] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        # Redact values before encoding: patterns must not eat JSON quoting.
        return json.dumps(doc, default=str)


class _Context(logging.Filter):
    """Appends the context fields to a human line, except those whose value the message
    already shows as a ``key=value`` word (``deposit seen chain=1 tx=0x…`` carries
    ``chain_id`` and ``tx_hash`` for the JSON form; the human line says them once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = [(f, v) for f in CONTEXT_FIELDS if (v := getattr(record, f, None)) is not None]
        if fields:
            shown = {w.partition("=")[2] for w in record.getMessage().split() if "=" in w}
            fields = [(f, v) for f, v in fields if str(v) not in shown]
        parts = [f"{f}={v}" for f, v in fields]
        record.context = (" " + " ".join(parts)) if parts else ""
        return True


def configure(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(_JsonLines())
    else:
        handler.addFilter(_Context())
        handler.setFormatter(
            _Redacting("%(asctime)s %(levelname)-7s %(name)s: %(message)s%(context)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("alembic", "aiohttp.access", "web3", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A periodic tick overrunning its interval is skipped or coalesced by design; the
    # scheduler's warnings about it are noise (tick failures are logged by the runner).
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
