"""`watcher run --roles / --replica-id`: bad values are refused before anything starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import watcher_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--roles", "leader"], "--roles must be all, api or chain, not 'leader'"),
        (["--replica-id", ""], "--replica-id must be 1 to 100 printable characters"),
    ],
)
async def test_bad_roles_or_replica_id_refused(
    tmp_path: Path, args: list[str], message: str
) -> None:
    db = tmp_path / "watcher.db"
    env = {**os.environ, "WATCHER_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    proc = await watcher_cli("run", *args, env=env, merge_stderr=True)
    out, _ = await proc.communicate()
    assert proc.returncode == 2
    assert message in " ".join(out.decode().split()), out.decode()
    assert not db.exists()  # nothing started, nothing written
