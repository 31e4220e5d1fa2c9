# Two commands for a newcomer: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-only lint chromium fuzz bench bench-e2e bench-scale bench-invoices bench-documents bench-portal bench-portal-invoices bench-soak bench-login bench-auth asyncapi clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/adgang run

# The browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

# The tests run in TEST_WORKERS processes (pytest-xdist), each taking whole modules, and whole
# packages whose tests share a suite (tests/support/scheduling.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

test: $(STAMP) lint chromium test-only

# The tests alone, without lint (.ci/run lints once, then runs both databases' tests side by side).
test-only: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$$ADGANG_CHROMIUM" ] || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check shared services tests bench
	$(BIN)/mypy shared services bench
	$(BIN)/adgang asyncapi --check

# The APIs' contract against many more generated requests than a test run makes.
fuzz: $(STAMP)
	ADGANG_FUZZ_EXAMPLES=300 $(BIN)/pytest -q -p no:cacheprovider tests/integration/test_api_fuzz.py

bench: $(STAMP)
	$(BIN)/python -m bench.all $(BENCH_ARGS)

bench-e2e: $(STAMP)
	$(BIN)/python -m bench.e2e $(BENCH_ARGS)

bench-invoices: $(STAMP)
	$(BIN)/python -m bench.invoices $(BENCH_ARGS)

bench-documents: $(STAMP)
	$(BIN)/python -m bench.documents $(BENCH_ARGS)

bench-portal: $(STAMP)
	$(BIN)/python -m bench.portal_users $(BENCH_ARGS)

bench-portal-invoices: $(STAMP)
	$(BIN)/python -m bench.portal_invoices $(BENCH_ARGS)

# The scale-out test (tests/reliability/test_scale_out.py) at 2,000 applications instead of a
# test run's 300: three workers and two APIs per service, a worker of each service killed in turn.
bench-scale: $(STAMP)
	ADGANG_TEST_DATABASE=postgres ADGANG_SCALE_APPLICATIONS=2000 \
	  $(BIN)/pytest -q -s -p no:cacheprovider tests/reliability/test_scale_out.py

bench-soak: $(STAMP)
	$(BIN)/python -m bench.soak $(BENCH_ARGS)

bench-login: $(STAMP)
	$(BIN)/python -m bench.login $(BENCH_ARGS)

bench-auth: $(STAMP)
	$(BIN)/python -m bench.auth $(BENCH_ARGS)

asyncapi: $(STAMP)
	$(BIN)/adgang asyncapi

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
