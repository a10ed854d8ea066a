# One entry point for people and CI. `make demo` and `make test` work from a fresh clone (they create .venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck check bench clean redis-check chromium-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/backfarm compile  # numba's kernels, so the first backtest does not wait ~20 s for them
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/backfarm backtest --source synthetic

# Integration tests start their own redis-server on a free port; it must be installed.
redis-check:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "redis-server not found: installing it with apt-get"; \
	    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server not found: install it (Debian/Ubuntu: sudo apt-get install -y redis-server; macOS: brew install redis)"; \
	    exit 1; \
	  fi; }

# The dashboard test drives Debian's headless chromium (no browser downloads).
chromium-check:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "chromium not found: installing it with apt-get"; \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium not found: install it (Debian/Ubuntu: sudo apt-get install -y chromium)"; \
	    exit 1; \
	  fi; }

test: install redis-check chromium-check
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check backfarm tests benchmarks examples
	$(BIN)/ruff format --check backfarm tests benchmarks examples

# Strict for the layers below the edges; settings in pyproject.toml ([tool.mypy]).
typecheck: install
	$(BIN)/mypy

# What CI runs (.ci/run): lint, format, types, then the tests.
check: lint typecheck test

bench: install
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
