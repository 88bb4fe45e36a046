# newsmon - the two commands in the README are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run run-once test lint typecheck unit bench clean

# Create .venv/ and install newsmon (editable) with the test and dev tools.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "newsmon needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev,postgres]'
	@touch $(STAMP)

setup: $(STAMP)

## the service with the embedded defaults (SQLite + embedded Qdrant + bundled model)
run: setup
	$(BIN)/newsmon --config $${NEWSMON_CONFIG:-feeds.yaml} run

run-once: setup
	$(BIN)/newsmon --config $${NEWSMON_CONFIG:-feeds.yaml} run --once

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest

## everything CI runs
test: lint typecheck unit

bench: setup
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
