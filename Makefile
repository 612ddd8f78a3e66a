# The two commands: `make run` starts the whole platform on embedded engines, `make test` runs lint + tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit bench clean-var

$(STAMP): pyproject.toml sdk/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./sdk/python
	touch $(STAMP)

run: $(STAMP)
	exec $(BIN)/python -m shared.devstack run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services bench tests sdk/python/src examples

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/gateway_overhead.py

clean-var:
	rm -rf var
