# Two commands on a fresh machine with Python 3.11+: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
RUN := $(UV) run --frozen --no-sync
export UV_PYTHON ?= $(PYTHON)
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo test lint typecheck unit integration bench airflow clean

# uv comes from PyPI into a private tools venv when the machine has none (works under PEP 668 too).
$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	# Bytecode compiled at install: imports stay fast where PYTHONDONTWRITEBYTECODE is set (as here and on CI).
	$(UV) sync --frozen --all-extras --compile-bytecode
	@touch $@

setup: .venv/.synced

demo: setup
	$(RUN) migrate demo

airflow: setup
	$(RUN) migrate airflow

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports --no-cache

typecheck: setup
	$(RUN) mypy

unit: setup
	$(RUN) pytest tests/unit -q

integration: setup
	$(RUN) pytest tests/integration -q

test: lint typecheck
	$(RUN) pytest -q

bench: setup
	@command -v wrk >/dev/null || { echo "make bench needs wrk (the HTTP load generator): apt-get install wrk"; exit 1; }
	$(RUN) python -m bench

clean:
	rm -rf .migrate .pytest_cache .mypy_cache .ruff_cache
