# Two commands matter: `make run` (the gateway on the shipped rules) and
# `make test` (everything CI runs). Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck unit system-deps install bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

system-deps:
	bash scripts/system-deps.sh

run: install
	$(BIN)/goproxy-router serve --rules rules

lint: install
	$(BIN)/ruff check router tests benchmarks
	$(BIN)/ruff format --check router tests benchmarks

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -m "not e2e"

test: system-deps install lint typecheck
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

bench: system-deps install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks.harness

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
