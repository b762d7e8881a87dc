# The two commands of the README: `make demo` and `make test`. Both create the environment if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck package unit bench clean

# The newest releases pyproject.toml admits, upgraded eagerly, so a breaking sentry-sdk or OTel minor shows up
# here first (the test summary says whether each tracked package is the newest); floors: `make test-lowest`.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[test,demo]'
	touch $(STAMP)

EXAMPLE ?= seed
SERVER ?= uvicorn

demo: $(STAMP)
	$(BIN)/otel-bridge demo --example $(EXAMPLE) --server $(SERVER)

lint: $(STAMP)
	$(BIN)/ruff check otel_bridge tests examples benchmarks
	$(BIN)/ruff format --check otel_bridge tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

# The sdist and wheel a release would publish: built from this tree, checked by twine (metadata, README).
package: $(STAMP)
	rm -rf build/dist && mkdir -p build
	$(BIN)/python -m build --quiet --outdir build/dist . > build/package.log 2>&1 || (cat build/package.log; exit 1)
	$(BIN)/twine check --strict build/dist/*

test: lint typecheck package unit

bench: $(STAMP)
	$(BIN)/python benchmarks/suite.py $(BENCH_ARGS)

# The same suite on the lowest versions pyproject.toml claims (constraints/lowest.txt), in its own venv.
LOWEST_VENV := .venv-lowest
LOWEST_BIN := $(LOWEST_VENV)/bin
LOWEST_STAMP := $(LOWEST_VENV)/.installed

.PHONY: test-lowest

$(LOWEST_STAMP): pyproject.toml constraints/lowest.txt
	test -x $(LOWEST_BIN)/python || $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_BIN)/python -m pip install --quiet --upgrade pip
	$(LOWEST_BIN)/python -m pip install --quiet -e '.[test,demo]' -c constraints/lowest.txt
	touch $(LOWEST_STAMP)

test-lowest: $(LOWEST_STAMP)
	$(LOWEST_BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
