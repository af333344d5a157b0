# The README's commands. Each target does its own setup on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM_STAMP := contracts/node_modules/.installed
# docker-compose 1.29 (pip) validates docker-compose.yml offline; kept apart from the
# app's venv because it needs old pins (cython<3 to build PyYAML 5).
COMPOSE_VENV := .venv-compose
COMPOSE_STAMP := $(COMPOSE_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup run demo test check lint typecheck contracts promtool bench bench-deposits bench-withdrawals bench-intake bench-integrity bench-cli bench-anvil-stream bench-scale chaos clean test-pg

setup: $(STAMP) $(NPM_STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

$(NPM_STAMP): contracts/package.json contracts/package-lock.json
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Local devnet (anvil + deployed vault and tokens) and the daemon on SQLite.
# A fresh chain and a fresh ledger each time (var/devnet is wiped); KEEP=1 keeps both
# (`watcher devnet --keep`: the chain is saved on stop and reloaded on the next start).
# Ports: ANVIL_PORT (default 8545) and API_PORT (default 8080).
# The daemon starts once the devnet has (re)written its network file; not if it failed.
ANVIL_PORT ?= 8545
API_PORT ?= 8080
run: setup
	@if [ "$(KEEP)" != 1 ]; then rm -rf var/devnet; fi; mkdir -p var/devnet; touch var/devnet/.started
	@$(BIN)/watcher devnet --out var/devnet --port $(ANVIL_PORT) $(if $(filter 1,$(KEEP)),--keep) & DEVNET=$$!; \
	  trap 'kill $$DEVNET 2>/dev/null; wait $$DEVNET 2>/dev/null' EXIT INT TERM; \
	  for i in $$(seq 1 150); do [ var/devnet/networks/devnet.toml -nt var/devnet/.started ] && break; \
	    kill -0 $$DEVNET 2>/dev/null || exit 2; sleep 0.2; done; \
	  WATCHER_ADMIN_TOKEN=$${WATCHER_ADMIN_TOKEN:-devnet-admin-token} \
	  WATCHER_SIGNER_KEY=$${WATCHER_SIGNER_KEY:-$$($(BIN)/python -m watcher.chain.devnet_key)} \
	  WATCHER_COSIGNER_TOKEN=$${WATCHER_COSIGNER_TOKEN:-devnet-cosigner-token} \
	  $(BIN)/watcher run --config var/devnet --port $(API_PORT)

# Against a running `make run` (another terminal, same API_PORT): deposit 100 USDT from
# devnet account 2, wait until credited, withdraw 40 with --wait, print each step.
demo: setup
	$(BIN)/watcher devnet demo --config var/devnet --api http://127.0.0.1:$(API_PORT)

$(COMPOSE_STAMP):
	$(PY) -m venv $(COMPOSE_VENV)
	echo 'cython<3' > $(COMPOSE_VENV)/constraints.txt
	PIP_CONSTRAINT=$(COMPOSE_VENV)/constraints.txt $(COMPOSE_VENV)/bin/pip install -q docker-compose==1.29.2
	touch $@

# promtool and the Prometheus server (alert-rule tests, live monitoring test): Debian's
# package, installed once if missing (scripts/install-prometheus.sh).
promtool:
	@scripts/install-prometheus.sh

test: setup $(COMPOSE_STAMP) promtool
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

check: lint typecheck test

contracts: $(NPM_STAMP)
	cd contracts && node scripts/compile.js

bench: bench-deposits bench-withdrawals bench-cli

# BENCH_ARGS="--database postgresql" runs a bench on a throwaway PostgreSQL cluster.
bench-deposits: setup
	$(BIN)/python bench/deposits.py $(BENCH_ARGS)

bench-withdrawals: setup
	$(BIN)/python bench/withdrawals.py $(BENCH_ARGS)

# The intake's CPU per request by batch size (in process): per batch and per request.
bench-intake: setup
	$(BIN)/python bench/intake.py $(BENCH_ARGS)

# The reconciler's ledger integrity check over 2,000,000 journal entries: its time and
# the event loop's lag meanwhile.
bench-integrity: setup
	$(BIN)/python bench/integrity.py $(BENCH_ARGS)

# Whole-process latency of `watcher --help` and `watcher status` (medians).
bench-cli: setup
	$(BIN)/python bench/cli.py

# Steady state with 1,000,000 deposits (seeded in bulk) against an empty database: a
# listener step, intake p99 at 500/s, account view, status, RSS, size per deposit.
# SCALE_ARGS: e.g. --deposits 100000, or --database postgresql --database-url URL.
SCALE_ARGS ?=
bench-scale: setup
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

# What anvil can mine of a stream of withdrawals arriving at the intake's rate (no daemon).
bench-anvil-stream: setup
	$(BIN)/python bench/anvil_stream.py

# Chaos (bench/chaos.py): KILLS kill -9s of a real daemon during DEPOSITS deposits and
# WITHDRAWALS withdrawals, FAULT_RATE of its RPC requests failing through a proxy; every
# invariant checked after. DB=postgresql uses DATABASE_URL, else a throwaway server.
KILLS ?= 10
DEPOSITS ?= 100
WITHDRAWALS ?= 60
FAULT_RATE ?= 0.05
DB ?= sqlite
SEED ?= 20261203
CHAOS_ARGS = --kills $(KILLS) --deposits $(DEPOSITS) --withdrawals $(WITHDRAWALS) \
  --fault-rate $(FAULT_RATE) --seed $(SEED) --database $(DB)
chaos: setup
	@if [ "$(DB)" = postgresql ] && [ -z "$(DATABASE_URL)" ]; then \
	  url=$$(scripts/pg-throwaway.sh start var/pgdata-chaos 55433) || exit 2; \
	  $(BIN)/python bench/chaos.py $(CHAOS_ARGS) --database-url $$url; rc=$$?; \
	  scripts/pg-throwaway.sh stop var/pgdata-chaos; exit $$rc; \
	else \
	  $(BIN)/python bench/chaos.py $(CHAOS_ARGS) $(if $(DATABASE_URL),--database-url $(DATABASE_URL)); \
	fi

# The suite against a throwaway local PostgreSQL as well (what CI does).
test-pg: setup
	@url=$$(scripts/pg-throwaway.sh start var/pgdata 55432) && \
	  WATCHER_TEST_DATABASE_URL=$$url $(BIN)/pytest -q $(PYTEST_ARGS); rc=$$?; \
	  scripts/pg-throwaway.sh stop var/pgdata; exit $$rc

clean:
	rm -rf $(VENV) $(COMPOSE_VENV) contracts/node_modules var/*.db var/devnet .pytest_cache .mypy_cache .ruff_cache
