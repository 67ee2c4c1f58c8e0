# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast bench chaos lint clean

install: $(STAMP)

# Reinstall only when the declared dependencies change.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("dsr-pipeline needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# Seeds the demo CRM, then submits, verifies and runs one erasure and one access request
# through the real Prefect flow (ephemeral API), on a SQLite ledger under ./var/.
demo: install
	DSR_SYSTEMS_FILE=config/demo/systems.yaml $(BIN)/dsr demo

# Two pytest workers (pytest-xdist), a test file per worker at a time: most of the suite waits on
# servers and subprocesses, so two workers on 2 cores take about half the time of one.
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# Benchmarks (not tests): each prints one JSON line per figure and a summary; see bench/README.md.
bench: install
	$(BIN)/python -m bench.ledger
	$(BIN)/python -m bench.export
	$(BIN)/python -m bench.purge
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.workers
	$(BIN)/python -m bench.latency

# Chaos campaigns (docs/reliability.md): crash-and-resume trials of request runs and
# retention purges, then vendor fault storms (5xx, timeouts, resets, 429s, expired sessions) and
# outages; then Schemathesis against the API's own OpenAPI schema, 500 examples per operation and
# role (every check: status codes, bodies, headers, constraints, auth); seeded; each prints failures
# and a JSON summary, exits 1 on any failure.
chaos: install
	$(BIN)/python -m chaos.crash --requests 200 --purges 100 --seed 1
	$(BIN)/python -m chaos.storm --trials 50 --outages 15 --rate 0.4 --seed 1
	$(BIN)/python -m chaos.schema --max-examples 500 --seed 1

# Skips the tests that start Prefect (about 15 s of harness start-up).
test-fast: install
	$(BIN)/python -m pytest -m "not prefect"

# Personal data and secret leak scan (docs/reliability.md): `dsr demo` with every log at
# DEBUG (ours, Prefect's, uvicorn, the clients), then its logs, Prefect database, ledger and bundles
# are searched for every seeded e-mail, name, phone, address and secret; then the whole suite runs
# under the same scan (tests/pii_scan_plugin.py). Fails on any hit; reports in var/pii-scan/.
PII_SCAN_DIR := var/pii-scan
PII_DEBUG    := DSR_LOG_LEVEL=DEBUG PREFECT_LOGGING_LEVEL=DEBUG PREFECT_LOGGING_ROOT_LEVEL=DEBUG \
                PREFECT_LOGGING_INTERNAL_LEVEL=DEBUG PREFECT_INTERNAL_LOGGING_LEVEL=DEBUG \
                PREFECT_SERVER_LOGGING_LEVEL=DEBUG PREFECT_SERVER_ANALYTICS_ENABLED=false
.PHONY: pii-scan
pii-scan: install
	rm -rf $(PII_SCAN_DIR) && mkdir -p $(PII_SCAN_DIR)
	$(PII_DEBUG) DSR_HOME=$(PII_SCAN_DIR)/home PREFECT_HOME=$(CURDIR)/$(PII_SCAN_DIR)/prefect \
	  DSR_SYSTEMS_FILE=config/demo/systems.yaml $(BIN)/dsr demo >$(PII_SCAN_DIR)/demo.out 2>$(PII_SCAN_DIR)/demo.err
	$(BIN)/python tests/pii_scan_plugin.py $(PII_SCAN_DIR)/demo.out $(PII_SCAN_DIR)/demo.err \
	  --home $(PII_SCAN_DIR)/home --prefect-db $(PII_SCAN_DIR)/prefect/prefect.db --report $(PII_SCAN_DIR)/demo-report.txt
	$(PII_DEBUG) DSR_PII_SCAN_REPORT=$(PII_SCAN_DIR)/suite-report.txt $(BIN)/python -m pytest -p tests.pii_scan_plugin

clean:
	rm -rf var .pytest_cache

lint: install
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/ruff check dsr connectors flows sandbox tests bench chaos
	$(BIN)/mypy
