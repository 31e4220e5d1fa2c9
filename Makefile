# Two commands for a newcomer: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-invoices asyncapi clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/adgang run

test: $(STAMP) lint
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check shared services tests bench
	$(BIN)/mypy shared services/*/domain.py
	$(BIN)/adgang asyncapi --check

bench: $(STAMP)
	$(BIN)/python -m bench.e2e

bench-invoices: $(STAMP)
	$(BIN)/python -m bench.invoices $(BENCH_ARGS)

asyncapi: $(STAMP)
	$(BIN)/adgang asyncapi

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
