"""Generate deploy/grafana/watcher.json (the provisioned Grafana dashboard).

Run `python deploy/grafana/build.py` after editing; tests/test_deploy.py checks the
committed JSON equals the output and that every expression is accepted by a real
Prometheus scraping a real daemon.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "watcher.json"
DS = {"type": "prometheus", "uid": "prometheus"}

# (title, unit, [(expr, legend)])
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Chain head and cursor",
        "none",
        [
            ("watcher_chain_head", "{{network}} head"),
            ("watcher_cursor_block", "{{network}} cursor"),
        ],
    ),
    (
        "Lag",
        "s",
        [
            ("watcher_lag_seconds", "{{network}} seconds"),
            ("watcher_lag_blocks", "{{network}} blocks"),
        ],
    ),
    (
        "Deposits per minute",
        "none",
        [
            (
                "sum by (network, event) (rate(watcher_deposits_total[5m])) * 60",
                "{{network}} {{event}}",
            ),
        ],
    ),
    (
        "Withdrawals in progress by state",
        "none",
        [
            ("watcher_withdrawals", "{{state}}"),
        ],
    ),
    (
        "Oldest open withdrawal age",
        "s",
        [
            ("watcher_withdrawal_oldest_age_seconds", "{{state}}"),
        ],
    ),
    (
        "RPC calls per second",
        "reqps",
        [
            (
                "sum by (network, endpoint) (rate(watcher_rpc_calls_total[5m]))",
                "{{network}} {{endpoint}}",
            ),
        ],
    ),
    (
        "RPC errors per second",
        "reqps",
        [
            (
                "sum by (network, endpoint, kind) (rate(watcher_rpc_errors_total[5m]))",
                "{{network}} {{endpoint}} {{kind}}",
            ),
        ],
    ),
    (
        "Tick duration p95",
        "s",
        [
            (
                "histogram_quantile(0.95, "
                "sum by (service, le) (rate(watcher_tick_seconds_bucket[5m])))",
                "{{service}}",
            ),
        ],
    ),
    (
        "Reconciliation difference (vault - ledger)",
        "none",
        [
            ("watcher_reconciliation_difference", "{{network}} {{token}}"),
        ],
    ),
    (
        "Active alarms",
        "none",
        [
            ("watcher_alarms_active", "{{kind}}"),
        ],
    ),
]


def panel(i: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + j), "datasource": DS, "expr": e, "legendFormat": leg}
            for j, (e, leg) in enumerate(targets)
        ],
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": "watcher",
        "title": "Watcher",
        "tags": ["watcher"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
