"""Prometheus metrics, one registry per daemon (tests can run several side by side)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.head = Gauge("watcher_chain_head", "Latest block seen", ["network"], registry=r)
        self.cursor = Gauge(
            "watcher_cursor_block", "Highest block fully scanned", ["network"], registry=r
        )
        self.lag_blocks = Gauge("watcher_lag_blocks", "Head minus cursor", ["network"], registry=r)
        self.lag_seconds = Gauge(
            "watcher_lag_seconds", "Age of the cursor block", ["network"], registry=r
        )
        self.deposits = Counter(
            "watcher_deposits", "Deposits by event", ["network", "event"], registry=r
        )
        self.withdrawals = Gauge(
            "watcher_withdrawals",
            "Withdrawals in each state they pass through (not the final ones)",
            ["state"],
            registry=r,
        )
        self.withdrawals_stored = Gauge(
            "watcher_withdrawals_stored",
            "Withdrawals ever stored (the highest id)",
            registry=r,
        )
        self.withdrawal_oldest = Gauge(
            "watcher_withdrawal_oldest_age_seconds",
            "Age of the oldest withdrawal in each open state (since its last change)",
            ["state"],
            registry=r,
        )
        self.withdrawal_events = Counter(
            "watcher_withdrawal_events",
            "Withdrawal pipeline events",
            ["network", "event"],
            registry=r,
        )
        self.rpc_calls = Counter(
            "watcher_rpc_calls", "RPC calls", ["network", "endpoint", "method"], registry=r
        )
        self.blocks_scanned = Counter(
            "watcher_blocks_scanned",
            "Blocks whose deposit logs the listener has read",
            ["network"],
            registry=r,
        )
        self.rpc_per_1000_blocks = Gauge(
            "watcher_listener_rpc_calls_per_1000_blocks",
            "The listener's JSON-RPC calls (each element of a batch counts) per 1,000 blocks "
            "read, since the daemon started",
            ["network"],
            registry=r,
        )
        self.rpc_errors = Counter(
            "watcher_rpc_errors", "RPC errors", ["network", "endpoint", "kind"], registry=r
        )
        self.reorgs = Counter("watcher_reorgs", "Reorgs detected", ["network"], registry=r)
        self.reorg_depth = Gauge(
            "watcher_reorg_depth_last", "Depth of the last reorg", ["network"], registry=r
        )
        self.reconciliation_diff = Gauge(
            "watcher_reconciliation_difference",
            "Vault minus ledger, token units",
            ["network", "token"],
            registry=r,
        )
        self.alarms = Gauge("watcher_alarms_active", "Latched alarms", ["kind"], registry=r)
        self.ticks = Histogram("watcher_tick_seconds", "Tick durations", ["service"], registry=r)
        self.tick_failures = Counter(
            "watcher_tick_failures", "Failed ticks", ["service"], registry=r
        )

        self.lease_held = Gauge(
            "watcher_lease_held",
            "1 while this replica holds the role lease",
            ["role"],
            registry=r,
        )
        self.lease_takeovers = Counter(
            "watcher_lease_takeovers", "Leases taken by this replica", ["role"], registry=r
        )
        self.lease_unheld_seconds = Gauge(
            "watcher_lease_unheld_seconds",
            "How long the role has had no holder (0 while held by any replica)",
            ["role"],
            registry=r,
        )
        self.fenced_writes = Counter(
            "watcher_fenced_writes", "Writes refused by a role's fence", ["role"], registry=r
        )
        self.stalled_sessions_ended = Counter(
            "watcher_stalled_sessions_ended",
            "Watcher database sessions this replica ended: stalled inside a transaction, "
            "waiting for their client (a stopped process) past the idle bound",
            registry=r,
        )

        self.cosign_round = Histogram(
            "watcher_cosign_round_seconds",
            "One round of asking every co-signer for a batch of payouts (the latency "
            "co-signing adds before a batch is signed)",
            ["network"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.cosign_answers = Counter(
            "watcher_cosign_answers",
            "Co-signers' answers per payout: signed, refused, unavailable",
            ["network", "outcome"],
            registry=r,
        )
        self.vault_paused = Gauge(
            "watcher_vault_paused", "1 while the network's vault is paused", ["network"], registry=r
        )

    def on_tick(self, service: str, seconds: float, ok: bool) -> None:
        self.ticks.labels(service).observe(seconds)
        if not ok:
            self.tick_failures.labels(service).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
