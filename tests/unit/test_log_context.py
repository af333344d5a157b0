"""The human line names a context field once: a value the message already shows as a
``key=value`` word is not appended again; the JSON line keeps every field as a key."""

from __future__ import annotations

import json
import logging

import pytest

from watcher import logs

TX = "0x" + "cd" * 32


@pytest.fixture
def restore_root() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_context_fields_shown_in_the_message_are_not_repeated(
    capsys: pytest.CaptureFixture[str], restore_root: object
) -> None:
    log = logging.getLogger("watcher.test")
    extra = {"chain_id": 31337, "tx_hash": TX, "withdrawal_id": 7}
    logs.configure("INFO", json_lines=False)
    log.info("withdrawal broadcast id=%d tx=%s", 7, TX, extra=extra)
    log.info("attempt of withdrawal %d not accepted", 7, extra=extra)
    first, second = capsys.readouterr().err.strip().splitlines()
    assert first.endswith(f"withdrawal broadcast id=7 tx={TX} chain_id=31337")
    assert first.count(TX) == 1
    assert second.endswith(
        f"attempt of withdrawal 7 not accepted chain_id=31337 tx_hash={TX} withdrawal_id=7"
    )

    logs.configure("INFO", json_lines=True)
    log.info("withdrawal broadcast id=%d tx=%s", 7, TX, extra=extra)
    doc = json.loads(capsys.readouterr().err.strip())
    assert (doc["chain_id"], doc["tx_hash"], doc["withdrawal_id"]) == (31337, TX, 7)
    assert doc["msg"] == f"withdrawal broadcast id=7 tx={TX}"
