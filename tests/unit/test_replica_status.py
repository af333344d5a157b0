"""`watcher status` for replicas: the replicas and lease tables when there is more than
one replica or a role has no holder; one line for a single daemon holding everything."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from watcher.cli.ops import _replica_parts


def rendered(doc: dict[str, Any]) -> str:
    console = Console(width=140, record=True)
    for part in _replica_parts(doc):
        console.print(part)
    return console.export_text()


def replica(rid: str, held: list[str], running: bool = True) -> dict[str, Any]:
    return {
        "replicaId": rid,
        "roles": "all",
        "held": held,
        "running": running,
        "heartbeatAgeSeconds": 1 if running else 400,
    }


def lease(role: str, holder: str | None) -> dict[str, Any]:
    return {
        "role": role,
        "holder": holder,
        "token": 3,
        "expiresInSeconds": 4.5 if holder else None,
        "unheldSeconds": 0 if holder else 12.0,
    }


def test_several_replicas_and_an_unheld_role_are_listed() -> None:
    text = rendered(
        {
            "replicas": [replica("r1", []), replica("r2", ["sender:devnet:0xab"])],
            "leases": [lease("sender:devnet:0xab", "r2"), lease("notifier", None)],
        }
    )
    assert "Replicas (2)" in text and "sender:devnet:0xab" in text
    assert "NO HOLDER for 12.0 s" in text
    assert "4.5 s left" in text


def test_one_daemon_holding_everything_is_one_line() -> None:
    text = rendered(
        {
            "replicas": [
                replica("host-1", ["deposits:devnet", "notifier"]),
                replica("x", [], False),
            ],
            "leases": [lease("deposits:devnet", "host-1"), lease("notifier", "host-1")],
        }
    )
    assert text.strip() == "Replica host-1 (all): holds 2 chain role(s)"
