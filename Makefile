# Patron: `make run` serves a demo, `make test` runs every test. Both set themselves up.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint typecheck bench bench-quick clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Serve Patron with demo data on SQLite (./patron.db) at http://$(HOST):$(PORT)
run: $(STAMP)
	$(BIN)/patron demo
	$(BIN)/patron serve --host $(HOST) --port $(PORT)

## The whole test suite (PostgreSQL too when PATRON_TEST_POSTGRES_URL is set); the races that
## hold 50 connections run last, alone, so that they never share the server's connection slots
test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup -q -m "not exclusive"
	$(BIN)/pytest -q -m exclusive

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

## Every benchmark at full size against its ceiling twin (needs PATRON_BENCH_POSTGRES_URL); see bench/README.md
bench: $(STAMP)
	$(BIN)/python bench/run.py

## The same at small sizes, about five minutes on two cores; writes bench/results.json
bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) patron.db patron.db-wal patron.db-shm .pytest_cache .mypy_cache .ruff_cache
