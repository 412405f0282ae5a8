# Two commands on a fresh machine with only Python 3.11 and make:
#   make demo   the main job on the embedded default (embedded PostgreSQL, Postgres broker)
#   make test   lint, types and every test (embedded PostgreSQL when DATABASE_URL is unset)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean-embedded

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy domain actors lapse

# Money code is fed real rows for every branch: 100% branch coverage, enforced.
COVERED := --cov=domain.purchases --cov=domain.ledger --cov=domain.renewals
MONEY_TESTS := tests/domain/test_purchases.py tests/domain/test_ledger.py tests/domain/test_renewals.py

test: lint
	$(BIN)/pytest
	$(BIN)/pytest -q $(MONEY_TESTS) $(COVERED) --cov-branch --cov-report=term-missing --cov-fail-under=100

demo: $(STAMP)
	$(BIN)/lapse demo

clean-embedded: $(STAMP)
	$(BIN)/lapse embedded stop
