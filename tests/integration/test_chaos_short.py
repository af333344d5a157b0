"""`make chaos`, short configuration: bench/chaos.py as a subprocess (real daemon, real
anvil, 3 SIGKILLs during 20 deposits and 10 withdrawals, 5 % of RPC requests failing
through the fault proxy) on SQLite, and on PostgreSQL when WATCHER_TEST_DATABASE_URL is
set. Its last line must show every deposit credited exactly once, every accepted
withdrawal paid exactly once, no 5xx; and the same script must fail when a credit is
erased before its checks (``--tamper``), or this test could pass on a blind checker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "chaos.py"
PG_URL = os.environ.get("WATCHER_TEST_DATABASE_URL", "")
LINE = re.compile(
    r"^chaos: deposits (\d+)/(\d+) (\S+), payouts (\d+)/(\d+) doubled (\d+) lost (\d+), "
    r"kills (\d+), 5xx (\d+), db (\w+)$"
)


def chaos(*args: str, timeout: float = 300) -> tuple[int, str, list[str]]:
    """Run the script; (exit status, its last line, all its lines)."""
    env = {k: v for k, v in os.environ.items() if k != "WATCHER_TEST_DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = done.stdout.strip().splitlines() or [""]
    return done.returncode, lines[-1], lines + done.stderr.splitlines()[-20:]


@pytest.mark.parametrize("database", ["sqlite", *(["postgresql"] if PG_URL else [])])
def test_short_chaos_run_keeps_every_invariant(database: str) -> None:
    args = ["--kills", "3", "--deposits", "20", "--withdrawals", "10", "--fault-rate", "0.05"]
    args += ["--database", database]
    if database == "postgresql":
        args += ["--database-url", PG_URL]
    rc, last, lines = chaos(*args)
    found = LINE.match(last)
    assert found, "\n".join(lines)
    credited, sent, once, paid, accepted, doubled, lost, kills, errors, db = found.groups()
    assert rc == 0, "\n".join(lines)
    assert (credited, sent, once) == ("20", "20", "exactly-once"), last
    assert (paid, accepted, doubled, lost) == ("10", "10", "0", "0"), last
    assert (kills, errors, db) == ("3", "0", database), last


def test_the_checks_fail_when_a_credit_is_erased() -> None:
    rc, last, lines = chaos("--kills", "0", "--deposits", "3", "--withdrawals", "1", "--tamper")
    found = LINE.match(last)
    assert found, "\n".join(lines)
    assert rc == 1, "\n".join(lines)
    assert found.group(3) == "NOT-exactly-once", last
    assert any("balances differ from the journal's sums" in line for line in lines), lines
