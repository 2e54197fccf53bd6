# The two commands of the README. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test test-fast bench lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.runtime $@

## Run the service: API + embedded Redis (unless REDIS_URL is set), demo policy.
up: $(VENV)/.runtime
	$(BIN)/banditd up

## Run the test suite (starts its own redis-server on a free port).
test: $(VENV)/.dev
	$(BIN)/python -m pytest

## The fast subset: every test not marked slow (under 3 minutes on 2 cores; see README).
test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -m "not slow"

## Run the /act benchmark (prints a table; see README).
bench: $(VENV)/.dev
	$(BIN)/python bench/act_throughput.py

lint: $(VENV)/.dev
	$(BIN)/ruff check service bandits training exporter eventlog tests bench
	$(BIN)/mypy
