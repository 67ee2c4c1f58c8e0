# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast bench lint clean

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

test: install
	$(BIN)/python -m pytest

# Benchmarks (not tests): each prints one JSON line per figure and a summary; see bench/README.md.
bench: install
	$(BIN)/python -m bench.ledger
	$(BIN)/python -m bench.export
	$(BIN)/python -m bench.purge
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.workers

# Skips the tests that start Prefect (about 15 s of harness start-up).
test-fast: install
	$(BIN)/python -m pytest -m "not prefect"

clean:
	rm -rf var .pytest_cache

lint: install
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/ruff check dsr connectors flows sandbox tests
	$(BIN)/mypy
