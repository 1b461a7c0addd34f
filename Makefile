# The two commands: `make demo` and `make test` (`make check`: the unit tests alone). Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint bench clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/xiezhi demo --workdir demo-run

# The console's browser test drives Debian's Chromium; install it if it is missing.
chromium:
	@bash scripts/ensure-chromium

test: $(STAMP) chromium
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

# The unit tier (tests/tiers.py): no integration test, and no test may start a process or
# open a server socket.
check: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q --unit

lint: $(STAMP)
	$(BIN)/ruff check xiezhi audit_log gateway connectors requester devkit cli tests bench deploy
	$(BIN)/mypy xiezhi audit_log gateway connectors requester devkit cli tests bench deploy

bench: $(STAMP)
	$(BIN)/python bench/bench_oprf.py
	$(BIN)/python bench/bench_index.py
	$(BIN)/python bench/bench_e2e.py
	$(BIN)/python bench/bench_authz.py
	$(BIN)/python bench/bench_audit.py
	$(BIN)/python bench/bench_sealing.py

clean:
	rm -rf $(VENV) demo-run .pytest_cache
