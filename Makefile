# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
WEEKS ?= 2
SCENARIO ?=
PYTEST_ARGS ?=

.PHONY: install lint test run clean

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check src tests functions
	$(BIN)/ruff format --check src tests functions
	$(BIN)/mypy

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

run: install
	$(BIN)/python -m devstack.extract_demo --weeks $(WEEKS) $(if $(SCENARIO),--scenario $(SCENARIO))

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
